/* ctl_read.c - qworkerctl's commands that only read: status, ls, show and
 * instances. */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "ctl.h"

#define QW_CTL_LS_DEFAULT 100
#define QW_CTL_PREVIEW 40

/* ---- status ------------------------------------------------------------ */

struct qw_ctl_qstat {
	long long pending, scheduled, running, dead;
	json_t *paused;		/* NULL when not paused, else who paused it */
	char breaker[64];
};

/* The pause key's value: JSON (qworkerctl writes who and when) or text. */
static json_t *
qw_ctl_paused_value(const redisReply *r)
{
	json_t *v;

	if (r == NULL || r->type != REDIS_REPLY_STRING)
		return NULL;
	v = json_loadb(r->str, r->len, 0, NULL);
	return v != NULL ? v : qw_ctl_json_bytes(r->str, r->len);
}

/* The breaker's state (SPEC 14): closed while its key is absent, open
 * while it exists (as the metrics count it), or what its value or "state"
 * field says when it says more. */
static void
qw_ctl_breaker(struct qw_ctl *ctl, const char *key, char *out, size_t len)
{
	redisReply *t = qw_ctl_cmd(ctl, "TYPE %s", key), *v = NULL;

	snprintf(out, len, "closed");
	if (t == NULL)
		return;
	if (strcmp(t->str, "string") == 0)
		v = qw_ctl_cmd(ctl, "GET %s", key);
	else if (strcmp(t->str, "hash") == 0)
		v = qw_ctl_cmd(ctl, "HGET %s state", key);
	if (strcmp(t->str, "none") != 0)
		snprintf(out, len, "open");
	if (v != NULL && v->type == REDIS_REPLY_STRING && v->len > 0)
		snprintf(out, len, "%.*s", (int)v->len, v->str);
	freeReplyObject(t);
	if (v != NULL)
		freeReplyObject(v);
}

/* Jobs in flight: the active hash of every instance with a lease (an
 * instance drops its lease only once its active hash is empty). */
static int
qw_ctl_running_count(struct qw_ctl *ctl, const char *queue, long long *n)
{
	char key[QW_CTL_KEY_MAX], akey[QW_CTL_KEY_MAX];
	redisReply *r = qw_ctl_cmd(ctl, "ZRANGE %s 0 -1",
	    qw_ctl_key(ctl, key, sizeof(key), queue, QW_KEY_LEASES, NULL));

	*n = 0;
	if (r == NULL)
		return ctl->fail;
	for (size_t i = 0; i < r->elements; i++) {
		redisReply *h = qw_ctl_cmd(ctl, "HLEN %s", qw_ctl_key(ctl, akey, sizeof(akey), queue,
		    QW_KEY_ACTIVE, r->element[i]->str));
		if (h == NULL) {
			freeReplyObject(r);
			return ctl->fail;
		}
		*n += h->integer;
		freeReplyObject(h);
	}
	freeReplyObject(r);
	return 0;
}

static int
qw_ctl_qstat(struct qw_ctl *ctl, const char *q, struct qw_ctl_qstat *st)
{
	static const struct { enum qw_key k; const char *cmd; } counts[] = {
		{ QW_KEY_PENDING, "LLEN" }, { QW_KEY_SCHEDULED, "ZCARD" }, { QW_KEY_DEAD, "LLEN" } };
	long long *dst[] = { &st->pending, &st->scheduled, &st->dead };
	char key[QW_CTL_KEY_MAX];
	redisReply *r;

	memset(st, 0, sizeof(*st));
	for (size_t i = 0; i < 3; i++) {
		r = qw_ctl_cmd(ctl, "%s %s", counts[i].cmd,
		    qw_ctl_key(ctl, key, sizeof(key), q, counts[i].k, NULL));
		if (r == NULL)
			return ctl->fail;
		*dst[i] = r->integer;
		freeReplyObject(r);
	}
	if ((r = qw_ctl_cmd(ctl, "GET %s", qw_ctl_key(ctl, key, sizeof(key), q, QW_KEY_PAUSED,
	    NULL))) == NULL)
		return ctl->fail;
	st->paused = qw_ctl_paused_value(r);
	freeReplyObject(r);
	qw_ctl_breaker(ctl, qw_ctl_key(ctl, key, sizeof(key), q, QW_KEY_BREAKER, NULL),
	    st->breaker, sizeof(st->breaker));
	return qw_ctl_running_count(ctl, q, &st->running);
}

