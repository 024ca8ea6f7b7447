/* ctl_change.c - qworkerctl's commands that change jobs and queues:
 * enqueue, retry, delete, pause, resume and cancel. Each change is one
 * script or one command (scripts.c), and a job is moved only while it is
 * still where it was read: a daemon that settles or takes the same job at
 * the same moment wins, and the job is reported as moved meanwhile. */
#include "config.h"

#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "ctl.h"
#include "fmt.h"
#include "job.h"
#include "library.h"
#include "scripts.h"

#define QW_CTL_BATCH 100
#define QW_CTL_DEAD_MAX 10000	/* dead_max of a queue the configuration lacks */

/* ---- moving jobs ---------------------------------------------------------- */

/* A change to a set of jobs: where they are, where they go, and what
 * each becomes (NEW[i], NULL: as it is). */
struct qw_ctl_move {
	const char *queue;
	enum qw_key from, to;
	const char *mode;	/* "tail", "dead" or "none" (qw_ctl_lua_move) */
	const char *counters;
	const char *verb;	/* for the report: "retried" */
};

static const struct qw_queue_conf *
qw_ctl_queue_conf(const struct qw_ctl *ctl, const char *queue)
{
	for (size_t i = 0; ctl->conf != NULL && i < ctl->conf->nqueues; i++)
		if (strcmp(ctl->conf->queues[i].name, queue) == 0)
			return &ctl->conf->queues[i];
	return NULL;
}

static uint64_t
qw_ctl_dead_max(const struct qw_ctl *ctl, const char *queue)
{
	const struct qw_queue_conf *qc = qw_ctl_queue_conf(ctl, queue);

	return qc != NULL ? qc->dead_max : QW_CTL_DEAD_MAX;
}

/* Runs the move script for jobs [FIRST, FIRST + N); DONE[i] gets 1 for
 * each moved. */
static int
qw_ctl_move_batch(struct qw_ctl *ctl, const struct qw_ctl_move *m, struct qw_ctl_jobs *jobs,
    char **news, size_t *nlens, size_t first, size_t n, int *done)
{
	char keys[4][QW_CTL_KEY_MAX], cap[QW_FMT_U64_LEN];
	size_t argc = 11 + 4 * n, k = 0;
	const char **argv = calloc(argc, sizeof(*argv));
	size_t *lens = calloc(argc, sizeof(*lens));
	redisReply *r = NULL;
	int rc = 0;

	if (argv == NULL || lens == NULL) {
		rc = QW_CTL_TEMPFAIL;
		goto out;
	}
	qw_fmt_u64(cap, qw_ctl_dead_max(ctl, m->queue));
	argv[k++] = "EVAL";
	argv[k++] = qw_ctl_lua_move;
	argv[k++] = "4";
	argv[k++] = qw_ctl_key(ctl, keys[0], sizeof(keys[0]), m->queue, m->from, NULL);
	argv[k++] = qw_ctl_key(ctl, keys[1], sizeof(keys[1]), m->queue, m->to, NULL);
	argv[k++] = qw_ctl_key(ctl, keys[2], sizeof(keys[2]), m->queue, QW_KEY_STATS, NULL);
	argv[k++] = qw_ctl_key(ctl, keys[3], sizeof(keys[3]), m->queue, QW_KEY_UNIQUE, NULL);
	/* Pending is read tail first (qw_ctl_jobs_read), dead head first. */
	argv[k++] = m->from == QW_KEY_SCHEDULED ? "zset" : m->from == QW_KEY_PENDING ? "tail" :
	    "head";
	argv[k++] = m->mode;
	argv[k++] = cap;
	argv[k++] = m->counters;
	for (size_t i = 0; i < k; i++)
		lens[i] = strlen(argv[i]);
	for (size_t i = first; i < first + n; i++) {
		const struct qw_ctl_job *j = &jobs->v[i];
		/* The hold ends with a job that leaves for good. */
		bool leaves = strcmp(m->mode, "tail") != 0;
		const char *uid = leaves ? qw_ctl_job_str(j, "id") : NULL;
		const char *tok = leaves ? qw_ctl_job_str(j, "unique") : NULL;
		argv[k] = j->elem, lens[k++] = j->len;
		argv[k] = news[i] ? news[i] : j->elem, lens[k++] = news[i] ? nlens[i] : j->len;
		argv[k] = uid && tok ? uid : "", lens[k] = strlen(argv[k]), k++;
		argv[k] = uid && tok ? tok : "", lens[k] = strlen(argv[k]), k++;
	}
	r = qw_ctl_cmdv_raw(ctl, (int)argc, argv, lens);
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != n) {
		rc = qw_ctl_fail(ctl, r, m->verb);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		done[first + i] = r->element[i]->integer == 1;
out:
	if (r != NULL)
		freeReplyObject(r);
	free(argv);
	free(lens);
	return rc;
}

