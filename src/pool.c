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
#include "cluster.h"
#include "decide.h"
#include "exec.h"
#include "fmt.h"
#include "log.h"
#include "pool_int.h"
#include "sentinel.h"
#include "token.h"

extern char **environ;


static void qw_pool_eval_cb(evutil_socket_t fd, short what, void *arg);


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
bool
qw_pool_taking(const struct qw_pool *pool)
{
	return (pool->stage == QW_STAGE_STARTING || pool->stage == QW_STAGE_LEASING ||
	    pool->stage == QW_STAGE_RUNNING) &&
	    (pool->cluster != NULL || qw_redis_is_up(pool->redis));
}

bool
qw_pool_stopping(const struct qw_pool *pool)
{
	return pool->stage >= QW_STAGE_DRAINING;
}






unsigned
qw_pool_cap(const struct qw_queue *q)
{
	unsigned cap = q->qc.concurrency ? q->qc.concurrency : q->pool->concurrency;

	if (q->worker != NULL && qw_worker_group_capacity(q->worker) < cap)
		cap = qw_worker_group_capacity(q->worker);
	return cap;
}

const char *
qw_pool_handler_name(const struct qw_queue *q)
{
	if (q->plugin != NULL)
		return qw_plugin_path(q->plugin);
	return q->qc.worker_argv != NULL ? q->qc.worker_argv[0] : q->qc.argv[0];
}

/* A worker queue takes no more than its ready processes have room for,
 * less the slots a fetch in flight holds for them. */
static unsigned
qw_pool_worker_room(const struct qw_queue *q, unsigned room)
{
	unsigned free_now;

	if (q->worker == NULL)
		return room;
	free_now = qw_worker_group_room(q->worker);
	free_now = free_now > q->asked_slots ? free_now - q->asked_slots : 0;
	return room < free_now ? room : free_now;
}

/* The fetch gate's bound: what the queue may hold in its active hash while
 * its results may not be writable. */
static unsigned
qw_pool_settle_room(const struct qw_queue *q)
{
	return qw_settle_room(q, qw_pool_cap(q) + qw_fetch_prefetch(q));
}

/* How many more slots the queue could use now: up to its cap, and only as
 * many as it has buffered while it cannot fetch, or as the fetch gate lets
 * it take on top of them; none while its lease is not ours (SPEC 10). */
static unsigned
qw_pool_room(const struct qw_queue *q)
{
	unsigned used = q->recs.n[QW_REC_RUNNING] + q->recs.n[QW_REC_CANCELLING] +
	    q->recs.n[QW_REC_FENCED] + q->asked_slots;
	unsigned cap = qw_pool_cap(q), room = used < cap ? cap - used : 0;
	unsigned nbuf = q->recs.n[QW_REC_BUFFERED], gate = qw_pool_settle_room(q);

	if (q->lease != QW_LEASE_HELD || q->fetch == QW_FETCH_PAUSED)
		return 0;
	room = qw_pool_worker_room(q, room);
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
		qs[i].room = qw_pool_room(&pool->queues[i]);
		qs[i].cw = pool->queues[i].cw;
	}
	qw_decide_share(qs, pool->nqueues, free_slots, want);
	for (size_t i = 0; i < pool->nqueues; i++)
		pool->queues[i].cw = qs[i].cw;
}

/* Says in Redis that this process starts every job of Q up to the N-th
 * buffered one, before it starts them: recovery counts a run only for the
 * jobs it started, and gives the ones only taken ahead (prefetch) back as
 * they were. It says so for up to QW_STARTED_AHEAD (or the queue's
 * concurrency, when larger) more at once, so that a busy queue writes this
 * once per that many jobs rather than once a loop turn: each write is a
 * command Redis wakes up for, and at the concurrency alone these cost a
 * no-op drain about 15 % of Redis's CPU. A crash then counts a run for at
 * most that many jobs that had not started. The command is written to the
 * socket at once, so that a plugin that brings the daemon down with its
 * first instructions is still counted (and a job that keeps doing so ends
 * in dead). */
