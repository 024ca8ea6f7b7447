/* pool.c - owns the worker pool: slot accounting, the weighted choice of
 * queue, fetching (batched when work is there, a wake-up from Redis per
 * queue when it is not), the prefetch buffer, moving due scheduled jobs,
 * and the drain. Each job's run is run.c's.
 *
 * A taken job lives in Redis in this instance's active hash from the moment
 * it leaves pending until its result is written (settle.c); memory only
 * mirrors it, so a crash at any point leaves it where recovery (lease.c)
 * finds it. */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "decide.h"
#include "exec.h"
#include "fmt.h"
#include "log.h"
#include "pool_int.h"
#include "token.h"

extern char **environ;


static int qw_queue_open_block(struct qw_queue *q);
static void qw_pool_eval_cb(evutil_socket_t fd, short what, void *arg);

/* A problem that repeats (a script that fails every second) is logged when
 * it starts, when it changes and when it ends, not each time: SLOT keeps
 * its text. Returns true when ERR is new, or, with ERR NULL, when a problem
 * just ended. */
static bool
qw_pool_problem(char **slot, const char *err)
{
	if (err == NULL) {
		bool ended = *slot != NULL;
		free(*slot);
		*slot = NULL;
		return ended;
	}
	if (*slot != NULL && strcmp(*slot, err) == 0)
		return false;
	free(*slot);
	*slot = strdup(err);
	return true;
}

/* ---- stages and the re-evaluation ---------------------------------------- */

static const char *const qw_stage_names[QW_STAGE_NSTAGES] = {
	[QW_STAGE_STARTING] = "starting", [QW_STAGE_LEASING] = "waiting for the lease",
	[QW_STAGE_RUNNING] = "running", [QW_STAGE_QUIET] = "quiet",
	[QW_STAGE_DRAINING] = "draining", [QW_STAGE_RELEASING] = "releasing",
	[QW_STAGE_DONE] = "done",
};

#define B(s) (1u << (s))
static const unsigned qw_stage_moves[QW_STAGE_NSTAGES] = {
	[QW_STAGE_STARTING] = B(QW_STAGE_LEASING) | B(QW_STAGE_QUIET) | B(QW_STAGE_DRAINING),
	[QW_STAGE_LEASING] = B(QW_STAGE_RUNNING) | B(QW_STAGE_QUIET) | B(QW_STAGE_DRAINING),
	[QW_STAGE_RUNNING] = B(QW_STAGE_QUIET) | B(QW_STAGE_DRAINING),
	[QW_STAGE_QUIET] = B(QW_STAGE_RUNNING) | B(QW_STAGE_LEASING) | B(QW_STAGE_DRAINING),
	[QW_STAGE_DRAINING] = B(QW_STAGE_RELEASING) | B(QW_STAGE_DONE),
	[QW_STAGE_RELEASING] = B(QW_STAGE_DONE),
};

static const char *const qw_fetch_names[QW_FETCH_NSTATES] = {
	[QW_FETCH_OFF] = "off", [QW_FETCH_RECONCILING] = "reconciling", [QW_FETCH_IDLE] = "idle",
	[QW_FETCH_ASKING] = "asking", [QW_FETCH_WAITING] = "waiting", [QW_FETCH_HELD] = "held",
};

static const unsigned qw_fetch_moves[QW_FETCH_NSTATES] = {
	[QW_FETCH_OFF] = B(QW_FETCH_RECONCILING),
	[QW_FETCH_RECONCILING] = B(QW_FETCH_IDLE) | B(QW_FETCH_OFF),
	[QW_FETCH_IDLE] = B(QW_FETCH_ASKING) | B(QW_FETCH_HELD) | B(QW_FETCH_OFF),
	[QW_FETCH_ASKING] = B(QW_FETCH_IDLE) | B(QW_FETCH_WAITING) | B(QW_FETCH_HELD) |
	    B(QW_FETCH_OFF),
	[QW_FETCH_WAITING] = B(QW_FETCH_IDLE) | B(QW_FETCH_HELD) | B(QW_FETCH_OFF),
	[QW_FETCH_HELD] = B(QW_FETCH_IDLE) | B(QW_FETCH_OFF),
};
#undef B

const char *
qw_pool_stage_name(enum qw_stage s)
{
	return s < QW_STAGE_NSTAGES ? qw_stage_names[s] : "?";
}

enum qw_stage
qw_pool_stage(const struct qw_pool *pool)
{
	return pool->stage;
}

static int
qw_pool_stage_move(struct qw_pool *pool, enum qw_stage to)
{
	if (!(qw_stage_moves[pool->stage] & (1u << to))) {
		qw_log_debug("stage %s: not moving to %s", qw_stage_names[pool->stage],
		    qw_stage_names[to]);
		return -1;
	}
	qw_log_debug("stage %s -> %s", qw_stage_names[pool->stage], qw_stage_names[to]);
	pool->stage = to;
	qw_pool_dirty(pool);
	return 0;
}

int
qw_queue_fetch_move(struct qw_queue *q, enum qw_fetch_state to)
{
	if (!(qw_fetch_moves[q->fetch] & (1u << to))) {
		qw_log_err("queue %s: fetch state cannot move from %s to %s (a bug)", q->qc.name,
		    qw_fetch_names[q->fetch], qw_fetch_names[to]);
		assert(!"illegal fetch state move");
		return -1;
	}
	qw_log_debug("queue %s: fetch %s -> %s", q->qc.name, qw_fetch_names[q->fetch],
	    qw_fetch_names[to]);
	q->fetch = to;
	qw_pool_dirty(q->pool);
	return 0;
}

void
qw_pool_dirty(struct qw_pool *pool)
{
	/* An event already active stays queued once: one evaluation a turn. */
	event_active(pool->eval_ev, EV_TIMEOUT, 0);
}

