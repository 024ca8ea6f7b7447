/* settle.c - owns writing job results to Redis: the FINISHED records of a
 * queue that pile up within QW_SETTLE_DELAY_US go out as one settle script
 * call, pipelined (they are then SETTLING). A call whose reply is lost or
 * that fails puts its records back to FINISHED, to be sent again once Redis
 * answers: the script skips jobs already settled, so a resend changes
 * nothing twice. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool_int.h"

/* One settle call in flight: the records it carries, all of one owner. */
struct qw_batch {
	struct qw_queue *q;
	unsigned n;
	struct qw_rec *rec[];
};

#define QW_SETTLE_FIXED 9	/* 6 keys, dead_max, guard, count of succeeded */

void
qw_settle_soon(struct qw_queue *q)
{
	struct qw_pool *pool = q->pool;

	/* Wait up to QW_SETTLE_DELAY_US for more results, so that a busy queue
	 * writes hundreds per script call rather than a handful: Redis spends
	 * more on each call than on each job in it. The job is safe in the
	 * active hash meanwhile, and its slot is free already. */
	if (q->recs.n[QW_REC_FINISHED] >= QW_SETTLE_BATCH)
		event_active(pool->flush_ev, EV_TIMEOUT, 0);
	else if (!event_pending(pool->flush_ev, EV_TIMEOUT, NULL))
		event_add(pool->flush_ev, &(struct timeval){ 0, QW_SETTLE_DELAY_US });
}

int
qw_settle_add(struct qw_queue *q, char *field, enum qw_dest dest, char *elem, size_t len,
    const char *counters, char *owner)
{
	struct qw_rec *rec = qw_rec_new(&q->recs, q, field, owner);

	if (rec == NULL || qw_rec_finish(&q->recs, rec, dest, elem, len, 0, counters) < 0) {
		if (rec == NULL)
			free(elem);
		return -1;
	}
	qw_settle_soon(q);
	return 0;
}

/* Puts the batch's records back to FINISHED, at the front of the line. */
static void
qw_batch_unsend(struct qw_batch *b)
{
	struct qw_recset *rs = &b->q->recs;

	for (unsigned i = b->n; i-- > 0;) {
		qw_rec_move(rs, b->rec[i], QW_REC_FINISHED);
		TAILQ_REMOVE(&rs->list[QW_REC_FINISHED], b->rec[i], link);
		TAILQ_INSERT_HEAD(&rs->list[QW_REC_FINISHED], b->rec[i], link);
	}
	free(b);
}

static void
qw_settle_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_batch *b = priv;
	struct qw_queue *q = b->q;

	q->sending--;
	qw_pool_dirty(q->pool);
	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
		if (reply->integer < 0)
			qw_log_notice("queue %s: instance %s is alive again; its jobs are left to it",
			    q->qc.name, b->rec[0]->owner);
		for (unsigned i = 0; i < b->n; i++)
			qw_rec_free(&q->recs, b->rec[i]);
		free(b);
		return;
	}
	if (reply != NULL) {
		qw_log_err("queue %s: writing %u results failed: %s (will retry)",
		    q->qc.name, b->n, qw_redis_errstr(r, reply));
		qw_clock_arm(q->settle_retry_ev, 1000);
	}
	qw_batch_unsend(b);
}

