/* cancel.c - owns operators' cancel requests (qworkerd(8), "CANCELLING A
 * JOB"). The hash PREFIX:{Q}:cancel maps a job's field in its instance's
 * active hash to the reason given. Each lease tick, while this process has
 * jobs of the queue running or taken ahead, one script call reads the
 * requests for its own jobs and deletes a share of those for jobs no live
 * instance holds; run.c stops each job, and the settle script that writes
 * the job's result deletes its request in the same step, or sends back a
 * job that was to go back but has a request (qw_cancel_settled). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "log.h"
#include "pool_int.h"

char *
qw_cancel_text(const char *text, size_t len)
{
	static const char not_text[] = "(the reason given is not UTF-8 text)";
	json_t *check;
	char *s;

	/* Cut before a UTF-8 sequence rather than inside one. */
	if (len > QW_CANCEL_TEXT_MAX) {
		len = QW_CANCEL_TEXT_MAX;
		while (len > 0 && ((unsigned char)text[len] & 0xc0) == 0x80)
			len--;
	}
	if ((check = json_stringn(text, len)) == NULL || memchr(text, '\0', len) != NULL) {
		text = not_text;
		len = sizeof(not_text) - 1;
	}
	json_decref(check);
	if ((s = malloc(len + 1)) == NULL)
		return NULL;
	memcpy(s, text, len);
	s[len] = '\0';
	return s;
}

void
qw_cancel_error(char *buf, size_t len, const char *text)
{
	if (text == NULL || text[0] == '\0')
		snprintf(buf, len, "cancelled");
	else
		snprintf(buf, len, "cancelled: %s", text);
}

/* The counters of a result that was to put the job back, once it goes to
 * dead as cancelled instead: the run's failure and the recovery stay
 * counted, the retry or requeue does not happen. */
static const char *
qw_cancel_counters(const char *was)
{
	if (strstr(was, "timed_out") != NULL)
		return "failed timed_out cancelled dead";
	if (strstr(was, "failed") != NULL)
		return "failed cancelled dead";
	if (strstr(was, "recovered") != NULL)
		return "recovered cancelled dead";
	return "cancelled dead";
}

int
qw_cancel_settled(struct qw_rec *rec, const char *text, size_t tlen)
{
	struct qw_queue *q = rec->q;
	const char *was = rec->dest == QW_DEST_SCHEDULED ? "a retry" : "back on pending";
	char error[QW_CANCEL_TEXT_MAX + 32], *kept, *copy, *out;
	struct qw_job job;
	size_t len = 0;
	int rc = -1, breaker;

	if (rec->elem == NULL || (kept = qw_cancel_text(text, tlen)) == NULL)
		return -1;
	qw_cancel_error(error, sizeof(error), kept);
	free(kept);
	/* The element that was to go back becomes the dead one: the job keeps
	 * the attempt and interrupted counts it had on its way back. The record
	 * keeps its own until then, to be sent again should this fail. */
	if ((copy = malloc(rec->len + 1)) == NULL)
		return -1;
	memcpy(copy, rec->elem, rec->len);
	copy[rec->len] = '\0';
	if (qw_job_parse(&job, copy, rec->len, &q->qc, rec->field) < 0)
		return -1;
	out = job.verbatim ? job.elem : qw_job_encode(&job, error, qw_clock_wall_ms(), NULL, &len);
	if (job.verbatim) {
		len = job.elem_len;
		job.elem = NULL;
	}
	/* A failed run still counts for the circuit breaker: the first call
	 * counted nothing for a job it left in the active hash. */
	breaker = rec->breaker;
	if (out != NULL && qw_record_finish(&q->recs, rec, QW_DEST_DEAD, out, len, 0,
	    qw_cancel_counters(rec->counters)) == 0) {
		rec->breaker = breaker;
		qw_settle_hold(rec, &job);
		qw_log_notice("job %s/%s: %s; moved to dead instead of %s", q->qc.name, job.id, error,
		    was);
		rc = 0;
	}
	qw_job_clear(&job);
	return rc;
}

/* How often an instance with no job of the queue in hand looks anyway, to
 * sweep stale requests (qworkerd-jobs(7), the cancel key): in lease ticks. */
#define QW_CANCEL_IDLE_TICKS 10

/* The cancels script's reply: {{field, reason, ...}, deleted, cursor}, or
 * NULL when it is not one. */
static const redisReply *
qw_cancel_requests(const redisReply *reply, long long *deleted, const redisReply **cursor)
{
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_ARRAY ||
	    reply->element[1]->type != REDIS_REPLY_INTEGER ||
	    reply->element[2]->type != REDIS_REPLY_STRING)
		return NULL;
	*deleted = reply->element[1]->integer;
	*cursor = reply->element[2];
	return reply->element[0];
}

static void
qw_cancel_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	const redisReply *reqs, *cursor;
	long long deleted = 0;

	if (reply == NULL)
		return;		/* the next tick asks again */
	if ((reqs = qw_cancel_requests(reply, &deleted, &cursor)) == NULL) {
		const char *err = qw_redis_errstr(r, reply);
		if (qw_log_changed(&q->cancel_err, err))
			qw_log_err("queue %s: cannot read the cancel requests in %s: %s (retrying "
			    "each tick)", q->qc.name, q->key[K_CANCEL], err);
		q->cancel_cursor[0] = '\0';
		return;
	}
	if (qw_log_changed(&q->cancel_err, NULL))
		qw_log_notice("queue %s: reading cancel requests works again", q->qc.name);
	if (cursor->len < sizeof(q->cancel_cursor)) {
		memcpy(q->cancel_cursor, cursor->str, cursor->len);
		q->cancel_cursor[cursor->len] = '\0';
	}
	if (deleted > 0)
		qw_log_info("queue %s: deleted %lld cancel request(s) for jobs no live instance runs "
		    "(they had ended, or never were)", q->qc.name, deleted);
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
	const struct qw_recset *rs = &q->recs;
	const char *cursor = q->cancel_cursor[0] ? q->cancel_cursor : "0";
	const char *argv[] = { q->key[K_CANCEL], q->key[K_ACTIVE], q->key[K_LEASES], cursor,
		q->key[K_CANCEL] };
	size_t lens[5];

	/* With jobs in hand, every tick: a request reaches them within a
	 * second. Without, only now and then, to sweep stale requests. */
	if (rs->n[QW_REC_BUFFERED] + rs->n[QW_REC_RUNNING] + rs->n[QW_REC_CANCELLING] == 0 &&
	    ++q->cancel_idle < QW_CANCEL_IDLE_TICKS)
		return;
	q->cancel_idle = 0;
	for (size_t i = 0; i < 5; i++)
		lens[i] = strlen(argv[i]);
	lens[4] -= strlen("cancel");	/* PREFIX:{Q}: */
	qw_redis_script(qw_pool_queue_redis(q), QW_SCRIPT_CANCELS, qw_cancel_reply, q, 3, 5, argv, lens);
}