unsigned
qw_pool_busy(const struct qw_pool *pool)
{
	unsigned busy = 0;

	for (size_t i = 0; i < pool->nqueues; i++) {
		const struct qw_queue *q = &pool->queues[i];
		busy += q->recs.n[QW_REC_RUNNING] + q->recs.n[QW_REC_CANCELLING] +
		    q->recs.n[QW_REC_FENCED] + q->asked_slots;
	}
	return busy;
}

/* Whether new jobs may be taken at all (each queue's fetch state says
 * whether it can). */
static bool
qw_pool_taking(const struct qw_pool *pool)
{
	return (pool->stage == QW_STAGE_STARTING || pool->stage == QW_STAGE_LEASING ||
	    pool->stage == QW_STAGE_RUNNING) && qw_redis_is_up(pool->redis);
}

static bool
qw_pool_stopping(const struct qw_pool *pool)
{
	return pool->stage >= QW_STAGE_DRAINING;
}

/* A record of a job taken from Redis that waits here for a slot. Takes
 * ownership of FIELD and ELEM. */
static int
qw_queue_buffer(struct qw_queue *q, char *field, uint64_t seq, char *elem, size_t len)
{
	struct qw_rec *rec = qw_rec_new(&q->recs, q, field, NULL);

	if (rec == NULL) {
		free(elem);
		return -1;
	}
	rec->seq = seq;
	rec->elem = elem;
	rec->len = len;
	return qw_rec_move(&q->recs, rec, QW_REC_BUFFERED);
}

/* Gives every taken-but-not-started job back to the tail of pending as it
 * was, oldest nearest the tail: on quiet and on shutdown. */
void
qw_queue_give_back(struct qw_queue *q)
{
	struct qw_rec *rec;

	while ((rec = TAILQ_LAST(&q->recs.list[QW_REC_BUFFERED], qw_recs)) != NULL) {
		if (qw_rec_finish(&q->recs, rec, QW_DEST_PENDING, rec->elem, rec->len, 0, "") < 0)
			break;
	}
	qw_settle_soon(q);
}

/* "RUNID" followed by SEQ in decimal, without printf. */
static char *
qw_pool_field(const struct qw_pool *pool, uint64_t seq)
{
	char digits[24], *f;
	size_t rl = strlen(pool->runid), n = 0;

	do
		digits[n++] = (char)('0' + seq % 10);
	while ((seq /= 10) != 0);
	if ((f = malloc(rl + n + 1)) == NULL)
		return NULL;
	memcpy(f, pool->runid, rl);
	for (size_t i = 0; i < n; i++)
		f[rl + i] = digits[n - 1 - i];
	f[rl + n] = '\0';
	return f;
}

static void
qw_fetch_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	struct qw_pool *pool = q->pool;
	unsigned asked = q->asked;
	bool lost = false, woken = q->woken;
	size_t got;

	q->asked = q->asked_slots = 0;
	q->woken = false;
	if (reply != NULL && reply->type == REDIS_REPLY_ARRAY)
		q->fetch_us = qw_decide_smooth(q->fetch_us, qw_clock_mono_us() - q->asked_us, 3, 3);
	if (reply == NULL) {
		/* Whatever the script took is in the active hash: reconcile finds it. */
		qw_queue_fetch_move(q, QW_FETCH_OFF);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY) {
		const char *err = qw_redis_errstr(r, reply);
		if (qw_pool_problem(&q->fetch_err, err))
			qw_log_err("queue %s: fetch failed: %s (retrying every second)", q->qc.name,
			    err);
		qw_queue_fetch_move(q, QW_FETCH_HELD);
		qw_clock_arm(q->fetch_retry_ev, 1000);
		return;
	}
	if (qw_pool_problem(&q->fetch_err, NULL))
		qw_log_notice("queue %s: fetching works again", q->qc.name);
	/* Jobs too large to run went to dead inside Redis: only their count
	 * comes back, never their bytes. */
	got = reply->elements;
	if (got > 0 && reply->element[got - 1]->type == REDIS_REPLY_INTEGER) {
		qw_log_warn("queue %s: %lld job(s) larger than max_payload moved to dead",
		    q->qc.name, reply->element[--got]->integer);
	}
	for (size_t i = 0; i < got; i++) {
		redisReply *e = reply->element[i];
		char *field = qw_pool_field(pool, q->first_seq + i), *elem = malloc(e->len + 1);
		if (field == NULL || elem == NULL) {
			free(field);
			free(elem);
			lost = true;
			continue;
		}
		memcpy(elem, e->str, e->len);
		elem[e->len] = '\0';
		if (qw_queue_buffer(q, field, q->first_seq + i, elem, e->len) < 0)
			lost = true;
	}
	if (lost)
		qw_log_err("queue %s: out of memory taking jobs; reading them again", q->qc.name);
	if (!qw_pool_taking(pool) || q->lease != QW_LEASE_HELD)
		/* Quiet, stopping or fenced since the fetch left: none of these
		 * starts. */
		qw_queue_give_back(q);
	/* A job we could not keep is in the active hash only: reconcile it. A
	 * short reply waits for a wake-up, unless one came while it was on its
	 * way: the push may have come after the script ran. Fenced since the
	 * fetch left: fetch no more until the lease is ours again and
	 * reconcile has checked these jobs. */
	qw_queue_fetch_move(q, lost || q->lease != QW_LEASE_HELD ? QW_FETCH_OFF :
	    got < asked && !woken ? QW_FETCH_WAITING :
	    QW_FETCH_IDLE);
}

