/* cron.c - owns cron expressions: parsing schedule = values and finding a
 * schedule's next tick, in UTC or in local time across DST changes. Pure
 * computation: no clock, no loop, no Redis (schedule.c runs the ticks).
 *
 * Local time follows Vixie cron (cron.c, "case 2" and "case 3"): when the
 * clocks jump forward, a fixed-time entry whose time was skipped runs once,
 * at the jump; when they go back, it does not run again in the repeated
 * hour. Wildcard entries (minute or hour field starting with '*') follow
 * the clock on the wall: they skip the missing hour and run through the
 * repeated one. */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "conf.h"
#include "cron.h"

#define QW_CRON_DAY_S 86400
/* How far ahead a tick is looked for: 31 February has none, and 29
 * February one in four (eight) years. */
#define QW_CRON_HORIZON_S (9LL * 366 * QW_CRON_DAY_S)
/* qw_cron_latest's first window before now. */
#define QW_CRON_LATEST_WINDOW_MS 60000

struct qw_cron_field {
	const char *name;
	unsigned lo, hi;
	const char *const *names;	/* names[i] stands for lo + i */
};

static const char *const qw_cron_months[] = { "jan", "feb", "mar", "apr", "may", "jun",
	"jul", "aug", "sep", "oct", "nov", "dec", NULL };
static const char *const qw_cron_days[] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat",
	NULL };

static const struct qw_cron_field qw_cron_fields[5] = {
	{ "minute", 0, 59, NULL },
	{ "hour", 0, 23, NULL },
	{ "day-of-month", 1, 31, NULL },
	{ "month", 1, 12, qw_cron_months },
	{ "day-of-week", 0, 7, qw_cron_days },
};

/* One value: a number or, where the field has them, a three-letter name.
 * Returns the rest of the string, or NULL. */
static const char *
qw_cron_value(const struct qw_cron_field *f, const char *s, unsigned *v)
{
	if (isdigit((unsigned char)*s)) {
		unsigned long n = 0;
		for (; isdigit((unsigned char)*s); s++)
			n = n < 100000 ? n * 10 + (unsigned long)(*s - '0') : n;
		*v = (unsigned)n;
		return s;
	}
	for (size_t i = 0; f->names != NULL && f->names[i] != NULL; i++) {
		if (strncasecmp(s, f->names[i], 3) == 0 && !isalpha((unsigned char)s[3])) {
			*v = f->lo + (unsigned)i;
			return s + 3;
		}
	}
	return NULL;
}

/* One comma-separated item: '*', N, N-M, each with an optional /STEP. */
static int
qw_cron_item(const struct qw_cron_field *f, const char *item, uint64_t *bits, char *err,
    size_t errlen)
{
	unsigned a = f->lo, b = f->hi, step = 1;
	const char *s = item;
	bool range = true;

	if (*s == '*') {
		s++;
	} else {
		if ((s = qw_cron_value(f, s, &a)) == NULL)
			goto bad;
		b = a;
		range = *s == '-';
		if (range && (s = qw_cron_value(f, s + 1, &b)) == NULL)
			goto bad;
	}
	if (*s == '/') {
		if (!range) {
			snprintf(err, errlen, "%s '%s': a step needs a range or '*' before it", f->name, item);
			return -1;
		}
		if (!isdigit((unsigned char)s[1]) || (s = qw_cron_value(f, s + 1, &step)) == NULL ||
		    step == 0 || step > f->hi) {
			snprintf(err, errlen, "%s '%s': the step must be 1 to %u", f->name, item, f->hi);
			return -1;
		}
	}
	if (*s != '\0')
		goto bad;
	if (a < f->lo || a > f->hi || b < f->lo || b > f->hi) {
		snprintf(err, errlen, "%s '%s': out of range (%u-%u)", f->name, item, f->lo, f->hi);
		return -1;
	}
	if (a > b) {
		snprintf(err, errlen, "%s '%s': the range goes backwards", f->name, item);
		return -1;
	}
	for (unsigned v = a; v <= b; v += step)
		*bits |= 1ULL << v;
	return 0;
bad:
	snprintf(err, errlen, "%s '%s': not a number%s, '*', a range or a step", f->name, item,
	    f->names ? " or name" : "");
	return -1;
}

