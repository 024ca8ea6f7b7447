/* conf.c - owns qworkerd.conf: the INI grammar, the key table, defaults and
 * checks. Every error names FILE:LINE and the key.
 *
 * The INI grammar is parsed here rather than with inih: Debian's libinih is
 * built with a 200-byte line limit, only ';' inline comments and no line
 * numbers for the handler, and the SPEC needs '#' comments after values and
 * FILE:LINE in every message. The grammar itself is twenty lines. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "clock.h"
#include "conf.h"
#include "fmt.h"
#include "log.h"
#include "plugin_host.h"

enum qw_conf_type { T_STR, T_SENTINELS, T_UINT, T_PREFETCH, T_DUR, T_SIZE, T_LEVEL, T_HANDLER,
	T_ADDR, T_BOOL, T_LISTEN, T_PLUGIN, T_SCHED, T_QNAME, T_PAYLOAD, T_TZ, T_RATE };
enum qw_conf_sect { S_REDIS, S_WORKERS, S_QUEUE, S_CRON };

struct qw_conf_key {
	enum qw_conf_sect sect;
	const char *name;
	enum qw_conf_type type;
	size_t off;
	uint64_t min, max;	/* for numbers, durations (ms) and sizes */
};

#define RK(n, t, f, lo, hi) { S_REDIS, n, t, offsetof(struct qw_conf, f), lo, hi }
#define WK(n, t, f, lo, hi) { S_WORKERS, n, t, offsetof(struct qw_conf, f), lo, hi }
#define QK(n, t, f, lo, hi) { S_QUEUE, n, t, offsetof(struct qw_queue_conf, f), lo, hi }
#define CK(n, t, f) { S_CRON, n, t, offsetof(struct qw_cron_conf, f), 0, 0 }
#define DAY (24ULL * 3600 * 1000)
/* Ten times the most one instance runs at once: far more than any set of
 * instances a queue is shared by. */
#define QW_GLOBAL_CONCURRENCY_MAX 100000

/* The documented keys; tests/integration/test_docs.py checks qworkerd.conf(5)
 * against it. */
static const struct qw_conf_key qw_conf_keys[] = {
	RK("address", T_ADDR, redis_address, 0, 0),
	RK("db", T_UINT, db, 0, 100000),
	RK("password_file", T_STR, password_file, 0, 0),
	RK("prefix", T_STR, prefix, 0, 0),
	RK("sentinels", T_SENTINELS, sentinels, 0, 0),
	RK("master_name", T_STR, master_name, 0, 0),
	RK("sentinel_password_file", T_STR, sentinel_password_file, 0, 0),
	RK("cluster", T_BOOL, cluster, 0, 0),
	RK("wait_replicas", T_UINT, wait_replicas, 0, 100),
	RK("wait_timeout", T_DUR, wait_timeout_ms, 1, 60 * 1000),
	WK("concurrency", T_UINT, concurrency, 1, 10000),
	WK("shutdown_timeout", T_DUR, shutdown_timeout_ms, 0, DAY),
	WK("kill_grace", T_DUR, kill_grace_ms, 0, 3600 * 1000),
	WK("lease_timeout", T_DUR, lease_timeout_ms, 2000, DAY),
	WK("instance", T_STR, instance, 0, 0),
	WK("log_level", T_LEVEL, log_level, 0, 0),
	WK("metrics_listen", T_LISTEN, metrics_listen, 0, 0),
	QK("handler", T_HANDLER, argv, 0, 0),
	QK("plugin", T_PLUGIN, plugin, 0, 0),
	QK("worker", T_HANDLER, worker_argv, 0, 0),
	QK("worker_processes", T_UINT, worker_processes, 1, 1000),
	QK("worker_inflight", T_UINT, worker_inflight, 1, 10000),
	QK("worker_max_jobs", T_UINT, worker_max_jobs, 0, UINT_MAX),
	QK("timeout", T_DUR, timeout_ms, 1, 365 * DAY),
	QK("max_attempts", T_UINT, max_attempts, 1, 1000000),
	QK("retry_base", T_DUR, retry_base_ms, 1, 365 * DAY),
	QK("retry_max", T_DUR, retry_max_ms, 1, 365 * DAY),
	QK("weight", T_UINT, weight, 1, 1000),
	QK("concurrency", T_UINT, concurrency, 1, 10000),
	QK("max_payload", T_SIZE, max_payload, 1, 256ULL << 20),
	QK("max_interruptions", T_UINT, max_interruptions, 1, 1000000),
	QK("dead_max", T_UINT, dead_max, 0, 1000000000),
	QK("prefetch", T_PREFETCH, prefetch, 0, 10000),
	QK("breaker_failures", T_UINT, breaker_failures, 0, 1000000),
	QK("breaker_cooldown", T_DUR, breaker_cooldown_ms, 1, DAY),
	QK("rate", T_RATE, rate, 1, 1000000),
	QK("global_concurrency", T_UINT, global_concurrency, 1, QW_GLOBAL_CONCURRENCY_MAX),
	CK("schedule", T_SCHED, sched),
	CK("queue", T_QNAME, queue),
	CK("payload", T_PAYLOAD, payload),
	CK("timezone", T_TZ, sched.tz),
};
/* seen and keyline in the parser hold one bit and one line per key. */
_Static_assert(sizeof(qw_conf_keys) / sizeof(qw_conf_keys[0]) <= 64, "more keys than bits in seen");

struct qw_conf_parser {
	const char *path;
	unsigned line;
	enum qw_conf_sect sect;
	bool in_section;
	unsigned qline;			/* line of the current [queue] or [cron] header */
	unsigned pwline;		/* line of password_file */
	/* Lines of the keys checked against each other at the end (0: unset). */
	unsigned addrline, sentline, nameline, spwline, wtline, clline, dbline, wrline;
	uint64_t seen;			/* keys set in the current section */
	unsigned keyline[64];		/* the line each of them was set on */
	bool client;			/* for qworkerctl: handlers and plugins unread */
	struct qw_conf *conf;
	char *err;
};