static void
qw_pool_say_started(struct qw_queue *q, unsigned n)
{
	struct qw_rec *rec, *need = NULL, *upto = NULL;
	unsigned ahead = qw_pool_cap(q) > QW_STARTED_AHEAD ? qw_pool_cap(q) : QW_STARTED_AHEAD;
	char seq[QW_FMT_U64_LEN];
	const char *argv[] = { "HSET", q->key[K_STARTED], q->pool->runid, seq };

	TAILQ_FOREACH(rec, &q->recs.list[QW_REC_BUFFERED], link) {
		if (n > 0 && --n == 0)
			need = rec;
		upto = rec;
		if (need != NULL && ahead-- == 0)
			break;
	}
	if (need == NULL)
		need = upto;
	if (need == NULL || need->seq <= q->started_sent)
		return;
	qw_fmt_u64(seq, upto->seq);
	if (qw_redis_cmd(qw_pool_queue_redis(q), NULL, NULL, 4, argv, NULL) == 0) {
		qw_redis_flush(qw_pool_queue_redis(q));
		q->started_sent = upto->seq;
	}
}

/* Starts up to N jobs of Q from its buffer; returns how many it started. */
static unsigned
qw_pool_start_buffered(struct qw_queue *q, unsigned n)
{
	struct qw_rec *rec;
	unsigned started = 0;

	if (n > 0)
		qw_pool_say_started(q, n);
	while (started < n && (rec = TAILQ_FIRST(&q->recs.list[QW_REC_BUFFERED])) != NULL) {
		qw_run_start(rec);
		started++;
	}
	return started;
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
		unsigned rest = want[i] - qw_pool_start_buffered(q, want[i]);
		unsigned nbuf = q->recs.n[QW_REC_BUFFERED], ahead = qw_fetch_ahead(q);
		unsigned extra = ahead > nbuf ? ahead - nbuf : 0;
		unsigned gate = qw_pool_settle_room(q);
		/* Refill the buffer once it is half empty, not for every job. */
		if (extra * 2 < ahead)
			extra = 0;
		if (rest > gate)
			rest = gate;
		if (extra > gate - rest)
			extra = gate - rest;
		if (q->fetch != QW_FETCH_IDLE || q->lease != QW_LEASE_HELD || rest + extra == 0)
			continue;
		if (qw_fetch_ask(q, rest, extra) < 0)
			break;
	}
	qw_workers_kick(pool->workers);
}











/* ---- setup ------------------------------------------------------------- */

/* The pool holds a plugin reference of its own, so a reload that frees the
 * old configuration never unloads code a worker thread is running. */
static int
qw_pool_start_plugin(struct qw_queue *q)
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

static void
qw_pool_worker_changed(void *arg)
{
	qw_pool_dirty(arg);
}

static void
qw_pool_worker_conf(const struct qw_pool *pool, const struct qw_queue *q,
    const struct qw_queue_conf *qc, struct qw_worker_conf *wc)
{
	wc->queue = q->name;
	wc->argv = qc->worker_argv;
	wc->env = pool->env;
	wc->nenv = pool->nenv;
	wc->processes = qc->worker_processes;
	wc->inflight = qc->worker_inflight;
	wc->max_jobs = qc->worker_max_jobs;
	wc->kill_grace_ms = pool->conf->kill_grace_ms;
}

/* Starts a worker queue's processes (SPEC 12). */
static int
qw_pool_start_workers(struct qw_queue *q)
{
	struct qw_worker_conf wc;

	qw_pool_worker_conf(q->pool, q, &q->qc, &wc);
	q->worker = qw_worker_group_new(q->pool->base, q->pool->execs, &wc,
	    qw_pool_worker_changed, q->pool);
	return q->worker == NULL ? -1 : 0;
}

static int
qw_pool_init_queue(struct qw_pool *pool, struct qw_queue *q, const struct qw_queue_conf *qc)
{
	const struct qw_conf *c = pool->conf;

	q->pool = pool;
	q->qc = *qc;
	/* Our own copy of the name: plugins and log lines keep pointing at it
	 * across reloads, which free the configuration it came from. */
	if ((q->name = strdup(qc->name)) == NULL)
		return -1;
	q->qc.name = q->name;
	if (qw_record_set_init(&q->recs, q->name) < 0)
		return -1;
	for (int k = 0; k < K_COUNT; k++) {
		int rc = qw_keys_per_instance(k) ?
		    asprintf(&q->key[k], "%s:{%s}:%s:%s", c->prefix, qc->name, qw_keys_word(k),
		    c->instance) :
		    asprintf(&q->key[k], "%s:{%s}:%s", c->prefix, qc->name, qw_keys_word(k));
		if (rc < 0) {
			q->key[k] = NULL;
			return -1;
		}
	}
	if (asprintf(&q->active_any, "%s:{%s}:active:", c->prefix, qc->name) < 0) {
		q->active_any = NULL;
		return -1;
	}
	q->slot = qw_cluster_slot(q->key[K_PENDING], strlen(q->key[K_PENDING]));
	q->settle_retry_ev = evtimer_new(pool->base, qw_settle_retry_cb, q);
	q->deadline_ev = evtimer_new(pool->base, qw_run_deadline_cb, q);
	if (q->settle_retry_ev == NULL || q->deadline_ev == NULL || qw_fetch_init(q) < 0)
		return -1;
	if (qc->plugin != NULL && qw_pool_start_plugin(q) < 0)
		return -1;
	if (qc->worker_argv != NULL && qw_pool_start_workers(q) < 0)
		return -1;
	return 0;
}