/* Reports each job as done or moved meanwhile; returns the exit status. */
static int
qw_ctl_move_report(struct qw_ctl *ctl, const struct qw_ctl_move *m,
    const struct qw_ctl_jobs *jobs, const int *done)
{
	json_t *ok = json_array(), *missed = json_array();
	size_t nmissed = 0;

	for (size_t i = 0; i < jobs->n; i++) {
		char *id = qw_ctl_escape(jobs->v[i].id, strlen(jobs->v[i].id));
		json_array_append_new(done[i] ? ok : missed, json_string(jobs->v[i].id));
		if (!done[i]) {
			nmissed++;
			qw_ctl_err("queue %s: job %s: no longer in %s (taken or changed meanwhile); "
			    "left alone", m->queue, id ? id : "?", qw_ctl_where_name(jobs->v[i].where));
		} else if (!ctl->json) {
			printf("%s %s\n", m->verb, id ? id : "?");
		}
		free(id);
	}
	if (ctl->json)
		qw_ctl_json_print(json_pack("{s:s,s:s,s:o,s:o}", "queue", m->queue, "action", m->verb,
		    "done", ok, "missed", missed));
	else {
		json_decref(ok);
		json_decref(missed);
	}
	return nmissed > 0 ? QW_CTL_NOTFOUND : 0;
}

/* Moves JOBS as M says, NEWS (may be NULL) what each becomes; DONE[i]
 * says which moved. */
static int
qw_ctl_move_run(struct qw_ctl *ctl, const struct qw_ctl_move *m, struct qw_ctl_jobs *jobs,
    char **news, size_t *nlens, int *done)
{
	char **none = news ? NULL : calloc(jobs->n + 1, sizeof(*none));
	int rc = 0;

	if (news == NULL && none == NULL) {
		qw_ctl_err("out of memory");
		return QW_CTL_TEMPFAIL;
	}
	for (size_t i = 0; rc == 0 && i < jobs->n; i += QW_CTL_BATCH) {
		size_t n = jobs->n - i < QW_CTL_BATCH ? jobs->n - i : QW_CTL_BATCH;
		rc = qw_ctl_move_batch(ctl, m, jobs, news ? news : none, nlens, i, n, done);
	}
	free(none);
	return rc;
}

/* The same, then the report. */
static int
qw_ctl_move(struct qw_ctl *ctl, const struct qw_ctl_move *m, struct qw_ctl_jobs *jobs,
    char **news, size_t *nlens)
{
	int *done = calloc(jobs->n + 1, sizeof(*done));
	int rc;

	if (done == NULL) {
		qw_ctl_err("out of memory");
		return QW_CTL_TEMPFAIL;
	}
	rc = qw_ctl_move_run(ctl, m, jobs, news, nlens, done);
	if (rc == 0)
		rc = qw_ctl_move_report(ctl, m, jobs, done);
	free(done);
	return rc;
}

/* The jobs named on the command line (from ARG on) in the places of MASK,
 * or with --all every job in ALL_FROM. */
static int
qw_ctl_pick(struct qw_ctl *ctl, int arg, unsigned mask, enum qw_key all_from,
    struct qw_ctl_jobs *out)
{
	int rc = 0;

