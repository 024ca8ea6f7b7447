/* settle.c - owns writing job results to Redis: the FINISHED records of a
 * queue that pile up within QW_SETTLE_DELAY_US go out as one settle script
 * call, pipelined (they are then SETTLING). A call whose reply is lost or
 * that fails puts its records back to FINISHED, to be sent again once Redis
 * answers: the script skips jobs already settled, so a resend changes
 * nothing twice.
 *
 * It also owns whether results can be written (struct qw_writable, enum
 * qw_keys_state): a key of the wrong type holds back only the results that
 * need it, retried with a backoff, and the fetch gate (qw_settle_room)
 * keeps the queue from taking more jobs than it can hold meanwhile. */
#include "config.h"

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool_int.h"

/* One settle call in flight: the records it carries, all of one owner, and
 * the owed counts it took along (our own jobs' calls only). */
struct qw_batch {
	struct qw_queue *q;
	unsigned n, nowed;
	struct qw_owed owed[QW_OWED_MAX];
	struct qw_rec *rec[];
};

#define QW_SETTLE_FIXED 13	/* 9 keys, dead_max, guard, breaker, its events */
/* Held results go again after 0.5 s, then less and less often: a key a
 * producer broke may stay broken for hours. */
#define QW_SETTLE_RETRY_MS 500
#define QW_SETTLE_RETRY_MAX_MS 10000

static const char *const qw_keys_names[] = {
	[QW_KEYS_UNCHECKED] = "unchecked", [QW_KEYS_OK] = "ok", [QW_KEYS_WRONG] = "wrong",
};

/* The keys REC's result needs besides the active hash (QW_BAD_*). */
static unsigned
qw_settle_needs(const struct qw_rec *rec)
{
	switch (rec->dest) {
	case QW_DEST_PENDING:
		return QW_BAD_PENDING;
	case QW_DEST_SCHEDULED:
		return QW_BAD_SCHEDULED;
	case QW_DEST_DEAD:
		return QW_BAD_DEAD;
	default:
		return 0;
	}
}

/* Whether REC's result could not be written for a key problem that holds. */
static bool
qw_settle_blocked(const struct qw_queue *q, const struct qw_rec *rec)
{
	return q->wr.state == QW_KEYS_WRONG &&
	    (q->wr.bad & (QW_BAD_CALL | qw_settle_needs(rec))) != 0;
}

/* Whether REC waits for the retry rather than going out with the next call. */
static bool
qw_settle_rec_held(const struct qw_queue *q, const struct qw_rec *rec)
{
	return !q->wr.retry_due && qw_settle_blocked(q, rec);
}

/* Whether owed counts wait for the retry too. */
static bool
qw_settle_owed_held(const struct qw_queue *q)
{
	return !q->wr.retry_due && q->wr.state == QW_KEYS_WRONG &&
	    (q->wr.bad & (QW_BAD_STATS | QW_BAD_CALL)) != 0;
}

/* The only way q->wr.state changes (see enum qw_keys_state). WHY (borrowed)
 * says what is wrong when TO is WRONG; a problem is logged once, when it is
 * new, not for every job or retry. */
static void
qw_settle_keys_move(struct qw_queue *q, enum qw_keys_state to, unsigned bad, const char *why)
{
	struct qw_writable *wr = &q->wr;
	enum qw_keys_state from = wr->state;

	if (to == QW_KEYS_UNCHECKED) {
		qw_log_err("queue %s: key check cannot move from %s to %s (a bug)", q->qc.name,
		    qw_keys_names[from], qw_keys_names[to]);
		assert(!"illegal key check move");
		return;
	}
	if (from != to)
		qw_log_debug("queue %s: keys %s -> %s", q->qc.name, qw_keys_names[from],
		    qw_keys_names[to]);
	wr->state = to;
	wr->bad = to == QW_KEYS_WRONG ? bad : 0;
	if (to == QW_KEYS_WRONG && (wr->why == NULL || strcmp(wr->why, why) != 0)) {
		free(wr->why);
		wr->why = strdup(why);	/* NULL when out of memory: logged again next time */
		qw_log_err("queue %s: results cannot be written: %s; they wait here and are "
		    "retried, and fetching stops once the queue holds %u jobs", q->qc.name, why,
		    qw_pool_cap(q) + qw_fetch_prefetch(q));
	} else if (to == QW_KEYS_OK && from == QW_KEYS_WRONG) {
		qw_log_notice("queue %s: results can be written again", q->qc.name);
		free(wr->why);
		wr->why = NULL;
		wr->backoff_ms = 0;
		event_active(q->pool->flush_ev, EV_TIMEOUT, 0);	/* the backlog, now */
	}
}