/* Asks for SLOTS jobs to run now plus EXTRA to keep at hand. */
static int
qw_queue_fetch(struct qw_queue *q, unsigned slots, unsigned extra)
{
	struct qw_pool *pool = q->pool;
	char nb[QW_FMT_U64_LEN], seqb[QW_FMT_U64_LEN], maxp[QW_FMT_U64_LEN];
	char maxj[QW_FMT_U64_LEN], deadmax[QW_FMT_U64_LEN];
	const char *argv[] = { q->key[K_PENDING], q->key[K_CLAIM], q->key[K_ACTIVE],
		q->key[K_DEAD], q->key[K_STATS], nb, seqb, pool->runid, maxp, maxj, deadmax };
	unsigned n;

	/* One script call moves at most QW_FETCH_MAX jobs: bounded work for
	 * Redis, and far below what Lua's unpack can take. */
	if (slots > QW_FETCH_MAX)
		slots = QW_FETCH_MAX;
	if (extra > QW_FETCH_MAX - slots)
		extra = QW_FETCH_MAX - slots;
	n = slots + extra;
	qw_fmt_u64(nb, n);
	qw_fmt_u64(seqb, pool->seq);
	qw_fmt_u64(maxp, q->qc.max_payload);
	qw_fmt_u64(maxj, qw_job_json_max(&q->qc));
	qw_fmt_u64(deadmax, q->qc.dead_max);
	if (qw_redis_script(pool->redis, QW_SCRIPT_FETCH, qw_fetch_reply, q, 5, 11, argv, NULL) < 0)
		return -1;
	qw_queue_fetch_move(q, QW_FETCH_ASKING);
	q->asked_us = qw_clock_mono_us();
	q->first_seq = pool->seq;
	pool->seq += n;
	q->asked = n;
	q->asked_slots = slots;
	return 0;
}

unsigned
qw_queue_cap(const struct qw_queue *q)
{
	return q->qc.concurrency ? q->qc.concurrency : q->pool->concurrency;
}

/* The fetch gate's bound: what the queue may hold in its active hash while
 * its results may not be writable. */
static unsigned
qw_queue_settle_room(const struct qw_queue *q)
{
	return qw_settle_room(q, qw_queue_cap(q) + qw_queue_prefetch(q));
}

/* How many more slots the queue could use now: up to its cap, and only as
 * many as it has buffered while it cannot fetch, or as the fetch gate lets
 * it take on top of them; none while its lease is not ours (SPEC 10). */
static unsigned
qw_queue_room(const struct qw_queue *q)
{
	unsigned used = q->recs.n[QW_REC_RUNNING] + q->recs.n[QW_REC_CANCELLING] +
	    q->recs.n[QW_REC_FENCED] + q->asked_slots;
	unsigned cap = qw_queue_cap(q), room = used < cap ? cap - used : 0;
	unsigned nbuf = q->recs.n[QW_REC_BUFFERED], gate = qw_queue_settle_room(q);

	if (q->lease != QW_LEASE_HELD)
		return 0;
	if (q->fetch != QW_FETCH_IDLE && room > nbuf)
		room = nbuf;
	if (room > nbuf && room - nbuf > gate)
		room = nbuf + gate;
	return room;
}

/* Hands free slots to queues by their weights (qw_decide_share). */
static void
qw_pool_share(struct qw_pool *pool, unsigned *want)
{
	unsigned busy = qw_pool_busy(pool);
	unsigned free_slots = pool->concurrency > busy ? pool->concurrency - busy : 0;
	struct qw_share qs[pool->nqueues];

	for (size_t i = 0; i < pool->nqueues; i++) {
		qs[i].weight = pool->queues[i].qc.weight;
		qs[i].room = qw_queue_room(&pool->queues[i]);
		qs[i].cw = pool->queues[i].cw;
	}
	qw_decide_share(qs, pool->nqueues, free_slots, want);
	for (size_t i = 0; i < pool->nqueues; i++)
		pool->queues[i].cw = qs[i].cw;
}

/* Says in Redis that this process starts every job of Q up to the N-th
 * buffered one, before it starts them: recovery counts a run only for the
 * jobs it started, and gives the ones only taken ahead (prefetch) back as
 * they were. The command is written to the socket at once, so that a
 * plugin that brings the daemon down with its first instructions is still
 * counted (and a job that keeps doing so ends in dead). */
static void
qw_queue_say_started(struct qw_queue *q, unsigned n)
{
	struct qw_rec *rec, *last = NULL;
	char seq[QW_FMT_U64_LEN];
	const char *argv[] = { "HSET", q->key[K_STARTED], q->pool->runid, seq };

	TAILQ_FOREACH(rec, &q->recs.list[QW_REC_BUFFERED], link) {
		last = rec;
		if (--n == 0)
			break;
	}
	if (last == NULL || last->seq <= q->started_sent)
		return;
	qw_fmt_u64(seq, last->seq);
	if (qw_redis_cmd(q->pool->redis, NULL, NULL, 4, argv, NULL) == 0) {
		qw_redis_flush(q->pool->redis);
		q->started_sent = last->seq;
	}
}

/* Starts up to N jobs of Q from its buffer; returns how many it started. */
static unsigned
qw_queue_start_buffered(struct qw_queue *q, unsigned n)
{
	struct qw_rec *rec;
	unsigned started = 0;

	if (n > 0)
		qw_queue_say_started(q, n);
	while (started < n && (rec = TAILQ_FIRST(&q->recs.list[QW_REC_BUFFERED])) != NULL) {
		qw_run_start(rec);
		started++;
	}
	return started;
}

/* ---- prefetch ---------------------------------------------------------- */

void
qw_queue_job_ran(struct qw_queue *q, uint64_t started_us)
{
	/* A longer run counts at once, a shorter one slowly: taking long jobs
	 * ahead keeps them from idle instances, while too small a buffer for
	 * short ones costs only some speed until it grows again. */
	q->job_us = qw_decide_smooth(q->job_us, qw_clock_mono_us() - started_us, 1, 3);
}

