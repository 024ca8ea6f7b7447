/* lease.c - owns instance leases, fencing and recovery (SPEC 4, "qworkerd
 * died"; SPEC 10).
 *
 * Each instance holds a lease per queue (qw:{Q}:leases, renewed every
 * QW_LEASE_TICK_MS) and says who it is in qw:{Q}:holders: host, boot id, pid
 * namespace, pid and process start time. One instance name is held by at
 * most one live process: the lease is taken by compare-and-set, and from a
 * live holder only when it is proved gone (same host, boot and pid
 * namespace, its pid no longer running with that start time), so a
 * successor on the same host does not wait. Renewal renews only our own
 * live lease; finding it otherwise, this process was fenced: it stops
 * fetching, stops the runs whose jobs another process took over, and takes
 * the lease again.
 *
 * When another instance's lease expires, a live instance puts its jobs
 * back, but only once its own lease has been renewed without a gap for
 * lease_timeout plus a tick: instances that all survived an outage renew
 * their own leases again first.
 *
 * At start, and after every reconnect, the active hash is reconciled with
 * what this process knows: fields of an earlier process with our identity
 * are recovered (attempt + 1), our own unknown fields (a fetch whose reply
 * was lost) go back untouched, and our runs whose fields are gone are
 * fenced. */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lease.h"
#include "log.h"
#include "pool_int.h"

/* ---- who we are -------------------------------------------------------- */

static int
qw_lease_read_line(const char *path, char *buf, size_t len)
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
qw_lease_proc_starttime(long pid, unsigned long long *start)
{
	char path[64], buf[1024], *p;
	int field = 2;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if (qw_lease_read_line(path, buf, sizeof(buf)) < 0)
		return -1;
	p = strrchr(buf, ')');	/* the command name may hold spaces */
	if (p == NULL)
		return -1;
	for (p++; *p != '\0' && field < 22; p++)
		if (*p == ' ')
			field++;
	return sscanf(p, "%llu", start) == 1 ? 0 : -1;
}

/* The inode of our pid namespace: a pid means the same process only to a
 * process in the same one. 0 when it cannot be read. */
static unsigned long long
qw_lease_pidns(void)
{
	struct stat st;

	return stat("/proc/self/ns/pid", &st) == 0 ? (unsigned long long)st.st_ino : 0;
}

char *
qw_lease_holder_info(void)
{
	char host[256] = "", boot[64] = "", *out;
	unsigned long long start = 0;

	gethostname(host, sizeof(host) - 1);
	qw_lease_read_line("/proc/sys/kernel/random/boot_id", boot, sizeof(boot));
	qw_lease_proc_starttime((long)getpid(), &start);
	/* The wall-clock time last, for people (qworkerctl instances): older
	 * readers take the first five fields and ignore it. */
	if (asprintf(&out, "%s\t%s\t%llu\t%ld\t%llu\t%" PRId64, host, boot, qw_lease_pidns(),
	    (long)getpid(), start, qw_clock_wall_ms()) < 0)
		return NULL;
	return out;
}

/* Only a holder on this host, this boot and this pid namespace can be
 * proved gone: a host name may be cloned on another machine, and a pid
 * means nothing across namespaces. kill(pid, 0) tells whether the pid runs
 * even where /proc hides it (hidepid, ProtectProc=invisible); a pid that
 * runs but whose start time we cannot read proves nothing. */