/* "yes (by USER@HOST at TIME)" from the pause key's value. */
static void
qw_ctl_paused_text(const json_t *p, char *buf, size_t len)
{
	const char *by = json_string_value(json_object_get(p, "by"));
	const char *at = json_string_value(json_object_get(p, "at"));

	if (!p)
		snprintf(buf, len, "no");
	else if (by && at)
		snprintf(buf, len, "yes (by %s at %s)", by, at);
	else
		snprintf(buf, len, "yes");
}

static int qw_ctl_instances_of(struct qw_ctl *ctl, char **queues, size_t nq, json_t **out);
static void qw_ctl_instances_print(json_t *list);

int
qw_ctl_status(struct qw_ctl *ctl)
{
	static const char *const heads[] = { "QUEUE", "PENDING", "SCHEDULED", "RUNNING", "DEAD",
		"PAUSED", "BREAKER" };
	struct qw_ctl_table *t = qw_ctl_table_new(7, heads);
	json_t *qs = json_array(), *inst = NULL;
	char **names = NULL;
	size_t n = 0;
	int rc = qw_ctl_jobs_queues(ctl, &names, &n);

	for (size_t i = 0; rc == 0 && i < n; i++) {
		struct qw_ctl_qstat st;
		char c[4][24], paused[256];
		if ((rc = qw_ctl_qstat(ctl, names[i], &st)) != 0)
			break;
		snprintf(c[0], 24, "%lld", st.pending);
		snprintf(c[1], 24, "%lld", st.scheduled);
		snprintf(c[2], 24, "%lld", st.running);
		snprintf(c[3], 24, "%lld", st.dead);
		qw_ctl_paused_text(st.paused, paused, sizeof(paused));
		const char *row[] = { names[i], c[0], c[1], c[2], c[3], paused, st.breaker };
		qw_ctl_table_add(t, row);
		json_array_append_new(qs, json_pack("{s:s,s:I,s:I,s:I,s:I,s:b,s:o*,s:s}", "name",
		    names[i], "pending", st.pending, "scheduled", st.scheduled, "running", st.running,
		    "dead", st.dead, "paused", st.paused != NULL, "paused_by", st.paused, "breaker",
		    st.breaker));
	}
	if (rc == 0)
		rc = qw_ctl_instances_of(ctl, names, n, &inst);
	if (rc == 0 && ctl->json) {
		qw_ctl_json_print(json_pack("{s:O,s:O}", "queues", qs, "instances", inst));
	} else if (rc == 0) {
		if (n == 0)
			printf("no queues under prefix %s\n", ctl->prefix);
		else
			qw_ctl_table_print(t), t = NULL;
		putchar('\n');
		qw_ctl_instances_print(inst);
	}
	qw_ctl_table_free(t);
	json_decref(qs);
	json_decref(inst);
	qw_ctl_jobs_free_names(names, n);
	return rc;
}

/* ---- instances ------------------------------------------------------- */

/* Holder info (lease.h): host, boot id, pid namespace, pid, start ticks,
 * and from qworkerd 0.1 on the wall-clock start in ms. */
