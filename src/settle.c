/* settle.c - owns writing job results to Redis: each queue collects the
 * results that finished in one loop turn and sends them as one settle script
 * call, pipelined. A batch whose reply is lost goes back to the front and is
 * sent again once Redis answers: the script skips jobs already settled, so a
 * resend changes nothing twice. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool_int.h"

struct qw_batch {
	struct qw_queue *q;
	struct qw_ops ops;
	unsigned n;
};

void
qw_op_free(struct qw_op *op)
{
	free(op->field);
	free(op->elem);
	free(op->owner);
	free(op);
}

int
qw_queue_add_op(struct qw_queue *q, char *field, char where, char *elem, size_t elem_len,
    uint64_t delay_ms, const char *counters, char *owner)
{
	struct qw_op *op = calloc(1, sizeof(*op));

	if (op == NULL) {
		free(field);
		free(elem);
		free(owner);
		return -1;
	}
	op->field = field;
	op->where = where;
	op->elem = elem;
	op->elem_len = elem_len;
	op->delay_ms = delay_ms;
	op->counters = counters;
	op->owner = owner;
	TAILQ_INSERT_TAIL(&q->ops, op, link);
	q->nops++;
	/* Wait up to QW_SETTLE_DELAY_US for more results, so that a busy queue
	 * writes hundreds per script call rather than a handful: Redis spends
	 * more on each call than on each job in it. The job is safe in the
	 * active hash meanwhile, and its slot is free already. */
	if (q->nops >= QW_SETTLE_BATCH)
		event_active(q->pool->flush_ev, EV_TIMEOUT, 0);
	else if (!event_pending(q->pool->flush_ev, EV_TIMEOUT, NULL))
		event_add(q->pool->flush_ev, &(struct timeval){ 0, QW_SETTLE_DELAY_US });
	return 0;
}

static void
qw_batch_free(struct qw_batch *b)
{
	struct qw_op *op;

	while ((op = TAILQ_FIRST(&b->ops)) != NULL) {
		TAILQ_REMOVE(&b->ops, op, link);
		qw_op_free(op);
	}
	free(b);
}

static void
qw_settle_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_batch *b = priv;
	struct qw_queue *q = b->q;
	struct qw_op *op;

	q->sending--;
	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
		if (reply->integer < 0)
			qw_log_notice("queue %s: instance %s is alive again; its jobs are left to it",
			    q->qc.name, TAILQ_FIRST(&b->ops)->owner);
		qw_batch_free(b);
		qw_pool_check_drained(q->pool);
		return;
	}
	if (reply != NULL) {
		qw_log_err("queue %s: writing %u results failed: %s (will retry)",
		    q->qc.name, b->n, qw_redis_errstr(r, reply));
		qw_clock_arm(q->retry_ev, 1000);
	}
	/* Back to the front: sent again once Redis answers. */
	while ((op = TAILQ_LAST(&b->ops, qw_ops)) != NULL) {
		TAILQ_REMOVE(&b->ops, op, link);
		TAILQ_INSERT_HEAD(&q->ops, op, link);
		q->nops++;
	}
	free(b);
}