static int
qw_conf_fail(struct qw_conf_parser *p, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *qw_conf_trim(char *s);

static int
qw_conf_fail(struct qw_conf_parser *p, unsigned line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	free(p->err);
	/* Line 0: about the file as a whole, not one line of it. */
	if ((line ? asprintf(&p->err, "%s:%u: %s", p->path, line, msg)
	    : asprintf(&p->err, "%s: %s", p->path, msg)) < 0)
		p->err = NULL;
	return -1;
}

int
qw_conf_valid_queue_name(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > QW_QUEUE_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("_.-", name[i]))
			return 0;
	return 1;
}

/* "1.5s", "250ms", "2h", or a bare number of seconds. Plain decimals only:
 * strtod alone would also take "0x10" and "1e3". */
int
qw_conf_parse_duration(const char *s, uint64_t *ms)
{
	static const struct { const char *unit; double mult; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "", 1000 }, { "m", 60000 },
		{ "h", 3600000 }, { "d", 86400000 },
	};
	size_t n = strspn(s, "0123456789.");
	const char *dot = memchr(s, '.', n);
	double v;

	if (n == 0 || !isdigit((unsigned char)s[0]) || (dot && memchr(dot + 1, '.', n - (size_t)(dot - s) - 1)))
		return -1;
	v = strtod(s, NULL);
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(s + n, units[i].unit) == 0) {
			double r = v * units[i].mult;
			if (r > 1e15)
				return -1;
			*ms = (uint64_t)(r + 0.5);
			return 0;
		}
	}
	return -1;
}

/* "512", "64KiB", "1MiB", "1GiB"; a bare number is bytes. */
int
qw_conf_parse_size(const char *s, uint64_t *bytes)
{
	static const struct { const char *unit; uint64_t mult; } units[] = {
		{ "", 1 }, { "B", 1 }, { "KiB", 1ULL << 10 }, { "MiB", 1ULL << 20 },
		{ "GiB", 1ULL << 30 },
	};
	char *end;
	unsigned long long v;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			if (v > UINT64_MAX / units[i].mult)
				return -1;
			*bytes = v * units[i].mult;
			return 0;
		}
	}
	return -1;
}

/* "N/s", "N/m" or "N/h" with N a whole number from 1 to 1000000. */
int
qw_conf_parse_rate(const char *s, struct qw_rate *r)
{
	static const struct { const char *unit; uint64_t ms; } units[] = {
		{ "/s", 1000 }, { "/m", 60 * 1000 }, { "/h", 3600 * 1000 },
	};
	size_t n = strspn(s, "0123456789");
	unsigned long v;

	if (n == 0 || n > 7)
		return -1;
	v = strtoul(s, NULL, 10);
	if (v < 1 || v > 1000000)
		return -1;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(s + n, units[i].unit) == 0) {
			r->n = (unsigned)v;
			r->period_ms = units[i].ms;
			return 0;
		}
	}
	return -1;
}

void
qw_conf_free_argv(char **argv)
{
	if (argv == NULL)
		return;
	for (char **a = argv; *a != NULL; a++)
		free(*a);
	free(argv);
}

/* Appends one byte to the word being built; returns -1 on ENOMEM. */
static int
qw_conf_word_put(char **w, size_t *len, size_t *cap, char c)
{
	if (*len + 2 > *cap) {
		size_t ncap = *cap ? *cap * 2 : 32;
		char *n = realloc(*w, ncap);
		if (n == NULL)
			return -1;
		*w = n;
		*cap = ncap;
	}
	(*w)[(*len)++] = c;
	(*w)[*len] = '\0';
	return 0;
}

static int
qw_conf_argv_push(char ***argv, size_t *argc, char *word)
{
	char **n = realloc(*argv, (*argc + 2) * sizeof(char *));
	if (n == NULL)
		return -1;
	*argv = n;
	n[(*argc)++] = word;
	n[*argc] = NULL;
	return 0;
}

/* sh(1) word splitting without expansions: '...' is literal, "..." honours
 * \" \\ \$ \`, a backslash outside quotes escapes the next byte, and an
 * unquoted word starting with '#' or ';' begins a comment. */
char **
qw_conf_split_words(const char *s, const char **err)
{
	char **argv = NULL, *w = NULL;
	size_t argc = 0, len = 0, cap = 0;
	bool inword = false;

	*err = "out of memory";
	for (const char *c = s;; c++) {
		if (*c == '\0' || isspace((unsigned char)*c) || ((*c == '#' || *c == ';') && !inword)) {
			if (inword) {
				if (qw_conf_argv_push(&argv, &argc, w) < 0)
					goto fail;
				w = NULL;
				len = cap = 0;
				inword = false;
			}
			if (*c == '\0' || *c == '#' || *c == ';')
				break;
			continue;
		}
		inword = true;
		if (w == NULL && qw_conf_word_put(&w, &len, &cap, 'x') == 0)
			len = 0, w[0] = '\0';
		if (w == NULL)
			goto fail;
		if (*c == '\'') {
			for (c++; *c != '\'' ; c++) {
				if (*c == '\0') {
					*err = "unterminated single quote";
					goto fail;
				}
				if (qw_conf_word_put(&w, &len, &cap, *c) < 0)
					goto fail;
			}
		} else if (*c == '"') {
			for (c++; *c != '"'; c++) {
				if (*c == '\0') {
					*err = "unterminated double quote";
					goto fail;
				}
				if (*c == '\\' && c[1] != '\0' && strchr("\"\\$`", c[1]))
					c++;
				if (qw_conf_word_put(&w, &len, &cap, *c) < 0)
					goto fail;
			}
		} else if (*c == '\\') {
			if (c[1] == '\0') {
				*err = "trailing backslash";
				goto fail;
			}
			if (qw_conf_word_put(&w, &len, &cap, *++c) < 0)
				goto fail;
		} else if (qw_conf_word_put(&w, &len, &cap, *c) < 0) {
			goto fail;
		}
	}
	if (argc == 0) {
		*err = "no program given";
		goto fail;
	}
	*err = NULL;
	return argv;
fail:
	free(w);
	qw_conf_free_argv(argv);
	return NULL;
}