enum qw_holder
qw_lease_holder_state(const char *info, char *why, size_t len)
{
	char host[256] = "", boot[64] = "", ihost[256], iboot[64];
	long pid;
	unsigned long long ns, start, now_start;

	if (sscanf(info, "%255[^\t]\t%63[^\t]\t%llu\t%ld\t%llu", ihost, iboot, &ns, &pid,
	    &start) != 5 || pid <= 0) {
		snprintf(why, len, "its holder info is not one this version can check");
		return QW_HOLDER_UNKNOWN;
	}
	gethostname(host, sizeof(host) - 1);
	if (strcmp(host, ihost) != 0) {
		snprintf(why, len, "it runs on another host");
		return QW_HOLDER_UNKNOWN;
	}
	if (qw_lease_read_line("/proc/sys/kernel/random/boot_id", boot, sizeof(boot)) < 0 ||
	    strcmp(boot, iboot) != 0) {
		snprintf(why, len, "it has another boot id: another machine with this host name, "
		    "or before a reboot");
		return QW_HOLDER_UNKNOWN;
	}
	if (ns == 0 || ns != qw_lease_pidns()) {
		snprintf(why, len, "it runs in another pid namespace");
		return QW_HOLDER_UNKNOWN;
	}
	if (pid != (long)getpid() && kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
		snprintf(why, len, "pid %ld no longer runs", pid);
		return QW_HOLDER_GONE;
	}
	if (qw_lease_proc_starttime(pid, &now_start) < 0) {
		snprintf(why, len, "pid %ld runs but is not visible here", pid);
		return QW_HOLDER_UNKNOWN;
	}
	if (now_start != start) {
		snprintf(why, len, "pid %ld now runs another process", pid);
		return QW_HOLDER_GONE;
	}
	snprintf(why, len, "pid %ld still runs", pid);
	return QW_HOLDER_LIVE;
}

/* ---- reconciling and recovering ------------------------------------------ */

/* A job that was in flight when its qworkerd died: it may have been
 * running (or was said started with it, see qw_pool_say_started), so it
 * counts an attempt. Takes FIELD, ELEM and OWNER. */
static void
qw_lease_recover(struct qw_queue *q, char *field, char *elem, size_t len, char *owner)
{
	struct qw_job job;
	const char *why = "qworkerd stopped while the job ran or was about to start";
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
		    dead ? "recovered dead" : "recovered", owner, &job);
	}
	qw_job_clear(&job);
}

/* Copies a reply string into a NUL-terminated heap buffer. */
static char *
qw_lease_reply_dup(const redisReply *e)
{
	char *s = malloc(e->len + 1);

	if (s != NULL) {
		memcpy(s, e->str, e->len);
		s[e->len] = '\0';
	}
	return s;
}

/* Fences what this process still runs or holds for jobs that are gone from
 * our active hash (REPLY, an HGETALL of it): another process took them
 * over while our lease had lapsed. Their handlers are stopped and nothing
 * is written for them; a buffered one is simply forgotten. Only fetch
 * replies make records, and they come on this connection before REPLY, so
 * every record looked at here was in the hash when it was read. */
/* The inflight script's reply: the active hash and the started marks, both
 * as HGETALL gives them. False when it is not one (an error, or no reply). */
static bool
qw_lease_inflight_parts(const redisReply *reply, const redisReply **active,
    const redisReply **started)
{
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_ARRAY ||
	    reply->element[1]->type != REDIS_REPLY_ARRAY)
		return false;
	*active = reply->element[0];
	*started = reply->element[1];
	return true;
}

/* Whether the job in FIELD may have run: its run said it started every job
 * up to some sequence number (K_STARTED) before starting them, so a field
 * past that was only taken ahead. A run of an older qworkerd, which said
 * nothing, or a field of another form, may have run. */
static bool
qw_lease_may_have_run(const char *field, const redisReply *started)
{
	const char *dash = strchr(field, '-');
	char *end;
	unsigned long long seq;

	if (dash == NULL || dash[1] < '0' || dash[1] > '9')
		return true;
	errno = 0;
	seq = strtoull(dash + 1, &end, 10);
	if (*end != '\0' || errno != 0)
		return true;
	for (size_t i = 0; i + 1 < started->elements; i += 2) {
		const redisReply *k = started->element[i], *v = started->element[i + 1];
		if (k->len == (size_t)(dash + 1 - field) && memcmp(k->str, field, k->len) == 0)
			return v->str == NULL || seq <= strtoull(v->str, NULL, 10);
	}
	return true;
}

/* One job an earlier process left in flight: recovered as a run when it may
 * have run, else given back as it was. Takes FIELD, ELEM and OWNER. */