	if (ctl->all && ctl->nargs > arg) {
		qw_ctl_err("give job ids or --all, not both");
		return QW_CTL_USAGE;
	}
	if (!ctl->all && ctl->nargs <= arg) {
		qw_ctl_err("no job ids given (or --all)");
		return QW_CTL_USAGE;
	}
	if (ctl->all)
		return qw_ctl_jobs_read(ctl, ctl->args[0], all_from, 0, out);
	for (int i = arg; rc == 0 && i < ctl->nargs; i++)
		rc = qw_ctl_jobs_find(ctl, ctl->args[0], ctl->args[i], mask, out);
	return rc;
}

/* ---- retry ------------------------------------------------------------- */

/* The job as it goes back to pending: attempt and interrupted reset, the
 * error gone. A raw job goes as it is. */
static char *
qw_ctl_retried(const struct qw_ctl_job *j, size_t *len)
{
	json_t *env;
	char *out;

	if (j->env == NULL)
		return NULL;
	if ((env = json_deep_copy(j->env)) == NULL)
		return NULL;
	json_object_del(env, "error");
	json_object_del(env, "failed_at");
	json_object_set_new(env, "attempt", json_integer(0));
	json_object_set_new(env, "interrupted", json_integer(0));
	out = json_dumps(env, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
	json_decref(env);
	if (out != NULL)
		*len = strlen(out);
	return out;
}

/* Moves the jobs of JOBS that are in FROM (dead or scheduled) to pending;
 * DONE[i] says which moved. */
static int
qw_ctl_retry_from(struct qw_ctl *ctl, struct qw_ctl_jobs *jobs, enum qw_key from, int *done)
{
	struct qw_ctl_jobs sel = { 0 };
	struct qw_ctl_move m = { ctl->args[0], from, QW_KEY_PENDING, "tail", "", "retried" };
	char **news = calloc(jobs->n + 1, sizeof(*news));
	size_t *lens = calloc(jobs->n + 1, sizeof(*lens)), *at = calloc(jobs->n + 1, sizeof(*at));
	int *sdone = calloc(jobs->n + 1, sizeof(*sdone));
	int rc = 0;

	sel.v = calloc(jobs->n + 1, sizeof(*sel.v));
	if (news == NULL || lens == NULL || at == NULL || sdone == NULL || sel.v == NULL) {
		rc = QW_CTL_TEMPFAIL;
		goto out;
	}
	for (size_t i = 0; i < jobs->n; i++)
		if (jobs->v[i].where == from) {
			news[sel.n] = qw_ctl_retried(&jobs->v[i], &lens[sel.n]);
			at[sel.n] = i;
			sel.v[sel.n++] = jobs->v[i];
		}
	if (sel.n > 0)
		rc = qw_ctl_move_run(ctl, &m, &sel, news, lens, sdone);
	for (size_t i = 0; rc == 0 && i < sel.n; i++)
		done[at[i]] = sdone[i];
out:
	for (size_t i = 0; news != NULL && i < sel.n; i++)
		free(news[i]);
	free(news);
	free(lens);
	free(at);
	free(sdone);
	free(sel.v);	/* the jobs themselves are JOBS' */
	return rc;
}

int
qw_ctl_retry(struct qw_ctl *ctl)
{
	struct qw_ctl_move m = { ctl->args[0], QW_KEY_DEAD, QW_KEY_PENDING, "tail", "", "retried" };
	struct qw_ctl_jobs jobs = { 0 };
	int *done = NULL;
	int rc = qw_ctl_jobs_check_queue(ctl, ctl->args[0], true);

	if (rc == 0)
		rc = qw_ctl_pick(ctl, 1, 1u << QW_KEY_DEAD | 1u << QW_KEY_SCHEDULED, QW_KEY_DEAD,
		    &jobs);
	if (rc == 0 && (done = calloc(jobs.n + 1, sizeof(*done))) == NULL)
		rc = QW_CTL_TEMPFAIL;
	if (rc == 0)
		rc = qw_ctl_retry_from(ctl, &jobs, QW_KEY_DEAD, done);
	if (rc == 0)
		rc = qw_ctl_retry_from(ctl, &jobs, QW_KEY_SCHEDULED, done);
	if (rc == 0)
		rc = qw_ctl_move_report(ctl, &m, &jobs, done);
	free(done);
	qw_ctl_jobs_free(&jobs);
	return rc;
}

/* ---- delete ------------------------------------------------------------ */

int
qw_ctl_delete(struct qw_ctl *ctl)
{
	struct qw_ctl_jobs jobs = { 0 };
	struct qw_ctl_move m = { ctl->args[0], QW_KEY_PENDING, QW_KEY_PENDING, "none", "deleted",
		"deleted" };
	char key[QW_CTL_KEY_MAX];
	int rc;

	if (!qw_ctl_jobs_parse_where(ctl->args[1], &m.from, false)) {
		char *e = qw_ctl_escape(ctl->args[1], strlen(ctl->args[1]));
		qw_ctl_err("delete: '%s' is not one of pending, scheduled, dead", e ? e : "?");
		free(e);
		return QW_CTL_USAGE;
	}
	m.to = m.from;
	if (ctl->all && !ctl->yes && ctl->nargs == 2) {
		qw_ctl_err("delete --all removes every job in %s for good: add --yes to do it",
		    qw_ctl_key(ctl, key, sizeof(key), m.queue, m.from, NULL));
		return QW_CTL_USAGE;
	}
	if ((rc = qw_ctl_jobs_check_queue(ctl, m.queue, true)) == 0 &&
	    (rc = qw_ctl_pick(ctl, 2, 1u << m.from, m.from, &jobs)) == 0)
		rc = qw_ctl_move(ctl, &m, &jobs, NULL, NULL);
	qw_ctl_jobs_free(&jobs);
	return rc;
}

/* ---- cancel ------------------------------------------------------------ */

/* The job as it goes to dead: the daemon's envelope (job.c), with the
 * error "cancelled: TEXT" and failed_at. */
static char *
qw_ctl_cancelled(struct qw_ctl *ctl, const struct qw_ctl_job *j, const char *error,
    int64_t now, size_t *len)
{
	struct qw_queue_conf qc = { .max_payload = UINT64_MAX / 8, .max_attempts = 1,
		.timeout_ms = 30000 };
	const struct qw_queue_conf *conf = qw_ctl_queue_conf(ctl, ctl->args[0]);
	struct qw_job job;
	char *elem = malloc(j->len + 1), *out;

	if (conf != NULL)
		qc = *conf;
	if (elem == NULL)
		return NULL;
	memcpy(elem, j->elem, j->len + 1);
	if (qw_job_parse(&job, elem, j->len, &qc, j->id) < 0)
		return NULL;
	out = qw_job_encode(&job, error, now, NULL, len);
	qw_job_clear(&job);
	return out;
}

/* A running job: the daemon that runs it reads the cancel hash. */
static int
qw_ctl_cancel_running(struct qw_ctl *ctl, const struct qw_ctl_job *j, const char *reason)
{
	char akey[QW_CTL_KEY_MAX], ckey[QW_CTL_KEY_MAX];
	const char *q = ctl->args[0];
	redisReply *r = redisCommand(ctl->c, "EVAL %s 2 %s %s %s %s", qw_ctl_lua_cancel,
	    qw_ctl_key(ctl, akey, sizeof(akey), q, QW_KEY_ACTIVE, j->instance),
	    qw_ctl_key(ctl, ckey, sizeof(ckey), q, QW_KEY_CANCEL, NULL), j->field, reason);
	char *id = qw_ctl_escape(j->id, strlen(j->id));
	char *inst = qw_ctl_escape(j->instance, strlen(j->instance));
	int rc = 0;

	if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
		rc = qw_ctl_fail(ctl, r, "cancel");
	} else if (r->integer == 0) {
		qw_ctl_err("queue %s: job %s: finished on %s meanwhile; nothing to cancel", q,
		    id ? id : "?", inst ? inst : "?");
		rc = QW_CTL_NOTFOUND;
	} else if (ctl->json) {
		qw_ctl_json_print(json_pack("{s:s,s:s,s:s,s:s,s:s}", "queue", q, "id", j->id,
		    "action", "cancel requested", "instance", j->instance, "field", j->field));
	} else {
		printf("cancel requested, job %s running on %s\n", id ? id : "?", inst ? inst : "?");
	}
	if (r != NULL)
		freeReplyObject(r);
	free(id);
	free(inst);
	return rc;
}