/* Held results or owed counts go again after the backoff. */
static void
qw_settle_retry_later(struct qw_queue *q)
{
	struct qw_writable *wr = &q->wr;

	if (wr->state != QW_KEYS_WRONG || (q->recs.n[QW_REC_FINISHED] == 0 && wr->nowed == 0) ||
	    evtimer_pending(q->settle_retry_ev, NULL))
		return;
	if (wr->backoff_ms == 0)
		wr->backoff_ms = QW_SETTLE_RETRY_MS;
	qw_clock_arm(q->settle_retry_ev, wr->backoff_ms);
	wr->backoff_ms = wr->backoff_ms * 2 > QW_SETTLE_RETRY_MAX_MS ? QW_SETTLE_RETRY_MAX_MS :
	    wr->backoff_ms * 2;
}

/* Adds N to counter NAME (LEN bytes) of the counts stats still owes. */
static void
qw_settle_owe(struct qw_queue *q, const char *name, size_t len, uint64_t n)
{
	struct qw_writable *wr = &q->wr;
	unsigned i;

	for (i = 0; i < wr->nowed; i++)
		if (strlen(wr->owed[i].name) == len && memcmp(wr->owed[i].name, name, len) == 0)
			break;
	if (i == wr->nowed) {
		if (i == QW_OWED_MAX || len >= sizeof(wr->owed[i].name)) {
			qw_log_err("queue %s: cannot keep count %.*s for later; %llu lost",
			    q->qc.name, (int)len, name, (unsigned long long)n);
			return;
		}
		memcpy(wr->owed[i].name, name, len);
		wr->owed[i].name[len] = '\0';
		wr->owed[i].n = 0;
		wr->nowed++;
	}
	wr->owed[i].n += n;
}

/* The batch's owed counts are owed again (its call did nothing). */
static void
qw_settle_batch_reowe(struct qw_batch *b)
{
	for (unsigned i = 0; i < b->nowed; i++)
		qw_settle_owe(b->q, b->owed[i].name, strlen(b->owed[i].name), b->owed[i].n);
	b->nowed = 0;
}

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

void
qw_settle_hold(struct qw_rec *rec, const struct qw_job *job)
{
	if (job->unique == NULL || (rec->dest != QW_DEST_DONE && rec->dest != QW_DEST_DEAD))
		return;
	if (qw_record_hold(rec, job->id, job->unique) < 0)
		qw_log_err("job %s/%s: out of memory keeping its unique_for hold; it ends only when "
		    "its time runs out", rec->q->qc.name, job->id);
}

int
qw_settle_add(struct qw_queue *q, char *field, enum qw_dest dest, char *elem, size_t len,
    const char *counters, char *owner, const struct qw_job *job)
{
	struct qw_rec *rec = qw_record_new(&q->recs, q, field, owner);

	if (rec == NULL || qw_record_finish(&q->recs, rec, dest, elem, len, 0, counters) < 0) {
		if (rec == NULL)
			free(elem);
		return -1;
	}
	qw_tally_outcomes(&q->tally, counters);
	if (job != NULL)
		qw_settle_hold(rec, job);
	qw_settle_soon(q);
	return 0;
}

/* Puts a SETTLING record back to FINISHED, at the front of the line. */
static void
qw_settle_unsend(struct qw_recset *rs, struct qw_rec *rec)
{
	qw_record_move(rs, rec, QW_REC_FINISHED);
	TAILQ_REMOVE(&rs->list[QW_REC_FINISHED], rec, link);
	TAILQ_INSERT_HEAD(&rs->list[QW_REC_FINISHED], rec, link);
}

/* Puts the batch's records back to FINISHED and frees it. Its owed counts
 * are owed again when REOWE, else dropped: the call may have added them. */
static void
qw_settle_batch_unsend(struct qw_batch *b, bool reowe)
{
	for (unsigned i = b->n; i-- > 0;)
		qw_settle_unsend(&b->q->recs, b->rec[i]);
	if (reowe)
		qw_settle_batch_reowe(b);
	else if (b->nowed > 0)
		qw_log_warn("queue %s: a reply was lost; counts kept for %s may not have been "
		    "added", b->q->qc.name, b->q->key[K_STATS]);
	free(b);
}

/* The jobs the settle script left in the active hash because an operator
 * asked to cancel them (CANCELS: field, reason, ...): their results become
 * dead as cancelled and go with the next call. */