/* Resolves a program name like execvp(3) would; returns a malloc'd path. */
static char *
qw_conf_resolve_program(const char *name, const char **why)
{
	struct stat st;
	char *path = NULL;

	if (strchr(name, '/') != NULL) {
		path = strdup(name);
	} else {
		const char *env = getenv("PATH");
		char *dirs = strdup(env ? env : "/usr/local/bin:/usr/bin:/bin");
		char *save = NULL;

		for (char *d = dirs ? strtok_r(dirs, ":", &save) : NULL; d != NULL;
		    d = strtok_r(NULL, ":", &save)) {
			char *cand;
			if (asprintf(&cand, "%s/%s", d, name) < 0)
				break;
			if (access(cand, X_OK) == 0 && stat(cand, &st) == 0 &&
			    S_ISREG(st.st_mode)) {
				path = cand;
				break;
			}
			free(cand);
		}
		free(dirs);
		if (path == NULL) {
			*why = "not found in PATH";
			return NULL;
		}
	}
	if (path == NULL) {
		*why = strerror(ENOMEM);
		return NULL;
	}
	if (stat(path, &st) < 0) {
		*why = strerror(errno);
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		*why = "not a regular file";
		goto fail;
	}
	if (access(path, X_OK) < 0) {
		*why = "not executable";
		goto fail;
	}
	if (path[0] != '/') {
		char *abs = realpath(path, NULL);
		if (abs == NULL) {
			*why = strerror(errno);
			goto fail;
		}
		free(path);
		path = abs;
	}
	return path;
fail:
	free(path);
	return NULL;
}

static const char *
qw_conf_sect_name(enum qw_conf_sect s)
{
	return s == S_REDIS ? "redis" : s == S_WORKERS ? "workers" : s == S_QUEUE ? "queue" : "cron";
}

static int
qw_conf_set_str(struct qw_conf_parser *p, char **slot, const char *key, const char *val)
{
	char *dup = strdup(val);
	if (dup == NULL)
		return qw_conf_fail(p, p->line, "%s: out of memory", key);
	free(*slot);
	*slot = dup;
	return 0;
}

static int
qw_conf_set_handler(struct qw_conf_parser *p, char ***slot, const char *key, const char *raw)
{
	const char *why;
	char **argv = qw_conf_split_words(raw, &why);
	char *prog;

	if (argv == NULL)
		return qw_conf_fail(p, p->line, "%s: %s", key, why);
	prog = qw_conf_resolve_program(argv[0], &why);
	if (prog == NULL) {
		qw_conf_fail(p, p->line, "%s: %s: %s", key, argv[0], why);
		qw_conf_free_argv(argv);
		return -1;
	}
	free(argv[0]);
	argv[0] = prog;
	qw_conf_free_argv(*slot);
	*slot = argv;
	return 0;
}

/* Checks "unix:/path" or "host:port" (IPv6 as "[::1]:port"). */
static int
qw_conf_check_address(const char *v)
{
	const char *colon;
	char *end;
	long port;

	if (strncmp(v, "unix:", 5) == 0)
		return v[5] == '/' ? 0 : -1;
	colon = strrchr(v, ':');
	if (colon == NULL || colon == v)
		return -1;
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || colon[1] == '\0' || port < 1 || port > 65535)
		return -1;
	return 0;
}

/* Where the keys that are checked against each other were set. */
static void
qw_conf_note_line(struct qw_conf_parser *p, const char *key)
{
	static const struct {
		const char *key;
		size_t off;
	} lines[] = {
		{ "password_file", offsetof(struct qw_conf_parser, pwline) },
		{ "address", offsetof(struct qw_conf_parser, addrline) },
		{ "sentinels", offsetof(struct qw_conf_parser, sentline) },
		{ "master_name", offsetof(struct qw_conf_parser, nameline) },
		{ "sentinel_password_file", offsetof(struct qw_conf_parser, spwline) },
		{ "wait_timeout", offsetof(struct qw_conf_parser, wtline) },
		{ "cluster", offsetof(struct qw_conf_parser, clline) },
		{ "db", offsetof(struct qw_conf_parser, dbline) },
		{ "wait_replicas", offsetof(struct qw_conf_parser, wrline) },
	};

	if (p->sect != S_REDIS)
		return;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		if (strcmp(key, lines[i].key) == 0)
			*(unsigned *)((char *)p + lines[i].off) = p->line;
}

static bool
qw_conf_valid_master_name(const char *v)
{
	for (; *v; v++)
		if (*v <= ' ' || *v > '~')
			return false;
	return true;
}

/* An IP address and a port: the sentinels are asked from the event loop,
 * which must not wait on a name server. */
static int
qw_conf_check_ip_port(const char *v)
{
	const char *colon = strrchr(v, ':');
	char host[INET6_ADDRSTRLEN + 2];
	unsigned char bin[sizeof(struct in6_addr)];
	size_t hlen;

	if (strncmp(v, "unix:", 5) == 0 || qw_conf_check_address(v) < 0)
		return -1;
	hlen = (size_t)(colon - v);
	if (hlen >= 2 && v[0] == '[' && v[hlen - 1] == ']')
		v++, hlen -= 2;
	if (hlen >= sizeof(host))
		return -1;
	memcpy(host, v, hlen);
	host[hlen] = '\0';
	return inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1 ? 0 : -1;
}