int
qw_ctl_cancel(struct qw_ctl *ctl)
{
	struct qw_ctl_jobs found = { 0 };
	struct qw_ctl_move m = { ctl->args[0], QW_KEY_PENDING, QW_KEY_DEAD, "dead",
		"cancelled dead", "cancelled" };
	char *error = NULL, *news[1] = { NULL };
	size_t lens[1];
	int64_t now;
	int rc = qw_ctl_jobs_check_queue(ctl, m.queue, true);

	if (rc == 0)
		rc = qw_ctl_jobs_find(ctl, m.queue, ctl->args[1], 1u << QW_KEY_PENDING |
		    1u << QW_KEY_SCHEDULED | 1u << QW_KEY_ACTIVE, &found);
	if (rc != 0)
		goto out;
	if (found.v[0].where == QW_KEY_ACTIVE) {
		rc = qw_ctl_cancel_running(ctl, &found.v[0], ctl->reason ? ctl->reason : "");
		goto out;
	}
	if ((now = qw_ctl_now(ctl)) < 0) {
		rc = ctl->fail;
		goto out;
	}
	if ((ctl->reason ? asprintf(&error, "cancelled: %s", ctl->reason) :
	    asprintf(&error, "cancelled")) < 0 ||
	    (news[0] = qw_ctl_cancelled(ctl, &found.v[0], error, now, &lens[0])) == NULL) {
		error = NULL;
		rc = QW_CTL_DATAERR;
		qw_ctl_err("queue %s: cannot write the cancelled job (out of memory, or the "
		    "reason is not UTF-8)", m.queue);
		goto out;
	}
	m.from = found.v[0].where;
	rc = qw_ctl_move(ctl, &m, &found, news, lens);
out:
	free(news[0]);
	free(error);
	qw_ctl_jobs_free(&found);
	return rc;
}