static void
qw_lease_recover_one(struct qw_queue *q, char *field, char *elem, size_t len, char *owner,
    const redisReply *started)
{
	if (qw_lease_may_have_run(field, started)) {
		qw_lease_recover(q, field, elem, len, owner);
		return;
	}
	qw_log_info("queue %s: job field %s was taken ahead by %s and never started: back on "
	    "pending as it was", q->qc.name, field, owner ? owner : "an earlier qworkerd");
	qw_settle_add(q, field, QW_DEST_PENDING, elem, len, "recovered", owner, NULL);
}

static unsigned
qw_lease_drop_gone(struct qw_queue *q, const redisReply *reply)
{
	static const enum qw_rec_state live[] = { QW_REC_BUFFERED, QW_REC_RUNNING,
		QW_REC_CANCELLING };
	struct qw_rec *rec, *next;
	unsigned ran = 0, buffered = 0;

	for (size_t s = 0; s < 3; s++)
		TAILQ_FOREACH(rec, &q->recs.list[live[s]], link)
			rec->mark = 0;
	for (size_t i = 0; i + 1 < reply->elements; i += 2)
		if ((rec = qw_record_find(&q->recs, reply->element[i]->str,
		    reply->element[i]->len)) != NULL)
			rec->mark = 1;
	for (size_t s = 0; s < 3; s++)
		for (rec = TAILQ_FIRST(&q->recs.list[live[s]]); rec != NULL; rec = next) {
			next = TAILQ_NEXT(rec, link);
			if (rec->mark)
				continue;
			if (rec->state == QW_REC_BUFFERED) {
				buffered++;
				qw_record_free(&q->recs, rec);
			} else {
				ran++;
				qw_run_fence(rec);
			}
		}
	if (ran + buffered > 0)
		qw_log_err("queue %s: fenced: %u running and %u buffered jobs were taken over by "
		    "another process; they are stopped here and no result is written for them",
		    q->qc.name, ran, buffered);
	return ran + buffered;
}

static void
qw_lease_reconcile_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	size_t rl = strlen(q->pool->runid);
	const redisReply *active, *started;

	if (q->fetch != QW_FETCH_RECONCILING)
		return;
	if (!qw_lease_inflight_parts(reply, &active, &started)) {
		if (reply != NULL)
			qw_log_err("queue %s: reading in-flight jobs failed: %s (retrying)", q->qc.name,
			    qw_redis_errstr(r, reply));
		qw_fetch_move(q, QW_FETCH_OFF);	/* the lease tick tries again */
		return;
	}
	qw_lease_drop_gone(q, active);
	for (size_t i = 0; i + 1 < active->elements; i += 2) {
		redisReply *f = active->element[i], *e = active->element[i + 1];
		if (qw_record_find(&q->recs, f->str, f->len) != NULL)
			continue;
		char *field = qw_lease_reply_dup(f), *elem = qw_lease_reply_dup(e);
		if (field == NULL || elem == NULL) {
			free(field);
			free(elem);
			continue;
		}
		if (f->len > rl && memcmp(f->str, q->pool->runid, rl) == 0)
			/* Ours, taken by a fetch whose reply was lost: it never ran. */
			qw_settle_add(q, field, QW_DEST_PENDING, elem, e->len, "", NULL, NULL);
		else
			qw_lease_recover_one(q, field, elem, e->len, NULL, started);
	}
	qw_fetch_move(q, QW_FETCH_IDLE);
}

/* Only while the lease is ours: the fields of an earlier process with our
 * identity are then ours to recover. */
void
qw_lease_reconcile(struct qw_queue *q)
{
	const char *argv[] = { q->key[K_ACTIVE], q->key[K_STARTED], q->pool->runid };

	if (q->fetch == QW_FETCH_OFF && q->lease == QW_LEASE_HELD &&
	    qw_redis_script(qw_pool_queue_redis(q), QW_SCRIPT_INFLIGHT, qw_lease_reconcile_reply,
	    q, 2, 3, argv, NULL) == 0)
		qw_fetch_move(q, QW_FETCH_RECONCILING);
}

/* ---- recovering a dead instance ------------------------------------------ */

static char *
qw_lease_instance_key(const struct qw_queue *q, enum qw_key what, const char *inst)
{
	char *k;

	if (asprintf(&k, "%s:{%s}:%s:%s", q->pool->conf->prefix, q->qc.name, qw_keys_word(what),
	    inst) < 0)
		return NULL;
	return k;
}

