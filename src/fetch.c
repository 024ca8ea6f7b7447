/* fetch.c - owns taking jobs from Redis for one queue: its fetch state
 * machine (see enum qw_fetch_state in pool_int.h), the fetch script call
 * and its reply, the buffer of jobs taken ahead and how large it should be
 * (prefetch), the wake-up connection that tells an empty queue of new jobs,
 * and moving due scheduled jobs to pending. Which queue gets free slots,
 * and when to fetch, is pool.c's. */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cluster.h"
#include "decide.h"
#include "flow.h"
#include "fmt.h"
#include "log.h"
#include "pool_int.h"

#define B(s) (1u << (s))
static const char *const qw_fetch_names[QW_FETCH_NSTATES] = {
	[QW_FETCH_OFF] = "off", [QW_FETCH_RECONCILING] = "reconciling", [QW_FETCH_IDLE] = "idle",
	[QW_FETCH_ASKING] = "asking", [QW_FETCH_WAITING] = "waiting", [QW_FETCH_HELD] = "held",
	[QW_FETCH_PAUSED] = "paused", [QW_FETCH_LIMITED] = "limited",
};

static const unsigned qw_fetch_moves[QW_FETCH_NSTATES] = {
	[QW_FETCH_OFF] = B(QW_FETCH_RECONCILING),
	[QW_FETCH_RECONCILING] = B(QW_FETCH_IDLE) | B(QW_FETCH_OFF),
	[QW_FETCH_IDLE] = B(QW_FETCH_ASKING) | B(QW_FETCH_HELD) | B(QW_FETCH_PAUSED) |
	    B(QW_FETCH_OFF),
	[QW_FETCH_ASKING] = B(QW_FETCH_IDLE) | B(QW_FETCH_WAITING) | B(QW_FETCH_HELD) |
	    B(QW_FETCH_PAUSED) | B(QW_FETCH_LIMITED) | B(QW_FETCH_OFF),
	[QW_FETCH_WAITING] = B(QW_FETCH_IDLE) | B(QW_FETCH_HELD) | B(QW_FETCH_PAUSED) |
	    B(QW_FETCH_OFF),
	[QW_FETCH_HELD] = B(QW_FETCH_IDLE) | B(QW_FETCH_PAUSED) | B(QW_FETCH_OFF),
	[QW_FETCH_PAUSED] = B(QW_FETCH_IDLE) | B(QW_FETCH_OFF),
	[QW_FETCH_LIMITED] = B(QW_FETCH_IDLE) | B(QW_FETCH_PAUSED) | B(QW_FETCH_OFF),
};
#undef B

int
qw_fetch_move(struct qw_queue *q, enum qw_fetch_state to)
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

/* A record of a job taken from Redis that waits here for a slot. Takes
 * ownership of ELEM. */
static int
qw_fetch_buffer(struct qw_queue *q, const char *field, size_t flen, uint64_t seq, char *elem,
    size_t len, int64_t seen_ms)
{
	struct qw_rec *rec = qw_record_new_copy(&q->recs, q, field, flen);

	if (rec == NULL) {
		free(elem);
		return -1;
	}
	rec->seq = seq;
	rec->seen_ms = seen_ms;
	rec->elem = elem;
	rec->len = len;
	return qw_record_move(&q->recs, rec, QW_REC_BUFFERED);
}

/* Gives every taken-but-not-started job back to the tail of pending as it
 * was, oldest nearest the tail: on quiet and on shutdown. */
void
qw_fetch_give_back(struct qw_queue *q)
{
	struct qw_rec *rec;

	while ((rec = TAILQ_LAST(&q->recs.list[QW_REC_BUFFERED], qw_recs)) != NULL) {
		if (qw_record_finish(&q->recs, rec, QW_DEST_PENDING, rec->elem, rec->len, 0, "") < 0)
			break;
	}
	qw_settle_soon(q);
}

/* A field of ours: the run id and a sequence number. */
#define QW_FETCH_FIELD_LEN (sizeof(((struct qw_pool *)0)->runid) + QW_FMT_U64_LEN)

/* "RUNID" followed by SEQ in decimal, without printf, into F; its length. */
static size_t
qw_fetch_field(const struct qw_pool *pool, uint64_t seq, char f[QW_FETCH_FIELD_LEN])
{
	size_t rl = strlen(pool->runid);

	memcpy(f, pool->runid, rl);
	return rl + qw_fmt_u64(f + rl, seq);
}

/* Says in the log when the queue's pause changes: once per change, however
 * many times it is seen (each tick, after each reconnect). */
