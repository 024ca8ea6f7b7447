/* ctl_jobs.c - owns how qworkerctl reads jobs: from pending, scheduled,
 * dead and the active hash of every instance, what it calls each job (its
 * id), and which queues exist. Reading changes nothing; every change goes
 * through a script that checks the job is still where it was read
 * (ctl_change.c). */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "ctl.h"

const char *
qw_ctl_where_name(enum qw_key where)
{
	return where == QW_KEY_ACTIVE ? "running" : qw_keys_word(where);
}

bool
qw_ctl_jobs_parse_where(const char *s, enum qw_key *where, bool running)
{
	static const enum qw_key kinds[] = { QW_KEY_PENDING, QW_KEY_SCHEDULED, QW_KEY_DEAD,
		QW_KEY_ACTIVE };

	for (size_t i = 0; i < 4; i++)
		if (strcmp(s, qw_ctl_where_name(kinds[i])) == 0 &&
		    (running || kinds[i] != QW_KEY_ACTIVE)) {
			*where = kinds[i];
			return true;
		}
	return false;
}

void
qw_ctl_jobs_free(struct qw_ctl_jobs *jobs)
{
	for (size_t i = 0; i < jobs->n; i++) {
		struct qw_ctl_job *j = &jobs->v[i];
		free(j->elem);
		json_decref(j->env);
		free(j->id);
		free(j->instance);
		free(j->field);
	}
	free(jobs->v);
	memset(jobs, 0, sizeof(*jobs));
}

long long
qw_ctl_job_int(const struct qw_ctl_job *job, const char *name, long long def)
{
	json_t *v = job->env ? json_object_get(job->env, name) : NULL;

	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_real(v))
		return (long long)json_real_value(v);
	return def;
}

const char *
qw_ctl_job_str(const struct qw_ctl_job *job, const char *name)
{
	json_t *v = job->env ? json_object_get(job->env, name) : NULL;

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* A job without an id of its own (a raw job, an envelope without "id") is
 * called "@" and 16 hexadecimal digits of a hash of its bytes (FNV-1a),
 * the same each time it is read; a running one is called by its field,
 * as the daemon calls it. */
static char *
qw_ctl_job_name(const char *elem, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	char *out;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)elem[i];
		h *= 0x100000001b3ULL;
	}
	return asprintf(&out, "@%016" PRIx64, h) < 0 ? NULL : out;
}

/* An envelope, as the daemon reads one (SPEC 3): a JSON object with a
 * payload member. */
static json_t *
qw_ctl_job_envelope(const char *elem, size_t len)
{
	size_t i = 0;
	json_t *obj;

	while (i < len && (elem[i] == ' ' || elem[i] == '\t' || elem[i] == '\n' || elem[i] == '\r'))
		i++;
	if (i == len || elem[i] != '{')
		return NULL;
	obj = json_loadb(elem, len, JSON_ALLOW_NUL, NULL);
	if (obj != NULL && (!json_is_object(obj) || json_object_get(obj, "payload") == NULL)) {
		json_decref(obj);
		obj = NULL;
	}
	return obj;
}

/* Room for one more job in JOBS. */
static int
qw_ctl_jobs_grow(struct qw_ctl_jobs *jobs)
{
	size_t cap = jobs->cap ? jobs->cap * 2 : 16;
	struct qw_ctl_job *v;

	if (jobs->n < jobs->cap)
		return 0;
	if ((v = realloc(jobs->v, cap * sizeof(*v))) == NULL)
		return -1;
	jobs->v = v;
	jobs->cap = cap;
	return 0;
}

/* Moves job I of FROM to the end of TO. */
static int
qw_ctl_jobs_take(struct qw_ctl_jobs *from, size_t i, struct qw_ctl_jobs *to)
{
	if (qw_ctl_jobs_grow(to) < 0) {
		qw_ctl_err("out of memory");
		return QW_CTL_TEMPFAIL;
	}
	to->v[to->n++] = from->v[i];
	from->v[i] = from->v[--from->n];
	return 0;
}

static struct qw_ctl_job *
qw_ctl_jobs_push(struct qw_ctl_jobs *jobs, enum qw_key where, const redisReply *e,
    const char *field)
{
	struct qw_ctl_job *j;
	const char *id;

	if (qw_ctl_jobs_grow(jobs) < 0)
		return NULL;
	j = &jobs->v[jobs->n];
	memset(j, 0, sizeof(*j));
	j->where = where;
	if ((j->elem = malloc(e->len + 1)) == NULL)
		return NULL;
	memcpy(j->elem, e->str, e->len);
	j->elem[e->len] = '\0';
	j->len = e->len;
	jobs->n++;
	j->env = qw_ctl_job_envelope(j->elem, j->len);
	id = qw_ctl_job_str(j, "id");
	j->id = id ? strdup(id) : field ? strdup(field) : qw_ctl_job_name(j->elem, j->len);
	return j->id ? j : NULL;
}