static void
qw_lease_reap_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	const redisReply *active, *started;

	if (reply == NULL || q->reaping == NULL)
		return;
	if (!qw_lease_inflight_parts(reply, &active, &started)) {
		qw_log_err("queue %s: reading the jobs of instance %s failed: %s", q->qc.name,
		    q->reaping, qw_redis_errstr(r, reply));
		return;
	}
	for (size_t i = 0; i + 1 < active->elements; i += 2) {
		char *field = qw_lease_reply_dup(active->element[i]);
		char *elem = qw_lease_reply_dup(active->element[i + 1]);
		char *owner = strdup(q->reaping);
		if (field == NULL || elem == NULL || owner == NULL) {
			free(field);
			free(elem);
			free(owner);
			continue;
		}
		qw_lease_recover_one(q, field, elem, active->element[i + 1]->len, owner, started);
	}
}

/* Jobs of the dead instance that are still queued here to be written. */
static bool
qw_lease_reap_busy(const struct qw_queue *q)
{
	const struct qw_rec *rec;

	if (q->sending > 0)
		return true;
	TAILQ_FOREACH(rec, &q->recs.list[QW_REC_FINISHED], link)
		if (rec->owner != NULL)
			return true;
	return false;
}

static void qw_lease_reap_step(struct qw_queue *q);

static void
qw_lease_forget_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;

	if (reply == NULL || q->reaping == NULL || reply->type != REDIS_REPLY_INTEGER)
		return;
	if (reply->integer == 0) {
		qw_lease_reap_step(q);	/* jobs left: read them again */
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
qw_lease_reap_forget(struct qw_queue *q)
{
	char *akey = qw_lease_instance_key(q, QW_KEY_ACTIVE, q->reaping);
	char *ckey = qw_lease_instance_key(q, QW_KEY_CLAIM, q->reaping);
	char *skey = qw_lease_instance_key(q, QW_KEY_STARTED, q->reaping);

	if (akey != NULL && ckey != NULL && skey != NULL) {
		const char *argv[] = { q->key[K_LEASES], q->key[K_HOLDERS], akey, ckey, skey,
			q->key[K_PENDING], q->reaping, "expired", "" };
		qw_redis_script(qw_pool_queue_redis(q), QW_SCRIPT_FORGET, qw_lease_forget_reply, q,
		    6, 9, argv, NULL);
	}
	free(akey);
	free(ckey);
	free(skey);
}

/* Reads the dead instance's in-flight jobs; recovering each is a settle op
 * guarded by its lease. Its claim list (jobs it never started) goes back in
 * the forget script, which checks the lease is still expired first. */
static void
qw_lease_reap_step(struct qw_queue *q)
{
	char *akey = qw_lease_instance_key(q, QW_KEY_ACTIVE, q->reaping);
	char *skey = qw_lease_instance_key(q, QW_KEY_STARTED, q->reaping);

	if (akey != NULL && skey != NULL) {
		const char *argv[] = { akey, skey, "" };
		qw_redis_script(qw_pool_queue_redis(q), QW_SCRIPT_INFLIGHT, qw_lease_reap_reply, q,
		    2, 3, argv, NULL);
	}
	free(akey);
	free(skey);
}

/* ---- our own lease ------------------------------------------------------- */

static const char *const qw_lease_names[QW_LEASE_NSTATES] = {
	[QW_LEASE_NONE] = "none", [QW_LEASE_TAKING] = "taking", [QW_LEASE_WAITING] = "waiting",
	[QW_LEASE_HELD] = "held", [QW_LEASE_RELEASED] = "released",
};

#define B(s) (1u << (s))
static const unsigned qw_lease_moves[QW_LEASE_NSTATES] = {
	[QW_LEASE_NONE] = B(QW_LEASE_TAKING),
	[QW_LEASE_TAKING] = B(QW_LEASE_HELD) | B(QW_LEASE_WAITING) | B(QW_LEASE_NONE),
	[QW_LEASE_WAITING] = B(QW_LEASE_TAKING),
	[QW_LEASE_HELD] = B(QW_LEASE_NONE) | B(QW_LEASE_RELEASED),
};
#undef B

/* The only way to change q->lease (see pool_int.h). */
static int
qw_lease_move(struct qw_queue *q, enum qw_lease_state to)
{
	if (!(qw_lease_moves[q->lease] & (1u << to))) {
		qw_log_err("queue %s: lease state cannot move from %s to %s (a bug)", q->qc.name,
		    qw_lease_names[q->lease], qw_lease_names[to]);
		assert(!"illegal lease state move");
		return -1;
	}
	qw_log_debug("queue %s: lease %s -> %s", q->qc.name, qw_lease_names[q->lease],
	    qw_lease_names[to]);
	q->lease = to;
	qw_pool_dirty(q->pool);
	return 0;
}

/* Holder info as it may appear in STATUS= (where a newline would end the
 * assignment) and in a log line: fields apart by a space, control
 * characters escaped as log.c does (it leaves what is escaped already as it
 * is), at most 200 bytes of it. */
static void
qw_lease_holder_printable(char *out, size_t len, const char *info)
{
	char plain[201];
	size_t n = 0;

	for (; n < sizeof(plain) - 1 && info[n] != '\0'; n++)
		plain[n] = info[n] == '\t' ? ' ' : info[n];
	qw_log_escape(out, len, plain, n);
}

static void qw_lease_take(struct qw_queue *q, const char *proved);

/* Recovering other instances' jobs waits until every renewal of our own
 * lease has succeeded for lease_timeout plus a tick: after a Redis restart,
 * a failover or an OOM spell that every instance survived, each has renewed
 * its own lease again by then, and nothing is recovered. */
static bool
qw_lease_may_recover(const struct qw_queue *q)
{
	return q->lease_ok_ms > 0 && qw_clock_mono_ms() - q->lease_ok_ms >=
	    (int64_t)q->pool->conf->lease_timeout_ms + QW_LEASE_TICK_MS;
}

static void
qw_lease_fence_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;

	/* Without a reply, the reconcile once the lease is ours again checks. */
	if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && qw_lease_drop_gone(q, reply) == 0)
		qw_log_notice("queue %s: every job this process runs is still in its active hash: "
		    "they go on", q->qc.name);
}

