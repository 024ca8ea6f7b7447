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

#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec.h"
#include "log.h"
#include "pool_int.h"
#include "token.h"

extern char **environ;

static void qw_queue_block(struct qw_queue *q);
static int qw_queue_open_block(struct qw_queue *q);

int64_t
qw_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
qw_arm(struct event *ev, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}

static bool
qw_pool_can_fetch(const struct qw_pool *pool)
{
	return pool->fetching && !pool->stopping && qw_redis_is_up(pool->redis);
}

/* Takes ownership of FIELD and ELEM: a job taken from Redis that waits here
 * for a slot (prefetch). */
static int
qw_queue_buffer(struct qw_queue *q, char *field, char *elem, size_t len)
{
	struct qw_taken *t = malloc(sizeof(*t));

	if (t == NULL) {
		free(field);
		free(elem);
		return -1;
	}
	t->field = field;
	t->elem = elem;
	t->len = len;
	TAILQ_INSERT_TAIL(&q->buffer, t, link);
	q->nbuffered++;
	return 0;
}

/* Gives every taken-but-not-started job back to the tail of pending as it
 * was, oldest nearest the tail: on quiet and on shutdown. */
void
qw_queue_give_back(struct qw_queue *q)
{
	struct qw_taken *t;

	while ((t = TAILQ_LAST(&q->buffer, qw_takens)) != NULL) {
		TAILQ_REMOVE(&q->buffer, t, link);
		q->nbuffered--;
		qw_queue_add_op(q, t->field, 'p', t->elem, t->len, 0, "", NULL);
		free(t);
	}
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
	size_t got = 0;

	pool->busy -= q->asked_slots;
	q->asked = q->asked_slots = 0;
	q->fetching = false;
	if (reply == NULL) {
		/* Whatever the script took is in the active hash: reconcile finds it. */
		q->reconciled = false;
		qw_pool_check_drained(pool);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY) {
		qw_log_err("queue %s: fetch failed: %s (retrying in 1s)", q->qc.name,
		    qw_redis_errstr(r, reply));
		q->hold = true;
		qw_arm(q->retry_ev, 1000);
		qw_pool_check_drained(pool);
		return;
	}
	got = reply->elements;
	/* Jobs too large to run went to dead inside Redis: only their count
	 * comes back, never their bytes. */
	if (got > 0 && reply->element[got - 1]->type == REDIS_REPLY_INTEGER) {
		qw_log_warn("queue %s: %lld job(s) larger than max_payload moved to dead",
		    q->qc.name, reply->element[--got]->integer);
	}
	for (size_t i = 0; i < got; i++) {
		redisReply *e = reply->element[i];
		char *field = qw_pool_field(pool, q->first_seq + i), *elem = malloc(e->len + 1);
		if (field == NULL || elem == NULL) {
			qw_log_err("queue %s: out of memory taking a job; left for recovery", q->qc.name);
			free(field);
			free(elem);
			continue;
		}
		memcpy(elem, e->str, e->len);
		elem[e->len] = '\0';
		qw_queue_buffer(q, field, elem, e->len);
	}
	if (!qw_pool_can_fetch(pool)) {
		/* Quiet or stopping since the fetch left: none of these starts. */
		qw_queue_give_back(q);
		qw_pool_check_drained(pool);
		return;
	}
	if (got < asked) {
		q->empty = true;
		qw_queue_block(q);
	}
	qw_pool_fill(pool);
}

/* Asks for SLOTS jobs to run now plus EXTRA to keep at hand. */
static int
qw_queue_fetch(struct qw_queue *q, unsigned slots, unsigned extra)
{
	struct qw_pool *pool = q->pool;
	unsigned n;

	/* One script call moves at most QW_FETCH_MAX jobs: bounded work for
	 * Redis, and far below what Lua's unpack can take. */
	if (slots > QW_FETCH_MAX)
		slots = QW_FETCH_MAX;
	if (extra > QW_FETCH_MAX - slots)
		extra = QW_FETCH_MAX - slots;
	n = slots + extra;
	char nb[16], seqb[24], maxp[24], maxj[24], deadmax[24];
	const char *argv[] = { q->key[K_PENDING], q->key[K_CLAIM], q->key[K_ACTIVE],
		q->key[K_DEAD], q->key[K_STATS], nb, seqb, pool->runid, maxp, maxj, deadmax };

	snprintf(nb, sizeof(nb), "%u", n);
	snprintf(seqb, sizeof(seqb), "%llu", (unsigned long long)pool->seq);
	snprintf(maxp, sizeof(maxp), "%llu", (unsigned long long)q->qc.max_payload);
	snprintf(maxj, sizeof(maxj), "%llu", (unsigned long long)qw_job_json_max(&q->qc));
	snprintf(deadmax, sizeof(deadmax), "%llu", (unsigned long long)q->qc.dead_max);
	if (qw_redis_script(pool->redis, QW_SCRIPT_FETCH, qw_fetch_reply, q, 5, 11, argv, NULL) < 0)
		return -1;
	q->fetching = true;
	q->first_seq = pool->seq;
	pool->seq += n;
	q->asked = n;
	q->asked_slots = slots;
	pool->busy += slots;
	return 0;
}