/* ---- pause and resume --------------------------------------------------- */

/* Who paused and when, for status: {"by": "user@host", "at": time}. */
static char *
qw_ctl_pause_value(int64_t now)
{
	char host[256] = "?", at[64];
	const struct passwd *pw = getpwuid(getuid());
	const char *user = getenv("SUDO_USER");
	json_t *v;
	char *s, by[512];

	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	if (user == NULL)
		user = pw != NULL ? pw->pw_name : "?";
	snprintf(by, sizeof(by), "%s@%s", user, host);
	qw_ctl_fmt_time(at, sizeof(at), now);
	v = json_pack("{s:s,s:s,s:I}", "by", by, "at", at, "at_ms", (json_int_t)now);
	s = v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(v);
	return s;
}

static int
qw_ctl_pause_done(struct qw_ctl *ctl, bool paused, bool changed)
{
	const char *q = ctl->args[0];

	if (ctl->json)
		qw_ctl_json_print(json_pack("{s:s,s:b,s:b}", "queue", q, "paused", paused, "changed",
		    changed));
	else if (paused)
		printf(changed ? "queue %s paused: instances stop taking its jobs within 1 s; "
		    "running jobs finish\n" : "queue %s was paused already\n", q);
	else
		printf(changed ? "queue %s resumed\n" : "queue %s was not paused\n", q);
	return 0;
}