/* "IP:PORT, IP:PORT, ...": at least one, none twice. */
static int
qw_conf_set_sentinels(struct qw_conf_parser *p, const char *val)
{
	struct qw_conf *c = p->conf;
	char *copy = strdup(val), *rest = copy, *tok;
	int rc = -1;

	if (copy == NULL)
		return qw_conf_fail(p, p->line, "sentinels: out of memory");
	while ((tok = strsep(&rest, ",")) != NULL) {
		char *a = qw_conf_trim(tok), **more;
		if (*a == '\0' || qw_conf_check_ip_port(a) < 0) {
			qw_conf_fail(p, p->line, "sentinels: '%s' is not IP:PORT (IPv6 as "
			    "[ADDRESS]:PORT; host names are not taken)", a);
			goto out;
		}
		for (size_t i = 0; i < c->nsentinels; i++)
			if (strcmp(c->sentinels[i], a) == 0) {
				qw_conf_fail(p, p->line, "sentinels: %s is named twice", a);
				goto out;
			}
		more = realloc(c->sentinels, (c->nsentinels + 1) * sizeof(*more));
		if (more == NULL || (more[c->nsentinels] = strdup(a)) == NULL) {
			if (more != NULL)
				c->sentinels = more;
			qw_conf_fail(p, p->line, "sentinels: out of memory");
			goto out;
		}
		c->sentinels = more;
		c->nsentinels++;
	}
	if (c->nsentinels == 0)
		qw_conf_fail(p, p->line, "sentinels: no address given");
	else
		rc = 0;
out:
	free(copy);
	return rc;
}

/* One address, or (for a cluster's seed nodes) several, comma separated:
 * each is checked here, the list is split once cluster is known
 * (qw_conf_check_cluster). */
static int
qw_conf_set_address(struct qw_conf_parser *p, char **dst, const char *key, const char *val)
{
	char *copy = strdup(val), *rest = copy, *tok;
	int rc = 0;

	if (copy == NULL)
		return qw_conf_fail(p, p->line, "%s: out of memory", key);
	while (rc == 0 && (tok = strsep(&rest, ",")) != NULL) {
		const char *a = qw_conf_trim(tok);
		if (qw_conf_check_address(a) < 0)
			rc = qw_conf_fail(p, p->line, "%s: '%s' is not an address (host:port or "
			    "unix:/path)", key, a);
	}
	free(copy);
	return rc < 0 ? rc : qw_conf_set_str(p, dst, key, val);
}

static int
qw_conf_set_number(struct qw_conf_parser *p, const struct qw_conf_key *k,
    void *base, const char *val)
{
	uint64_t v;
	char *end;

	switch (k->type) {
	case T_UINT:
	case T_PREFETCH:
		errno = 0;
		v = isdigit((unsigned char)*val) ? strtoull(val, &end, 10) : (end = (char *)val, 0);
		if (errno != 0 || *end != '\0' || end == val)
			return qw_conf_fail(p, p->line, "%s: '%s' is not a whole number%s", k->name, val,
			    k->type == T_PREFETCH ? " or auto" : "");
		if (v < k->min || v > k->max)
			return qw_conf_fail(p, p->line, "%s: %s is out of range (%llu to %llu)",
			    k->name, val, (unsigned long long)k->min, (unsigned long long)k->max);
		*(unsigned *)((char *)base + k->off) = (unsigned)v;
		return 0;
	case T_DUR:
		if (qw_conf_parse_duration(val, &v) < 0)
			return qw_conf_fail(p, p->line,
			    "%s: '%s' is not a duration (a number with ms, s, m, h or d)", k->name, val);
		if (v < k->min || v > k->max) {
			char lo[32], hi[32];
			return qw_conf_fail(p, p->line, "%s: %s is out of range (%s to %s)", k->name,
			    val, qw_fmt_duration(lo, sizeof(lo), k->min),
			    qw_fmt_duration(hi, sizeof(hi), k->max));
		}
		*(uint64_t *)((char *)base + k->off) = v;
		return 0;
	case T_RATE:
		if (qw_conf_parse_rate(val, (struct qw_rate *)((char *)base + k->off)) < 0)
			return qw_conf_fail(p, p->line, "%s: '%s' is not a rate (N/s, N/m or N/h with N "
			    "from 1 to 1000000)", k->name, val);
		return 0;
	case T_SIZE:
		if (qw_conf_parse_size(val, &v) < 0)
			return qw_conf_fail(p, p->line,
			    "%s: '%s' is not a size (a number of bytes, KiB, MiB or GiB)", k->name, val);
		if (v < k->min || v > k->max)
			return qw_conf_fail(p, p->line, "%s: %s is out of range (%llu to %llu bytes)",
			    k->name, val, (unsigned long long)k->min, (unsigned long long)k->max);
		*(uint64_t *)((char *)base + k->off) = v;
		return 0;
	default:
		return -1;
	}
}

/* The keys of a [cron NAME] section. */
static int
qw_conf_set_cron(struct qw_conf_parser *p, const struct qw_conf_key *k, void *base,
    const char *val)
{
	struct qw_cron_conf *cc = base;
	char why[512];

	switch (k->type) {
	case T_SCHED: {
		enum qw_cron_tz tz = cc->sched.tz;
		if (qw_cron_parse(val, &cc->sched, why, sizeof(why)) < 0)
			return qw_conf_fail(p, p->line, "schedule: %s", why);
		cc->sched.tz = tz;
		cc->has_sched = true;
		return 0;
	}
	case T_QNAME:
		if (!qw_conf_valid_queue_name(val))
			return qw_conf_fail(p, p->line, "queue: '%s' is not a queue name", val);
		cc->queue_line = p->line;
		return qw_conf_set_str(p, &cc->queue, k->name, val);
	case T_PAYLOAD: {
		/* It goes into a JSON envelope: jansson takes UTF-8 only. */
		json_t *j = json_string(val);
		if (j == NULL)
			return qw_conf_fail(p, p->line, "payload: not UTF-8 text");
		json_decref(j);
		return qw_conf_set_str(p, &cc->payload, k->name, val);
	}
	case T_TZ:
		if (strcasecmp(val, "UTC") == 0)
			cc->sched.tz = QW_CRON_UTC;
		else if (strcasecmp(val, "local") == 0)
			cc->sched.tz = QW_CRON_LOCAL;
		else
			return qw_conf_fail(p, p->line, "timezone: '%s' is not UTC or local", val);
		return 0;
	default:
		return -1;
	}
}