static unsigned
qw_queue_cap(const struct qw_queue *q)
{
	return q->qc.concurrency ? q->qc.concurrency : q->pool->concurrency;
}

static bool
qw_queue_fetchable(const struct qw_queue *q)
{
	return !q->empty && !q->hold && !q->fetching && q->reconciled;
}

/* Whether the queue can take one more slot, WANT already promised to it. */
static bool
qw_queue_eligible(const struct qw_queue *q, unsigned want)
{
	if (q->running + q->asked_slots + want >= qw_queue_cap(q))
		return false;
	return want < q->nbuffered || qw_queue_fetchable(q);
}

/* Hands free slots to queues by smooth weighted round robin. */
static void
qw_pool_share(struct qw_pool *pool, unsigned *want)
{
	unsigned free_slots = pool->concurrency > pool->busy ? pool->concurrency - pool->busy : 0;

	memset(want, 0, pool->nqueues * sizeof(*want));
	while (free_slots > 0) {
		struct qw_queue *best = NULL;
		int total = 0;
		for (size_t i = 0; i < pool->nqueues; i++) {
			struct qw_queue *q = &pool->queues[i];
			if (!qw_queue_eligible(q, want[i]))
				continue;
			q->cw += (int)q->qc.weight;
			total += (int)q->qc.weight;
			if (best == NULL || q->cw > best->cw)
				best = q;
		}
		if (best == NULL)
			break;
		best->cw -= total;
		want[best - pool->queues]++;
		free_slots--;
	}
}

/* Starts up to N jobs of Q from its buffer; returns how many it started. */
static unsigned
qw_queue_start_buffered(struct qw_queue *q, unsigned n)
{
	struct qw_taken *t;
	unsigned started = 0;

	while (started < n && (t = TAILQ_FIRST(&q->buffer)) != NULL) {
		TAILQ_REMOVE(&q->buffer, t, link);
		q->nbuffered--;
		qw_queue_start_job(q, t->field, t->elem, t->len);
		free(t);
		started++;
	}
	return started;
}

/* Fills free slots: from the buffers first, then by fetching (one script
 * call per queue, with the queue's prefetch on top). Re-entered when a job
 * ends while starting (a malformed job does), so it loops instead. */
void
qw_pool_fill(struct qw_pool *pool)
{
	unsigned want[pool->nqueues];

	if (pool->filling) {
		pool->refill = true;
		return;
	}
	pool->filling = true;
	do {
		pool->refill = false;
		if (!qw_pool_can_fetch(pool))
			break;
		qw_pool_share(pool, want);
		for (size_t i = 0; i < pool->nqueues; i++) {
			struct qw_queue *q = &pool->queues[i];
			unsigned rest = want[i] - qw_queue_start_buffered(q, want[i]);
			unsigned extra = q->qc.prefetch > q->nbuffered ? q->qc.prefetch - q->nbuffered : 0;
			/* Refill the buffer once it is half empty, not for every job. */
			if (extra * 2 < q->qc.prefetch)
				extra = 0;
			if (!qw_queue_fetchable(q) || rest + extra == 0)
				continue;
			if (qw_queue_fetch(q, rest, extra) < 0)
				break;
		}
	} while (pool->refill);
	pool->filling = false;
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
	if (q->fetching) {
		/* The fetch in flight may have run before the push: a short
		 * reply must not put the queue to sleep (qw_queue_block). */
		q->woken = true;
		return;
	}
	if (!q->empty)
		return;
	q->empty = false;
	qw_pool_fill(q->pool);
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

/* A fetch came back short: the queue now waits for a wake-up, unless one
 * came while the fetch was in flight. The wait is armed for as long as the
 * blocking connection is up (qw_blk_state), and carries no job: a job
 * never leaves pending but through the fetch script, however large it is,
 * so quiet and shutdown have nothing to give back from it. */
static void
qw_queue_block(struct qw_queue *q)
{
	if (q->woken)
		q->empty = false;
	q->woken = false;
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

	if (reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR)
		qw_log_err("queue %s: moving due scheduled jobs failed: %s", q->qc.name,
		    qw_redis_errstr(r, reply));
	else if (reply->type == REDIS_REPLY_INTEGER && reply->integer >= QW_PROMOTE_LIMIT)
		event_active(q->promote_ev, EV_TIMEOUT, 0);
}

static void
qw_promote_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_queue *q = arg;
	char limit[16];
	const char *argv[] = { q->key[K_SCHEDULED], q->key[K_PENDING], limit };

	snprintf(limit, sizeof(limit), "%d", QW_PROMOTE_LIMIT);
	if (!q->pool->stopping)
		qw_redis_script(q->pool->redis, QW_SCRIPT_PROMOTE, qw_promote_reply, q, 2, 3,
		    argv, NULL);
}

