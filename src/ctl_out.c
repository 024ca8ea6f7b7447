/* ctl_out.c - owns how qworkerctl prints: aligned columns for people, with
 * every byte from Redis escaped so that a job cannot drive the terminal,
 * and one JSON document for scripts. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "job.h"
#include "log.h"

struct qw_ctl_table {
	size_t ncols, nrows, cap;
	char **cells;		/* nrows * ncols, escaped; row 0 the heads */
};

void
qw_ctl_verr(const char *fmt, va_list ap)
{
	fputs("qworkerctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void
qw_ctl_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	qw_ctl_verr(fmt, ap);
	va_end(ap);
}

char *
qw_ctl_escape(const char *s, size_t len)
{
	size_t size = len * 4 + 1;
	char *out = malloc(size);

	if (out != NULL)
		qw_log_escape(out, size, s, len);
	return out;
}

struct qw_ctl_table *
qw_ctl_table_new(size_t ncols, const char *const *heads)
{
	struct qw_ctl_table *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->ncols = ncols;
	if (qw_ctl_table_add(t, heads) < 0) {
		qw_ctl_table_free(t);
		return NULL;
	}
	return t;
}

int
qw_ctl_table_add(struct qw_ctl_table *t, const char *const *cells)
{
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **n = realloc(t->cells, cap * t->ncols * sizeof(*n));
		if (n == NULL)
			return -1;
		t->cells = n;
		t->cap = cap;
	}
	for (size_t i = 0; i < t->ncols; i++) {
		const char *c = cells[i] ? cells[i] : "-";
		t->cells[t->nrows * t->ncols + i] = qw_ctl_escape(c, strlen(c));
	}
	t->nrows++;
	return 0;
}

/* The width on a terminal of S: one column per character, not per byte. */
static size_t
qw_ctl_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

void
qw_ctl_table_print(struct qw_ctl_table *t)
{
	size_t *w = calloc(t->ncols, sizeof(*w));

	for (size_t r = 0; w != NULL && r < t->nrows; r++)
		for (size_t i = 0; i < t->ncols; i++) {
			const char *c = t->cells[r * t->ncols + i];
			size_t cw = c ? qw_ctl_width(c) : 1;
			if (cw > w[i])
				w[i] = cw;
		}
	for (size_t r = 0; w != NULL && r < t->nrows; r++) {
		for (size_t i = 0; i < t->ncols; i++) {
			const char *c = t->cells[r * t->ncols + i];
			c = c ? c : "?";
			fputs(c, stdout);
			if (i + 1 < t->ncols)
				printf("%*s", (int)(w[i] - qw_ctl_width(c) + 2), "");
		}
		putchar('\n');
	}
	free(w);
	qw_ctl_table_free(t);
}

void
qw_ctl_table_free(struct qw_ctl_table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

int
qw_ctl_json_print(json_t *doc)
{
	char *s;

	if (doc == NULL)
		return -1;
	s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
	json_decref(doc);
	if (s == NULL)
		return -1;
	puts(s);
	free(s);
	return 0;
}

json_t *
qw_ctl_json_bytes(const char *s, size_t len)
{
	json_t *v = json_stringn(s, len);
	char *b64;

	if (v != NULL)
		return v;
	if ((b64 = qw_base64_encode(s, len)) == NULL)
		return NULL;
	v = json_pack("{s:s}", "base64", b64);
	free(b64);
	return v;
}

const char *
qw_ctl_fmt_age(char *buf, size_t len, int64_t ms)
{
	static const struct { const char *u; int64_t ms; } units[] = {
		{ "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 } };
	const char *sign = ms < 0 ? "-" : "";
	int64_t a = ms < 0 ? -ms : ms;

	if (a < 1000) {
		snprintf(buf, len, "%s%lldms", sign, (long long)a);
		return buf;
	}
	for (size_t i = 0; i < 4; i++) {
		if (a < units[i].ms)
			continue;
		int64_t hi = a / units[i].ms, lo = i < 3 ? a % units[i].ms / units[i + 1].ms : 0;
		if (lo > 0)
			snprintf(buf, len, "%s%lld%s%lld%s", sign, (long long)hi, units[i].u,
			    (long long)lo, units[i + 1].u);
		else
			snprintf(buf, len, "%s%lld%s", sign, (long long)hi, units[i].u);
		break;
	}
	return buf;
}

const char *
qw_ctl_fmt_time(char *buf, size_t len, int64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)ms);
	return buf;
}