static void
qw_ctl_holder(const char *info, json_t *o)
{
	char host[256] = "";
	long pid = 0;
	long long started = 0;
	unsigned long long ns, ticks;
	char boot[64];
	int n = sscanf(info, "%255[^\t]\t%63[^\t]\t%llu\t%ld\t%llu\t%lld", host, boot, &ns, &pid,
	    &ticks, &started);

	json_object_set_new(o, "host", n >= 1 ? json_string(host) : json_null());
	json_object_set_new(o, "pid", n >= 4 ? json_integer(pid) : json_null());
	json_object_set_new(o, "started", n >= 6 ? json_integer(started) : json_null());
}

/* Adds to BY (instance -> object) the live instances of QUEUE. */
static int
qw_ctl_instances_queue(struct qw_ctl *ctl, const char *q, int64_t now, json_t *by)
{
	char key[QW_CTL_KEY_MAX], hkey[QW_CTL_KEY_MAX], akey[QW_CTL_KEY_MAX];
	redisReply *l = qw_ctl_cmd(ctl, "ZRANGE %s 0 -1 WITHSCORES",
	    qw_ctl_key(ctl, key, sizeof(key), q, QW_KEY_LEASES, NULL));

	if (l == NULL)
		return ctl->fail;
	qw_ctl_key(ctl, hkey, sizeof(hkey), q, QW_KEY_HOLDERS, NULL);
	for (size_t i = 0; i + 1 < l->elements; i += 2) {
		const char *name = l->element[i]->str;
		long long left = (long long)strtod(l->element[i + 1]->str, NULL) - now;
		json_t *o = json_object_get(by, name);
		redisReply *h, *a;
		if (left <= 0)
			continue;
		if (o == NULL) {
			o = json_pack("{s:s,s:I,s:I,s:[]}", "name", name, "lease_left_ms", left,
			    "jobs", (json_int_t)0, "queues");
			h = qw_ctl_cmd(ctl, "HGET %s %s", hkey, name);
			qw_ctl_holder(h && h->type == REDIS_REPLY_STRING ? h->str : "", o);
			if (h != NULL)
				freeReplyObject(h);
			json_object_set_new(by, name, o);
		}
		if (json_integer_value(json_object_get(o, "lease_left_ms")) > left)
			json_object_set_new(o, "lease_left_ms", json_integer(left));
		json_array_append_new(json_object_get(o, "queues"), json_string(q));
		a = qw_ctl_cmd(ctl, "HLEN %s", qw_ctl_key(ctl, akey, sizeof(akey), q, QW_KEY_ACTIVE,
		    name));
		if (a != NULL) {
			json_object_set_new(o, "jobs", json_integer(
			    json_integer_value(json_object_get(o, "jobs")) + a->integer));
			freeReplyObject(a);
		}
	}
	freeReplyObject(l);
	return 0;
}

static int
qw_ctl_instances_of(struct qw_ctl *ctl, char **queues, size_t nq, json_t **out)
{
	json_t *by = json_object(), *list = json_array();
	int64_t now = qw_ctl_now(ctl);
	int rc = now < 0 ? ctl->fail : 0;

	for (size_t i = 0; rc == 0 && i < nq; i++)
		rc = qw_ctl_instances_queue(ctl, queues[i], now, by);
	for (void *it = json_object_iter(by); it != NULL; it = json_object_iter_next(by, it))
		json_array_append(list, json_object_iter_value(it));
	json_decref(by);
	*out = list;
	return rc;
}