int
qw_ctl_pause(struct qw_ctl *ctl)
{
	char key[QW_CTL_KEY_MAX], *v = NULL;
	int64_t now;
	redisReply *r;
	int rc = qw_ctl_jobs_check_queue(ctl, ctl->args[0], true);

	if (rc != 0)
		return rc;
	if ((now = qw_ctl_now(ctl)) < 0)
		return ctl->fail;
	if ((v = qw_ctl_pause_value(now)) == NULL)
		return QW_CTL_TEMPFAIL;
	r = qw_ctl_cmd(ctl, "SET %s %s NX",
	    qw_ctl_key(ctl, key, sizeof(key), ctl->args[0], QW_KEY_PAUSED, NULL), v);
	free(v);
	if (r == NULL)
		return ctl->fail;
	rc = qw_ctl_pause_done(ctl, true, r->type == REDIS_REPLY_STATUS);
	freeReplyObject(r);
	return rc;
}

int
qw_ctl_resume(struct qw_ctl *ctl)
{
	char key[QW_CTL_KEY_MAX];
	redisReply *r;
	int rc = qw_ctl_jobs_check_queue(ctl, ctl->args[0], true);

	if (rc != 0)
		return rc;
	r = qw_ctl_cmd(ctl, "DEL %s",
	    qw_ctl_key(ctl, key, sizeof(key), ctl->args[0], QW_KEY_PAUSED, NULL));
	if (r == NULL)
		return ctl->fail;
	rc = qw_ctl_pause_done(ctl, false, r->integer > 0);
	freeReplyObject(r);
	return rc;
}

/* ---- enqueue ------------------------------------------------------------ */

/* The payload: the word, or stdin byte for byte ("-", or none given while
 * stdin is not a terminal). */
static int
qw_ctl_payload(struct qw_ctl *ctl, char **out, size_t *len)
{
	size_t cap = 65536, n = 0, got;
	char *buf;

	if (ctl->nargs > 1 && strcmp(ctl->args[1], "-") != 0) {
		*len = strlen(ctl->args[1]);
		return (*out = strdup(ctl->args[1])) == NULL ? QW_CTL_TEMPFAIL : 0;
	}
	if (ctl->nargs < 2 && isatty(STDIN_FILENO)) {
		qw_ctl_err("enqueue: no payload: give it as a word, or '-' to read it from stdin");
		return QW_CTL_USAGE;
	}
	if ((buf = malloc(cap)) == NULL)
		return QW_CTL_TEMPFAIL;
	while ((got = fread(buf + n, 1, cap - n, stdin)) > 0) {
		n += got;
		if (n == cap) {
			char *b = realloc(buf, cap *= 2);
			if (b == NULL) {
				free(buf);
				return QW_CTL_TEMPFAIL;
			}
			buf = b;
		}
	}
	if (ferror(stdin)) {
		free(buf);
		qw_ctl_err("enqueue: cannot read the payload from stdin");
		return QW_CTL_DATAERR;
	}
	*out = buf;
	*len = n;
	return 0;
}

/* Adds "NAME VALUE" for a duration option; WHOLE_S: in seconds (timeout),
 * else ms. */
static int
qw_ctl_dur_opt(const char *opt, const char *v, const char *name, bool secs, const char **argv,
    size_t *k, char *buf, size_t len)
{
	uint64_t ms;

	if (v == NULL)
		return 0;
	if (qw_conf_parse_duration(v, &ms) < 0 || (ms == 0 && strcmp(opt, "--delay") != 0)) {
		char *e = qw_ctl_escape(v, strlen(v));
		qw_ctl_err("enqueue: %s '%s' is not a duration (such as 5s, 250ms, 2m)", opt,
		    e ? e : "?");
		free(e);
		return QW_CTL_USAGE;
	}
	if (secs)
		qw_fmt_seconds(buf, len, ms);
	else
		qw_fmt_u64(buf, ms);
	argv[(*k)++] = name;
	argv[(*k)++] = buf;
	return 0;
}

/* FCALL qw_enqueue; loads the library once when Redis lacks it. */
static redisReply *
qw_ctl_fcall(struct qw_ctl *ctl, int argc, const char **argv, const size_t *lens)
{
	redisReply *r = qw_ctl_cmdv_raw(ctl, argc, argv, lens);
	char why[256];

	if (r == NULL || r->type != REDIS_REPLY_ERROR || strstr(r->str, "unction not found") == NULL)
		return r;
	freeReplyObject(r);
	if (qw_library_load_sync(ctl->c, why, sizeof(why)) < 0) {
		qw_ctl_err("enqueue: cannot load the function library qworkerd: %s", why);
		return NULL;
	}
	return qw_ctl_cmdv_raw(ctl, argc, argv, lens);
}