/* A renewal found our lease expired or held by another process: we may
 * have been replaced (SPEC 10). Stop fetching, give back what is buffered,
 * stop the runs whose jobs are gone, and take the lease again as at start;
 * the runs whose jobs are still ours go on and settle normally. */
static void
qw_lease_fenced(struct qw_queue *q, const char *holder, long long left)
{
	const char *argv[] = { "HGETALL", q->key[K_ACTIVE] };
	const char *me = q->pool->conf->instance;
	char who[1024];

	qw_lease_holder_printable(who, sizeof(who), holder);
	if (left < 0)
		qw_log_err("queue %s: fenced: the lease of instance %s is gone from Redis; "
		    "its jobs may have been recovered", q->qc.name, me);
	else if (strcmp(holder, q->pool->holder) == 0)
		qw_log_err("queue %s: fenced: the lease of instance %s (held by this process, %s) "
		    "expired %lldms ago, while Redis was away or this process was stopped; "
		    "its jobs may have been recovered", q->qc.name, me, who, -left);
	else
		qw_log_err("queue %s: fenced: the lease of instance %s is held by another process "
		    "(%s)", q->qc.name, me, who);
	qw_lease_move(q, QW_LEASE_NONE);
	q->lease_ok_ms = 0;
	/* A fetch in flight moves to OFF at its reply. */
	if (q->fetch != QW_FETCH_OFF && q->fetch != QW_FETCH_ASKING)
		qw_fetch_move(q, QW_FETCH_OFF);
	qw_fetch_give_back(q);
	qw_redis_cmd(qw_pool_queue_redis(q), qw_lease_fence_reply, q, 2, argv, NULL);
	qw_lease_take(q, NULL);
}