static int
qw_cron_field_parse(const struct qw_cron_field *f, char *text, uint64_t *bits, char *err,
    size_t errlen)
{
	char *save = NULL;

	if (text[0] == ',' || text[strlen(text) - 1] == ',' || strstr(text, ",,") != NULL) {
		snprintf(err, errlen, "%s '%s': an empty list item", f->name, text);
		return -1;
	}
	*bits = 0;
	for (char *item = strtok_r(text, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
		if (qw_cron_item(f, item, bits, err, errlen) < 0)
			return -1;
	return 0;
}

/* @every DURATION, and the names that stand for five fields. */
static int
qw_cron_parse_at(const char *s, struct qw_cron *out, char *err, size_t errlen)
{
	static const struct { const char *name, *fields; } named[] = {
		{ "@hourly", "0 * * * *" }, { "@daily", "0 0 * * *" }, { "@midnight", "0 0 * * *" },
		{ "@weekly", "0 0 * * 0" }, { "@monthly", "0 0 1 * *" }, { "@yearly", "0 0 1 1 *" },
		{ "@annually", "0 0 1 1 *" },
	};
	uint64_t ms;

	if (strncmp(s, "@every", 6) == 0 && isspace((unsigned char)s[6])) {
		const char *d = s + 6;
		while (isspace((unsigned char)*d))
			d++;
		if (qw_conf_parse_duration(d, &ms) < 0 || ms < QW_CRON_EVERY_MIN_MS ||
		    ms > QW_CRON_EVERY_MAX_MS) {
			snprintf(err, errlen, "@every '%s': needs a duration from 1s to 366d "
			    "(a number with ms, s, m, h or d)", d);
			return -1;
		}
		memset(out, 0, sizeof(*out));
		out->every_ms = ms;
		return 0;
	}
	for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++)
		if (strcmp(s, named[i].name) == 0)
			return qw_cron_parse(named[i].fields, out, err, errlen);
	snprintf(err, errlen, "'%s' is not @every DURATION, @hourly, @daily, @weekly, @monthly "
	    "or @yearly", s);
	return -1;
}

int
qw_cron_parse(const char *s, struct qw_cron *out, char *err, size_t errlen)
{
	char *copy, *f[6], *save = NULL;
	uint64_t bits[5];
	size_t n = 0;
	int rc = -1;

	if (s[0] == '@')
		return qw_cron_parse_at(s, out, err, errlen);
	if ((copy = strdup(s)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (char *w = strtok_r(copy, " \t", &save); w != NULL; w = strtok_r(NULL, " \t", &save))
		f[n < 6 ? n++ : 5] = w;
	if (n != 5) {
		snprintf(err, errlen, "'%s' has %s%zu field%s, not 5 (minute hour day-of-month month "
		    "day-of-week), @every DURATION, @hourly or @daily", s, n == 6 ? "at least " : "",
		    n, n == 1 ? "" : "s");
		goto out;
	}
	for (size_t i = 0; i < 5; i++)
		if (qw_cron_field_parse(&qw_cron_fields[i], f[i], bits + i, err, errlen) < 0)
			goto out;
	memset(out, 0, sizeof(*out));
	out->minute = bits[0];
	out->hour = (uint32_t)bits[1];
	out->dom = (uint32_t)bits[2];
	out->month = (uint32_t)bits[3];
	out->dow = (uint32_t)((bits[4] | bits[4] >> 7) & 0x7f);
	out->dom_star = f[2][0] == '*';
	out->dow_star = f[4][0] == '*';
	out->wild = f[0][0] == '*' || f[1][0] == '*';
	rc = 0;
out:
	free(copy);
	return rc;
}

static bool
qw_cron_day_matches(const struct qw_cron *c, const struct tm *tm)
{
	bool dom = c->dom & (1U << tm->tm_mday), dow = c->dow & (1U << tm->tm_wday);

	/* As every cron: when both day fields are restricted, either may match. */
	return c->dom_star || c->dow_star ? dom && dow : dom || dow;
}

/* The first matching minute of the wall clock at or after FROM, both in
 * seconds of a clock without time zone (UTC arithmetic); -1 past the
 * horizon. */
static int64_t
qw_cron_civil_next(const struct qw_cron *c, int64_t from)
{
	time_t t = (time_t)((from + 59) / 60 * 60);
	struct tm tm;

	gmtime_r(&t, &tm);
	for (;;) {
		if ((int64_t)t > from + QW_CRON_HORIZON_S)
			return -1;
		if (!(c->month & (1U << (tm.tm_mon + 1)))) {
			tm.tm_mon++, tm.tm_mday = 1, tm.tm_hour = 0, tm.tm_min = 0;
		} else if (!qw_cron_day_matches(c, &tm)) {
			tm.tm_mday++, tm.tm_hour = 0, tm.tm_min = 0;
		} else if (!(c->hour & (1U << tm.tm_hour))) {
			tm.tm_hour++, tm.tm_min = 0;
		} else if (!(c->minute & (1ULL << tm.tm_min))) {
			tm.tm_min++;
		} else {
			return (int64_t)t;
		}
		t = timegm(&tm);	/* normalizes tm too */
	}
}

/* Seconds east of UTC at instant T. */
static int64_t
qw_cron_offset(const struct qw_cron *c, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (c->tz == QW_CRON_UTC || localtime_r(&tt, &tm) == NULL)
		return 0;
	return (int64_t)tm.tm_gmtoff;
}

/* The first instant after T whose offset differs from OFF, or T plus a day
 * when there is none by then (no zone changes its offset twice a day). */
static int64_t
qw_cron_offset_end(const struct qw_cron *c, int64_t t, int64_t off)
{
	int64_t lo = t, hi = t + QW_CRON_DAY_S;

	if (qw_cron_offset(c, hi) == off)
		return hi;
	while (hi - lo > 1) {
		int64_t mid = lo + (hi - lo) / 2;
		if (qw_cron_offset(c, mid) == off)
			lo = mid;
		else
			hi = mid;
	}
	return hi;
}

/* Whether a fixed-time entry has a tick at instant T, because the clocks
 * jumped forward at T from offset OFF and it matches a wall time they
 * skipped. */
static bool
qw_cron_skipped(const struct qw_cron *c, int64_t t, int64_t off)
{
	int64_t off2 = qw_cron_offset(c, t), m;

	if (c->wild || off2 <= off)
		return false;
	m = qw_cron_civil_next(c, t + off);
	return m >= 0 && m < t + off2;
}

/* The first tick at or after instant T (seconds), walking spans of one UTC
 * offset: a wall-clock minute maps to the instant minute - offset within
 * its span. At a change of offset, fixed-time entries get Vixie cron's
 * treatment (see the top of this file). */
static int64_t
qw_cron_next_s(const struct qw_cron *c, int64_t t)
{
	int64_t done = INT64_MIN;	/* wall times a fixed-time entry has run through */
	int64_t limit = t + QW_CRON_HORIZON_S;

	if (qw_cron_skipped(c, t, qw_cron_offset(c, t - 1)))
		return t;
	while (t < limit) {
		int64_t off = qw_cron_offset(c, t), end = qw_cron_offset_end(c, t, off);
		int64_t from = t + off > done ? t + off : done;
		int64_t m = qw_cron_civil_next(c, from);

		if (m < 0)
			return -1;
		if (m < end + off)
			return m - off;
		if (qw_cron_skipped(c, end, off))
			return end;
		if (!c->wild && qw_cron_offset(c, end) < off)
			done = end + off;	/* the wall clock goes back: no second run */
		t = end;
	}
	return -1;
}

int64_t
qw_cron_next(const struct qw_cron *c, int64_t after_ms)
{
	int64_t s;

	if (after_ms < 0)
		after_ms = -1;
	if (c->every_ms > 0)
		return (after_ms / (int64_t)c->every_ms + 1) * (int64_t)c->every_ms;
	s = qw_cron_next_s(c, after_ms / 1000 + 1);
	return s < 0 ? -1 : s * 1000;
}

int64_t
qw_cron_latest(const struct qw_cron *c, int64_t tick, int64_t now)
{
	int64_t next;

	/* Far behind (a host that booted in 1970 and then got the time): walking
	 * every tick between, 1.7 billion for @every 1s over 56 years, holds the
	 * caller's loop for seconds. Start instead from the first tick of a
	 * window that ends at NOW, widened until it holds one: the walk then
	 * covers at most that window. */
	for (int64_t back = QW_CRON_LATEST_WINDOW_MS; now - back > tick; back *= 8) {
		if ((next = qw_cron_next(c, now - back)) >= 0 && next <= now) {
			tick = next;
			break;
		}
		if (back > INT64_MAX / 8)
			break;
	}
	while ((next = qw_cron_next(c, tick)) >= 0 && next <= now)
		tick = next;
	return tick;
}

bool
qw_cron_is_tick(const struct qw_cron *c, int64_t t_ms)
{
	return qw_cron_next(c, t_ms - 1) == t_ms;
}

bool
qw_cron_equal(const struct qw_cron *a, const struct qw_cron *b)
{
	return a->every_ms == b->every_ms && a->minute == b->minute && a->hour == b->hour &&
	    a->dom == b->dom && a->month == b->month && a->dow == b->dow &&
	    a->dom_star == b->dom_star && a->dow_star == b->dow_star && a->wild == b->wild &&
	    a->tz == b->tz;
}