/* How many jobs Q keeps taken ahead of its free slots: its prefetch, or
 * with prefetch = auto what qw_decide_prefetch makes of the times measured. */
unsigned
qw_queue_prefetch(const struct qw_queue *q)
{
	unsigned cap = qw_queue_cap(q);
	struct qw_prefetch_in in = { .job_us = q->job_us, .fetch_us = q->fetch_us,
		.slots = cap < q->pool->concurrency ? cap : q->pool->concurrency,
		.max = QW_FETCH_MAX };

	return q->qc.prefetch != QW_PREFETCH_AUTO ? q->qc.prefetch : qw_decide_prefetch(&in);
}

/* qw_queue_prefetch, and the log line when auto has moved it far. */
static unsigned
qw_queue_ahead(struct qw_queue *q)
{
	unsigned ahead = qw_queue_prefetch(q);

	if (q->qc.prefetch != QW_PREFETCH_AUTO)
		return ahead;
	/* Said when it has doubled or halved since it was last said, not
	 * each time it moves by one. */
	if (ahead > 2 * q->ahead_said || ahead < q->ahead_said / 2 ||
	    (ahead == 0) != (q->ahead_said == 0)) {
		qw_log_debug("queue %s: prefetch %u (a job takes %lluus, a fetch %lluus)",
		    q->qc.name, ahead, (unsigned long long)q->job_us,
		    (unsigned long long)q->fetch_us);
		q->ahead_said = ahead;
	}
	return ahead;
}

/* Fills free slots: from the buffers first, then by fetching (one script
 * call per queue, with the queue's prefetch on top). A job that ends while
 * it starts (a malformed one) marks the pool dirty again. */
static void
qw_pool_fill(struct qw_pool *pool)
{
	unsigned want[pool->nqueues];

	if (!qw_pool_taking(pool))
		return;
	qw_pool_share(pool, want);
	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		unsigned rest = want[i] - qw_queue_start_buffered(q, want[i]);
		unsigned nbuf = q->recs.n[QW_REC_BUFFERED], ahead = qw_queue_ahead(q);
		unsigned extra = ahead > nbuf ? ahead - nbuf : 0;
		unsigned gate = qw_queue_settle_room(q);
		/* Refill the buffer once it is half empty, not for every job. */
		if (extra * 2 < ahead)
			extra = 0;
		if (rest > gate)
			rest = gate;
		if (extra > gate - rest)
			extra = gate - rest;
		if (q->fetch != QW_FETCH_IDLE || q->lease != QW_LEASE_HELD || rest + extra == 0)
			continue;
		if (qw_queue_fetch(q, rest, extra) < 0)
			break;
	}
	qw_workers_kick(pool->workers);
}

/* A wake-up on the queue's blocking connection: pending changed (a push, a
 * retry or requeue coming back, or a fetch trimming it), or the
 * subscription was confirmed (once armed, and every few seconds after,
 * which makes up for any wake-up lost with a connection). It carries no
 * job, only the key's name: look once. */
static void
qw_queue_wake(struct qw_queue *q)
{
	if (q->fetch == QW_FETCH_ASKING)
		/* The fetch in flight may have run before the push: its short
		 * reply must not put the queue to sleep (qw_fetch_reply). */
		q->woken = true;
	else if (q->fetch == QW_FETCH_WAITING)
		qw_queue_fetch_move(q, QW_FETCH_IDLE);
}

static void
qw_block_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;

	if (r == NULL)
		return;		/* connection closed on purpose */
	if (reply == NULL) {
		/* No wake-up until it is back; its first confirmation looks. */
		q->blocking = false;
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
	    reply->element[0]->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(reply->element[0]->str, "subscribe") == 0)
		q->blocking = true;
	qw_queue_wake(q);
}

static void
qw_tracking_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;

	if (r != NULL && reply != NULL && reply->type == REDIS_REPLY_ERROR)
		qw_log_err("queue %s: cannot be told of new jobs: %s (looking every %ds instead)",
		    q->qc.name, qw_redis_errstr(r, reply), QW_REDIS_LONGEST_WAIT_MS / 1000);
}

/* Arms the wake-up on a fresh connection: Redis tells this connection (in
 * RESP2, through the channel __redis__:invalidate) the name of the pending
 * key each time it changes, and nothing else. Pushes made before the
 * subscription is confirmed are found by the look the confirmation starts. */
static void
qw_blk_state(struct qw_redis *r, bool up, void *arg)
{
	struct qw_queue *q = arg;
	char id[24];
	const char *argv[] = { "CLIENT", "TRACKING", "ON", "REDIRECT", id, "BCAST", "PREFIX",
		q->key[K_PENDING] };

	if (!up) {
		q->blocking = false;
		return;
	}
	snprintf(id, sizeof(id), "%lld", qw_redis_client_id(r));
	if (qw_redis_cmd(r, qw_tracking_reply, q, 8, argv, NULL) < 0 ||
	    qw_redis_subscribe(r, "__redis__:invalidate", qw_block_reply, q) < 0)
		qw_log_err("queue %s: cannot subscribe to new jobs: out of memory", q->qc.name);
}

/* Each queue waits on a connection of its own while it has no work. */
static int
qw_queue_open_block(struct qw_queue *q)
{
	char name[100];

	if (q->blk != NULL)
		return 0;
	snprintf(name, sizeof(name), "%s/blocking", q->qc.name);
	q->blk = qw_redis_new(q->pool->base, q->pool->dns, q->pool->conf, name, false, qw_blk_state, q);
	return q->blk == NULL ? -1 : 0;
}