static void
qw_pool_fini_queue(struct qw_queue *q)
{
	static const enum qw_rec_state holding[] = { QW_REC_RUNNING, QW_REC_CANCELLING,
		QW_REC_FENCED };
	struct qw_rec *rec;

	qw_redis_free(q->blk);
	for (size_t i = 0; q->recs.bucket != NULL && i < 3; i++)
		TAILQ_FOREACH(rec, &q->recs.list[holding[i]], link)
			qw_run_drop(rec->run);
	qw_worker_group_free(q->worker);
	qw_run_spares_free(q);
	if (q->recs.bucket != NULL)
		qw_record_set_fini(&q->recs);
	if (q->promote_ev != NULL)
		event_free(q->promote_ev);
	if (q->fetch_retry_ev != NULL)
		event_free(q->fetch_retry_ev);
	if (q->settle_retry_ev != NULL)
		event_free(q->settle_retry_ev);
	if (q->deadline_ev != NULL)
		event_free(q->deadline_ev);
	if (q->lease_ev != NULL)
		event_free(q->lease_ev);
	free(q->reaping);
	free(q->promote_err);
	free(q->fetch_err);
	free(q->pause_err);
	free(q->active_any);
	free(q->flow_err);
	free(q->cancel_err);
	free(q->lease_wait);
	qw_settle_fini(q);
	for (int k = 0; k < K_COUNT; k++)
		free(q->key[k]);
}

static void
qw_pool_stop_plugin(struct qw_queue *q)
{
	if (q->plugin == NULL)
		return;
	qw_plugin_stop(q->plugin, q->plugin_state);
	qw_plugin_unload(q->plugin);
	q->plugin = NULL;
}

static void qw_pool_queue_link(struct qw_queue *q, bool up);

/* The map names another master for Q's slot: Q leaves the old one as if
 * its connection went (the active hash is read again on the new one) and
 * its wake-up connection moves there. */
static void
qw_pool_relink(struct qw_queue *q)
{
	struct qw_pool *pool = q->pool;
	struct qw_redis *r = qw_cluster_redis(pool->cluster, q->slot);
	bool wake = q->blk != NULL || !qw_pool_stopping(pool);

	if (r == q->link)
		return;
	if (q->link != NULL && qw_redis_is_up(q->link))
		qw_pool_queue_link(q, false);
	qw_log_info("queue %s: slot %u is served by %s", q->qc.name, q->slot,
	    r != NULL ? qw_cluster_addr(pool->cluster, q->slot) : "no master");
	q->link = r;
	qw_redis_free(q->blk);
	q->blk = NULL;
	q->blocking = false;
	if (wake && qw_fetch_open_wake(q) < 0)
		qw_log_err("queue %s: out of memory opening its connection", q->qc.name);
	if (r != NULL && qw_redis_is_up(r))
		qw_pool_queue_link(q, true);
}

/* From cluster.c: NODE's connection went UP or down (the control
 * connection's stands for Redis as a whole: CONFIG, STATUS=), or, NODE
 * NULL, the map changed. */
static void
qw_pool_cluster_cb(void *arg, struct qw_redis *node, bool up)
{
	struct qw_pool *pool = arg;

	if (node == pool->redis) {
		qw_pool_redis_state(pool, up);
		return;
	}
	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		if (node == NULL)
			qw_pool_relink(q);
		else if (q->link == node)
			qw_pool_queue_link(q, up);
	}
	if (node != NULL && up) {
		event_active(pool->flush_ev, EV_TIMEOUT, 0);
		qw_pool_dirty(pool);
	}
}

struct qw_redis *
qw_pool_queue_redis(const struct qw_queue *q)
{
	struct qw_redis *r;

	if (q->pool->cluster == NULL ||
	    (r = qw_cluster_redis(q->pool->cluster, q->slot)) == NULL)
		return q->pool->redis;
	return r;
}