static void
qw_ctl_instances_print(json_t *list)
{
	static const char *const heads[] = { "INSTANCE", "HOST", "PID", "STARTED", "LEASE LEFT",
		"JOBS", "QUEUES" };
	struct qw_ctl_table *t;
	size_t i;

	if (json_array_size(list) == 0) {
		puts("no live instances");
		return;
	}
	t = qw_ctl_table_new(7, heads);
	for (i = 0; i < json_array_size(list); i++) {
		json_t *o = json_array_get(list, i);
		char pid[24], started[40], left[40], jobs[24], queues[1024] = "";
		json_t *qs = json_object_get(o, "queues");
		json_int_t st = json_integer_value(json_object_get(o, "started"));
		snprintf(pid, sizeof(pid), "%" JSON_INTEGER_FORMAT,
		    json_integer_value(json_object_get(o, "pid")));
		if (st > 0)
			qw_ctl_fmt_time(started, sizeof(started), st);
		else
			snprintf(started, sizeof(started), "-");
		qw_ctl_fmt_age(left, sizeof(left), json_integer_value(json_object_get(o,
		    "lease_left_ms")));
		snprintf(jobs, sizeof(jobs), "%" JSON_INTEGER_FORMAT,
		    json_integer_value(json_object_get(o, "jobs")));
		for (size_t k = 0; k < json_array_size(qs); k++)
			snprintf(queues + strlen(queues), sizeof(queues) - strlen(queues), "%s%s",
			    k ? "," : "", json_string_value(json_array_get(qs, k)));
		const char *row[] = { json_string_value(json_object_get(o, "name")),
			json_string_value(json_object_get(o, "host")), pid, started, left, jobs, queues };
		qw_ctl_table_add(t, row);
	}
	qw_ctl_table_print(t);
}

int
qw_ctl_instances(struct qw_ctl *ctl)
{
	char **names = NULL;
	size_t n = 0;
	json_t *inst = NULL;
	int rc = qw_ctl_jobs_queues(ctl, &names, &n);

	if (rc == 0)
		rc = qw_ctl_instances_of(ctl, names, n, &inst);
	if (rc == 0 && ctl->json)
		qw_ctl_json_print(json_pack("{s:O}", "instances", inst));
	else if (rc == 0)
		qw_ctl_instances_print(inst);
	json_decref(inst);
	qw_ctl_jobs_free_names(names, n);
	return rc;
}

/* ---- ls and show -------------------------------------------------------- */

/* The payload's first bytes, for a glance. */
static void
qw_ctl_preview(const struct qw_ctl_job *j, char *buf, size_t len)
{
	const char *p = j->env ? qw_ctl_job_str(j, "payload") : j->elem;
	size_t n = p == NULL ? 0 : j->env ? strlen(p) : j->len;

	if (p == NULL)
		p = j->env && json_object_get(j->env, "payload_encoding") ? "(base64)" : "(json)";
	else if (j->env && json_object_get(j->env, "payload_encoding"))
		p = "(base64)";
	if (n == 0 || p[0] == '(')
		n = strlen(p);
	snprintf(buf, len, "%.*s%s", (int)(n > QW_CTL_PREVIEW ? QW_CTL_PREVIEW : n), p,
	    n > QW_CTL_PREVIEW ? "..." : "");
}

/* One job as JSON: its place and what the envelope says. */
static json_t *
qw_ctl_job_json(const char *queue, const struct qw_ctl_job *j, bool whole)
{
	json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "queue", queue, "id", j->id, "where",
	    qw_ctl_where_name(j->where), "attempt", (json_int_t)qw_ctl_job_int(j, "attempt", 0));

	if (o == NULL)
		return NULL;
	if (j->where == QW_KEY_SCHEDULED)
		json_object_set_new(o, "due", json_integer(j->due));
	if (j->where == QW_KEY_ACTIVE) {
		json_object_set_new(o, "instance", json_string(j->instance));
		json_object_set_new(o, "field", json_string(j->field));
		json_object_set_new(o, "started", json_boolean(j->started));
	}
	if (qw_ctl_job_str(j, "error") != NULL)
		json_object_set_new(o, "error", json_string(qw_ctl_job_str(j, "error")));
	if (qw_ctl_job_int(j, "failed_at", 0) > 0)
		json_object_set_new(o, "failed_at", json_integer(qw_ctl_job_int(j, "failed_at", 0)));
	if (qw_ctl_job_int(j, "enqueued_at", 0) > 0)
		json_object_set_new(o, "enqueued_at", json_integer(qw_ctl_job_int(j, "enqueued_at",
		    0)));
	if (whole && j->env != NULL)
		json_object_set(o, "envelope", j->env);
	else if (whole)
		json_object_set_new(o, "raw", qw_ctl_json_bytes(j->elem, j->len));
	return o;
}

