/* test_flow.c - unit tests for src/flow.c (the circuit breaker's moves and
 * the fetch script's flow status), what each outcome means for the breaker
 * (src/decide.c) and the rate key's values (src/conf.c). */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "conf.h"
#include "decide.h"
#include "flow.h"
#include "token.h"

static void
test_moves_are_the_documented_ones(void **state)
{
	static const struct { enum qw_breaker_state from, to; bool ok; } t[] = {
		{ QW_BREAKER_CLOSED, QW_BREAKER_OPEN, true },
		{ QW_BREAKER_OPEN, QW_BREAKER_HALF_OPEN, true },
		{ QW_BREAKER_HALF_OPEN, QW_BREAKER_CLOSED, true },
		{ QW_BREAKER_HALF_OPEN, QW_BREAKER_OPEN, true },
		{ QW_BREAKER_CLOSED, QW_BREAKER_HALF_OPEN, false },
		{ QW_BREAKER_OPEN, QW_BREAKER_CLOSED, false },
		{ QW_BREAKER_CLOSED, QW_BREAKER_CLOSED, false },
		{ QW_BREAKER_OPEN, QW_BREAKER_OPEN, false },
		{ QW_BREAKER_NSTATES, QW_BREAKER_OPEN, false },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (qw_flow_breaker_move(t[i].from, t[i].to) != t[i].ok)
			fail_msg("move %d -> %d: expected %d", t[i].from, t[i].to, t[i].ok);
}

static void
test_names_round_trip(void **state)
{
	for (int i = 0; i < QW_BREAKER_NSTATES; i++) {
		const char *n = qw_flow_breaker_name((enum qw_breaker_state)i);
		enum qw_breaker_state s;
		assert_int_equal(qw_flow_breaker_parse(n, strlen(n), &s), 0);
		assert_int_equal(s, i);
	}
	enum qw_breaker_state s;
	assert_int_equal(qw_flow_breaker_parse("half", 4, &s), -1);
	assert_int_equal(qw_flow_breaker_parse("opened", 6, &s), -1);
	assert_string_equal(qw_flow_breaker_name(QW_BREAKER_HALF_OPEN), "half-open");
}

static void
test_flow_status(void **state)
{
	static const struct {
		const char *s;
		int rc;
		bool breaker, moved;
		enum qw_breaker_state st, from;
		uint64_t wait;
	} t[] = {
#define BAD(s) { s, -1, false, false, QW_BREAKER_CLOSED, QW_BREAKER_CLOSED, 0 }
		{ "flow - - 0", 0, false, false, QW_BREAKER_CLOSED, QW_BREAKER_CLOSED, 0 },
		{ "flow - - 734", 0, false, false, QW_BREAKER_CLOSED, QW_BREAKER_CLOSED, 734 },
		{ "flow closed - 0", 0, true, false, QW_BREAKER_CLOSED, QW_BREAKER_CLOSED, 0 },
		{ "flow open - 29999", 0, true, false, QW_BREAKER_OPEN, QW_BREAKER_CLOSED, 29999 },
		{ "flow half-open open 250", 0, true, true, QW_BREAKER_HALF_OPEN, QW_BREAKER_OPEN, 250 },
		{ "flow half-open - 250", 0, true, false, QW_BREAKER_HALF_OPEN, QW_BREAKER_CLOSED, 250 },
		BAD("flow"), BAD("flow - -"), BAD("flow x - 0"), BAD("flow - y 0"),
		BAD("flow - - 1e3"), BAD("flow - - -1"), BAD("PAUSED"), BAD(""),
		BAD("flow - - 123456789012345678901234"),
#undef BAD
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct qw_flow_seen fs;
		int rc = qw_flow_parse(t[i].s, strlen(t[i].s), &fs);
		if (rc != t[i].rc)
			fail_msg("'%s': rc %d, expected %d", t[i].s, rc, t[i].rc);
		if (rc < 0)
			continue;
		assert_int_equal(fs.breaker, t[i].breaker);
		assert_int_equal(fs.moved, t[i].moved);
		if (fs.breaker)
			assert_int_equal(fs.state, t[i].st);
		if (fs.moved)
			assert_int_equal(fs.from, t[i].from);
		assert_int_equal(fs.wait_ms, t[i].wait);
	}
}

/* Which ends count for the breaker (SPEC 14): failed runs of any kind but
 * permanent ones count against it, successes for it, the rest not at all. */
static void
test_outcomes_for_the_breaker(void **state)
{
	static const struct { enum qw_result r; int reason; unsigned attempt; int want; } t[] = {
		{ QW_RESULT_OK, QW_CANCEL_NONE, 0, 1 },
		{ QW_RESULT_FAILED, QW_CANCEL_NONE, 0, -1 },
		{ QW_RESULT_FAILED, QW_CANCEL_NONE, 4, -1 },	/* the last attempt */
		{ QW_RESULT_PERMANENT, QW_CANCEL_NONE, 0, 0 },
		{ QW_RESULT_OK, QW_CANCEL_TIMEOUT, 0, -1 },
		{ QW_RESULT_PERMANENT, QW_CANCEL_TIMEOUT, 0, -1 },
		{ QW_RESULT_FAILED, QW_CANCEL_CANCELLED, 0, 0 },
		{ QW_RESULT_FAILED, QW_CANCEL_SHUTDOWN, 0, 0 },
		{ QW_RESULT_OK, QW_CANCEL_SHUTDOWN, 0, 1 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct qw_outcome_in in = { .result = t[i].r, .reason = t[i].reason,
			.attempt = t[i].attempt, .max_attempts = 5, .max_interruptions = 3 };
		struct qw_outcome o;
		qw_decide_outcome(&in, &o);
		if (o.breaker != t[i].want)
			fail_msg("case %zu: breaker %d, expected %d", i, o.breaker, t[i].want);
	}
}

static void
test_rate_values(void **state)
{
	static const struct { const char *s; int rc; unsigned n; uint64_t ms; } t[] = {
		{ "1/s", 0, 1, 1000 }, { "100/m", 0, 100, 60000 }, { "1000000/h", 0, 1000000, 3600000 },
		{ "0/s", -1, 0, 0 }, { "1000001/s", -1, 0, 0 }, { "5", -1, 0, 0 }, { "5/d", -1, 0, 0 }, { "5/S", -1, 0, 0 },
		{ "/s", -1, 0, 0 }, { "5 /s", -1, 0, 0 }, { "-5/s", -1, 0, 0 }, { "1.5/s", -1, 0, 0 }, { "5/s ", -1, 0, 0 },
		{ "99999999999/s", -1, 0, 0 }, { "", -1, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct qw_rate r = { 7, 7 };
		int rc = qw_conf_parse_rate(t[i].s, &r);
		if (rc != t[i].rc)
			fail_msg("'%s': rc %d, expected %d", t[i].s, rc, t[i].rc);
		if (rc == 0) {
			assert_int_equal(r.n, t[i].n);
			assert_int_equal(r.period_ms, t[i].ms);
		} else {
			assert_int_equal(r.n, 7);
		}
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_moves_are_the_documented_ones),
		cmocka_unit_test(test_names_round_trip),
		cmocka_unit_test(test_flow_status),
		cmocka_unit_test(test_outcomes_for_the_breaker),
		cmocka_unit_test(test_rate_values),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