static void
qw_lease_reap_expired(struct qw_queue *q, const redisReply *list)
{
	const char *me = q->pool->conf->instance;

	if (q->reaping != NULL || qw_pool_stage(q->pool) >= QW_STAGE_DRAINING ||
	    list->type != REDIS_REPLY_ARRAY || !qw_lease_may_recover(q))
		return;
	for (size_t i = 0; i < list->elements; i++) {
		const redisReply *e = list->element[i];
		if (e->type != REDIS_REPLY_STRING || (strlen(me) == e->len &&
		    memcmp(me, e->str, e->len) == 0))
			continue;
		if ((q->reaping = qw_lease_reply_dup(e)) == NULL)
			return;
		qw_log_warn("queue %s: the lease of instance %s expired: recovering its jobs",
		    q->qc.name, q->reaping);
		qw_lease_reap_step(q);
		return;
	}
}

static void
qw_lease_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;

	if (q->lease != QW_LEASE_HELD)
		return;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
	    reply->element[0]->type != REDIS_REPLY_INTEGER) {
		if (reply != NULL)
			qw_log_err("queue %s: renewing the lease failed: %s", q->qc.name,
			    qw_redis_errstr(r, reply));
		q->lease_ok_ms = 0;	/* it may lapse: no recovering others for a while */
		return;
	}
	if (reply->element[0]->integer == 0) {
		qw_lease_fenced(q, reply->element[1]->str ? reply->element[1]->str : "",
		    reply->elements > 2 && reply->element[2]->type == REDIS_REPLY_INTEGER ?
		    reply->element[2]->integer : -1);
		return;
	}
	if (q->lease_ok_ms == 0)
		q->lease_ok_ms = qw_clock_mono_ms();
	qw_lease_reconcile(q);
	qw_lease_reap_expired(q, reply->element[1]);
}

static void
qw_lease_renew(struct qw_queue *q)
{
	const struct qw_conf *c = q->pool->conf;
	char ms[24];
	const char *argv[] = { q->key[K_LEASES], q->key[K_HOLDERS], c->instance, ms,
		q->pool->holder };

	snprintf(ms, sizeof(ms), "%llu", (unsigned long long)c->lease_timeout_ms);
	if (qw_redis_script(qw_pool_queue_redis(q), QW_SCRIPT_LEASE, qw_lease_reply, q, 2, 5, argv,
	    NULL) < 0)
		q->lease_ok_ms = 0;
}

/* Another process holds the lease: say so once, then wait and try again
 * each tick; STATUS= shows the latest. */
static void
qw_lease_wait(struct qw_queue *q, const char *holder, long long left, enum qw_holder hs,
    const char *why)
{
	const char *kind = hs == QW_HOLDER_LIVE ? "a live process" :
	    "a process that cannot be proved gone";
	char who[1024], *text;

	qw_lease_holder_printable(who, sizeof(who), holder);
	if (asprintf(&text, "waiting for the lease of instance %s, held by %s (%s) for another "
	    "%lldms: %s", q->pool->conf->instance, kind, who, left, why) < 0)
		text = NULL;
	if (q->lease_wait == NULL)
		qw_log_warn("queue %s: instance %s is held by %s (%s) for another %lldms (%s); "
		    "waiting for its lease, no jobs are taken meanwhile", q->qc.name,
		    q->pool->conf->instance, kind, who, left, why);
	if (text != NULL) {
		free(q->lease_wait);
		q->lease_wait = text;
	}
	qw_lease_move(q, QW_LEASE_WAITING);
}