static int
qw_conf_set(struct qw_conf_parser *p, const char *key, const char *val, const char *raw)
{
	struct qw_conf *c = p->conf;
	void *base = p->sect == S_QUEUE ? (void *)&c->queues[c->nqueues - 1] :
	    p->sect == S_CRON ? (void *)&c->crons[c->ncrons - 1] : (void *)c;
	size_t i;

	for (i = 0; i < sizeof(qw_conf_keys) / sizeof(qw_conf_keys[0]); i++)
		if (qw_conf_keys[i].sect == p->sect && strcmp(qw_conf_keys[i].name, key) == 0)
			break;
	if (i == sizeof(qw_conf_keys) / sizeof(qw_conf_keys[0]))
		return qw_conf_fail(p, p->line, "unknown key '%s' in [%s]", key,
		    qw_conf_sect_name(p->sect));
	if (p->seen & (1ULL << i))
		return qw_conf_fail(p, p->line, "%s: set twice in one section", key);
	p->seen |= 1ULL << i;
	p->keyline[i] = p->line;
	qw_conf_note_line(p, key);

	const struct qw_conf_key *k = &qw_conf_keys[i];
	if (*val == '\0' && k->type != T_HANDLER && k->type != T_PAYLOAD)
		return qw_conf_fail(p, p->line, "%s: empty value", key);
	switch (k->type) {
	case T_STR:
		if (strcmp(key, "master_name") == 0 && !qw_conf_valid_master_name(val))
			return qw_conf_fail(p, p->line, "master_name: '%s' may hold only printable "
			    "characters other than spaces", val);
		if (strcmp(key, "prefix") == 0 && strpbrk(val, " \t{}") != NULL)
			return qw_conf_fail(p, p->line,
			    "prefix: '%s' may not contain spaces or braces", val);
		return qw_conf_set_str(p, (char **)((char *)base + k->off), key, val);
	case T_SENTINELS:
		return qw_conf_set_sentinels(p, val);
	case T_LISTEN:
		if (strncmp(val, "unix:", 5) == 0 || qw_conf_check_address(val) < 0)
			return qw_conf_fail(p, p->line, "%s: '%s' is not host:port", key, val);
		return qw_conf_set_str(p, (char **)((char *)base + k->off), key, val);
	case T_ADDR:
		return qw_conf_set_address(p, (char **)((char *)base + k->off), key, val);
	case T_BOOL:
		if (strcasecmp(val, "yes") == 0 || strcasecmp(val, "true") == 0 ||
		    strcasecmp(val, "on") == 0 || strcmp(val, "1") == 0)
			*(bool *)((char *)base + k->off) = true;
		else if (strcasecmp(val, "no") == 0 || strcasecmp(val, "false") == 0 ||
		    strcasecmp(val, "off") == 0 || strcmp(val, "0") == 0)
			*(bool *)((char *)base + k->off) = false;
		else
			return qw_conf_fail(p, p->line, "%s: '%s' is not yes or no", key, val);
		return 0;
	case T_LEVEL: {
		int lvl = qw_log_parse_level(val);
		if (lvl < 0)
			return qw_conf_fail(p, p->line,
			    "%s: '%s' is not one of error, warning, notice, info, debug", key, val);
		*(int *)((char *)base + k->off) = lvl;
		return 0;
	}
	case T_PREFETCH:
		if (strcmp(val, "auto") != 0)
			return qw_conf_set_number(p, k, base, val);
		*(unsigned *)((char *)base + k->off) = QW_PREFETCH_AUTO;
		return 0;
	case T_HANDLER:
		if (p->client)
			return 0;
		return qw_conf_set_handler(p, (char ***)((char *)base + k->off), key, raw);
	case T_PLUGIN: {
		if (p->client)
			return 0;
		char *why;
		struct qw_plugin *pl;
		if (val[0] != '/')
			return qw_conf_fail(p, p->line, "plugin: '%s' is not an absolute path", val);
		pl = qw_plugin_load(val, &why);
		if (pl == NULL) {
			qw_conf_fail(p, p->line, "plugin: %s", why ? why : "out of memory");
			free(why);
			return -1;
		}
		*(struct qw_plugin **)((char *)base + k->off) = pl;
		return 0;
	}
	case T_SCHED:
	case T_QNAME:
	case T_PAYLOAD:
	case T_TZ:
		return qw_conf_set_cron(p, k, base, val);
	default:
		return qw_conf_set_number(p, k, base, val);
	}
}

static void
qw_conf_queue_defaults(struct qw_queue_conf *q)
{
	memset(q, 0, sizeof(*q));
	q->timeout_ms = 30 * 1000;
	q->max_attempts = 5;
	q->retry_base_ms = 1000;
	q->retry_max_ms = 3600 * 1000;
	q->weight = 1;
	q->max_payload = 1 << 20;
	q->max_interruptions = 10;
	q->dead_max = 10000;
	/* Users run defaults: a fixed number fits either short jobs (a large
	 * buffer) or long ones (none), never both. */
	q->prefetch = QW_PREFETCH_AUTO;
	q->breaker_cooldown_ms = 30 * 1000;
	q->worker_processes = 1;
	q->worker_inflight = 1;
}

/* The line KEY was set on in the current section, or 0. */
static unsigned
qw_conf_line_of(const struct qw_conf_parser *p, const char *key)
{
	for (size_t i = 0; i < sizeof(qw_conf_keys) / sizeof(qw_conf_keys[0]); i++)
		if (qw_conf_keys[i].sect == p->sect && (p->seen & (1ULL << i)) &&
		    strcmp(qw_conf_keys[i].name, key) == 0)
			return p->keyline[i];
	return 0;
}

/* The line of a worker_* key set in a queue without a worker, or 0. */
static unsigned
qw_conf_stray_worker_key(const struct qw_conf_parser *p, const char **name)
{
	for (size_t i = 0; i < sizeof(qw_conf_keys) / sizeof(qw_conf_keys[0]); i++) {
		if (qw_conf_keys[i].sect == S_QUEUE && (p->seen & (1ULL << i)) &&
		    strncmp(qw_conf_keys[i].name, "worker_", 7) == 0) {
			*name = qw_conf_keys[i].name;
			return p->keyline[i];
		}
	}
	return 0;
}