static void
qw_fetch_say_paused(struct qw_queue *q, bool paused)
{
	if (paused == q->paused_seen)
		return;
	q->paused_seen = paused;
	if (paused)
		qw_log_notice("queue %s: paused (%s exists): no job of it starts; running jobs "
		    "finish", q->qc.name, q->key[K_PAUSED]);
	else
		qw_log_notice("queue %s: resumed (%s is gone): taking jobs again", q->qc.name,
		    q->key[K_PAUSED]);
}

/* The queue is paused (PAUSED true) or not, as Redis just said. Paused, its
 * buffered jobs go back to the tail of pending untouched and it takes no
 * more; a fetch in flight was sent after the check and so sees the key
 * itself (its reply moves the state). */
static void
qw_fetch_paused(struct qw_queue *q, bool paused)
{
	qw_fetch_say_paused(q, paused);
	if (paused) {
		if (q->recs.n[QW_REC_BUFFERED] > 0)
			qw_fetch_give_back(q);
		if (q->fetch == QW_FETCH_IDLE || q->fetch == QW_FETCH_WAITING ||
		    q->fetch == QW_FETCH_HELD || q->fetch == QW_FETCH_ASKING ||
		    q->fetch == QW_FETCH_LIMITED)
			qw_fetch_move(q, QW_FETCH_PAUSED);
	} else if (q->fetch == QW_FETCH_PAUSED) {
		qw_fetch_move(q, QW_FETCH_IDLE);
	}
}

static void
qw_fetch_paused_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;

	if (reply == NULL)
		return;
	if (reply->type != REDIS_REPLY_INTEGER) {
		const char *err = qw_redis_errstr(r, reply);
		if (qw_log_changed(&q->pause_err, err))
			qw_log_err("queue %s: cannot tell whether it is paused: %s", q->qc.name, err);
		return;
	}
	if (qw_log_changed(&q->pause_err, NULL))
		qw_log_notice("queue %s: telling whether it is paused works again", q->qc.name);
	/* A fetch in flight left after this check: its own reply says. */
	if (q->fetch != QW_FETCH_ASKING || reply->integer == 0)
		qw_fetch_paused(q, reply->integer != 0);
	else if (q->recs.n[QW_REC_BUFFERED] > 0)
		qw_fetch_give_back(q);
}

/* Each lease tick: the fetch script refuses a paused queue by itself, but a
 * queue that does not fetch (waiting for a wake-up, or busy with its
 * buffer) learns of a pause, and a paused one of its end, only here. */
void
qw_fetch_check_paused(struct qw_queue *q)
{
	const char *argv[] = { "EXISTS", q->key[K_PAUSED] };

	if (q->fetch == QW_FETCH_OFF || q->fetch == QW_FETCH_RECONCILING ||
	    qw_pool_stopping(q->pool))
		return;
	qw_redis_cmd(qw_pool_queue_redis(q), qw_fetch_paused_reply, q, 2, argv, NULL);
}

bool
qw_fetch_flow_on(const struct qw_queue *q)
{
	return q->qc.breaker_failures > 0 || q->qc.rate.n > 0 || q->qc.global_concurrency > 0;
}

/* The fetch reply's flow status (flow.h): the breaker as it is now, its
 * move when this call made one (logged here, by this instance alone), and
 * how long a limit holds the queue back (0: it does not). */
static uint64_t
qw_fetch_flow(struct qw_queue *q, const redisReply *st)
{
	struct qw_flow_seen fs;

	if (qw_flow_parse(st->str, st->len, &fs) < 0) {
		if (qw_log_changed(&q->flow_err, "unreadable"))
			qw_log_err("queue %s: the fetch script's flow status is unreadable (a bug); "
			    "asking again in a second", q->qc.name);
		return 1000;
	}
	qw_log_changed(&q->flow_err, NULL);
	if (fs.moved)
		qw_flow_say_moved(q->qc.name, fs.from, fs.state, q->qc.breaker_failures,
		    q->qc.breaker_cooldown_ms);
	q->breaker_seen = fs.breaker ? fs.state : QW_BREAKER_CLOSED;
	return fs.wait_ms;
}

void
qw_fetch_settled(struct qw_queue *q)
{
	if (q->fetch == QW_FETCH_LIMITED && q->qc.global_concurrency > 0)
		qw_fetch_move(q, QW_FETCH_IDLE);
}