/* Stops waiting: on quiet the wake-ups go on and are ignored (nothing is
 * fetched while quiet); with CLOSE (at shutdown) the connection goes. The
 * unclaim gives back, untouched, what a blocking pop of an older qworkerd
 * with this identity left in the claim list. */
static void
qw_queue_abandon_block(struct qw_queue *q, bool close)
{
	struct qw_pool *pool = q->pool;
	const char *unclaim[] = { q->key[K_CLAIM], q->key[K_PENDING] };

	qw_redis_script(pool->redis, QW_SCRIPT_UNCLAIM, NULL, NULL, 2, 2, unclaim, NULL);
	if (close) {
		qw_redis_free(q->blk);
		q->blk = NULL;
		q->blocking = false;
	}
}

/* ---- moving scheduled jobs ---- */

static void
qw_promote_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	const char *err;

	if (reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		/* It runs five times a second: say so once per problem. */
		err = qw_redis_errstr(r, reply);
		if (qw_pool_problem(&q->promote_err, err))
			qw_log_err("queue %s: moving due scheduled jobs failed: %s (retrying)",
			    q->qc.name, err);
		return;
	}
	if (qw_pool_problem(&q->promote_err, NULL))
		qw_log_notice("queue %s: moving due scheduled jobs works again", q->qc.name);
	if (reply->type == REDIS_REPLY_INTEGER && reply->integer >= QW_PROMOTE_LIMIT)
		event_active(q->promote_ev, EV_TIMEOUT, 0);
}

static void
qw_promote_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_queue *q = arg;
	char limit[16];
	const char *argv[] = { q->key[K_SCHEDULED], q->key[K_PENDING], limit };

	snprintf(limit, sizeof(limit), "%d", QW_PROMOTE_LIMIT);
	if (!qw_pool_stopping(q->pool))
		qw_redis_script(q->pool->redis, QW_SCRIPT_PROMOTE, qw_promote_reply, q, 2, 3,
		    argv, NULL);
}


static void
qw_queue_fetch_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_queue *q = arg;

	/* Look again: fetch once, and wait if that comes back short. */
	if (q->fetch == QW_FETCH_HELD)
		qw_queue_fetch_move(q, QW_FETCH_IDLE);
}

/* ---- setup ------------------------------------------------------------- */

/* The pool holds a plugin reference of its own, so a reload that frees the
 * old configuration never unloads code a worker thread is running. */
static int
qw_queue_start_plugin(struct qw_queue *q)
{
	char *why;

	q->plugin = qw_plugin_load(qw_plugin_path(q->qc.plugin), &why);
	if (q->plugin == NULL) {
		qw_log_err("queue %s: %s", q->qc.name, why ? why : "out of memory");
		free(why);
		errno = why ? 0 : ENOMEM;
		return -1;
	}
	if (qw_plugin_start(q->plugin, q->qc.name, &q->plugin_state) < 0) {
		qw_log_err("queue %s: plugin %s: qw_plugin_init() returned an error", q->qc.name,
		    qw_plugin_path(q->plugin));
		qw_plugin_unload(q->plugin);
		q->plugin = NULL;
		errno = 0;
		return -1;
	}
	return 0;
}

static int
qw_queue_init(struct qw_pool *pool, struct qw_queue *q, const struct qw_queue_conf *qc)
{
	static const char *const names[K_COUNT] = { "pending", "claim", "active", "scheduled",
		"dead", "stats", "leases", "holders", "started" };
	const struct qw_conf *c = pool->conf;

	q->pool = pool;
	q->qc = *qc;
	/* Our own copy of the name: plugins and log lines keep pointing at it
	 * across reloads, which free the configuration it came from. */
	if ((q->name = strdup(qc->name)) == NULL)
		return -1;
	q->qc.name = q->name;
	if (qw_recset_init(&q->recs, q->name) < 0)
		return -1;
	for (int k = 0; k < K_COUNT; k++) {
		int rc = (k == K_CLAIM || k == K_ACTIVE || k == K_STARTED) ?
		    asprintf(&q->key[k], "%s:{%s}:%s:%s", c->prefix, qc->name, names[k], c->instance) :
		    asprintf(&q->key[k], "%s:{%s}:%s", c->prefix, qc->name, names[k]);
		if (rc < 0) {
			q->key[k] = NULL;
			return -1;
		}
	}
	q->promote_ev = event_new(pool->base, -1, EV_PERSIST, qw_promote_cb, q);
	q->fetch_retry_ev = evtimer_new(pool->base, qw_queue_fetch_retry_cb, q);
	q->settle_retry_ev = evtimer_new(pool->base, qw_settle_retry_cb, q);
	if (q->promote_ev == NULL || q->fetch_retry_ev == NULL || q->settle_retry_ev == NULL)
		return -1;
	event_add(q->promote_ev, &(struct timeval){ 0, QW_PROMOTE_MS * 1000 });
	if (qc->plugin != NULL && qw_queue_start_plugin(q) < 0)
		return -1;
	return qw_queue_open_block(q);
}

static void
qw_queue_fini(struct qw_queue *q)
{
	static const enum qw_rec_state holding[] = { QW_REC_RUNNING, QW_REC_CANCELLING,
		QW_REC_FENCED };
	struct qw_rec *rec;

	qw_redis_free(q->blk);
	for (size_t i = 0; q->recs.bucket != NULL && i < 3; i++)
		TAILQ_FOREACH(rec, &q->recs.list[holding[i]], link)
			qw_run_drop(rec->run);
	if (q->recs.bucket != NULL)
		qw_recset_fini(&q->recs);
	if (q->promote_ev != NULL)
		event_free(q->promote_ev);
	if (q->fetch_retry_ev != NULL)
		event_free(q->fetch_retry_ev);
	if (q->settle_retry_ev != NULL)
		event_free(q->settle_retry_ev);
	if (q->lease_ev != NULL)
		event_free(q->lease_ev);
	free(q->reaping);
	free(q->promote_err);
	free(q->fetch_err);
	free(q->lease_wait);
	qw_settle_fini(q);
	for (int k = 0; k < K_COUNT; k++)
		free(q->key[k]);
}