static void
qw_queue_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_queue *q = arg;

	q->hold = false;
	/* Look again: fetch once, and block if that comes back short. A queue
	 * left "empty" here would never ask Redis again. */
	q->empty = false;
	event_active(q->pool->flush_ev, EV_TIMEOUT, 0);
	qw_pool_fill(q->pool);
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
		return -1;
	}
	if (qw_plugin_start(q->plugin, q->qc.name, &q->plugin_state) < 0) {
		qw_log_err("queue %s: plugin %s: its init failed", q->qc.name,
		    qw_plugin_path(q->plugin));
		qw_plugin_unload(q->plugin);
		q->plugin = NULL;
		return -1;
	}
	return 0;
}

static int
qw_queue_init(struct qw_pool *pool, struct qw_queue *q, const struct qw_queue_conf *qc)
{
	static const char *const names[K_COUNT] = { "pending", "claim", "active", "scheduled",
		"dead", "stats", "leases", "holders" };
	const struct qw_conf *c = pool->conf;

	q->pool = pool;
	q->qc = *qc;
	/* Our own copy of the name: plugins and log lines keep pointing at it
	 * across reloads, which free the configuration it came from. */
	if ((q->name = strdup(qc->name)) == NULL)
		return -1;
	q->qc.name = q->name;
	TAILQ_INIT(&q->ops);
	TAILQ_INIT(&q->runs);
	TAILQ_INIT(&q->buffer);
	for (int k = 0; k < K_COUNT; k++) {
		int rc = (k == K_CLAIM || k == K_ACTIVE) ?
		    asprintf(&q->key[k], "%s:{%s}:%s:%s", c->prefix, qc->name, names[k], c->instance) :
		    asprintf(&q->key[k], "%s:{%s}:%s", c->prefix, qc->name, names[k]);
		if (rc < 0) {
			q->key[k] = NULL;
			return -1;
		}
	}
	q->promote_ev = event_new(pool->base, -1, EV_PERSIST, qw_promote_cb, q);
	q->retry_ev = evtimer_new(pool->base, qw_queue_retry_cb, q);
	if (q->promote_ev == NULL || q->retry_ev == NULL)
		return -1;
	event_add(q->promote_ev, &(struct timeval){ 0, QW_PROMOTE_MS * 1000 });
	if (qc->plugin != NULL && qw_queue_start_plugin(q) < 0)
		return -1;
	return qw_queue_open_block(q);
}

static void
qw_queue_fini(struct qw_queue *q)
{
	struct qw_run *run;
	struct qw_op *op;

	qw_redis_free(q->blk);
	while ((run = TAILQ_FIRST(&q->runs)) != NULL) {
		TAILQ_REMOVE(&q->runs, run, link);
		qw_run_free(run);
	}
	while ((op = TAILQ_FIRST(&q->ops)) != NULL) {
		TAILQ_REMOVE(&q->ops, op, link);
		qw_op_free(op);
	}
	struct qw_taken *t;
	while ((t = TAILQ_FIRST(&q->buffer)) != NULL) {
		TAILQ_REMOVE(&q->buffer, t, link);
		free(t->field);
		free(t->elem);
		free(t);
	}
	if (q->promote_ev != NULL)
		event_free(q->promote_ev);
	if (q->retry_ev != NULL)
		event_free(q->retry_ev);
	if (q->lease_ev != NULL)
		event_free(q->lease_ev);
	free(q->reaping);
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

	if (pool == NULL)
		return NULL;
	pool->base = base;
	pool->dns = dns;
	pool->conf = conf;
	pool->concurrency = conf->concurrency;
	pool->shutdown = shutdown;
	pool->fetching = true;
	pool->drained = drained;
	pool->ready = ready;
	pool->cb_arg = arg;
	pool->seq = 1;
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		goto fail;
	snprintf(pool->runid, sizeof(pool->runid), "%02x%02x%02x%02x%02x%02x-", rnd[0], rnd[1],
	    rnd[2], rnd[3], rnd[4], rnd[5]);
	memcpy(pool->rnd, rnd + 6, sizeof(pool->rnd));
	pool->flush_ev = event_new(base, -1, 0, qw_pool_flush_cb, pool);
	pool->execs = qw_execs_new(base);
	pool->workers = qw_workers_new(base);
	if (pool->flush_ev == NULL || pool->execs == NULL || pool->workers == NULL ||
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
	qw_pool_free(pool);
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
	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		if (!up) {
			q->reconciled = false;
			continue;
		}
		/* After a gap, assume work may be waiting: fetch once to find out. */
		q->empty = false;
		qw_lease_start(q);
	}
	if (up) {
		const char *argv[] = { "CONFIG", "GET", "maxmemory-policy" };
		qw_redis_cmd(pool->redis, qw_policy_reply, pool, 3, argv, NULL);
		event_active(pool->flush_ev, EV_TIMEOUT, 0);
		qw_pool_check_drained(pool);
	}
}