static void
qw_fetch_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	struct qw_pool *pool = q->pool;
	unsigned asked = q->asked;
	bool lost = false, woken = q->woken;
	uint64_t wait_ms = 0;
	size_t got;
	int64_t seen_ms;

	q->asked = q->asked_slots = 0;
	q->woken = false;
	if (reply != NULL && reply->type == REDIS_REPLY_ARRAY)
		q->fetch_us = qw_decide_smooth(q->fetch_us, qw_clock_mono_us() - q->asked_us, 3, 3);
	if (reply == NULL) {
		/* Whatever the script took is in the active hash: reconcile finds it. */
		qw_fetch_move(q, QW_FETCH_OFF);
		return;
	}
	if (qw_redis_unconfirmed(reply)) {
		/* wait_replicas: the claim may not outlive a failover, so its
		 * jobs do not start. They are in the active hash: the reconcile
		 * after the next lease renewal puts them back on pending, as for
		 * a fetch whose reply was lost, and that result is confirmed in
		 * turn (settle.c). If the master fails over first, either the
		 * new one has the claim (reconcile gives the jobs back there) or
		 * it does not (they are still in its pending, and the result is
		 * skipped, the job not being in the active hash): each job is
		 * in pending once, and none ran. */
		if (qw_log_changed(&q->fetch_err, reply->str))
			qw_log_err("queue %s: jobs taken are not started: %s; they go back to "
			    "pending", q->qc.name, reply->str);
		qw_fetch_move(q, QW_FETCH_OFF);
		return;
	}
	if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PAUSED") == 0) {
		qw_fetch_paused(q, true);
		if (q->lease != QW_LEASE_HELD)
			qw_fetch_move(q, QW_FETCH_OFF);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY) {
		const char *err = qw_redis_errstr(r, reply);
		if (qw_log_changed(&q->fetch_err, err))
			qw_log_err("queue %s: fetch failed: %s (retrying every second)", q->qc.name,
			    err);
		qw_fetch_move(q, QW_FETCH_HELD);
		qw_clock_arm(q->fetch_retry_ev, 1000);
		return;
	}
	if (qw_log_changed(&q->fetch_err, NULL))
		qw_log_notice("queue %s: fetching works again", q->qc.name);
	qw_fetch_say_paused(q, false);
	got = reply->elements;
	if (got > 0 && reply->element[got - 1]->type == REDIS_REPLY_STATUS)
		wait_ms = qw_fetch_flow(q, reply->element[--got]);
	/* Jobs too large to run went to dead inside Redis: only their count
	 * comes back, never their bytes. */
	if (got > 0 && reply->element[got - 1]->type == REDIS_REPLY_INTEGER) {
		qw_log_warn("queue %s: %lld job(s) larger than max_payload moved to dead",
		    q->qc.name, reply->element[--got]->integer);
	}
	seen_ms = qw_clock_wall_ms();
	for (size_t i = 0; i < got; i++) {
		redisReply *e = reply->element[i];
		char field[QW_FETCH_FIELD_LEN], *elem;
		size_t flen = qw_fetch_field(pool, q->first_seq + i, field);
		if (e->type != REDIS_REPLY_STRING || (elem = qw_redis_take_str(e)) == NULL) {
			lost = true;
			continue;
		}
		if (qw_fetch_buffer(q, field, flen, q->first_seq + i, elem, e->len, seen_ms) < 0)
			lost = true;
	}
	if (lost)
		qw_log_err("queue %s: out of memory taking jobs; reading them again", q->qc.name);
	if (!qw_pool_taking(pool) || q->lease != QW_LEASE_HELD)
		/* Quiet, stopping or fenced since the fetch left: none of these
		 * starts. */
		qw_fetch_give_back(q);
	else if (got == 0 && q->breaker_seen != QW_BREAKER_CLOSED && q->recs.n[QW_REC_BUFFERED] > 0)
		/* Taken ahead before a reload turned the breaker on, say: they
		 * wait in pending as the breaker says, untouched. */
		qw_fetch_give_back(q);
	/* A job we could not keep is in the active hash only: reconcile it. A
	 * short reply waits for a wake-up, unless one came while it was on its
	 * way: the push may have come after the script ran. Fenced since the
	 * fetch left: fetch no more until the lease is ours again and
	 * reconcile has checked these jobs. */
	if (!lost && q->lease == QW_LEASE_HELD && wait_ms > 0) {
		qw_fetch_move(q, QW_FETCH_LIMITED);
		qw_clock_arm(q->fetch_retry_ev, wait_ms < QW_FLOW_WAIT_MAX_MS ? wait_ms :
		    QW_FLOW_WAIT_MAX_MS);
		return;
	}
	qw_fetch_move(q, lost || q->lease != QW_LEASE_HELD ? QW_FETCH_OFF :
	    got < asked && !woken ? QW_FETCH_WAITING :
	    QW_FETCH_IDLE);
}

