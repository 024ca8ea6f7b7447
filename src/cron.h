/* cron.h - cron expressions ([cron NAME] schedule =) and their ticks. */
#ifndef QW_CRON_H
#define QW_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* @every's bounds: below a second Redis would see a script call per
 * instance more often than it is useful. */
#define QW_CRON_EVERY_MIN_MS 1000ULL
#define QW_CRON_EVERY_MAX_MS (366ULL * 24 * 3600 * 1000)

enum qw_cron_tz {
	QW_CRON_UTC,
	QW_CRON_LOCAL,		/* the TZ of the process, DST changes as Vixie cron */
};

/* A parsed schedule. Field bits: bit N set when value N matches. */
struct qw_cron {
	uint64_t every_ms;	/* @every: ticks at its multiples since the epoch; 0: the fields */
	uint64_t minute;	/* 0-59 */
	uint32_t hour;		/* 0-23 */
	uint32_t dom;		/* 1-31 */
	uint32_t month;		/* 1-12 */
	uint32_t dow;		/* 0-6, Sunday 0 (7 is folded into 0) */
	bool dom_star, dow_star;	/* day fields written as '*...': AND, else OR */
	/* The minute or hour field starts with '*': Vixie cron's "wildcard"
	 * entries, which keep running through a repeated hour and skip a
	 * missing one; the others ("fixed-time") run once in a repeated hour
	 * and right after a missing one. */
	bool wild;
	enum qw_cron_tz tz;
};

/* Parses S (five fields, @every DURATION, @hourly, @daily, @weekly,
 * @monthly, @yearly). Returns 0, or -1 with a message that names the bad
 * part in ERR. Sets tz to UTC. */
int qw_cron_parse(const char *s, struct qw_cron *out, char *err, size_t errlen);
/* The first tick strictly after AFTER_MS (Unix ms), or -1 when there is
 * none in the next nine years (31 February). */
int64_t qw_cron_next(const struct qw_cron *c, int64_t after_ms);
/* The latest tick at or before NOW_MS, TICK_MS being a tick at or before
 * it: what a schedule whose timer fired late (a stopped process, a wall
 * clock that jumped forward) should send now. Its cost does not grow with
 * the number of ticks in between. */
int64_t qw_cron_latest(const struct qw_cron *c, int64_t tick_ms, int64_t now_ms);
/* Whether T (Unix ms) is one of C's ticks. */
bool qw_cron_is_tick(const struct qw_cron *c, int64_t t_ms);
/* Whether the two schedules are the same. */
bool qw_cron_equal(const struct qw_cron *a, const struct qw_cron *b);

#endif