/* Checks what a finished [cron] section must have. */
static int
qw_conf_end_cron(struct qw_conf_parser *p)
{
	struct qw_cron_conf *cc = &p->conf->crons[p->conf->ncrons - 1];

	if (!cc->has_sched)
		return qw_conf_fail(p, p->qline, "[cron %s]: no schedule set", cc->name);
	if (cc->queue == NULL)
		return qw_conf_fail(p, p->qline, "[cron %s]: no queue set", cc->name);
	if (qw_cron_next(&cc->sched, qw_clock_wall_ms()) < 0)
		return qw_conf_fail(p, p->qline, "[cron %s]: the schedule has no day in the next "
		    "nine years", cc->name);
	return 0;
}

/* A [cron] section's queue must be one of the file, which is known only at
 * its end: a misspelt name would fill a queue nothing runs. */
static int
qw_conf_check_cron_queues(struct qw_conf_parser *p)
{
	struct qw_conf *c = p->conf;

	for (size_t i = 0; i < c->ncrons; i++) {
		size_t j = 0;
		while (j < c->nqueues && strcmp(c->queues[j].name, c->crons[i].queue) != 0)
			j++;
		if (j == c->nqueues)
			return qw_conf_fail(p, c->crons[i].queue_line,
			    "queue: [cron %s] names '%s', which has no [queue %s] section",
			    c->crons[i].name, c->crons[i].queue, c->crons[i].queue);
	}
	return 0;
}

/* Opens a [cron NAME] section. */
static int
qw_conf_cron_section(struct qw_conf_parser *p, const char *name)
{
	struct qw_conf *c = p->conf;
	struct qw_cron_conf *nc;

	if (!qw_conf_valid_queue_name(name))
		return qw_conf_fail(p, p->line,
		    "cron name '%s' must be 1 to 64 of A-Z a-z 0-9 _ . -", name);
	for (size_t i = 0; i < c->ncrons; i++)
		if (strcmp(c->crons[i].name, name) == 0)
			return qw_conf_fail(p, p->line, "cron '%s' is defined twice", name);
	nc = realloc(c->crons, (c->ncrons + 1) * sizeof(*nc));
	if (nc == NULL)
		return qw_conf_fail(p, p->line, "out of memory");
	c->crons = nc;
	nc += c->ncrons;
	memset(nc, 0, sizeof(*nc));
	nc->line = p->line;
	if ((nc->name = strdup(name)) == NULL || (nc->payload = strdup("")) == NULL) {
		free(nc->name);
		return qw_conf_fail(p, p->line, "out of memory");
	}
	c->ncrons++;
	p->sect = S_CRON;
	p->qline = p->line;
	return 0;
}

/* Checks what a finished section must have. */
static int
qw_conf_end_section(struct qw_conf_parser *p)
{
	struct qw_queue_conf *q;
	const char *key;
	unsigned line;
	int kinds;

	if (p->in_section && p->sect == S_CRON)
		return p->client ? 0 : qw_conf_end_cron(p);
	if (!p->in_section || p->sect != S_QUEUE || p->client)
		return 0;
	q = &p->conf->queues[p->conf->nqueues - 1];
	kinds = (q->argv != NULL) + (q->plugin != NULL) + (q->worker_argv != NULL);
	if (kinds == 0)
		return qw_conf_fail(p, p->qline, "[queue %s]: no handler, plugin or worker set",
		    q->name);
	if (kinds > 1)
		return qw_conf_fail(p, p->qline,
		    "[queue %s]: set one of handler, plugin or worker, not more", q->name);
	if (q->worker_argv == NULL && (line = qw_conf_stray_worker_key(p, &key)) != 0)
		return qw_conf_fail(p, line, "%s: only for a queue with worker = PROGRAM", key);
	if (q->retry_max_ms < q->retry_base_ms)
		return qw_conf_fail(p, p->qline, "[queue %s]: retry_max is below retry_base", q->name);
	/* A cooldown alone would read as a breaker that is on. */
	if ((line = qw_conf_line_of(p, "breaker_cooldown")) != 0 && q->breaker_failures == 0)
		return qw_conf_fail(p, line, "breaker_cooldown: [queue %s] sets no "
		    "breaker_failures (1 or more), so it has no circuit breaker to cool down",
		    q->name);
	return 0;
}

static int
qw_conf_section(struct qw_conf_parser *p, char *name)
{
	struct qw_conf *c = p->conf;
	char *qname;

	if (qw_conf_end_section(p) < 0)
		return -1;
	p->seen = 0;
	p->in_section = true;
	if (strcmp(name, "redis") == 0) {
		p->sect = S_REDIS;
		return 0;
	}
	if (strcmp(name, "workers") == 0) {
		p->sect = S_WORKERS;
		return 0;
	}
	if (strncmp(name, "cron", 4) == 0 && isspace((unsigned char)name[4])) {
		name += 4;
		while (isspace((unsigned char)*name))
			name++;
		return qw_conf_cron_section(p, name);
	}
	if (strncmp(name, "queue", 5) != 0 || !isspace((unsigned char)name[5]))
		return qw_conf_fail(p, p->line, "unknown section [%s]", name);
	qname = name + 5;
	while (isspace((unsigned char)*qname))
		qname++;
	if (!qw_conf_valid_queue_name(qname))
		return qw_conf_fail(p, p->line,
		    "queue name '%s' must be 1 to 64 of A-Z a-z 0-9 _ . -", qname);
	for (size_t i = 0; i < c->nqueues; i++)
		if (strcmp(c->queues[i].name, qname) == 0)
			return qw_conf_fail(p, p->line, "queue '%s' is defined twice", qname);
	struct qw_queue_conf *nq = realloc(c->queues, (c->nqueues + 1) * sizeof(*nq));
	if (nq == NULL)
		return qw_conf_fail(p, p->line, "out of memory");
	c->queues = nq;
	qw_conf_queue_defaults(&nq[c->nqueues]);
	if ((nq[c->nqueues].name = strdup(qname)) == NULL)
		return qw_conf_fail(p, p->line, "out of memory");
	c->nqueues++;
	p->sect = S_QUEUE;
	p->qline = p->line;
	return 0;
}