static void
qw_queue_stop_plugin(struct qw_queue *q)
{
	if (q->plugin == NULL)
		return;
	qw_plugin_stop(q->plugin, q->plugin_state);
	qw_plugin_unload(q->plugin);
	q->plugin = NULL;
}

static void
qw_pool_redis_cb(struct qw_redis *r, bool up, void *arg)
{
	qw_pool_redis_state(arg, up);
}

static int
qw_pool_init_env(struct qw_pool *pool)
{
	size_t n = 0;

	for (char **e = environ; *e; e++)
		n++;
	pool->env = calloc(n + 1, sizeof(char *));
	if (pool->env == NULL)
		return -1;
	for (char **e = environ; *e; e++)
		if (strncmp(*e, "QW_", 3) != 0 && strncmp(*e, "NOTIFY_SOCKET=", 14) != 0 &&
		    strncmp(*e, "WATCHDOG_", 9) != 0 && strncmp(*e, "LISTEN_", 7) != 0)
			pool->env[pool->nenv++] = *e;
	return 0;
}

struct qw_pool *
qw_pool_new(struct event_base *base, struct evdns_base *dns, const struct qw_conf *conf,
    struct qw_cts *shutdown, qw_pool_ready_fn *ready, qw_pool_drained_fn *drained, void *arg)
{
	struct qw_pool *pool = calloc(1, sizeof(*pool));
	unsigned char rnd[12];
	int err;

	if (pool == NULL)
		return NULL;
	pool->base = base;
	pool->dns = dns;
	pool->conf = conf;
	pool->concurrency = conf->concurrency;
	pool->shutdown = shutdown;
	pool->stage = QW_STAGE_STARTING;
	pool->drained = drained;
	pool->ready = ready;
	pool->cb_arg = arg;
	pool->seq = 1;
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		goto fail;
	snprintf(pool->runid, sizeof(pool->runid), "%02x%02x%02x%02x%02x%02x-", rnd[0], rnd[1],
	    rnd[2], rnd[3], rnd[4], rnd[5]);
	memcpy(pool->rnd, rnd + 6, sizeof(pool->rnd));
	pool->flush_ev = event_new(base, -1, 0, qw_settle_flush_cb, pool);
	pool->eval_ev = event_new(base, -1, 0, qw_pool_eval_cb, pool);
	pool->execs = qw_execs_new(base);
	pool->workers = qw_workers_new(base);
	if (pool->flush_ev == NULL || pool->eval_ev == NULL || pool->execs == NULL || pool->workers == NULL ||
	    qw_pool_init_env(pool) < 0)
		goto fail;
	pool->queues = calloc(conf->nqueues, sizeof(*pool->queues));
	if (pool->queues == NULL)
		goto fail;
	for (size_t i = 0; i < conf->nqueues; i++) {
		pool->queues[i].pending = -1;
		pool->nqueues++;
		if (qw_queue_init(pool, &pool->queues[i], &conf->queues[i]) < 0)
			goto fail;
	}
	if (qw_lease_init(pool) < 0)
		goto fail;
	pool->redis = qw_redis_new(base, dns, conf, "main", true, qw_pool_redis_cb, pool);
	if (pool->redis == NULL)
		goto fail;
	return pool;
fail:
	err = errno;
	qw_pool_free(pool);
	errno = err;
	return NULL;
}

void
qw_pool_free(struct qw_pool *pool)
{
	if (pool == NULL)
		return;
	qw_redis_free(pool->redis);
	for (size_t i = 0; i < pool->nqueues; i++)
		qw_queue_fini(&pool->queues[i]);
	/* Threads first, then the plugins' fini: no thread may be inside one.
	 * A thread stuck in a plugin keeps its queue's name and state. */
	if (qw_workers_free(pool->workers) == 0) {
		for (size_t i = 0; i < pool->nqueues; i++) {
			qw_queue_stop_plugin(&pool->queues[i]);
			free(pool->queues[i].name);
		}
		free(pool->queues);
	}
	qw_execs_free(pool->execs);
	if (pool->flush_ev != NULL)
		event_free(pool->flush_ev);
	if (pool->giveup_ev != NULL)
		event_free(pool->giveup_ev);
	if (pool->eval_ev != NULL)
		event_free(pool->eval_ev);
	free(pool->env);
	free(pool->holder);
	free(pool->policy_warning);
	free(pool);
}

struct qw_redis *
qw_pool_redis(struct qw_pool *pool)
{
	return pool->redis;
}

/* Redis evicting keys would drop jobs without a trace: say so loudly. */
static void
qw_policy_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_pool *pool = priv;
	char *warning;

	if (reply == NULL || r == NULL)
		return;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[1]->type != REDIS_REPLY_STRING) {
		qw_log_info("cannot read Redis's maxmemory-policy (%s); make sure it is noeviction",
		    qw_redis_errstr(r, reply));
		return;
	}
	free(pool->policy_warning);
	pool->policy_warning = NULL;
	if (strcmp(reply->element[1]->str, "noeviction") == 0)
		return;
	if (asprintf(&warning, "Redis maxmemory-policy is %s, not noeviction: "
	    "Redis may silently drop jobs", reply->element[1]->str) < 0)
		return;
	qw_log_warn("%s", warning);
	pool->policy_warning = warning;
}