static bool
qw_same_owner(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Moves up to QW_SETTLE_BATCH FINISHED records of one owner into a new
 * batch (SETTLING). */
static struct qw_batch *
qw_batch_take(struct qw_queue *q)
{
	struct qw_recset *rs = &q->recs;
	unsigned max = rs->n[QW_REC_FINISHED] < QW_SETTLE_BATCH ? rs->n[QW_REC_FINISHED] :
	    QW_SETTLE_BATCH;
	struct qw_batch *b = malloc(sizeof(*b) + max * sizeof(b->rec[0]));
	struct qw_rec *rec, *next;
	const char *owner;

	if (b == NULL)
		return NULL;
	b->q = q;
	b->n = 0;
	owner = TAILQ_FIRST(&rs->list[QW_REC_FINISHED])->owner;
	for (rec = TAILQ_FIRST(&rs->list[QW_REC_FINISHED]); rec != NULL && b->n < max; rec = next) {
		next = TAILQ_NEXT(rec, link);
		if (!qw_same_owner(rec->owner, owner))
			continue;
		qw_rec_move(rs, rec, QW_REC_SETTLING);
		b->rec[b->n++] = rec;
	}
	return b;
}

static bool
qw_rec_is_success(const struct qw_rec *rec)
{
	return rec->dest == QW_DEST_DONE && strcmp(rec->counters, "succeeded") == 0;
}

/* The settle script's arguments for batch B: the succeeded jobs as a list
 * of fields, the others as five values each. ARGV, LENS and DELAYS have
 * room for every record. Returns argc. */
static size_t
qw_batch_args(const struct qw_batch *b, const char **argv, size_t *lens,
    char (*delays)[QW_FMT_U64_LEN])
{
	static const char *const wheres[] = { "", "p", "s", "d" };
	size_t k = QW_SETTLE_FIXED, nsucc = 0;

	for (unsigned i = 0; i < b->n; i++)
		if (qw_rec_is_success(b->rec[i])) {
			argv[k] = b->rec[i]->field;
			lens[k++] = strlen(b->rec[i]->field);
			nsucc++;
		}
	lens[8] = qw_fmt_u64(delays[b->n], nsucc);
	argv[8] = delays[b->n];
	for (unsigned i = 0; i < b->n; i++) {
		const struct qw_rec *rec = b->rec[i];
		int w = rec->dest == QW_DEST_PENDING ? 1 : rec->dest == QW_DEST_SCHEDULED ? 2 :
		    rec->dest == QW_DEST_DEAD ? 3 : 0;
		if (qw_rec_is_success(rec))
			continue;
		argv[k] = rec->field;
		argv[k + 1] = wheres[w];
		argv[k + 2] = rec->elem ? rec->elem : "";
		lens[k + 3] = qw_fmt_u64(delays[i], rec->delay_ms);
		argv[k + 3] = delays[i];
		argv[k + 4] = rec->counters;
		lens[k] = strlen(argv[k]);
		lens[k + 1] = strlen(argv[k + 1]);
		lens[k + 2] = rec->elem ? rec->len : 0;
		lens[k + 4] = strlen(argv[k + 4]);
		k += 5;
	}
	return k;
}

/* Sends one settle script call for a batch of results. */
static int
qw_queue_send_batch(struct qw_queue *q)
{
	const struct qw_conf *c = q->pool->conf;
	struct qw_batch *b = qw_batch_take(q);
	const char **argv = NULL;
	size_t *lens = NULL, argc;
	char (*delays)[QW_FMT_U64_LEN] = NULL;
	char deadmax[QW_FMT_U64_LEN], *akey = NULL;
	const char *owner;
	int rc = -1;

	if (b == NULL)
		return -1;
	owner = b->rec[0]->owner;
	argv = malloc((QW_SETTLE_FIXED + (size_t)b->n * 5) * sizeof(*argv));
	lens = malloc((QW_SETTLE_FIXED + (size_t)b->n * 5) * sizeof(*lens));
	delays = malloc((b->n + 1) * sizeof(*delays));
	if (argv == NULL || lens == NULL || delays == NULL)
		goto out;
	if (owner != NULL && asprintf(&akey, "%s:{%s}:active:%s", c->prefix, q->qc.name, owner) < 0) {
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
	argv[7] = owner ? owner : "";
	for (size_t i = 0; i < 8; i++)
		lens[i] = strlen(argv[i]);
	argc = qw_batch_args(b, argv, lens, delays);
	if (qw_redis_script(q->pool->redis, QW_SCRIPT_SETTLE, qw_settle_reply, b, 6,
	    (int)argc, argv, lens) < 0)
		goto out;
	b = NULL;
	q->sending++;
	rc = 0;
out:
	if (b != NULL)
		qw_batch_unsend(b);
	free(akey);
	free(argv);
	free(lens);
	free(delays);
	return rc;
}

void
qw_settle_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_pool *pool = arg;

	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		while (q->recs.n[QW_REC_FINISHED] > 0 && !evtimer_pending(q->settle_retry_ev, NULL) &&
		    qw_queue_send_batch(q) == 0)
			;
	}
}

unsigned
qw_settle_unwritten(const struct qw_pool *pool)
{
	unsigned n = 0;

	for (size_t i = 0; i < pool->nqueues; i++)
		n += pool->queues[i].recs.n[QW_REC_FINISHED] + pool->queues[i].recs.n[QW_REC_SETTLING];
	return n;
}