/* The options of FCALL qw_enqueue from the command line's, added to ARGV
 * at *K; BUFS holds the numbers written. */
static int
qw_ctl_enqueue_opts(struct qw_ctl *ctl, const char **argv, size_t *k, char bufs[3][32])
{
	char *end;
	long n;
	int rc = qw_ctl_dur_opt("--delay", ctl->delay, "delay", false, argv, k, bufs[0], 32);

	if (rc == 0)
		rc = qw_ctl_dur_opt("--timeout", ctl->job_timeout, "timeout", true, argv, k, bufs[1],
		    32);
	if (rc == 0)
		rc = qw_ctl_dur_opt("--unique-for", ctl->unique_for, "unique_for", false, argv, k,
		    bufs[2], 32);
	if (rc != 0)
		return rc;
	if (ctl->id != NULL)
		argv[(*k)++] = "id", argv[(*k)++] = ctl->id;
	if (ctl->max_attempts == NULL)
		return 0;
	n = strtol(ctl->max_attempts, &end, 10);
	if (*end != '\0' || end == ctl->max_attempts || n < 1 || n > 1000000) {
		char *e = qw_ctl_escape(ctl->max_attempts, strlen(ctl->max_attempts));
		qw_ctl_err("enqueue: --max-attempts '%s' is not a whole number from 1 to 1000000",
		    e ? e : "?");
		free(e);
		return QW_CTL_USAGE;
	}
	argv[(*k)++] = "max_attempts", argv[(*k)++] = ctl->max_attempts;
	return 0;
}

/* Prints the id qw_enqueue returned in R, or why it failed. */
static int
qw_ctl_enqueue_done(struct qw_ctl *ctl, const redisReply *r)
{
	if (r == NULL && ctl->c->err == 0)
		return QW_CTL_UNAVAILABLE;	/* the library could not be loaded: said */
	if (r != NULL && r->type == REDIS_REPLY_ERROR &&
	    strncmp(r->str, "ERR unknown command", 19) == 0) {
		qw_ctl_err("enqueue: this Redis has no functions (FCALL needs Redis 7.0 or later); "
		    "enqueue with LPUSH instead (qworkerd-jobs(7))");
		return QW_CTL_UNAVAILABLE;
	}
	if (r == NULL || r->type != REDIS_REPLY_STRING)
		return qw_ctl_fail(ctl, r, "enqueue");
	if (ctl->json)
		qw_ctl_json_print(json_pack("{s:s,s:s%}", "queue", ctl->args[0], "id", r->str,
		    r->len));
	else
		printf("%.*s\n", (int)r->len, r->str);
	return 0;
}

int
qw_ctl_enqueue(struct qw_ctl *ctl)
{
	char key[QW_CTL_KEY_MAX], bufs[3][32];
	const char *argv[16] = { "FCALL", "qw_enqueue", "1" };
	size_t lens[16], k = 5, plen = 0;
	char *payload = NULL;
	redisReply *r;
	int rc = qw_ctl_jobs_check_queue(ctl, ctl->args[0], false);

	if (rc != 0 || (rc = qw_ctl_enqueue_opts(ctl, argv, &k, bufs)) != 0 ||
	    (rc = qw_ctl_payload(ctl, &payload, &plen)) != 0)
		return rc;
	argv[3] = qw_ctl_key(ctl, key, sizeof(key), ctl->args[0], QW_KEY_PENDING, NULL);
	argv[4] = payload;
	for (size_t i = 0; i < k; i++)
		lens[i] = i == 4 ? plen : strlen(argv[i]);
	r = qw_ctl_fcall(ctl, (int)k, argv, lens);
	rc = qw_ctl_enqueue_done(ctl, r);
	if (r != NULL)
		freeReplyObject(r);
	free(payload);
	return rc;
}