void
qw_pool_redis_state(struct qw_pool *pool, bool up)
{
	const char *argv[] = { "CONFIG", "GET", "maxmemory-policy" };

	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		/* A fetch in flight moves to OFF with its lost reply. After the
		 * gap the active hash is read again before fetching: whatever a
		 * lost fetch took is found there. */
		if (!up && q->fetch != QW_FETCH_OFF && q->fetch != QW_FETCH_ASKING)
			qw_queue_fetch_move(q, QW_FETCH_OFF);
		else if (up)
			qw_lease_start(q);
	}
	if (!up)
		return;
	if (pool->stage == QW_STAGE_STARTING)
		qw_pool_stage_move(pool, QW_STAGE_LEASING);
	qw_redis_cmd(pool->redis, qw_policy_reply, pool, 3, argv, NULL);
	event_active(pool->flush_ev, EV_TIMEOUT, 0);
	qw_pool_dirty(pool);
}

/* READY=1 once every queue holds its lease and has recovered what was left. */
static void
qw_pool_check_ready(struct qw_pool *pool)
{
	if (pool->ready_sent || qw_pool_stopping(pool))
		return;
	for (size_t i = 0; i < pool->nqueues; i++)
		if (pool->queues[i].fetch == QW_FETCH_OFF ||
		    pool->queues[i].fetch == QW_FETCH_RECONCILING)
			return;
	pool->ready_sent = true;
	if (pool->stage == QW_STAGE_LEASING)
		qw_pool_stage_move(pool, QW_STAGE_RUNNING);
	pool->ready(pool, pool->cb_arg);
}

static void
qw_pending_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;

	q->pending = reply != NULL && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
}

void
qw_pool_poll(struct qw_pool *pool)
{
	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		const char *argv[] = { "LLEN", q->key[K_PENDING] };
		if (qw_redis_cmd(pool->redis, qw_pending_reply, q, 2, argv, NULL) < 0)
			q->pending = -1;
	}
}

void
qw_pool_status(const struct qw_pool *pool, char *buf, size_t len)
{
	size_t off;

	off = (size_t)snprintf(buf, len, "%u/%u busy, %llu processed, %llu failed; pending",
	    qw_pool_busy(pool), pool->concurrency, (unsigned long long)pool->processed,
	    (unsigned long long)pool->failed);
	for (size_t i = 0; i < pool->nqueues && off < len; i++) {
		const struct qw_queue *q = &pool->queues[i];
		off += (size_t)(q->pending >= 0 ?
		    snprintf(buf + off, len - off, " %s=%lld", q->qc.name, (long long)q->pending) :
		    snprintf(buf + off, len - off, " %s=?", q->qc.name));
	}
	for (size_t i = 0; i < pool->nqueues && off < len; i++) {
		const struct qw_queue *q = &pool->queues[i];
		const char *why;
		unsigned held = qw_settle_held(q, &why);
		if (held > 0)
			off += (size_t)snprintf(buf + off, len - off, "; %s: %s%u results cannot be "
			    "written: %s", q->qc.name, qw_queue_settle_room(q) == 0 ?
			    "fetching stopped: " : "", held, why);
	}
	if (pool->policy_warning != NULL && off < len)
		off += (size_t)snprintf(buf + off, len - off, "; WARNING: %s", pool->policy_warning);
	for (size_t i = 0; i < pool->nqueues && off < len; i++)
		if (pool->queues[i].lease_wait != NULL)
			off += (size_t)snprintf(buf + off, len - off, "; queue %s: %s",
			    pool->queues[i].qc.name, pool->queues[i].lease_wait);
}

const char *
qw_pool_lease_wait(const struct qw_pool *pool)
{
	for (size_t i = 0; i < pool->nqueues; i++)
		if (pool->queues[i].lease_wait != NULL)
			return pool->queues[i].lease_wait;
	return NULL;
}

void
qw_pool_quiet(struct qw_pool *pool, bool quiet)
{
	enum qw_stage to = quiet ? QW_STAGE_QUIET :
	    pool->ready_sent ? QW_STAGE_RUNNING : QW_STAGE_LEASING;

	if ((pool->stage == QW_STAGE_QUIET) == quiet || qw_pool_stage_move(pool, to) < 0)
		return;
	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		if (quiet) {
			qw_queue_abandon_block(q, false);
			qw_queue_give_back(q);
			continue;
		}
		/* Look once; wait again if there is nothing. */
		if (q->fetch == QW_FETCH_WAITING)
			qw_queue_fetch_move(q, QW_FETCH_IDLE);
		if (qw_queue_open_block(q) < 0)
			qw_log_err("queue %s: out of memory opening its connection", q->qc.name);
	}
}

int
qw_pool_reconfigure(struct qw_pool *pool, const struct qw_conf *conf, const char **why)
{
	const struct qw_queue_conf *match[pool->nqueues];
	const char *ml = conf->metrics_listen, *oml = pool->conf->metrics_listen;

	*why = "the set of queues, prefix and instance cannot change without a restart";
	if (conf->nqueues != pool->nqueues || strcmp(conf->prefix, pool->conf->prefix) != 0 ||
	    strcmp(conf->instance, pool->conf->instance) != 0)
		return -1;
	/* Queues are matched by name, so reordering the sections is fine. */
	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		match[i] = NULL;
		for (size_t j = 0; j < conf->nqueues; j++)
			if (strcmp(conf->queues[j].name, q->qc.name) == 0)
				match[i] = &conf->queues[j];
		if (match[i] == NULL)
			return -1;
		if ((q->plugin == NULL) != (match[i]->plugin == NULL) || (q->plugin != NULL &&
		    strcmp(qw_plugin_path(match[i]->plugin), qw_plugin_path(q->plugin)) != 0)) {
			*why = "a queue's plugin cannot change without a restart";
			return -1;
		}
	}
	if ((ml == NULL) != (oml == NULL) || (ml != NULL && strcmp(ml, oml) != 0)) {
		*why = "metrics_listen cannot change without a restart";
		return -1;
	}
	pool->conf = conf;
	pool->concurrency = conf->concurrency;
	for (size_t i = 0; i < pool->nqueues; i++) {
		pool->queues[i].qc = *match[i];
		pool->queues[i].qc.name = pool->queues[i].name;
	}
	qw_redis_reconfigure(pool->redis, conf);
	for (size_t i = 0; i < pool->nqueues; i++)
		if (pool->queues[i].blk != NULL)
			qw_redis_reconfigure(pool->queues[i].blk, conf);
	qw_pool_dirty(pool);
	return 0;
}


