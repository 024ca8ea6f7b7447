/* cancel.c - owns operators' cancel requests (qworkerd(8), "CANCELLING A
 * JOB"). The hash PREFIX:{Q}:cancel maps a job's field in its instance's
 * active hash to the reason given. Each lease tick, while this process has
 * jobs of the queue running or taken ahead, one script call reads the
 * requests for its own jobs and drops those for jobs no longer in its
 * active hash; run.c stops each job, and the settle script that writes the
 * job's result deletes its request in the same step. */
#include "config.h"

#include <stdlib.h>

#include "log.h"
#include "pool_int.h"

/* The cancels script's reply: {{field, reason, ...}, dropped}, or NULL
 * when it is not one. */
static const redisReply *
qw_cancel_requests(const redisReply *reply, long long *dropped)
{
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_ARRAY ||
	    reply->element[1]->type != REDIS_REPLY_INTEGER)
		return NULL;
	*dropped = reply->element[1]->integer;
	return reply->element[0];
}

static void
qw_cancel_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	const redisReply *reqs;
	long long dropped = 0;

	if (reply == NULL)
		return;		/* the next tick asks again */
	if ((reqs = qw_cancel_requests(reply, &dropped)) == NULL) {
		const char *err = qw_redis_errstr(r, reply);
		if (qw_log_changed(&q->cancel_err, err))
			qw_log_err("queue %s: cannot read the cancel requests in %s: %s (retrying "
			    "each tick)", q->qc.name, q->key[K_CANCEL], err);
		return;
	}
	if (qw_log_changed(&q->cancel_err, NULL))
		qw_log_notice("queue %s: reading cancel requests works again", q->qc.name);
	if (dropped > 0)
		qw_log_info("queue %s: dropped %lld cancel request(s) for jobs that had already "
		    "left this instance", q->qc.name, dropped);
	for (size_t i = 0; i + 1 < reqs->elements; i += 2) {
		const redisReply *f = reqs->element[i], *why = reqs->element[i + 1];
		struct qw_rec *rec;
		if (f->type != REDIS_REPLY_STRING || why->type != REDIS_REPLY_STRING)
			continue;
		if ((rec = qw_record_find(&q->recs, f->str, f->len)) != NULL)
			qw_run_cancel(rec, why->str, why->len);
	}
}

void
qw_cancel_poll(struct qw_queue *q)
{
	const char *argv[] = { q->key[K_CANCEL], q->key[K_ACTIVE], q->pool->runid };
	const struct qw_recset *rs = &q->recs;

	/* Nothing of ours can be cancelled: no request to read. */
	if (rs->n[QW_REC_BUFFERED] + rs->n[QW_REC_RUNNING] + rs->n[QW_REC_CANCELLING] == 0)
		return;
	qw_redis_script(qw_pool_queue_redis(q), QW_SCRIPT_CANCELS, qw_cancel_reply, q, 2, 3, argv,
	    NULL);
}