static void
qw_settle_batch_cancels(struct qw_queue *q, const redisReply *cancels)
{
	for (size_t i = 0; i + 1 < cancels->elements; i += 2) {
		const redisReply *f = cancels->element[i], *why = cancels->element[i + 1];
		struct qw_rec *rec;
		if (f->type != REDIS_REPLY_STRING || why->type != REDIS_REPLY_STRING ||
		    (rec = qw_record_find(&q->recs, f->str, f->len)) == NULL ||
		    rec->state != QW_REC_SETTLING)
			continue;
		if (qw_cancel_settled(rec, why->str, why->len) < 0) {
			qw_log_err("queue %s: out of memory cancelling job field %s; trying again",
			    q->qc.name, rec->field);
			qw_settle_unsend(&q->recs, rec);
		} else {
			qw_settle_soon(q);
		}
	}
}

/* The settle script's breaker move, "FROM TO" or "" (none): said once, by
 * this instance, whose results made it. */
static void
qw_settle_breaker_moved(struct qw_queue *q, const redisReply *m)
{
	const char *sp = memchr(m->str, ' ', m->len);
	enum qw_breaker_state from, to;

	if (m->len == 0)
		return;
	if (sp == NULL || qw_flow_breaker_parse(m->str, (size_t)(sp - m->str), &from) < 0 ||
	    qw_flow_breaker_parse(sp + 1, m->len - (size_t)(sp + 1 - m->str), &to) < 0) {
		qw_log_err("queue %s: the settle script's breaker move is unreadable (a bug)",
		    q->qc.name);
		return;
	}
	qw_flow_say_moved(q->qc.name, from, to, q->qc.breaker_failures,
	    q->qc.breaker_cooldown_ms);
	q->breaker_seen = to;
}

/* The breaker's events of batch B (qw_lua_settle): "+FIELD" or "-FIELD"
 * for each of our results that counts, in order, into *OUT (owned); NULL
 * when the breaker is off or B holds none. -1 when out of memory. */
static int
qw_settle_breaker_events(const struct qw_batch *b, char **out)
{
	size_t len = 1, off = 0;
	char *ev;

	*out = NULL;
	if (b->q->qc.breaker_failures == 0 || (b->n > 0 && b->rec[0]->owner != NULL))
		return 0;
	for (unsigned i = 0; i < b->n; i++)
		if (b->rec[i]->breaker != 0)
			len += strlen(b->rec[i]->field) + 2;
	if (len == 1)
		return 0;
	if ((ev = malloc(len)) == NULL)
		return -1;
	for (unsigned i = 0; i < b->n; i++)
		if (b->rec[i]->breaker != 0)
			off += (size_t)snprintf(ev + off, len - off, "%c%s ",
			    b->rec[i]->breaker > 0 ? '+' : '-', b->rec[i]->field);
	ev[off] = '\0';
	*out = ev;
	return 0;
}

/* The settle script's answer (see qw_lua_settle): the held results go back
 * to FINISHED, the others are written; counts stats could not take are
 * owed. Returns -1 when the reply is not of that shape. */
static int
qw_settle_batch_written(struct qw_batch *b, const redisReply *reply)
{
	struct qw_queue *q = b->q;
	const redisReply *held, *owed, *why;

	if (reply->elements != 7 || reply->element[1]->type != REDIS_REPLY_INTEGER ||
	    reply->element[2]->type != REDIS_REPLY_STRING ||
	    reply->element[3]->type != REDIS_REPLY_ARRAY ||
	    reply->element[4]->type != REDIS_REPLY_ARRAY ||
	    reply->element[5]->type != REDIS_REPLY_STRING ||
	    reply->element[6]->type != REDIS_REPLY_ARRAY)
		return -1;
	qw_settle_breaker_moved(q, reply->element[5]);
	why = reply->element[2];
	held = reply->element[3];
	owed = reply->element[4];
	for (size_t i = 0; i < held->elements; i++) {
		struct qw_rec *rec = qw_record_find(&q->recs, held->element[i]->str,
		    held->element[i]->len);
		if (rec != NULL && rec->state == QW_REC_SETTLING)
			qw_settle_unsend(&q->recs, rec);
	}
	qw_settle_batch_cancels(q, reply->element[6]);
	for (unsigned i = 0; i < b->n; i++)
		if (b->rec[i]->state == QW_REC_SETTLING)
			qw_record_free(&q->recs, b->rec[i]);
	qw_fetch_settled(q);
	for (size_t i = 0; i + 1 < owed->elements; i += 2)
		if (owed->element[i + 1]->type == REDIS_REPLY_INTEGER &&
		    owed->element[i + 1]->integer > 0)
			qw_settle_owe(q, owed->element[i]->str, owed->element[i]->len,
			    (uint64_t)owed->element[i + 1]->integer);
	if (reply->element[1]->integer == 0)
		qw_settle_keys_move(q, QW_KEYS_OK, 0, "");
	else
		qw_settle_keys_move(q, QW_KEYS_WRONG, (unsigned)reply->element[1]->integer,
		    why->str);
	free(b);
	return 0;
}