/* ---- draining ---------------------------------------------------------- */

static void
qw_pool_done(struct qw_pool *pool)
{
	if (qw_pool_stage_move(pool, QW_STAGE_DONE) == 0)
		pool->drained(pool, pool->cb_arg);
}

/* Whether anything of the drain is left: a job running or buffered, a fetch
 * in flight, or a result not written. */
static bool
qw_pool_drain_left(const struct qw_pool *pool)
{
	if (qw_pool_busy(pool) > 0 || qw_settle_unwritten(pool) > 0)
		return true;
	for (size_t i = 0; i < pool->nqueues; i++)
		if (pool->queues[i].fetch == QW_FETCH_ASKING ||
		    pool->queues[i].recs.n[QW_REC_BUFFERED] > 0)
			return true;
	return false;
}

static void
qw_pool_check_drained(struct qw_pool *pool)
{
	if (pool->stage == QW_STAGE_DRAINING && !qw_pool_drain_left(pool)) {
		if (!qw_redis_is_up(pool->redis)) {
			qw_pool_done(pool);
			return;
		}
		qw_pool_stage_move(pool, QW_STAGE_RELEASING);
		qw_lease_release(pool);
	}
	if (pool->stage == QW_STAGE_RELEASING && pool->releasing == 0)
		qw_pool_done(pool);
}

/* Past the drain budget with Redis still away: give up waiting. The jobs
 * stay in our active hash, where the next start recovers them. */
static void
qw_pool_giveup_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_pool *pool = arg;

	if (pool->stage != QW_STAGE_DRAINING && pool->stage != QW_STAGE_RELEASING)
		return;
	qw_log_err("%u results could not be written to Redis; the jobs stay in flight "
	    "and are recovered by the next start", qw_settle_unwritten(pool));
	qw_pool_done(pool);
}

/* Stops taking jobs. Running jobs end through their tokens, which the
 * daemon's shutdown source cancels at the shutdown deadline; GIVEUP_MS
 * bounds how long we wait for Redis to take their results. */
void
qw_pool_shutdown(struct qw_pool *pool, uint64_t giveup_ms)
{
	if (!qw_pool_stopping(pool)) {
		qw_pool_stage_move(pool, QW_STAGE_DRAINING);
		for (size_t i = 0; i < pool->nqueues; i++) {
			qw_queue_abandon_block(&pool->queues[i], true);
			qw_queue_give_back(&pool->queues[i]);
		}
		pool->giveup_ev = evtimer_new(pool->base, qw_pool_giveup_cb, pool);
	}
	if (pool->giveup_ev != NULL)
		qw_clock_arm(pool->giveup_ev, giveup_ms);
	qw_pool_dirty(pool);
}

/* ---- the re-evaluation ------------------------------------------------- */

#ifdef QW_DEBUG
/* Every record is in the list of its state, once, and holds a run exactly
 * while it runs; a queue holds asked-for slots exactly while it asks. */
static void
qw_queue_assert(const struct qw_queue *q)
{
	size_t total = 0;

	for (int s = QW_REC_BUFFERED; s < QW_REC_NSTATES; s++) {
		const struct qw_rec *rec;
		unsigned n = 0;
		TAILQ_FOREACH(rec, &q->recs.list[s], link) {
			assert(rec->state == (enum qw_rec_state)s && rec->q == q);
			assert((rec->run != NULL) == (s == QW_REC_RUNNING || s == QW_REC_CANCELLING ||
			    s == QW_REC_FENCED));
			assert(rec->run == NULL || rec->run->rec == rec);
			n++;
		}
		assert(n == q->recs.n[s]);
		total += n;
	}
	assert(total == q->recs.count && q->recs.n[QW_REC_NEW] == 0);
	assert((q->fetch == QW_FETCH_ASKING) == (q->asked > 0));
	assert(q->asked_slots <= q->asked);
}
#endif

static void
qw_pool_eval_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_pool *pool = arg;

	qw_pool_check_ready(pool);
	qw_pool_fill(pool);
	qw_pool_check_drained(pool);
#ifdef QW_DEBUG
	for (size_t i = 0; i < pool->nqueues; i++)
		qw_queue_assert(&pool->queues[i]);
#endif
}

void
qw_pool_stats(const struct qw_pool *pool, struct qw_pool_stats *st)
{
	st->busy = qw_pool_busy(pool);
	st->total = pool->concurrency;
	st->processed = pool->processed;
	st->failed = pool->failed;
	st->recovered = pool->recovered;
	st->unsettled = qw_settle_unwritten(pool);
}

size_t
qw_pool_nqueues(const struct qw_pool *pool)
{
	return pool->nqueues;
}

void
qw_pool_queue_info(const struct qw_pool *pool, size_t i, struct qw_pool_queue_info *qi)
{
	const struct qw_queue *q = &pool->queues[i];

	qi->name = q->qc.name;
	qi->running = q->recs.n[QW_REC_RUNNING] + q->recs.n[QW_REC_CANCELLING] +
	    q->recs.n[QW_REC_FENCED];
	qi->pending = q->pending;
}