struct qw_redis *
qw_pool_key_redis(struct qw_pool *pool, const char *key)
{
	struct qw_redis *r;

	if (pool->cluster == NULL ||
	    (r = qw_cluster_redis(pool->cluster, qw_cluster_slot(key, strlen(key)))) == NULL)
		return pool->redis;
	return r;
}

void
qw_pool_cluster_status(const struct qw_pool *pool, char *buf, size_t len)
{
	size_t masters, up;

	if (pool->cluster == NULL) {
		snprintf(buf, len, "%s", "");
		return;
	}
	qw_cluster_counts(pool->cluster, &masters, &up);
	snprintf(buf, len, "cluster: %zu of %zu masters up", up, masters);
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
	if (conf->nsentinels > 0 && (pool->sentinel = qw_sentinel_new(base, conf)) == NULL)
		goto fail;
	/* Before the queues: each opens its wake-up connection to its master. */
	if (conf->cluster) {
		pool->cluster = qw_cluster_new(base, dns, conf, qw_pool_cluster_cb, pool);
		if (pool->cluster == NULL)
			goto fail;
		pool->redis = qw_cluster_control(pool->cluster);
	}
	pool->queues = calloc(conf->nqueues, sizeof(*pool->queues));
	if (pool->queues == NULL)
		goto fail;
	for (size_t i = 0; i < conf->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		q->pending = q->scheduled = q->dead = -1;
		pool->nqueues++;
		if (qw_pool_init_queue(pool, &pool->queues[i], &conf->queues[i]) < 0)
			goto fail;
	}
	if (qw_lease_init(pool) < 0)
		goto fail;
	if (pool->cluster == NULL &&
	    (pool->redis = qw_redis_new(base, dns, pool->sentinel, conf, "main", true,
	    qw_pool_redis_cb, pool)) == NULL)
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
	if (pool->cluster != NULL)
		qw_cluster_free(pool->cluster);	/* and its control connection, redis */
	else
		qw_redis_free(pool->redis);
	for (size_t i = 0; i < pool->nqueues; i++)
		qw_pool_fini_queue(&pool->queues[i]);
	/* Threads first, then the plugins' fini: no thread may be inside one.
	 * A thread stuck in a plugin keeps its queue's name and state. */
	if (qw_workers_free(pool->workers) == 0) {
		for (size_t i = 0; i < pool->nqueues; i++) {
			qw_pool_stop_plugin(&pool->queues[i]);
			free(pool->queues[i].name);
		}
		free(pool->queues);
	}
	qw_sentinel_free(pool->sentinel);	/* after every connection it names the master to */
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
qw_pool_policy_reply(struct qw_redis *r, redisReply *reply, void *priv)
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

/* Q's connection came up or went. */
static void
qw_pool_queue_link(struct qw_queue *q, bool up)
{
	/* A fetch in flight moves to OFF with its lost reply. After the
	 * gap the active hash is read again before fetching: whatever a
	 * lost fetch took is found there. */
	if (!up && q->fetch != QW_FETCH_OFF && q->fetch != QW_FETCH_ASKING)
		qw_fetch_move(q, QW_FETCH_OFF);
	else if (up)
		qw_lease_start(q);
}

void
qw_pool_redis_state(struct qw_pool *pool, bool up)
{
	const char *argv[] = { "CONFIG", "GET", "maxmemory-policy" };

	/* In a cluster, the queues follow their masters' connections. */
	for (size_t i = 0; i < pool->nqueues && pool->cluster == NULL; i++)
		qw_pool_queue_link(&pool->queues[i], up);
	if (!up)
		return;
	if (pool->stage == QW_STAGE_STARTING)
		qw_pool_stage_move(pool, QW_STAGE_LEASING);
	qw_redis_cmd(pool->redis, qw_pool_policy_reply, pool, 3, argv, NULL);
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

/* PRIV is the figure the reply is for. A key of the wrong type (a
 * producer's mistake) leaves it unknown, not 0. */
static void
qw_pool_gauge_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	int64_t *v = priv;

	if (r != NULL)
		*v = reply != NULL && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
}

/* One small command per figure, all written in one go (hiredis sends what
 * a loop turn queued together) and each O(1) in Redis. */
void
qw_pool_poll(struct qw_pool *pool)
{
	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		const struct { const char *cmd; int k; int64_t *v; } ask[] = {
			{ "LLEN", K_PENDING, &q->pending }, { "ZCARD", K_SCHEDULED, &q->scheduled },
			{ "LLEN", K_DEAD, &q->dead },
		};
		for (size_t a = 0; a < sizeof(ask) / sizeof(ask[0]); a++) {
			const char *argv[] = { ask[a].cmd, q->key[ask[a].k] };
			if (qw_redis_cmd(qw_pool_queue_redis(q), qw_pool_gauge_reply, ask[a].v, 2, argv, NULL) < 0)
				*ask[a].v = -1;
		}
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
			    "written: %s", q->qc.name, qw_pool_settle_room(q) == 0 ?
			    "fetching stopped: " : "", held, why);
	}
	for (size_t i = 0; i < pool->nqueues && off < len; i++) {
		const struct qw_queue *q = &pool->queues[i];
		const char *trouble = q->worker ? qw_worker_group_trouble(q->worker) : NULL;

		if (q->paused_seen)
			off += (size_t)snprintf(buf + off, len - off, "; queue %s paused", q->qc.name);
		if (q->qc.breaker_failures > 0 && q->breaker_seen != QW_BREAKER_CLOSED && off < len)
			off += (size_t)snprintf(buf + off, len - off, "; queue %s breaker %s",
			    q->qc.name, qw_flow_breaker_name(q->breaker_seen));
		if (trouble != NULL && off < len)
			off += (size_t)snprintf(buf + off, len - off, "; queue %s: %s", q->qc.name,
			    trouble);
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
			qw_fetch_abandon_wake(q, false);
			qw_fetch_give_back(q);
			continue;
		}
		/* Look once; wait again if there is nothing. */
		if (q->fetch == QW_FETCH_WAITING)
			qw_fetch_move(q, QW_FETCH_IDLE);
		if (qw_fetch_open_wake(q) < 0)
			qw_log_err("queue %s: out of memory opening its connection", q->qc.name);
	}
}