/* Asks for SLOTS jobs to run now plus EXTRA to keep at hand. */
int
qw_fetch_ask(struct qw_queue *q, unsigned slots, unsigned extra)
{
	struct qw_pool *pool = q->pool;
	char nb[QW_FMT_U64_LEN], seqb[QW_FMT_U64_LEN], maxp[QW_FMT_U64_LEN];
	char maxj[QW_FMT_U64_LEN], deadmax[QW_FMT_U64_LEN];
	char bf[QW_FMT_U64_LEN], cool[QW_FMT_U64_LEN], rn[QW_FMT_U64_LEN], per[QW_FMT_U64_LEN];
	char gc[QW_FMT_U64_LEN], full[QW_FMT_U64_LEN];
	const char *argv[] = { q->key[K_PENDING], q->key[K_CLAIM], q->key[K_ACTIVE],
		q->key[K_DEAD], q->key[K_STATS], q->key[K_UNIQUE], q->key[K_PAUSED],
		q->key[K_BREAKER], q->key[K_RATE], q->key[K_LEASES], nb, seqb, pool->runid, maxp,
		maxj, deadmax, bf, cool, rn, per, gc, q->active_any, full };
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
	qw_fmt_u64(bf, q->qc.breaker_failures);
	qw_fmt_u64(cool, q->qc.breaker_cooldown_ms);
	qw_fmt_u64(rn, q->qc.rate.n);
	qw_fmt_u64(per, q->qc.rate.period_ms);
	qw_fmt_u64(gc, q->qc.global_concurrency);
	qw_fmt_u64(full, QW_FLOW_RETRY_MS);
	if (qw_redis_script_wait(qw_pool_queue_redis(q), QW_SCRIPT_FETCH, pool->conf->wait_replicas,
	    pool->conf->wait_timeout_ms, qw_fetch_reply, q, 10, 23, argv, NULL) < 0)
		return -1;
	qw_fetch_move(q, QW_FETCH_ASKING);
	q->asked_us = qw_clock_mono_us();
	q->first_seq = pool->seq;
	pool->seq += n;
	q->asked = n;
	q->asked_slots = slots;
	return 0;
}

/* ---- prefetch ---------------------------------------------------------- */

void
qw_fetch_job_ran(struct qw_queue *q, uint64_t ran_us)
{
	/* A longer run counts at once, a shorter one slowly: taking long jobs
	 * ahead keeps them from idle instances, while too small a buffer for
	 * short ones costs only some speed until it grows again. */
	q->job_us = qw_decide_smooth(q->job_us, ran_us, 1, 3);
}

/* How many jobs Q keeps taken ahead of its free slots: its prefetch, or
 * with prefetch = auto what qw_decide_prefetch makes of the times measured. */
unsigned
qw_fetch_prefetch(const struct qw_queue *q)
{
	unsigned cap = qw_pool_cap(q);
	struct qw_prefetch_in in = { .job_us = q->job_us, .fetch_us = q->fetch_us,
		.slots = cap < q->pool->concurrency ? cap : q->pool->concurrency,
		.max = QW_FETCH_MAX };

	/* A queue under a flow limit takes no job ahead: the fetch script
	 * counts a job as started when it takes it. */
	if (qw_fetch_flow_on(q))
		return 0;
	return q->qc.prefetch != QW_PREFETCH_AUTO ? q->qc.prefetch : qw_decide_prefetch(&in);
}

/* qw_fetch_prefetch, and the log line when auto has moved it far. */
unsigned
qw_fetch_ahead(struct qw_queue *q)
{
	unsigned ahead = qw_fetch_prefetch(q);

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

/* A wake-up on the queue's blocking connection: pending changed (a push, a
 * retry or requeue coming back, or a fetch trimming it), or the
 * subscription was confirmed (once armed, and every few seconds after,
 * which makes up for any wake-up lost with a connection). It carries no
 * job, only the key's name: look once. */
static void
qw_fetch_wake(struct qw_queue *q)
{
	if (q->fetch == QW_FETCH_ASKING)
		/* The fetch in flight may have run before the push: its short
		 * reply must not put the queue to sleep (qw_fetch_reply). */
		q->woken = true;
	else if (q->fetch == QW_FETCH_WAITING)
		qw_fetch_move(q, QW_FETCH_IDLE);
}

static void
qw_fetch_wake_reply(struct qw_redis *r, redisReply *reply, void *priv)
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
	qw_fetch_wake(q);
}