/* Pending in the order jobs leave it: the tail first. */
static int
qw_ctl_jobs_list(struct qw_ctl *ctl, const char *key, enum qw_key where, size_t limit,
    struct qw_ctl_jobs *out)
{
	redisReply *r;
	bool tail = where == QW_KEY_PENDING;
	long long lim = (long long)limit;

	r = limit == 0 ? qw_ctl_cmd(ctl, "LRANGE %s 0 -1", key) :
	    tail ? qw_ctl_cmd(ctl, "LRANGE %s %lld -1", key, -lim) :
	    qw_ctl_cmd(ctl, "LRANGE %s 0 %lld", key, lim - 1);
	if (r == NULL)
		return ctl->fail;
	for (size_t i = 0; i < r->elements; i++) {
		size_t k = tail ? r->elements - 1 - i : i;
		if (qw_ctl_jobs_push(out, where, r->element[k], NULL) == NULL) {
			freeReplyObject(r);
			qw_ctl_err("out of memory");
			return QW_CTL_TEMPFAIL;
		}
	}
	freeReplyObject(r);
	return 0;
}

static int
qw_ctl_jobs_zset(struct qw_ctl *ctl, const char *key, size_t limit, struct qw_ctl_jobs *out)
{
	redisReply *r = qw_ctl_cmd(ctl, "ZRANGE %s 0 %lld WITHSCORES", key, (long long)limit - 1);

	if (r == NULL)
		return ctl->fail;
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		struct qw_ctl_job *j = qw_ctl_jobs_push(out, QW_KEY_SCHEDULED, r->element[i], NULL);
		if (j == NULL) {
			freeReplyObject(r);
			qw_ctl_err("out of memory");
			return QW_CTL_TEMPFAIL;
		}
		j->due = (int64_t)strtod(r->element[i + 1]->str, NULL);
	}
	freeReplyObject(r);
	return 0;
}

/* Every key of KIND of QUEUE, one per instance: their instance names. */
static int
qw_ctl_jobs_instances(struct qw_ctl *ctl, const char *queue, enum qw_key kind, char ***names,
    size_t *n);

/* Whether FIELD ("run-n") of a run has started, by the started marks
 * (STARTED: HGETALL of the instance's started hash). A run without a mark
 * is one of an older qworkerd, whose jobs all started. */
static bool
qw_ctl_jobs_started(const redisReply *started, const char *field)
{
	const char *dash = strrchr(field, '-');

	if (dash == NULL || started == NULL || started->type != REDIS_REPLY_ARRAY)
		return true;
	for (size_t i = 0; i + 1 < started->elements; i += 2) {
		const redisReply *k = started->element[i];
		if (k->len == (size_t)(dash - field) && memcmp(k->str, field, k->len) == 0)
			return strtoull(dash + 1, NULL, 10) <=
			    strtoull(started->element[i + 1]->str, NULL, 10);
	}
	return true;
}

static int
qw_ctl_jobs_running_of(struct qw_ctl *ctl, const char *queue, const char *inst,
    struct qw_ctl_jobs *out)
{
	char akey[QW_CTL_KEY_MAX], skey[QW_CTL_KEY_MAX];
	redisReply *a, *s;
	int rc = 0;

	qw_ctl_key(ctl, akey, sizeof(akey), queue, QW_KEY_ACTIVE, inst);
	qw_ctl_key(ctl, skey, sizeof(skey), queue, QW_KEY_STARTED, inst);
	if ((a = qw_ctl_cmd(ctl, "HGETALL %s", akey)) == NULL)
		return ctl->fail;
	s = redisCommand(ctl->c, "HGETALL %s", skey);
	for (size_t i = 0; i + 1 < a->elements && rc == 0; i += 2) {
		const char *field = a->element[i]->str;
		struct qw_ctl_job *j = qw_ctl_jobs_push(out, QW_KEY_ACTIVE, a->element[i + 1], field);
		if (j == NULL || (j->instance = strdup(inst)) == NULL ||
		    (j->field = strdup(field)) == NULL) {
			qw_ctl_err("out of memory");
			rc = QW_CTL_TEMPFAIL;
			break;
		}
		j->started = qw_ctl_jobs_started(s, field);
	}
	freeReplyObject(a);
	if (s != NULL)
		freeReplyObject(s);
	return rc;
}