static bool
qw_pool_same_sentinels(const struct qw_conf *a, const struct qw_conf *b)
{
	if (a->nsentinels != b->nsentinels)
		return false;
	for (size_t i = 0; i < a->nsentinels; i++)
		if (strcmp(a->sentinels[i], b->sentinels[i]) != 0)
			return false;
	return a->nsentinels == 0 || strcmp(a->master_name, b->master_name) == 0;
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
	*why = "cluster and a cluster's address cannot change without a restart";
	if (conf->cluster != pool->conf->cluster ||
	    (conf->cluster && strcmp(conf->redis_address, pool->conf->redis_address) != 0))
		return -1;
	*why = "the set of queues, prefix and instance cannot change without a restart";
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
		if ((q->worker == NULL) != (match[i]->worker_argv == NULL)) {
			*why = "a queue cannot change to or from worker = without a restart";
			return -1;
		}
	}
	if ((ml == NULL) != (oml == NULL) || (ml != NULL && strcmp(ml, oml) != 0)) {
		*why = "metrics_listen cannot change without a restart";
		return -1;
	}
	if (!qw_pool_same_sentinels(conf, pool->conf)) {
		*why = "sentinels and master_name cannot change without a restart";
		return -1;
	}
	pool->conf = conf;
	pool->concurrency = conf->concurrency;
	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		struct qw_worker_conf wc;
		q->qc = *match[i];
		q->qc.name = q->name;
		if (q->worker == NULL)
			continue;
		/* As an exec queue's next job runs the program as it is now:
		 * the old processes get S, new ones start. */
		qw_pool_worker_conf(pool, q, &q->qc, &wc);
		qw_worker_group_reconfigure(q->worker, &wc);
	}
	if (pool->sentinel != NULL)
		qw_sentinel_reconfigure(pool->sentinel, conf);
	if (pool->cluster != NULL)
		qw_cluster_reconfigure(pool->cluster, conf);
	else
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
		    pool->queues[i].recs.n[QW_REC_BUFFERED] > 0 ||
		    (pool->queues[i].worker != NULL &&
		    qw_worker_group_live(pool->queues[i].worker) > 0))
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
			qw_fetch_abandon_wake(&pool->queues[i], true);
			qw_fetch_give_back(&pool->queues[i]);
			if (pool->queues[i].worker != NULL)
				qw_worker_group_stop(pool->queues[i].worker);
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
qw_pool_assert_queue(const struct qw_queue *q)
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
		qw_pool_assert_queue(&pool->queues[i]);
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
	qi->slots = qw_pool_cap(q);
	qi->pending = q->pending;
	qi->scheduled = q->scheduled;
	qi->dead = q->dead;
	qi->paused = q->paused_seen ? 1 : 0;
	qi->breaker = q->qc.breaker_failures > 0 && q->breaker_seen != QW_BREAKER_CLOSED;
	qi->tally = &q->tally;
}