/* READY=1 once every queue holds its lease and has recovered what was left. */
void
qw_pool_maybe_ready(struct qw_pool *pool)
{
	for (size_t i = 0; i < pool->nqueues; i++)
		if (!pool->queues[i].reconciled)
			return;
	if (!pool->ready_called) {
		pool->ready_called = true;
		pool->ready(pool, pool->cb_arg);
	}
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
	    pool->busy, pool->concurrency, (unsigned long long)pool->processed,
	    (unsigned long long)pool->failed);
	for (size_t i = 0; i < pool->nqueues && off < len; i++) {
		const struct qw_queue *q = &pool->queues[i];
		off += (size_t)(q->pending >= 0 ?
		    snprintf(buf + off, len - off, " %s=%lld", q->qc.name, (long long)q->pending) :
		    snprintf(buf + off, len - off, " %s=?", q->qc.name));
	}
	if (pool->policy_warning != NULL && off < len)
		snprintf(buf + off, len - off, "; WARNING: %s", pool->policy_warning);
}

void
qw_pool_set_fetching(struct qw_pool *pool, bool on)
{
	if (pool->stopping || pool->fetching == on)
		return;
	pool->fetching = on;
	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		if (!on) {
			qw_queue_abandon_block(q, false);
			qw_queue_give_back(q);
		} else {
			q->empty = false;	/* look once; block again if there is nothing */
			if (qw_queue_open_block(q) < 0)
				qw_log_err("queue %s: out of memory opening its connection", q->qc.name);
		}
	}
	qw_pool_fill(pool);
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
	qw_pool_fill(pool);
	return 0;
}

/* ---- draining ---------------------------------------------------------- */


void
qw_pool_check_drained(struct qw_pool *pool)
{
	if (!pool->stopping || pool->drained_called || pool->busy > 0 ||
	    qw_pool_unsettled(pool) > 0)
		return;
	for (size_t i = 0; i < pool->nqueues; i++)
		if (pool->queues[i].fetching || pool->queues[i].nbuffered > 0)
			return;
	if (pool->releasing > 0)
		return;
	if (qw_redis_is_up(pool->redis)) {
		qw_lease_release(pool);
		if (pool->releasing > 0)
			return;
	}
	pool->drained_called = true;
	pool->drained(pool, pool->cb_arg);
}

/* Past the drain budget with Redis still away: give up waiting. The jobs
 * stay in our active hash, where the next start recovers them. */
static void
qw_pool_giveup_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_pool *pool = arg;

	if (pool->drained_called)
		return;
	qw_log_err("%u results could not be written to Redis; the jobs stay in flight "
	    "and are recovered by the next start", qw_pool_unsettled(pool));
	pool->drained_called = true;
	pool->drained(pool, pool->cb_arg);
}

/* Stops taking jobs. Running jobs end through their tokens, which the
 * daemon's shutdown source cancels at the shutdown deadline; GIVEUP_MS
 * bounds how long we wait for Redis to take their results. */
void
qw_pool_shutdown(struct qw_pool *pool, uint64_t giveup_ms)
{
	if (!pool->stopping) {
		pool->stopping = true;
		for (size_t i = 0; i < pool->nqueues; i++) {
			qw_queue_abandon_block(&pool->queues[i], true);
			qw_queue_give_back(&pool->queues[i]);
		}
		pool->giveup_ev = evtimer_new(pool->base, qw_pool_giveup_cb, pool);
	}
	if (pool->giveup_ev != NULL)
		qw_arm(pool->giveup_ev, giveup_ms);
	qw_pool_check_drained(pool);
}

void
qw_pool_stats(const struct qw_pool *pool, struct qw_pool_stats *st)
{
	st->busy = pool->busy;
	st->total = pool->concurrency;
	st->processed = pool->processed;
	st->failed = pool->failed;
	st->recovered = pool->recovered;
	st->unsettled = qw_pool_unsettled(pool);
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
	qi->running = q->running;
	qi->pending = q->pending;
}