static int
qw_ctl_jobs_running(struct qw_ctl *ctl, const char *queue, struct qw_ctl_jobs *out)
{
	char **inst = NULL;
	size_t n = 0;
	int rc = qw_ctl_jobs_instances(ctl, queue, QW_KEY_ACTIVE, &inst, &n);

	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = qw_ctl_jobs_running_of(ctl, queue, inst[i], out);
	qw_ctl_jobs_free_names(inst, n);
	return rc;
}

int
qw_ctl_jobs_read(struct qw_ctl *ctl, const char *queue, enum qw_key where, size_t limit,
    struct qw_ctl_jobs *out)
{
	char key[QW_CTL_KEY_MAX];

	qw_ctl_key(ctl, key, sizeof(key), queue, where, NULL);
	switch (where) {
	case QW_KEY_PENDING:
	case QW_KEY_DEAD:
		return qw_ctl_jobs_list(ctl, key, where, limit, out);
	case QW_KEY_SCHEDULED:
		return qw_ctl_jobs_zset(ctl, key, limit, out);
	case QW_KEY_ACTIVE:
		return qw_ctl_jobs_running(ctl, queue, out);
	default:
		return QW_CTL_USAGE;
	}
}

int
qw_ctl_jobs_find(struct qw_ctl *ctl, const char *queue, const char *id, unsigned mask,
    struct qw_ctl_jobs *out)
{
	static const enum qw_key order[] = { QW_KEY_PENDING, QW_KEY_SCHEDULED, QW_KEY_ACTIVE,
		QW_KEY_DEAD };
	char looked[256] = "";

	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
		struct qw_ctl_jobs all = { 0 };
		int rc;

		if (!(mask & (1u << order[k])))
			continue;
		if ((rc = qw_ctl_jobs_read(ctl, queue, order[k], 0, &all)) != 0) {
			qw_ctl_jobs_free(&all);
			return rc;
		}
		for (size_t i = 0; i < all.n; i++) {
			if (strcmp(all.v[i].id, id) == 0) {
				rc = qw_ctl_jobs_take(&all, i, out);
				qw_ctl_jobs_free(&all);
				return rc;
			}
		}
		qw_ctl_jobs_free(&all);
		snprintf(looked + strlen(looked), sizeof(looked) - strlen(looked), "%s%s",
		    looked[0] ? ", " : "", qw_ctl_where_name(order[k]));
	}
	char *eid = qw_ctl_escape(id, strlen(id));
	qw_ctl_err("queue %s: no job %s (looked in %s)", queue, eid ? eid : "?", looked);
	free(eid);
	return QW_CTL_NOTFOUND;
}

/* The prefix with glob characters escaped, for SCAN MATCH. */
static void
qw_ctl_glob_escape(char *out, size_t len, const char *s)
{
	size_t o = 0;

	for (; *s && o + 3 < len; s++) {
		if (strchr("*?[]\\", *s))
			out[o++] = '\\';
		out[o++] = *s;
	}
	out[o] = '\0';
}