static char *
qw_conf_trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Cuts a comment that follows a value: '#' or ';' after white space. */
static void
qw_conf_cut_comment(char *s)
{
	for (char *c = s; *c; c++) {
		if ((*c == '#' || *c == ';') && c > s && isspace((unsigned char)c[-1])) {
			*c = '\0';
			return;
		}
	}
}

static int
qw_conf_line(struct qw_conf_parser *p, char *line)
{
	char *s = qw_conf_trim(line), *eq, *key, *val, *raw;

	if (*s == '\0' || *s == '#' || *s == ';')
		return 0;
	if (*s == '[') {
		char *end = strchr(s, ']');
		if (end == NULL || *qw_conf_trim(end + 1) != '\0')
			return qw_conf_fail(p, p->line, "malformed section header '%s'", s);
		*end = '\0';
		return qw_conf_section(p, qw_conf_trim(s + 1));
	}
	eq = strchr(s, '=');
	if (eq == NULL)
		return qw_conf_fail(p, p->line, "expected 'key = value', got '%s'", s);
	*eq = '\0';
	key = qw_conf_trim(s);
	if (!p->in_section)
		return qw_conf_fail(p, p->line, "%s: key outside any section", key);
	raw = qw_conf_trim(eq + 1);
	val = strdup(raw);
	if (val == NULL)
		return qw_conf_fail(p, p->line, "out of memory");
	qw_conf_cut_comment(val);
	int rc = qw_conf_set(p, key, qw_conf_trim(val), raw);
	free(val);
	return rc;
}

static int
qw_conf_defaults(struct qw_conf *c, const char *path)
{
	c->path = strdup(path);
	c->redis_address = strdup("127.0.0.1:6379");
	c->prefix = strdup("qw");
	c->concurrency = 8;
	c->shutdown_timeout_ms = 25 * 1000;
	c->kill_grace_ms = 5 * 1000;
	c->lease_timeout_ms = 15 * 1000;
	c->log_level = LOG_INFO;
	c->wait_timeout_ms = 1000;
	return c->path && c->redis_address && c->prefix ? 0 : -1;
}

/* Default identity: hostname + config file name without ".conf". */
static int
qw_conf_default_instance(struct qw_conf *c)
{
	char host[256] = "localhost";
	const char *base = strrchr(c->path, '/');
	size_t blen;

	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	base = base ? base + 1 : c->path;
	blen = strlen(base);
	if (blen > 5 && strcmp(base + blen - 5, ".conf") == 0)
		blen -= 5;
	return asprintf(&c->instance, "%s:%.*s", host, (int)blen, base) < 0 ? -1 : 0;
}

/* The first line of FILE (set on LINE by KEY), or without one of
 * $CREDENTIALS_DIRECTORY/CRED when that exists (systemd's LoadCredential=);
 * *OUT stays NULL when there is neither. */
static int
qw_conf_read_secret(struct qw_conf_parser *p, const char *file, unsigned line,
    const char *key, const char *cred, char **out)
{
	char *path = NULL, *first = NULL;
	size_t cap = 0;
	FILE *f;
	int rc = -1;

	if (file != NULL) {
		path = strdup(file);
	} else {
		const char *dir = getenv("CREDENTIALS_DIRECTORY");
		if (dir == NULL)
			return 0;
		if (asprintf(&path, "%s/%s", dir, cred) < 0)
			path = NULL;
		else if (access(path, F_OK) < 0) {
			free(path);
			return 0;
		}
	}
	if (path == NULL)
		return qw_conf_fail(p, 0, "out of memory");
	f = fopen(path, "r");
	if (f == NULL) {
		qw_conf_fail(p, file ? line : 0, "%s: %s: %s", key, path, strerror(errno));
		goto out;
	}
	ssize_t n = getline(&first, &cap, f);
	fclose(f);
	while (n > 0 && (first[n - 1] == '\n' || first[n - 1] == '\r'))
		first[--n] = '\0';
	if (n <= 0) {
		qw_conf_fail(p, file ? line : 0, "%s: %s: empty first line", key, path);
		goto out;
	}
	*out = first;
	first = NULL;
	rc = 0;
out:
	free(first);
	free(path);
	return rc;
}

static int
qw_conf_read_password(struct qw_conf_parser *p)
{
	struct qw_conf *c = p->conf;

	if (qw_conf_read_secret(p, c->password_file, p->pwline, "password_file", "redis.pass",
	    &c->password) < 0)
		return -1;
	if (c->nsentinels == 0)
		return 0;
	return qw_conf_read_secret(p, c->sentinel_password_file, p->spwline,
	    "sentinel_password_file", "sentinel.pass", &c->sentinel_password);
}

static int
qw_conf_add_node(struct qw_conf_parser *p, const char *a)
{
	struct qw_conf *c = p->conf;
	char **more;

	if (strncmp(a, "unix:", 5) == 0)
		return qw_conf_fail(p, p->addrline, "address: %s: a cluster's nodes are reached by "
		    "host:port", a);
	for (size_t i = 0; i < c->nnodes; i++)
		if (strcmp(c->nodes[i], a) == 0)
			return qw_conf_fail(p, p->addrline, "address: %s is named twice", a);
	if ((more = realloc(c->nodes, (c->nnodes + 1) * sizeof(*more))) == NULL)
		return qw_conf_fail(p, 0, "out of memory");
	c->nodes = more;
	if ((c->nodes[c->nnodes] = strdup(a)) == NULL)
		return qw_conf_fail(p, 0, "out of memory");
	c->nnodes++;
	return 0;
}

/* cluster = yes: address names the seed nodes (host:port, none twice),
 * and the keys a cluster does not have are refused; without it, address
 * names one server. */
