/* lease.c - owns instance leases and recovery (SPEC 4, "qworkerd died").
 *
 * Each instance holds a lease per queue (qw:{Q}:leases, renewed every
 * QW_LEASE_TICK_MS) and says who it is in qw:{Q}:holders: host, boot id,
 * pid and process start time. When a lease expires, any live instance puts
 * the dead one's jobs back. A successor on the same host does not wait for
 * the lease: when the holder's pid no longer runs with that start time (or
 * the host rebooted), the predecessor is provably gone.
 *
 * At start, and after every reconnect, the active hash is reconciled with
 * what this process knows: fields of an earlier process with our identity
 * are recovered (attempt + 1), our own unknown fields (a fetch whose reply
 * was lost) go back untouched. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lease.h"
#include "log.h"
#include "pool_int.h"

/* ---- who we are -------------------------------------------------------- */

static int
qw_read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");

	if (f == NULL)
		return -1;
	if (fgets(buf, (int)len, f) == NULL) {
		fclose(f);
		return -1;
	}
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

/* Field 22 of /proc/PID/stat: start time in clock ticks since boot. */
static int
qw_proc_starttime(long pid, unsigned long long *start)
{
	char path[64], buf[1024], *p;
	int field = 2;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if (qw_read_line(path, buf, sizeof(buf)) < 0)
		return -1;
	p = strrchr(buf, ')');	/* the command name may hold spaces */
	if (p == NULL)
		return -1;
	for (p++; *p != '\0' && field < 22; p++)
		if (*p == ' ')
			field++;
	return sscanf(p, "%llu", start) == 1 ? 0 : -1;
}

char *
qw_lease_holder_info(void)
{
	char host[256] = "", boot[64] = "", *out;
	unsigned long long start = 0;

	gethostname(host, sizeof(host) - 1);
	qw_read_line("/proc/sys/kernel/random/boot_id", boot, sizeof(boot));
	qw_proc_starttime((long)getpid(), &start);
	if (asprintf(&out, "%s\t%s\t%ld\t%llu", host, boot, (long)getpid(), start) < 0)
		return NULL;
	return out;
}

int
qw_lease_holder_gone(const char *info)
{
	char host[256] = "", boot[64] = "", ihost[256], iboot[64];
	long pid;
	unsigned long long start, now_start;

	if (sscanf(info, "%255[^\t]\t%63[^\t]\t%ld\t%llu", ihost, iboot, &pid, &start) != 4)
		return 0;
	gethostname(host, sizeof(host) - 1);
	if (strcmp(host, ihost) != 0)
		return 0;
	if (qw_read_line("/proc/sys/kernel/random/boot_id", boot, sizeof(boot)) == 0 &&
	    strcmp(boot, iboot) != 0)
		return 1;	/* the host rebooted since */
	if (pid == (long)getpid())
		return 0;
	if (qw_proc_starttime(pid, &now_start) < 0)
		return errno == ENOENT ? 1 : 0;
	return now_start != start;	/* the pid was reused by another process */
}

/* ---- reconciling and recovering ------------------------------------------ */

/* A job that was in flight when its qworkerd died: it may have been
 * running, so it counts an attempt. Takes FIELD, ELEM and OWNER. */
static void
qw_queue_recover(struct qw_queue *q, char *field, char *elem, size_t len, char *owner)
{
	struct qw_job job;
	const char *why = "qworkerd stopped while the job ran";
	char *out;
	size_t olen;
	bool dead;

	if (qw_job_parse(&job, elem, len, &q->qc, field) < 0) {
		free(field);
		free(owner);
		return;
	}
	if (job.error == NULL)
		job.attempt++;
	dead = job.error != NULL || job.attempt >= job.max_attempts;
	out = qw_job_encode(&job, job.error ? job.error : dead ? why : NULL,
	    dead ? qw_clock_wall_ms() : 0, NULL, &olen);
	if (out == NULL) {
		qw_log_err("job %s/%s: out of memory recovering it; it stays in flight",
		    q->qc.name, job.id);
		free(field);
		free(owner);
	} else {
		qw_log_notice("job %s/%s: recovered from %s%s", q->qc.name, job.id,
		    owner ? owner : "an earlier qworkerd with this identity",
		    dead ? "; no attempts left, moved to dead" : ", back on pending");
		q->pool->recovered++;
		qw_settle_add(q, field, dead ? QW_DEST_DEAD : QW_DEST_PENDING, out, olen,
		    dead ? "recovered dead" : "recovered", owner);
	}
	qw_job_clear(&job);
}

/* Copies a reply string into a NUL-terminated heap buffer. */
static char *
qw_reply_dup(const redisReply *e)
{
	char *s = malloc(e->len + 1);

	if (s != NULL) {
		memcpy(s, e->str, e->len);
		s[e->len] = '\0';
	}
	return s;
}