static void
qw_settle_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_batch *b = priv;
	struct qw_queue *q = b->q;

	q->sending--;
	qw_pool_dirty(q->pool);
	if (reply == NULL) {
		qw_settle_batch_unsend(b, false);
		return;
	}
	if (reply->type == REDIS_REPLY_INTEGER && reply->integer < 0) {
		qw_log_notice("queue %s: instance %s is alive again; its jobs are left to it",
		    q->qc.name, b->rec[0]->owner);
		for (unsigned i = 0; i < b->n; i++)
			qw_record_free(&q->recs, b->rec[i]);
		free(b);
		return;
	}
	if (qw_redis_unconfirmed(reply)) {
		/* wait_replicas: written, but a failover may lose it. Sent
		 * again (the script skips what it finds settled) until a WAIT
		 * confirms it; meanwhile the queue fetches only as much as it
		 * could hold, as with any result that cannot be written. Sent
		 * again after a failover, it finds the job in the new master's
		 * active hash (the claim was confirmed before the job started)
		 * and writes it there: the job does not run again. WAIT waits
		 * for the connection's last write, so a resend that finds
		 * nothing left to write still waits for the first one; on a new
		 * connection, for the lease take (a ZADD) that every connect
		 * sends before any result (qw_pool_redis_state). */
		qw_settle_keys_move(q, QW_KEYS_WRONG, QW_BAD_CALL, reply->str);
		b->nowed = 0;	/* added on the master; not owed again */
		qw_settle_batch_unsend(b, false);
	} else if (reply->type != REDIS_REPLY_ARRAY || qw_settle_batch_written(b, reply) < 0) {
		/* Nothing was written: the active hash holds the wrong type, or
		 * Redis refused the call (out of memory, say). */
		qw_settle_keys_move(q, QW_KEYS_WRONG, QW_BAD_CALL, qw_redis_errstr(r, reply));
		qw_settle_batch_unsend(b, true);
	}
	qw_settle_retry_later(q);
}