/* The per-place column of ls: age, due time, error or instance. */
static void
qw_ctl_ls_row(struct qw_ctl_table *t, const struct qw_ctl_job *j, int64_t now)
{
	char att[24], when[64] = "-", preview[QW_CTL_PREVIEW + 8];
	long long enq = qw_ctl_job_int(j, "enqueued_at", 0);
	const char *third = NULL, *fourth;

	snprintf(att, sizeof(att), "%lld", qw_ctl_job_int(j, "attempt", 0));
	qw_ctl_preview(j, preview, sizeof(preview));
	fourth = preview;
	switch (j->where) {
	case QW_KEY_SCHEDULED:
		qw_ctl_fmt_time(when, sizeof(when), j->due);
		break;
	case QW_KEY_DEAD:
		if (qw_ctl_job_int(j, "failed_at", 0) > 0)
			qw_ctl_fmt_age(when, sizeof(when), now - qw_ctl_job_int(j, "failed_at", 0));
		fourth = qw_ctl_job_str(j, "error");
		break;
	case QW_KEY_ACTIVE:
		third = j->started ? "running" : "taken ahead";
		fourth = j->instance;
		break;
	default:
		if (enq > 0)
			qw_ctl_fmt_age(when, sizeof(when), now - enq);
		break;
	}
	const char *row[] = { j->id, att, j->where == QW_KEY_ACTIVE ? third : when, fourth };
	qw_ctl_table_add(t, row);
}

/* How many jobs WHERE holds in all, when JOBS may not be all of them. */
static int
qw_ctl_ls_total(struct qw_ctl *ctl, const char *q, enum qw_key where,
    const struct qw_ctl_jobs *jobs, json_int_t *total)
{
	char key[QW_CTL_KEY_MAX];
	redisReply *r;

	*total = (json_int_t)jobs->n;
	if (where == QW_KEY_ACTIVE)
		return 0;	/* read whole (qw_ctl_ls) */
	r = qw_ctl_cmd(ctl, "%s %s", where == QW_KEY_SCHEDULED ? "ZCARD" : "LLEN",
	    qw_ctl_key(ctl, key, sizeof(key), q, where, NULL));
	if (r == NULL)
		return ctl->fail;
	if (r->integer > *total)
		*total = r->integer;
	freeReplyObject(r);
	return 0;
}