static void
qw_reconcile_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	size_t rl = strlen(q->pool->runid);

	if (q->fetch != QW_FETCH_RECONCILING)
		return;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
		if (reply != NULL)
			qw_log_err("queue %s: reading in-flight jobs failed: %s (retrying)", q->qc.name,
			    qw_redis_errstr(r, reply));
		qw_queue_fetch_move(q, QW_FETCH_OFF);	/* the lease tick tries again */
		return;
	}
	for (size_t i = 0; i + 1 < reply->elements; i += 2) {
		redisReply *f = reply->element[i], *e = reply->element[i + 1];
		if (qw_rec_find(&q->recs, f->str, f->len) != NULL)
			continue;
		char *field = qw_reply_dup(f), *elem = qw_reply_dup(e);
		if (field == NULL || elem == NULL) {
			free(field);
			free(elem);
			continue;
		}
		if (f->len > rl && memcmp(f->str, q->pool->runid, rl) == 0)
			/* Ours, taken by a fetch whose reply was lost: it never ran. */
			qw_settle_add(q, field, QW_DEST_PENDING, elem, e->len, "", NULL);
		else
			qw_queue_recover(q, field, elem, e->len, NULL);
	}
	qw_queue_fetch_move(q, QW_FETCH_IDLE);
}

void
qw_lease_reconcile(struct qw_queue *q)
{
	const char *argv[] = { "HGETALL", q->key[K_ACTIVE] };

	if (q->fetch == QW_FETCH_OFF &&
	    qw_redis_cmd(q->pool->redis, qw_reconcile_reply, q, 2, argv, NULL) == 0)
		qw_queue_fetch_move(q, QW_FETCH_RECONCILING);
}

/* ---- recovering a dead instance ------------------------------------------ */

static char *
qw_instance_key(const struct qw_queue *q, const char *what, const char *inst)
{
	char *k;

	if (asprintf(&k, "%s:{%s}:%s:%s", q->pool->conf->prefix, q->qc.name, what, inst) < 0)
		return NULL;
	return k;
}

static void
qw_reap_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;

	if (reply == NULL || q->reaping == NULL)
		return;
	if (reply->type != REDIS_REPLY_ARRAY) {
		qw_log_err("queue %s: reading the jobs of instance %s failed: %s", q->qc.name,
		    q->reaping, qw_redis_errstr(r, reply));
		return;
	}
	for (size_t i = 0; i + 1 < reply->elements; i += 2) {
		char *field = qw_reply_dup(reply->element[i]);
		char *elem = qw_reply_dup(reply->element[i + 1]);
		char *owner = strdup(q->reaping);
		if (field == NULL || elem == NULL || owner == NULL) {
			free(field);
			free(elem);
			free(owner);
			continue;
		}
		qw_queue_recover(q, field, elem, reply->element[i + 1]->len, owner);
	}
}

/* Jobs of the dead instance that are still queued here to be written. */
static bool
qw_reap_busy(const struct qw_queue *q)
{
	const struct qw_rec *rec;

	if (q->sending > 0)
		return true;
	TAILQ_FOREACH(rec, &q->recs.list[QW_REC_FINISHED], link)
		if (rec->owner != NULL)
			return true;
	return false;
}

static void qw_reap_step(struct qw_queue *q);

static void
qw_forget_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;

	if (reply == NULL || q->reaping == NULL || reply->type != REDIS_REPLY_INTEGER)
		return;
	if (reply->integer == 0) {
		qw_reap_step(q);	/* jobs left: read them again */
		return;
	}
	if (reply->integer > 0)
		qw_log_notice("queue %s: recovered every job of instance %s", q->qc.name, q->reaping);
	free(q->reaping);
	q->reaping = NULL;
}

/* The last step of recovering q->reaping, once the results of its jobs are
 * written: give its claim list back and drop its lease. */
static void
qw_reap_forget(struct qw_queue *q)
{
	char *akey = qw_instance_key(q, "active", q->reaping);
	char *ckey = qw_instance_key(q, "claim", q->reaping);

	if (akey != NULL && ckey != NULL) {
		const char *argv[] = { q->key[K_LEASES], q->key[K_HOLDERS], akey, ckey,
			q->key[K_PENDING], q->reaping, "expired" };
		qw_redis_script(q->pool->redis, QW_SCRIPT_FORGET, qw_forget_reply, q, 5, 7, argv, NULL);
	}
	free(akey);
	free(ckey);
}

/* Reads the dead instance's in-flight jobs; recovering each is a settle op
 * guarded by its lease. Its claim list (jobs it never started) goes back in
 * the forget script, which checks the lease is still expired first. */
static void
qw_reap_step(struct qw_queue *q)
{
	char *akey = qw_instance_key(q, "active", q->reaping);

	if (akey != NULL) {
		const char *get[] = { "HGETALL", akey };
		qw_redis_cmd(q->pool->redis, qw_reap_reply, q, 2, get, NULL);
	}
	free(akey);
}

/* ---- our own lease ------------------------------------------------------- */