static bool
qw_same_owner(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Moves up to QW_SETTLE_BATCH ops of one owner from the queue into B. */
static void
qw_batch_take(struct qw_queue *q, struct qw_batch *b)
{
	struct qw_op *op, *next;
	const char *owner = TAILQ_FIRST(&q->ops)->owner;

	for (op = TAILQ_FIRST(&q->ops); op != NULL && b->n < QW_SETTLE_BATCH; op = next) {
		next = TAILQ_NEXT(op, link);
		if (!qw_same_owner(op->owner, owner))
			continue;
		TAILQ_REMOVE(&q->ops, op, link);
		TAILQ_INSERT_TAIL(&b->ops, op, link);
		q->nops--;
		b->n++;
	}
}

static void
qw_batch_untake(struct qw_queue *q, struct qw_batch *b)
{
	struct qw_op *op;

	while ((op = TAILQ_LAST(&b->ops, qw_ops)) != NULL) {
		TAILQ_REMOVE(&b->ops, op, link);
		TAILQ_INSERT_HEAD(&q->ops, op, link);
		q->nops++;
	}
	free(b);
}

#define QW_SETTLE_FIXED 9	/* 6 keys, dead_max, guard, count of succeeded */

static bool
qw_op_is_success(const struct qw_op *op)
{
	return op->where == 0 && strcmp(op->counters, "succeeded") == 0;
}

/* Sends one settle script call for a batch of results: the succeeded ones
 * as a list of fields, the others as five values each. */
static int
qw_queue_send_batch(struct qw_queue *q)
{
	struct qw_batch *b = calloc(1, sizeof(*b));
	const struct qw_conf *c = q->pool->conf;
	static const char *wheres[] = { "", "p", "s", "d" };
	const char **argv = NULL;
	size_t *lens = NULL, argc, k, nsucc = 0;
	char (*delays)[QW_FMT_U64_LEN] = NULL;
	char deadmax[QW_FMT_U64_LEN], nsb[QW_FMT_U64_LEN], *akey = NULL;
	struct qw_op *op;
	int rc = -1;

	if (b == NULL)
		return -1;
	b->q = q;
	TAILQ_INIT(&b->ops);
	qw_batch_take(q, b);
	op = TAILQ_FIRST(&b->ops);
	argc = QW_SETTLE_FIXED + (size_t)b->n * 5;
	argv = malloc(argc * sizeof(*argv));
	lens = malloc(argc * sizeof(*lens));
	delays = malloc(b->n * sizeof(*delays));
	if (argv == NULL || lens == NULL || delays == NULL)
		goto out;
	if (op->owner != NULL &&
	    asprintf(&akey, "%s:{%s}:active:%s", c->prefix, q->qc.name, op->owner) < 0) {
		akey = NULL;
		goto out;
	}
	argv[0] = akey ? akey : q->key[K_ACTIVE];
	argv[1] = q->key[K_PENDING];
	argv[2] = q->key[K_SCHEDULED];
	argv[3] = q->key[K_DEAD];
	argv[4] = q->key[K_STATS];
	argv[5] = q->key[K_LEASES];
	qw_fmt_u64(deadmax, q->qc.dead_max);
	argv[6] = deadmax;
	argv[7] = op->owner ? op->owner : "";
	argv[8] = nsb;
	k = QW_SETTLE_FIXED;
	TAILQ_FOREACH(op, &b->ops, link)
		if (qw_op_is_success(op))
			argv[k++] = op->field, nsucc++;
	qw_fmt_u64(nsb, nsucc);
	for (size_t i = 0; i < k; i++)
		lens[i] = strlen(argv[i]);
	size_t d = 0;
	TAILQ_FOREACH(op, &b->ops, link) {
		if (qw_op_is_success(op))
			continue;
		int w = op->where == 'p' ? 1 : op->where == 's' ? 2 : op->where == 'd' ? 3 : 0;
		argv[k] = op->field;
		argv[k + 1] = wheres[w];
		argv[k + 2] = op->elem ? op->elem : "";
		lens[k + 3] = qw_fmt_u64(delays[d], op->delay_ms);
		argv[k + 3] = delays[d++];
		argv[k + 4] = op->counters;
		lens[k] = strlen(argv[k]);
		lens[k + 1] = strlen(argv[k + 1]);
		lens[k + 2] = op->elem ? op->elem_len : 0;
		lens[k + 4] = strlen(argv[k + 4]);
		k += 5;
	}
	if (qw_redis_script(q->pool->redis, QW_SCRIPT_SETTLE, qw_settle_reply, b, 6,
	    (int)k, argv, lens) < 0)
		goto out;
	b = NULL;
	q->sending++;
	rc = 0;
out:
	if (b != NULL)
		qw_batch_untake(q, b);
	free(akey);
	free(argv);
	free(lens);
	free(delays);
	return rc;
}

void
qw_pool_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_pool *pool = arg;

	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		while (q->nops > 0 && !evtimer_pending(q->retry_ev, NULL) &&
		    qw_queue_send_batch(q) == 0)
			;
	}
}

unsigned
qw_pool_unsettled(const struct qw_pool *pool)
{
	unsigned n = 0;

	for (size_t i = 0; i < pool->nqueues; i++)
		n += pool->queues[i].nops + pool->queues[i].sending;
	return n;
}