static int
qw_conf_check_cluster(struct qw_conf_parser *p)
{
	const struct qw_conf *c = p->conf;
	char *copy, *rest, *tok;
	int rc = 0;

	if (!c->cluster) {
		if (strchr(c->redis_address, ',') != NULL)
			return qw_conf_fail(p, p->addrline, "address: several nodes are named, "
			    "which needs cluster = yes");
		return 0;
	}
	if (p->sentline != 0)
		return qw_conf_fail(p, p->sentline > p->clline ? p->sentline : p->clline,
		    "cluster and sentinels exclude each other: a cluster follows its own "
		    "failovers");
	if (c->db != 0)
		return qw_conf_fail(p, p->dbline, "db: a Redis Cluster has only database 0");
	if (c->wait_replicas != 0)
		return qw_conf_fail(p, p->wrline, "wait_replicas: not supported with "
		    "cluster = yes");
	if ((copy = strdup(c->redis_address)) == NULL)
		return qw_conf_fail(p, 0, "out of memory");
	for (rest = copy; rc == 0 && (tok = strsep(&rest, ",")) != NULL;)
		rc = qw_conf_add_node(p, qw_conf_trim(tok));
	free(copy);
	return rc;
}

/* The [redis] keys that go together: sentinels with master_name and
 * without address; WAIT short enough that the leases renewed on the same
 * connection are not held up past their time. */
static int
qw_conf_check_redis(struct qw_conf_parser *p)
{
	const struct qw_conf *c = p->conf;

	if (p->sentline != 0 && p->nameline == 0)
		return qw_conf_fail(p, p->sentline, "sentinels: master_name must be set too "
		    "(the name the sentinels know the master by)");
	if (p->nameline != 0 && p->sentline == 0)
		return qw_conf_fail(p, p->nameline, "master_name: sentinels must be set too");
	if (p->sentline != 0 && p->addrline != 0)
		return qw_conf_fail(p, p->addrline > p->sentline ? p->addrline : p->sentline,
		    "address and sentinels exclude each other: with sentinels, they name the "
		    "master");
	if (p->spwline != 0 && p->sentline == 0)
		return qw_conf_fail(p, p->spwline, "sentinel_password_file: sentinels are not set");
	if (p->sentline != 0) {
		/* For the log and STATUS= only: redis.c connects where the
		 * sentinels say. */
		free(p->conf->redis_address);
		if (asprintf(&p->conf->redis_address, "master %s (via Sentinel)",
		    c->master_name) < 0) {
			p->conf->redis_address = NULL;
			return qw_conf_fail(p, 0, "out of memory");
		}
	}
	if (qw_conf_check_cluster(p) < 0)
		return -1;
	if (c->wait_replicas > 0 && c->wait_timeout_ms * 4 > c->lease_timeout_ms)
		return qw_conf_fail(p, p->wtline, "wait_timeout: %llums is more than a quarter of "
		    "lease_timeout (%llums): a WAIT holds up the lease renewals behind it",
		    (unsigned long long)c->wait_timeout_ms, (unsigned long long)c->lease_timeout_ms);
	return 0;
}

static int
qw_conf_load_as(const char *path, struct qw_conf **out, char **err, bool client)
{
	struct qw_conf_parser p = { .path = path, .client = client };
	char *line = NULL;
	size_t cap = 0;
	FILE *f = NULL;
	int rc = -1;

	*out = NULL;
	*err = NULL;
	p.conf = calloc(1, sizeof(*p.conf));
	if (p.conf == NULL || qw_conf_defaults(p.conf, path) < 0) {
		qw_conf_fail(&p, 0, "out of memory");
		goto out;
	}
	f = fopen(path, "r");
	if (f == NULL) {
		qw_conf_fail(&p, 0, "cannot open: %s", strerror(errno));
		goto out;
	}
	ssize_t len;
	while ((len = getline(&line, &cap, f)) >= 0) {
		p.line++;
		if (strlen(line) != (size_t)len) {
			qw_conf_fail(&p, p.line, "NUL byte in line");
			goto out;
		}
		if (qw_conf_line(&p, line) < 0)
			goto out;
	}
	if (ferror(f)) {
		qw_conf_fail(&p, p.line, "read error: %s", strerror(errno));
		goto out;
	}
	if (qw_conf_end_section(&p) < 0)
		goto out;
	if (p.conf->nqueues == 0 && !client) {
		qw_conf_fail(&p, 0, "no [queue NAME] section: nothing to do");
		goto out;
	}
	if (!client && qw_conf_check_cron_queues(&p) < 0)
		goto out;
	if (p.conf->instance == NULL && qw_conf_default_instance(p.conf) < 0) {
		qw_conf_fail(&p, 0, "out of memory");
		goto out;
	}
	if (qw_conf_check_redis(&p) < 0 || qw_conf_read_password(&p) < 0)
		goto out;
	*out = p.conf;
	p.conf = NULL;
	rc = 0;
out:
	if (f != NULL)
		fclose(f);
	free(line);
	qw_conf_free(p.conf);
	*err = p.err;
	return rc;
}

int
qw_conf_load(const char *path, struct qw_conf **out, char **err)
{
	return qw_conf_load_as(path, out, err, false);
}

int
qw_conf_load_client(const char *path, struct qw_conf **out, char **err)
{
	return qw_conf_load_as(path, out, err, true);
}

void
qw_conf_free(struct qw_conf *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->nqueues; i++) {
		free(c->queues[i].name);
		qw_conf_free_argv(c->queues[i].argv);
		qw_conf_free_argv(c->queues[i].worker_argv);
		qw_plugin_unload(c->queues[i].plugin);
	}
	free(c->queues);
	for (size_t i = 0; i < c->ncrons; i++) {
		free(c->crons[i].name);
		free(c->crons[i].queue);
		free(c->crons[i].payload);
	}
	free(c->crons);
	free(c->path);
	free(c->redis_address);
	free(c->password_file);
	if (c->password != NULL)
		explicit_bzero(c->password, strlen(c->password));
	free(c->password);
	free(c->prefix);
	for (size_t i = 0; i < c->nsentinels; i++)
		free(c->sentinels[i]);
	free(c->sentinels);
	for (size_t i = 0; i < c->nnodes; i++)
		free(c->nodes[i]);
	free(c->nodes);
	free(c->master_name);
	free(c->sentinel_password_file);
	if (c->sentinel_password != NULL)
		explicit_bzero(c->sentinel_password, strlen(c->sentinel_password));
	free(c->sentinel_password);
	free(c->instance);
	free(c->metrics_listen);
	free(c);
}