static void
qw_lease_take_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	const char *me = q->pool->conf->instance, *holder;
	char why[160], who[1024];
	long long left;
	enum qw_holder hs;

	if (q->lease != QW_LEASE_TAKING)
		return;
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_INTEGER ||
	    reply->element[2]->type != REDIS_REPLY_INTEGER) {
		if (reply != NULL)
			qw_log_err("queue %s: taking the lease of %s failed: %s", q->qc.name, me,
			    qw_redis_errstr(r, reply));
		qw_lease_move(q, QW_LEASE_NONE);	/* the next tick tries again */
		return;
	}
	holder = reply->element[1]->str ? reply->element[1]->str : "";
	left = reply->element[2]->integer;
	hs = qw_lease_holder_state(holder, why, sizeof(why));
	qw_lease_holder_printable(who, sizeof(who), holder);
	if (reply->element[0]->integer == 1) {
		if (left > 0 && strcmp(holder, q->pool->holder) != 0)
			qw_log_notice("queue %s: the previous holder of instance %s (%s) is gone: "
			    "recovering its jobs now (%s)", q->qc.name, me, who, why);
		else if (q->lease_wait != NULL)
			qw_log_notice("queue %s: the lease of instance %s is ours now", q->qc.name, me);
		free(q->lease_wait);
		q->lease_wait = NULL;
		qw_lease_move(q, QW_LEASE_HELD);
		q->lease_ok_ms = qw_clock_mono_ms();
		qw_lease_reconcile(q);
		return;
	}
	if (hs == QW_HOLDER_GONE)
		qw_lease_take(q, holder);	/* only that exact holder: compare-and-set */
	else
		qw_lease_wait(q, holder, left, hs, why);
}

/* Sends the compare-and-set; PROVED is the holder info of a process we
 * proved gone, or NULL. */
static void
qw_lease_take(struct qw_queue *q, const char *proved)
{
	const struct qw_conf *c = q->pool->conf;
	char ms[24];
	const char *argv[] = { q->key[K_LEASES], q->key[K_HOLDERS], c->instance, ms,
		q->pool->holder, proved ? proved : "" };

	snprintf(ms, sizeof(ms), "%llu", (unsigned long long)c->lease_timeout_ms);
	if (qw_redis_script(qw_pool_queue_redis(q), QW_SCRIPT_TAKE, qw_lease_take_reply, q, 2, 6,
	    argv, NULL) == 0 && q->lease != QW_LEASE_TAKING)
		qw_lease_move(q, QW_LEASE_TAKING);
}

static void
qw_lease_tick(evutil_socket_t fd, short what, void *arg)
{
	struct qw_queue *q = arg;

	if (!qw_redis_is_up(qw_pool_queue_redis(q)) || qw_pool_stage(q->pool) >= QW_STAGE_RELEASING)
		return;
	if (q->lease == QW_LEASE_NONE || q->lease == QW_LEASE_WAITING) {
		qw_lease_take(q, NULL);
		return;
	}
	if (q->lease != QW_LEASE_HELD)
		return;
	qw_lease_renew(q);
	/* Pause and cancel reach a running daemon on this tick: see qworkerd(8),
	 * "PAUSE AND RESUME" and "CANCELLING A JOB". */
	qw_fetch_check_paused(q);
	qw_cancel_poll(q);
	if (q->reaping != NULL && !qw_lease_reap_busy(q))
		qw_lease_reap_forget(q);
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

/* The main connection is up: a lease we held is checked by a renewal first
 * (it may have lapsed while we were away: then we were fenced), then the
 * active hash is reconciled. A take whose reply was lost is sent again. */
void
qw_lease_start(struct qw_queue *q)
{
	q->lease_ok_ms = 0;
	if (q->lease == QW_LEASE_HELD)
		qw_lease_renew(q);
	else if (q->lease == QW_LEASE_NONE || q->lease == QW_LEASE_WAITING)
		qw_lease_take(q, NULL);
}

static void
qw_lease_release_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_queue *q = priv;
	struct qw_pool *pool = q->pool;

	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0)
		qw_log_warn("queue %s: jobs remain in flight; the lease stays so they are recovered",
		    q->qc.name);
	else if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer == 2)
		qw_log_err("queue %s: fenced: the lease of instance %s is held by another process; "
		    "left to it", q->qc.name, pool->conf->instance);
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
			q->key[K_CLAIM], q->key[K_STARTED], q->key[K_PENDING], pool->conf->instance,
			"ours", pool->holder };
		if (q->lease != QW_LEASE_HELD)
			continue;
		qw_lease_move(q, QW_LEASE_RELEASED);
		if (qw_redis_script(qw_pool_queue_redis(q), QW_SCRIPT_FORGET,
		    qw_lease_release_reply, q, 6, 9, argv, NULL) == 0)
			pool->releasing++;
	}
}