int
qw_ctl_ls(struct qw_ctl *ctl)
{
	static const char *const heads[][4] = {
		[QW_KEY_PENDING] = { "ID", "ATTEMPT", "AGE", "PAYLOAD" },
		[QW_KEY_SCHEDULED] = { "ID", "ATTEMPT", "DUE", "PAYLOAD" },
		[QW_KEY_DEAD] = { "ID", "ATTEMPT", "FAILED", "ERROR" },
		[QW_KEY_ACTIVE] = { "ID", "ATTEMPT", "STATE", "INSTANCE" },
	};
	const char *q = ctl->args[0];
	struct qw_ctl_jobs jobs = { 0 };
	enum qw_key where;
	int64_t now;
	json_int_t total = 0;
	size_t limit, shown = 0;
	int rc;

	if (!qw_ctl_jobs_parse_where(ctl->args[1], &where, true)) {
		char *e = qw_ctl_escape(ctl->args[1], strlen(ctl->args[1]));
		qw_ctl_err("ls: '%s' is not one of pending, scheduled, running, dead", e ? e : "?");
		free(e);
		return QW_CTL_USAGE;
	}
	if ((rc = qw_ctl_jobs_check_queue(ctl, q, true)) != 0)
		return rc;
	if ((now = qw_ctl_now(ctl)) < 0)
		return ctl->fail;
	limit = ctl->n < 0 ? QW_CTL_LS_DEFAULT : (size_t)ctl->n;
	/* Running jobs come from many hashes: read them all to count them. */
	rc = qw_ctl_jobs_read(ctl, q, where, where == QW_KEY_ACTIVE ? 0 : limit, &jobs);
	if (rc == 0)
		rc = qw_ctl_ls_total(ctl, q, where, &jobs, &total);
	if (limit > 0 && jobs.n > limit)
		shown = limit;
	else
		shown = jobs.n;
	if (rc == 0 && ctl->json) {
		json_t *list = json_array();
		for (size_t i = 0; i < shown; i++)
			json_array_append_new(list, qw_ctl_job_json(q, &jobs.v[i], false));
		qw_ctl_json_print(json_pack("{s:s,s:s,s:I,s:o}", "queue", q, "where",
		    qw_ctl_where_name(where), "total", total, "jobs", list));
	} else if (rc == 0) {
		struct qw_ctl_table *t = qw_ctl_table_new(4, heads[where]);
		for (size_t i = 0; i < shown; i++)
			qw_ctl_ls_row(t, &jobs.v[i], now);
		qw_ctl_table_print(t);
		if ((size_t)total > shown)
			fprintf(stderr, "qworkerctl: %zu of %lld jobs shown (-n 0 shows all)\n", shown,
			    (long long)total);
	}
	qw_ctl_jobs_free(&jobs);
	return rc;
}

static void
qw_ctl_show_human(const char *q, const struct qw_ctl_job *j)
{
	char buf[64];
	char *id = qw_ctl_escape(j->id, strlen(j->id)), *body;

	printf("queue:    %s\nid:       %s\nwhere:    %s\n", q, id ? id : "?",
	    qw_ctl_where_name(j->where));
	free(id);
	if (j->where == QW_KEY_SCHEDULED)
		printf("due:      %s\n", qw_ctl_fmt_time(buf, sizeof(buf), j->due));
	if (j->where == QW_KEY_ACTIVE) {
		char *inst = qw_ctl_escape(j->instance, strlen(j->instance));
		char *field = qw_ctl_escape(j->field, strlen(j->field));
		printf("instance: %s (%s)\nfield:    %s\n", inst ? inst : "?",
		    j->started ? "running" : "taken ahead, not started", field ? field : "?");
		free(inst);
		free(field);
	}
	if (j->env != NULL) {
		char *s = json_dumps(j->env, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
		    JSON_REAL_PRECISION(17));
		body = NULL;
		puts("envelope:");
		/* Line by line: the lines jansson breaks must stay lines. */
		for (char *line = s, *nl; line != NULL; line = nl ? nl + 1 : NULL) {
			nl = strchr(line, '\n');
			char *e = qw_ctl_escape(line, nl ? (size_t)(nl - line) : strlen(line));
			puts(e ? e : "?");
			free(e);
		}
		free(s);
	} else {
		body = qw_ctl_escape(j->elem, j->len);
		printf("raw job (%zu bytes):\n%s\n", j->len, body ? body : "?");
	}
	free(body);
}

int
qw_ctl_show(struct qw_ctl *ctl)
{
	struct qw_ctl_jobs found = { 0 };
	const char *q = ctl->args[0];
	int rc = qw_ctl_jobs_check_queue(ctl, q, true);

	if (rc == 0)
		rc = qw_ctl_jobs_find(ctl, q, ctl->args[1], ~0u, &found);
	if (rc == 0 && ctl->json)
		qw_ctl_json_print(qw_ctl_job_json(q, &found.v[0], true));
	else if (rc == 0)
		qw_ctl_show_human(q, &found.v[0]);
	qw_ctl_jobs_free(&found);
	return rc;
}