static bool
qw_settle_same_owner(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Moves up to QW_SETTLE_BATCH FINISHED records of one owner that are not
 * held into a new batch (SETTLING), with the owed counts when they may go.
 * NULL when there is nothing to send (or no memory). */
static struct qw_batch *
qw_settle_batch_take(struct qw_queue *q)
{
	struct qw_recset *rs = &q->recs;
	struct qw_writable *wr = &q->wr;
	unsigned max = rs->n[QW_REC_FINISHED] < QW_SETTLE_BATCH ? rs->n[QW_REC_FINISHED] :
	    QW_SETTLE_BATCH;
	struct qw_batch *b;
	struct qw_rec *rec, *next;
	const char *owner = NULL;

	TAILQ_FOREACH(rec, &rs->list[QW_REC_FINISHED], link)
		if (!qw_settle_rec_held(q, rec))
			break;
	if (rec == NULL && (wr->nowed == 0 || qw_settle_owed_held(q)))
		return NULL;
	if ((b = malloc(sizeof(*b) + max * sizeof(b->rec[0]))) == NULL)
		return NULL;
	b->q = q;
	b->n = b->nowed = 0;
	if (rec != NULL)
		owner = rec->owner;
	for (; rec != NULL && b->n < max; rec = next) {
		next = TAILQ_NEXT(rec, link);
		if (!qw_settle_same_owner(rec->owner, owner) || qw_settle_rec_held(q, rec))
			continue;
		qw_record_move(rs, rec, QW_REC_SETTLING);
		b->rec[b->n++] = rec;
	}
	if (owner == NULL && wr->nowed > 0 && !qw_settle_owed_held(q)) {
		memcpy(b->owed, wr->owed, wr->nowed * sizeof(wr->owed[0]));
		b->nowed = wr->nowed;
		wr->nowed = 0;
	}
	return b;
}

/* A success that goes in the one HDEL for the lot: not one that ends a
 * hold, which the script must know was there (see qw_lua_settle). */
static bool
qw_settle_is_success(const struct qw_rec *rec)
{
	return rec->dest == QW_DEST_DONE && strcmp(rec->counters, "succeeded") == 0 &&
	    rec->hold_id == NULL;
}

/* The settle script's arguments after the fixed ones for batch B: the owed
 * counts, the holds to end, the succeeded jobs as a list of fields, the
 * others as five values each. ARGV and LENS have room for all; NUM for
 * b->n + 3 + b->nowed numbers. Returns argc. */
static size_t
qw_settle_batch_args(const struct qw_batch *b, const char **argv, size_t *lens,
    char (*num)[QW_FMT_U64_LEN])
{
	static const char *const wheres[] = { "", "p", "s", "d" };
	size_t k = QW_SETTLE_FIXED, nsucc = 0, nholds = 0, inum = b->n, at;

	lens[k] = qw_fmt_u64(num[inum], b->nowed);
	argv[k++] = num[inum++];
	for (unsigned i = 0; i < b->nowed; i++) {
		argv[k] = b->owed[i].name;
		lens[k++] = strlen(b->owed[i].name);
		lens[k] = qw_fmt_u64(num[inum], b->owed[i].n);
		argv[k++] = num[inum++];
	}
	at = k++;
	for (unsigned i = 0; i < b->n; i++) {
		const struct qw_rec *rec = b->rec[i];
		if (rec->hold_id == NULL)
			continue;
		argv[k] = rec->field;
		argv[k + 1] = rec->hold_id;
		argv[k + 2] = rec->hold_token;
		for (size_t j = k; j < k + 3; j++)
			lens[j] = strlen(argv[j]);
		k += 3;
		nholds++;
	}
	lens[at] = qw_fmt_u64(num[inum], nholds);
	argv[at] = num[inum++];
	at = k++;
	for (unsigned i = 0; i < b->n; i++)
		if (qw_settle_is_success(b->rec[i])) {
			argv[k] = b->rec[i]->field;
			lens[k++] = strlen(b->rec[i]->field);
			nsucc++;
		}
	lens[at] = qw_fmt_u64(num[inum], nsucc);
	argv[at] = num[inum];
	for (unsigned i = 0; i < b->n; i++) {
		const struct qw_rec *rec = b->rec[i];
		int w = rec->dest == QW_DEST_PENDING ? 1 : rec->dest == QW_DEST_SCHEDULED ? 2 :
		    rec->dest == QW_DEST_DEAD ? 3 : 0;
		if (qw_settle_is_success(rec))
			continue;
		argv[k] = rec->field;
		argv[k + 1] = wheres[w];
		argv[k + 2] = rec->elem ? rec->elem : "";
		lens[k + 3] = qw_fmt_u64(num[i], rec->delay_ms);
		argv[k + 3] = num[i];
		argv[k + 4] = rec->counters;
		lens[k] = strlen(argv[k]);
		lens[k + 1] = strlen(argv[k + 1]);
		lens[k + 2] = rec->elem ? rec->len : 0;
		lens[k + 4] = strlen(argv[k + 4]);
		k += 5;
	}
	return k;
}

/* A batch of up to this many results (and owed counts) has its arguments
 * on the stack: a large malloc per batch cost more than the rest of the
 * batch's work here (malloc_consolidate). */
#define QW_SETTLE_STACK_JOBS 64
#define QW_SETTLE_STACK_ARGS (QW_SETTLE_FIXED + 3 + 8 * QW_SETTLE_STACK_JOBS)

/* Sends one settle script call for batch B (taken: on failure it is put
 * back). */
static int
qw_settle_send_batch(struct qw_queue *q, struct qw_batch *b)
{
	const char *argv_s[QW_SETTLE_STACK_ARGS];
	size_t lens_s[QW_SETTLE_STACK_ARGS];
	char num_s[QW_SETTLE_STACK_JOBS + 3][QW_FMT_U64_LEN];
	const struct qw_conf *c = q->pool->conf;
	size_t max = QW_SETTLE_FIXED + 3 + 2 * (size_t)b->nowed + 8 * (size_t)b->n, argc;
	size_t nnum = b->n + 3 + b->nowed;
	bool heap = max > QW_SETTLE_STACK_ARGS || nnum > QW_SETTLE_STACK_JOBS + 3;
	const char **argv = heap ? malloc(max * sizeof(*argv)) : argv_s;
	size_t *lens = heap ? malloc(max * sizeof(*lens)) : lens_s;
	char (*num)[QW_FMT_U64_LEN] = heap ? malloc(nnum * sizeof(*num)) : num_s;
	char deadmax[QW_FMT_U64_LEN], *akey = NULL, bconf[2 * QW_FMT_U64_LEN + 2];
	char *events = NULL;
	const char *owner = b->n > 0 ? b->rec[0]->owner : NULL;
	int rc = -1;

	if (argv == NULL || lens == NULL || num == NULL || qw_settle_breaker_events(b, &events) < 0)
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
	argv[6] = q->key[K_UNIQUE];
	argv[7] = q->key[K_CANCEL];
	argv[8] = q->key[K_BREAKER];
	qw_fmt_u64(deadmax, q->qc.dead_max);
	argv[9] = deadmax;
	argv[10] = owner ? owner : "";
	bconf[0] = '\0';
	if (events != NULL)
		snprintf(bconf, sizeof(bconf), "%u %llu", q->qc.breaker_failures,
		    (unsigned long long)q->qc.breaker_cooldown_ms);
	argv[11] = bconf;
	argv[12] = events != NULL ? events : "";
	for (size_t i = 0; i < QW_SETTLE_FIXED; i++)
		lens[i] = strlen(argv[i]);
	argc = qw_settle_batch_args(b, argv, lens, num);
	if (qw_redis_script_wait(qw_pool_queue_redis(q), QW_SCRIPT_SETTLE, c->wait_replicas,
	    c->wait_timeout_ms, qw_settle_reply, b, 9, (int)argc, argv, lens) < 0)
		goto out;
	b = NULL;
	q->sending++;
	rc = 0;
out:
	if (b != NULL)
		qw_settle_batch_unsend(b, true);
	free(akey);
	free(events);
	if (heap) {
		free(argv);
		free(lens);
		free(num);
	}
	return rc;
}

static void
qw_settle_queue_flush(struct qw_queue *q)
{
	struct qw_batch *b;

	while ((b = qw_settle_batch_take(q)) != NULL && qw_settle_send_batch(q, b) == 0)
		;
	/* A result held without being sent (its key was known wrong when it
	 * finished) gets its retry too. */
	qw_settle_retry_later(q);
}

void
qw_settle_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_pool *pool = arg;

	for (size_t i = 0; i < pool->nqueues; i++)
		qw_settle_queue_flush(&pool->queues[i]);
}