static void
qw_lease_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	const char *me = q->pool->conf->instance;

	if (reply == NULL || q->lease != QW_LEASE_HELD)
		return;
	if (reply->type != REDIS_REPLY_ARRAY) {
		qw_log_err("queue %s: renewing the lease failed: %s", q->qc.name,
		    qw_redis_errstr(r, reply));
		return;
	}
	if (q->reaping != NULL || qw_pool_stage(q->pool) >= QW_STAGE_DRAINING)
		return;
	for (size_t i = 0; i < reply->elements; i++) {
		redisReply *e = reply->element[i];
		if (e->type != REDIS_REPLY_STRING || (strlen(me) == e->len &&
		    memcmp(me, e->str, e->len) == 0))
			continue;
		if ((q->reaping = qw_reply_dup(e)) == NULL)
			return;
		qw_log_warn("queue %s: the lease of instance %s expired: recovering its jobs",
		    q->qc.name, q->reaping);
		qw_reap_step(q);
		return;
	}
}

static void
qw_lease_renew(struct qw_queue *q)
{
	const struct qw_conf *c = q->pool->conf;
	char ms[24];
	const char *argv[] = { q->key[K_LEASES], q->key[K_HOLDERS], c->instance, ms,
		q->pool->holder };

	snprintf(ms, sizeof(ms), "%llu", (unsigned long long)c->lease_timeout_ms);
	qw_redis_script(q->pool->redis, QW_SCRIPT_LEASE, qw_lease_reply, q, 2, 5, argv, NULL);
}

static void
qw_lease_take(struct qw_queue *q)
{
	q->lease = QW_LEASE_HELD;
	qw_lease_renew(q);
	qw_lease_reconcile(q);
}

static void
qw_check_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	const char *me = q->pool->conf->instance;
	long long left;
	const char *info;

	if (q->lease != QW_LEASE_CHECKING)
		return;
	q->lease = QW_LEASE_NONE;	/* the next tick checks again */
	if (reply == NULL)
		return;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_INTEGER) {
		qw_log_err("queue %s: checking the lease of %s failed: %s", q->qc.name, me,
		    qw_redis_errstr(r, reply));
		return;
	}
	left = reply->element[0]->integer;
	info = reply->element[1]->str ? reply->element[1]->str : "";
	if (left <= 0 || strcmp(info, q->pool->holder) == 0) {
		qw_lease_take(q);
	} else if (qw_lease_holder_gone(info)) {
		qw_log_notice("queue %s: the previous holder of instance %s (%s) is gone: "
		    "recovering its jobs now", q->qc.name, me, info);
		qw_lease_take(q);
	} else if (!q->lease_warned) {
		q->lease_warned = true;
		qw_log_warn("queue %s: instance %s is held by a live process (%s) for another %lldms; "
		    "waiting for its lease", q->qc.name, me, info, left);
	}
}

static void
qw_lease_check(struct qw_queue *q)
{
	const char *argv[] = { q->key[K_LEASES], q->key[K_HOLDERS], q->pool->conf->instance };

	if (qw_redis_script(q->pool->redis, QW_SCRIPT_CHECK, qw_check_reply, q, 2, 3, argv,
	    NULL) == 0)
		q->lease = QW_LEASE_CHECKING;
}

static void
qw_lease_tick(evutil_socket_t fd, short what, void *arg)
{
	struct qw_queue *q = arg;

	if (!qw_redis_is_up(q->pool->redis))
		return;
	if (q->lease == QW_LEASE_NONE) {
		qw_lease_check(q);
		return;
	}
	if (q->lease != QW_LEASE_HELD)
		return;
	qw_lease_renew(q);
	qw_lease_reconcile(q);
	if (q->reaping != NULL && !qw_reap_busy(q))
		qw_reap_forget(q);
}

int
qw_lease_init(struct qw_pool *pool)
{
	if ((pool->holder = qw_lease_holder_info()) == NULL)
		return -1;
	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		q->lease_ev = event_new(pool->base, -1, EV_PERSIST, qw_lease_tick, q);
		if (q->lease_ev == NULL)
			return -1;
		event_add(q->lease_ev, &(struct timeval){ 0, QW_LEASE_TICK_MS * 1000 });
	}
	return 0;
}

/* The main connection is up: own the lease first, then reconcile. */
void
qw_lease_start(struct qw_queue *q)
{
	if (q->lease == QW_LEASE_HELD)
		qw_lease_take(q);
	else if (q->lease == QW_LEASE_NONE)
		qw_lease_check(q);
}

static void
qw_release_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	struct qw_pool *pool = q->pool;

	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0)
		qw_log_warn("queue %s: jobs remain in flight; the lease stays so they are recovered",
		    q->qc.name);
	if (--pool->releasing == 0)
		qw_pool_dirty(pool);
}

/* At the end of a clean drain: drop our leases so nobody waits for them. */
void
qw_lease_release(struct qw_pool *pool)
{
	for (size_t i = 0; i < pool->nqueues; i++) {
		struct qw_queue *q = &pool->queues[i];
		const char *argv[] = { q->key[K_LEASES], q->key[K_HOLDERS], q->key[K_ACTIVE],
			q->key[K_CLAIM], q->key[K_PENDING], pool->conf->instance, "ours" };
		if (q->lease != QW_LEASE_HELD)
			continue;
		q->lease = QW_LEASE_RELEASED;
		if (qw_redis_script(pool->redis, QW_SCRIPT_FORGET, qw_release_reply, q, 5, 7, argv,
		    NULL) == 0)
			pool->releasing++;
	}
}
