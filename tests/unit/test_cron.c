/* test_cron.c - unit tests for src/cron.c: cron expressions from a table,
 * their next ticks in UTC, and in local time across the DST changes of
 * America/New_York and Europe/Berlin (2026). */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cron.h"

/* "2026-03-08T07:00:00Z" (or with .mmm) as Unix ms. */
static int64_t
utc(const char *s)
{
	struct tm tm = { 0 };
	int ms = 0;

	assert_true(sscanf(s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	    &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) >= 6);
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm) * 1000 + ms;
}

static void
use_tz(const char *tz)
{
	setenv("TZ", tz, 1);
	tzset();
}

struct next_case {
	const char *tz;		/* NULL: timezone = UTC, else local with this TZ */
	const char *expr;
	const char *after;
	const char *want;	/* NULL: no tick at all */
};

static const struct next_case next_cases[] = {
	/* UTC */
	{ NULL, "* * * * *", "2026-05-01T12:00:00Z", "2026-05-01T12:01:00Z" },
	{ NULL, "* * * * *", "2026-05-01T12:00:30.500Z", "2026-05-01T12:01:00Z" },
	{ NULL, "* * * * *", "2026-05-01T12:00:59.999Z", "2026-05-01T12:01:00Z" },
	{ NULL, "0 0 1 1 *", "2026-05-01T12:00:00Z", "2027-01-01T00:00:00Z" },
	{ NULL, "0 12 * * MON-FRI", "2026-05-02T00:00:00Z", "2026-05-04T12:00:00Z" },	/* Sat -> Mon */
	{ NULL, "0 12 * * mon-fri", "2026-05-04T12:00:00Z", "2026-05-05T12:00:00Z" },
	{ NULL, "0 0 * * 7", "2026-05-01T00:00:00Z", "2026-05-03T00:00:00Z" },	/* 7 is Sunday */
	{ NULL, "0 0 * * 0", "2026-05-01T00:00:00Z", "2026-05-03T00:00:00Z" },
	{ NULL, "0 0 13 * FRI", "2026-05-01T00:00:00Z", "2026-05-08T00:00:00Z" },	/* either day */
	{ NULL, "0 0 13 * FRI", "2026-05-10T00:00:00Z", "2026-05-13T00:00:00Z" },
	{ NULL, "0 0 13 * *", "2026-05-01T00:00:00Z", "2026-05-13T00:00:00Z" },
	{ NULL, "0 0 */10 * MON", "2026-05-01T00:00:00Z", "2026-05-11T00:00:00Z" },	/* both */
	{ NULL, "0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z" },
	{ NULL, "0 0 31 2 *", "2026-03-01T00:00:00Z", NULL },
	{ NULL, "0 0 31 * *", "2026-04-01T00:00:00Z", "2026-05-31T00:00:00Z" },
	{ NULL, "*/15 9-17/2 * JAN,jul *", "2026-05-01T00:00:00Z", "2026-07-01T09:00:00Z" },
	{ NULL, "*/15 9-17/2 * JAN,jul *", "2026-07-01T09:45:00Z", "2026-07-01T11:00:00Z" },
	{ NULL, "*/15 9-17/2 * JAN,jul *", "2026-07-01T17:45:00Z", "2026-07-02T09:00:00Z" },
	{ NULL, "5,10-12,50-59/3 * * * *", "2026-05-01T00:05:00Z", "2026-05-01T00:10:00Z" },
	{ NULL, "5,10-12,50-59/3 * * * *", "2026-05-01T00:12:00Z", "2026-05-01T00:50:00Z" },
	{ NULL, "5,10-12,50-59/3 * * * *", "2026-05-01T00:56:00Z", "2026-05-01T00:59:00Z" },
	{ NULL, "5,10-12,50-59/3 * * * *", "2026-05-01T00:59:00Z", "2026-05-01T01:05:00Z" },
	{ NULL, "59 23 31 12 *", "2026-12-31T23:59:00Z", "2027-12-31T23:59:00Z" },
	{ NULL, "@hourly", "2026-05-01T12:00:00Z", "2026-05-01T13:00:00Z" },
	{ NULL, "@daily", "2026-05-01T12:00:00Z", "2026-05-02T00:00:00Z" },
	{ NULL, "@weekly", "2026-05-01T12:00:00Z", "2026-05-03T00:00:00Z" },
	{ NULL, "@monthly", "2026-05-01T12:00:00Z", "2026-06-01T00:00:00Z" },
	{ NULL, "@yearly", "2026-05-01T12:00:00Z", "2027-01-01T00:00:00Z" },
	{ NULL, "@every 1s", "2026-05-01T12:00:00Z", "2026-05-01T12:00:01Z" },
	{ NULL, "@every 1s", "2026-05-01T12:00:00.999Z", "2026-05-01T12:00:01Z" },
	{ NULL, "@every 90m", "2026-05-01T12:00:00Z", "2026-05-01T13:30:00Z" },
	{ NULL, "@every  2h", "2026-05-01T12:00:00Z", "2026-05-01T14:00:00Z" },
	/* New York: the clocks go from 02:00 EST to 03:00 EDT on 8 March
	 * (07:00Z), and from 02:00 EDT back to 01:00 EST on 1 November
	 * (06:00Z). */
	{ "America/New_York", "0 3 * * *", "2026-05-01T00:00:00Z", "2026-05-01T07:00:00Z" },
	{ "America/New_York", "0 3 * * *", "2026-01-10T00:00:00Z", "2026-01-10T08:00:00Z" },
	/* a fixed time in the missing hour runs once, right after it */
	{ "America/New_York", "30 2 * * *", "2026-03-08T05:00:00Z", "2026-03-08T07:00:00Z" },
	{ "America/New_York", "30 2 * * *", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z" },
	{ "America/New_York", "0,30 2 * * *", "2026-03-08T05:00:00Z", "2026-03-08T07:00:00Z" },
	{ "America/New_York", "0,30 2 * * *", "2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z" },
	{ "America/New_York", "0,30 2,3 * * *", "2026-03-08T05:00:00Z", "2026-03-08T07:00:00Z" },
	{ "America/New_York", "0,30 2,3 * * *", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z" },
	{ "America/New_York", "30 2 * * *", "2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z" },
	/* a wildcard entry skips it */
	{ "America/New_York", "*/30 2 * * *", "2026-03-08T05:00:00Z", "2026-03-09T06:00:00Z" },
	{ "America/New_York", "*/30 * * * *", "2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z" },
	{ "America/New_York", "@hourly", "2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z" },
	/* a fixed time in the repeated hour runs once, the first time */
	{ "America/New_York", "30 1 * * *", "2026-11-01T04:00:00Z", "2026-11-01T05:30:00Z" },
	{ "America/New_York", "30 1 * * *", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z" },
	{ "America/New_York", "0 1 * * *", "2026-11-01T05:00:00Z", "2026-11-02T06:00:00Z" },
	{ "America/New_York", "15 2 * * *", "2026-11-01T05:00:00Z", "2026-11-01T07:15:00Z" },
	{ "America/New_York", "0 1,2 * * *", "2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z" },
	/* a wildcard entry runs through both */
	{ "America/New_York", "*/30 * * * *", "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z" },
	{ "America/New_York", "*/30 * * * *", "2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z" },
	{ "America/New_York", "*/30 * * * *", "2026-11-01T06:30:00Z", "2026-11-01T07:00:00Z" },
	{ "America/New_York", "@hourly", "2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z" },
	{ "America/New_York", "@hourly", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z" },
	{ "America/New_York", "@daily", "2026-11-01T03:00:00Z", "2026-11-01T04:00:00Z" },
	{ "America/New_York", "@daily", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z" },
	/* @every does not care about the time zone */
	{ "America/New_York", "@every 1h", "2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z" },
	/* Berlin: 02:00 CET -> 03:00 CEST on 29 March (01:00Z), 03:00 CEST
	 * -> 02:00 CET on 25 October (01:00Z). */
	{ "Europe/Berlin", "30 2 * * *", "2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z" },
	{ "Europe/Berlin", "30 2 * * *", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z" },
	{ "Europe/Berlin", "0 2 * * *", "2026-03-28T23:59:00Z", "2026-03-29T01:00:00Z" },
	{ "Europe/Berlin", "*/20 2 * * *", "2026-03-28T23:59:00Z", "2026-03-30T00:00:00Z" },
	{ "Europe/Berlin", "30 2 * * *", "2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z" },
	{ "Europe/Berlin", "30 2 * * *", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z" },
	{ "Europe/Berlin", "*/20 2 * * *", "2026-10-25T00:40:00Z", "2026-10-25T01:00:00Z" },
	{ "Europe/Berlin", "*/20 2 * * *", "2026-10-25T01:20:00Z", "2026-10-25T01:40:00Z" },
	{ "Europe/Berlin", "*/20 2 * * *", "2026-10-25T01:40:00Z", "2026-10-26T01:00:00Z" },
	{ "Europe/Berlin", "0 12 * * SUN", "2026-03-28T12:00:00Z", "2026-03-29T10:00:00Z" },
};

static void
test_next_table(void **state)
{
	for (size_t i = 0; i < sizeof(next_cases) / sizeof(next_cases[0]); i++) {
		const struct next_case *nc = &next_cases[i];
		struct qw_cron c;
		char err[256];
		int64_t got, want = nc->want ? utc(nc->want) : -1;

		use_tz(nc->tz ? nc->tz : "Pacific/Auckland");	/* UTC must not look at TZ */
		if (qw_cron_parse(nc->expr, &c, err, sizeof(err)) < 0)
			fail_msg("case %zu '%s': %s", i, nc->expr, err);
		c.tz = nc->tz ? QW_CRON_LOCAL : QW_CRON_UTC;
		got = qw_cron_next(&c, utc(nc->after));
		if (got != want)
			fail_msg("case %zu '%s' %s after %s: got %lld, want %s (%lld)", i, nc->expr,
			    nc->tz ? nc->tz : "UTC", nc->after, (long long)got,
			    nc->want ? nc->want : "none", (long long)want);
		if (got >= 0)
			assert_true(qw_cron_is_tick(&c, got));
	}
}

/* Walking a whole DST day tick by tick: every hour of an hourly fixed-time
 * entry's day comes once, the wildcard's follow the clock. */
static void
test_walk_days(void **state)
{
	struct qw_cron c;
	char err[256];
	int64_t t;
	int n;

	use_tz("America/New_York");
	assert_int_equal(qw_cron_parse("0 0-23 * * *", &c, err, sizeof(err)), 0);
	c.tz = QW_CRON_LOCAL;
	/* spring: 02:00 is missing, runs at 03:00 together with 03:00: 23 ticks */
	for (n = 0, t = utc("2026-03-08T05:00:00Z") - 1; (t = qw_cron_next(&c, t)) < utc("2026-03-09T04:00:00Z"); n++)
		;
	assert_int_equal(n, 23);
	/* fall: 01:00 only once: 24 ticks over 25 hours */
	for (n = 0, t = utc("2026-11-01T04:00:00Z") - 1; (t = qw_cron_next(&c, t)) < utc("2026-11-02T05:00:00Z"); n++)
		;
	assert_int_equal(n, 24);
	assert_int_equal(qw_cron_parse("0 * * * *", &c, err, sizeof(err)), 0);
	c.tz = QW_CRON_LOCAL;
	for (n = 0, t = utc("2026-11-01T04:00:00Z") - 1; (t = qw_cron_next(&c, t)) < utc("2026-11-02T05:00:00Z"); n++)
		;
	assert_int_equal(n, 25);
}

struct bad_case {
	const char *expr;
	const char *says;	/* part of the message */
};

static const struct bad_case bad_cases[] = {
	{ "61 * * * *", "minute '61': out of range (0-59)" },
	{ "* * *", "has 3 fields, not 5" },
	{ "* * * * * *", "has at least 6 fields" },
	{ "", "has 0 fields" },
	{ "@every 0s", "@every '0s'" },
	{ "@every 500ms", "@every '500ms'" },
	{ "@every 1x", "@every '1x'" },
	{ "@every", "is not @every DURATION" },
	{ "@reboot", "'@reboot' is not @every" },
	{ "* 24 * * *", "hour '24': out of range (0-23)" },
	{ "* * 0 * *", "day-of-month '0': out of range (1-31)" },
	{ "* * 32 * *", "day-of-month '32'" },
	{ "* * * 13 *", "month '13': out of range (1-12)" },
	{ "* * * * 8", "day-of-week '8': out of range (0-7)" },
	{ "* * * FOO *", "month 'FOO': not a number or name" },
	{ "* * * * MONDAY", "day-of-week 'MONDAY'" },
	{ "MON * * * *", "minute 'MON': not a number," },
	{ "5-2 * * * *", "minute '5-2': the range goes backwards" },
	{ "*/0 * * * *", "minute '*/0': the step must be" },
	{ "*/60 * * * *", "minute '*/60': the step must be" },
	{ "1/5 * * * *", "minute '1/5': a step needs a range" },
	{ "1,,2 * * * *", "an empty list item" },
	{ "1, * * * *", "an empty list item" },
	{ "-1 * * * *", "minute '-1'" },
	{ "99999999999 * * * *", "minute '99999999999': out of range (0-59)" },
	{ "*5 * * * *", "minute '*5'" },
};

static void
test_bad_table(void **state)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		struct qw_cron c;
		char err[256] = "";

		if (qw_cron_parse(bad_cases[i].expr, &c, err, sizeof(err)) == 0)
			fail_msg("'%s' was taken", bad_cases[i].expr);
		if (strstr(err, bad_cases[i].says) == NULL)
			fail_msg("'%s': '%s' does not say '%s'", bad_cases[i].expr, err,
			    bad_cases[i].says);
	}
}

static void
test_wild_and_equal(void **state)
{
	struct qw_cron a, b;
	char err[256];

	assert_int_equal(qw_cron_parse("*/5 3 * * *", &a, err, sizeof(err)), 0);
	assert_true(a.wild);
	assert_int_equal(qw_cron_parse("0 3 * * *", &a, err, sizeof(err)), 0);
	assert_false(a.wild);
	assert_int_equal(qw_cron_parse("@daily", &b, err, sizeof(err)), 0);
	assert_false(qw_cron_equal(&a, &b));
	assert_int_equal(qw_cron_parse("0 0 * * *", &a, err, sizeof(err)), 0);
	assert_true(qw_cron_equal(&a, &b));
	b.tz = QW_CRON_LOCAL;
	assert_false(qw_cron_equal(&a, &b));
	assert_int_equal(qw_cron_parse("@every 1m", &a, err, sizeof(err)), 0);
	assert_int_equal(a.every_ms, 60000);
	assert_true(qw_cron_is_tick(&a, 120000));
	assert_false(qw_cron_is_tick(&a, 120001));
}

/* The tick to send after a late timer: the same as walking tick by tick,
 * and found without the walk after decades (a clock set from 1970). */
static void
test_latest(void **state)
{
	static const char *const exprs[] = { "* * * * *", "@every 1s", "0 0 29 2 *",
		"30 2 * * *", "*/7 1-3 * * MON", "0 0 1 1 *" };
	struct qw_cron c;
	char err[256];

	use_tz("America/New_York");
	for (size_t i = 0; i < sizeof(exprs) / sizeof(exprs[0]); i++) {
		int64_t tick, next, now = utc("2026-11-01T06:31:17Z");
		assert_int_equal(qw_cron_parse(exprs[i], &c, err, sizeof(err)), 0);
		c.tz = QW_CRON_LOCAL;
		/* a gap of about two days: the walk is short enough to compare */
		tick = qw_cron_next(&c, now - 2 * 86400000LL);
		if (tick > now)
			tick = qw_cron_next(&c, utc("2024-01-01T00:00:00Z"));
		int64_t walked = tick;
		while ((next = qw_cron_next(&c, walked)) >= 0 && next <= now)
			walked = next;
		if (qw_cron_latest(&c, tick, now) != walked)
			fail_msg("'%s': %lld, walking gives %lld", exprs[i],
			    (long long)qw_cron_latest(&c, tick, now), (long long)walked);
		assert_int_equal(qw_cron_latest(&c, walked, now), walked);
	}
	assert_int_equal(qw_cron_parse("@every 1s", &c, err, sizeof(err)), 0);
	assert_int_equal(qw_cron_latest(&c, 1000, utc("2026-12-07T13:00:05.250Z")),
	    utc("2026-12-07T13:00:05Z"));
	assert_int_equal(qw_cron_parse("* * * * *", &c, err, sizeof(err)), 0);
	c.tz = QW_CRON_LOCAL;
	assert_int_equal(qw_cron_latest(&c, 60000, utc("2026-12-07T13:00:59.999Z")),
	    utc("2026-12-07T13:00:00Z"));
	assert_int_equal(qw_cron_parse("0 0 1 1 *", &c, err, sizeof(err)), 0);
	assert_int_equal(qw_cron_latest(&c, 0, utc("2026-12-07T13:00:00Z")),
	    utc("2026-01-01T00:00:00Z"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_next_table),
		cmocka_unit_test(test_walk_days),
		cmocka_unit_test(test_bad_table),
		cmocka_unit_test(test_wild_and_equal),
		cmocka_unit_test(test_latest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