static void
qw_fetch_tracking_reply(struct qw_redis *r, redisReply *reply, void *priv)
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
qw_fetch_wake_state(struct qw_redis *r, bool up, void *arg)
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
	if (qw_redis_cmd(r, qw_fetch_tracking_reply, q, 8, argv, NULL) < 0 ||
	    qw_redis_subscribe(r, "__redis__:invalidate", qw_fetch_wake_reply, q) < 0)
		qw_log_err("queue %s: cannot subscribe to new jobs: out of memory", q->qc.name);
}

/* Each queue waits on a connection of its own while it has no work. */
int
qw_fetch_open_wake(struct qw_queue *q)
{
	char name[100];

	if (q->blk != NULL)
		return 0;
	snprintf(name, sizeof(name), "%s/blocking", q->qc.name);
	if (q->pool->cluster != NULL) {
		/* To the queue's master: opened when the map names one. */
		const char *addr = qw_cluster_addr(q->pool->cluster, q->slot);
		if (addr == NULL)
			return 0;
		q->blk = qw_redis_new_node(q->pool->base, q->pool->dns, q->pool->conf, addr, name,
		    false, qw_fetch_wake_state, q);
		return q->blk == NULL ? -1 : 0;
	}
	q->blk = qw_redis_new(q->pool->base, q->pool->dns, q->pool->sentinel, q->pool->conf, name,
	    false, qw_fetch_wake_state, q);
	return q->blk == NULL ? -1 : 0;
}

/* Stops waiting: on quiet the wake-ups go on and are ignored (nothing is
 * fetched while quiet); with CLOSE (at shutdown) the connection goes. The
 * unclaim gives back, untouched, what a blocking pop of an older qworkerd
 * with this identity left in the claim list. */
void
qw_fetch_abandon_wake(struct qw_queue *q, bool close)
{
	const char *unclaim[] = { q->key[K_CLAIM], q->key[K_PENDING] };

	qw_redis_script(qw_pool_queue_redis(q), QW_SCRIPT_UNCLAIM, NULL, NULL, 2, 2, unclaim, NULL);
	if (close) {
		qw_redis_free(q->blk);
		q->blk = NULL;
		q->blocking = false;
	}
}

/* ---- moving scheduled jobs ---- */

static void
qw_fetch_promote_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	const char *err;

	if (reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		/* It runs five times a second: say so once per problem. */
		err = qw_redis_errstr(r, reply);
		if (qw_log_changed(&q->promote_err, err))
			qw_log_err("queue %s: moving due scheduled jobs failed: %s (retrying)",
			    q->qc.name, err);
		return;
	}
	if (qw_log_changed(&q->promote_err, NULL))
		qw_log_notice("queue %s: moving due scheduled jobs works again", q->qc.name);
	if (reply->type == REDIS_REPLY_INTEGER && reply->integer >= QW_PROMOTE_LIMIT)
		event_active(q->promote_ev, EV_TIMEOUT, 0);
}

static void
qw_fetch_promote_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_queue *q = arg;
	char limit[16];
	const char *argv[] = { q->key[K_SCHEDULED], q->key[K_PENDING], limit };

	snprintf(limit, sizeof(limit), "%d", QW_PROMOTE_LIMIT);
	if (!qw_pool_stopping(q->pool))
		qw_redis_script(qw_pool_queue_redis(q), QW_SCRIPT_PROMOTE, qw_fetch_promote_reply,
		    q, 2, 3,
		    argv, NULL);
}

static void
qw_fetch_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_queue *q = arg;

	/* Look again: fetch once, and wait if that comes back short. */
	if (q->fetch == QW_FETCH_HELD || q->fetch == QW_FETCH_LIMITED)
		qw_fetch_move(q, QW_FETCH_IDLE);
}

/* Sets up the queue's fetching: the promote tick, the retry timer and the
 * connection that wakes it. */
int
qw_fetch_init(struct qw_queue *q)
{
	struct qw_pool *pool = q->pool;

	q->promote_ev = event_new(pool->base, -1, EV_PERSIST, qw_fetch_promote_cb, q);
	q->fetch_retry_ev = evtimer_new(pool->base, qw_fetch_retry_cb, q);
	if (q->promote_ev == NULL || q->fetch_retry_ev == NULL)
		return -1;
	event_add(q->promote_ev, &(struct timeval){ 0, QW_PROMOTE_MS * 1000 });
	return qw_fetch_open_wake(q);
}