/* SCAN for keys matching PATTERN; calls FN with each. */
static int
qw_ctl_scan(struct qw_ctl *ctl, const char *pattern,
    int (*fn)(struct qw_ctl *, const char *, void *), void *arg)
{
	char cursor[32] = "0";

	do {
		redisReply *r = qw_ctl_cmd(ctl, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
		if (r == NULL)
			return ctl->fail;
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
			freeReplyObject(r);
			return QW_CTL_DATAERR;
		}
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		for (size_t i = 0; i < r->element[1]->elements; i++)
			if (fn(ctl, r->element[1]->element[i]->str, arg) < 0) {
				freeReplyObject(r);
				qw_ctl_err("out of memory");
				return QW_CTL_TEMPFAIL;
			}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	return 0;
}

struct qw_ctl_names {
	char **v;
	size_t n;
	enum qw_key kind;	/* the keys whose instance is wanted */
};

static int
qw_ctl_names_add(struct qw_ctl_names *names, const char *name)
{
	char **v;

	for (size_t i = 0; i < names->n; i++)
		if (strcmp(names->v[i], name) == 0)
			return 0;
	if ((v = realloc(names->v, (names->n + 1) * sizeof(*v))) == NULL)
		return -1;
	names->v = v;
	return (v[names->n] = strdup(name)) == NULL ? -1 : (int)++names->n;
}

static int
qw_ctl_queue_of(struct qw_ctl *ctl, const char *key, void *arg)
{
	char q[QW_QUEUE_NAME_MAX + 1];
	enum qw_key which;
	const char *inst;

	if (qw_keys_split(key, ctl->prefix, q, sizeof(q), &which, &inst) < 0)
		return 0;
	return qw_ctl_names_add(arg, q) < 0 ? -1 : 0;
}

static int
qw_ctl_instance_of(struct qw_ctl *ctl, const char *key, void *arg)
{
	struct qw_ctl_names *names = arg;
	char q[QW_QUEUE_NAME_MAX + 1];
	enum qw_key which;
	const char *inst;

	if (qw_keys_split(key, ctl->prefix, q, sizeof(q), &which, &inst) < 0 ||
	    which != names->kind)
		return 0;
	return qw_ctl_names_add(names, inst) < 0 ? -1 : 0;
}

static int
qw_ctl_jobs_instances(struct qw_ctl *ctl, const char *queue, enum qw_key kind, char ***out,
    size_t *n)
{
	struct qw_ctl_names names = { .kind = kind };
	char pfx[QW_CTL_KEY_MAX], pat[QW_CTL_KEY_MAX * 2];
	int rc;

	qw_ctl_key(ctl, pfx, sizeof(pfx), queue, kind, "");
	qw_ctl_glob_escape(pat, sizeof(pat) - 1, pfx);
	strcat(pat, "*");
	rc = qw_ctl_scan(ctl, pat, qw_ctl_instance_of, &names);
	*out = names.v;
	*n = names.n;
	return rc;
}

static int
qw_ctl_cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
qw_ctl_jobs_queues(struct qw_ctl *ctl, char ***out, size_t *n)
{
	struct qw_ctl_names names = { 0 };
	char pfx[QW_CTL_KEY_MAX], pat[QW_CTL_KEY_MAX * 2];
	int rc = 0;

	qw_ctl_glob_escape(pfx, sizeof(pfx) - 8, ctl->prefix);
	snprintf(pat, sizeof(pat), "%s:{*}:*", pfx);
	for (size_t i = 0; ctl->conf != NULL && i < ctl->conf->nqueues && rc == 0; i++)
		if (qw_ctl_names_add(&names, ctl->conf->queues[i].name) < 0)
			rc = QW_CTL_TEMPFAIL;
	if (rc == 0)
		rc = qw_ctl_scan(ctl, pat, qw_ctl_queue_of, &names);
	if (names.n > 1)
		qsort(names.v, names.n, sizeof(*names.v), qw_ctl_cmp_names);
	*out = names.v;
	*n = names.n;
	return rc;
}

void
qw_ctl_jobs_free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Whether Redis holds a key of QUEUE that lives as long as the queue
 * does: its lists, counters, leases or pause. */
static int
qw_ctl_jobs_exists(struct qw_ctl *ctl, const char *queue, bool *found)
{
	static const enum qw_key kinds[] = { QW_KEY_PENDING, QW_KEY_SCHEDULED, QW_KEY_DEAD,
		QW_KEY_STATS, QW_KEY_LEASES, QW_KEY_PAUSED };
	char keys[6][QW_CTL_KEY_MAX];
	const char *argv[7] = { "EXISTS" };
	redisReply *r;

	for (size_t i = 0; i < 6; i++)
		argv[i + 1] = qw_ctl_key(ctl, keys[i], sizeof(keys[i]), queue, kinds[i], NULL);
	if ((r = qw_ctl_cmdv_raw(ctl, 7, argv, NULL)) == NULL || r->type != REDIS_REPLY_INTEGER) {
		int rc = qw_ctl_fail(ctl, r, "EXISTS");
		if (r != NULL)
			freeReplyObject(r);
		return rc;
	}
	*found = r->integer > 0;
	freeReplyObject(r);
	return 0;
}

int
qw_ctl_jobs_check_queue(struct qw_ctl *ctl, const char *queue, bool must_exist)
{
	bool found = false;
	int rc;

	if (!qw_conf_valid_queue_name(queue)) {
		char *e = qw_ctl_escape(queue, strlen(queue));
		qw_ctl_err("'%s' is not a queue name (1 to 64 of A-Z a-z 0-9 _ . -)", e ? e : "?");
		free(e);
		return QW_CTL_USAGE;
	}
	if (!must_exist)
		return 0;
	for (size_t i = 0; ctl->conf != NULL && i < ctl->conf->nqueues; i++)
		if (strcmp(ctl->conf->queues[i].name, queue) == 0)
			return 0;
	if ((rc = qw_ctl_jobs_exists(ctl, queue, &found)) != 0 || found)
		return rc;
	qw_ctl_err("no queue %s: Redis holds none of its keys under prefix %s, "
	    "and the configuration does not name it", queue, ctl->prefix);
	return QW_CTL_NOTFOUND;
}