void
qw_settle_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_queue *q = arg;

	q->wr.retry_due = true;
	qw_settle_queue_flush(q);
	q->wr.retry_due = false;
}

unsigned
qw_settle_unwritten(const struct qw_pool *pool)
{
	unsigned n = 0;

	for (size_t i = 0; i < pool->nqueues; i++)
		n += pool->queues[i].recs.n[QW_REC_FINISHED] + pool->queues[i].recs.n[QW_REC_SETTLING];
	return n;
}

unsigned
qw_settle_room(const struct qw_queue *q, unsigned bound)
{
	const struct qw_recset *rs = &q->recs;
	unsigned taken;

	/* Results that can be written make room as they go; outside OK they
	 * may not, so the queue takes no more than it could hold for good. */
	if (q->wr.state == QW_KEYS_OK)
		return UINT_MAX;
	taken = rs->n[QW_REC_BUFFERED] + rs->n[QW_REC_RUNNING] + rs->n[QW_REC_CANCELLING] +
	    rs->n[QW_REC_FINISHED] + rs->n[QW_REC_SETTLING] + q->asked;
	return bound > taken ? bound - taken : 0;
}

unsigned
qw_settle_held(const struct qw_queue *q, const char **why)
{
	const struct qw_rec *rec;
	unsigned n = 0;

	TAILQ_FOREACH(rec, &q->recs.list[QW_REC_FINISHED], link)
		if (qw_settle_blocked(q, rec))
			n++;
	if (why != NULL)
		*why = q->wr.why != NULL ? q->wr.why : "a key holds the wrong type";
	return n;
}

void
qw_settle_fini(struct qw_queue *q)
{
	for (unsigned i = 0; i < q->wr.nowed; i++)
		qw_log_err("queue %s: %llu counts of %s could not be added to %s; they are lost",
		    q->qc.name, (unsigned long long)q->wr.owed[i].n, q->wr.owed[i].name,
		    q->key[K_STATS]);
	free(q->wr.why);
	q->wr.why = NULL;
}
