/* test_decide.c - unit tests for src/decide.c (what a handler's end means
 * for its job, SPEC 4; the weighted share of free slots) and src/fmt.c
 * (numbers and durations as qworkerd writes them). */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "decide.h"
#include "fmt.h"
#include "token.h"

static struct qw_outcome
decide(enum qw_result r, int reason, unsigned attempt, unsigned max, unsigned intr)
{
	struct qw_outcome_in in = { .result = r, .reason = reason, .attempt = attempt,
		.max_attempts = max, .interrupted = intr, .max_interruptions = 3 };
	struct qw_outcome o;

	qw_decide_outcome(&in, &o);
	return o;
}

static void
test_success(void **state)
{
	struct qw_outcome o = decide(QW_RESULT_OK, QW_CANCEL_NONE, 2, 5, 1);

	assert_int_equal(o.dest, QW_DEST_DONE);
	assert_string_equal(o.counters, "succeeded");
	assert_int_equal(o.attempt, 2);
	assert_int_equal(o.interrupted, 1);
	assert_false(o.timed_out);
}

static void
test_failure_retries_until_the_last_attempt(void **state)
{
	struct qw_outcome o = decide(QW_RESULT_FAILED, QW_CANCEL_NONE, 0, 3, 0);

	assert_int_equal(o.dest, QW_DEST_SCHEDULED);
	assert_string_equal(o.counters, "failed retried");
	assert_int_equal(o.attempt, 1);
	o = decide(QW_RESULT_FAILED, QW_CANCEL_NONE, 1, 3, 0);
	assert_int_equal(o.dest, QW_DEST_SCHEDULED);
	o = decide(QW_RESULT_FAILED, QW_CANCEL_NONE, 2, 3, 0);
	assert_int_equal(o.dest, QW_DEST_DEAD);
	assert_string_equal(o.counters, "failed dead");
	assert_int_equal(o.attempt, 3);
	o = decide(QW_RESULT_FAILED, QW_CANCEL_NONE, 0, 1, 0);
	assert_int_equal(o.dest, QW_DEST_DEAD);
}

static void
test_permanent_goes_dead_at_once(void **state)
{
	struct qw_outcome o = decide(QW_RESULT_PERMANENT, QW_CANCEL_NONE, 0, 10, 0);

	assert_int_equal(o.dest, QW_DEST_DEAD);
	assert_string_equal(o.counters, "failed dead");
	assert_int_equal(o.attempt, 1);
}

static void
test_timeout_is_a_failure_whatever_the_exit(void **state)
{
	static const enum qw_result rs[] = { QW_RESULT_OK, QW_RESULT_FAILED,
		QW_RESULT_PERMANENT };

	for (size_t i = 0; i < 3; i++) {
		struct qw_outcome o = decide(rs[i], QW_CANCEL_TIMEOUT, 0, 2, 0);
		assert_true(o.timed_out);
		assert_int_equal(o.dest, QW_DEST_SCHEDULED);
		assert_string_equal(o.counters, "failed retried timed_out");
		assert_int_equal(o.attempt, 1);
		o = decide(rs[i], QW_CANCEL_TIMEOUT, 1, 2, 0);
		assert_int_equal(o.dest, QW_DEST_DEAD);
		assert_string_equal(o.counters, "failed dead timed_out");
	}
}

static void
test_shutdown_requeues_without_an_attempt(void **state)
{
	struct qw_outcome o = decide(QW_RESULT_FAILED, QW_CANCEL_SHUTDOWN, 1, 2, 0);

	assert_int_equal(o.dest, QW_DEST_PENDING);
	assert_string_equal(o.counters, "requeued");
	assert_int_equal(o.attempt, 1);
	assert_int_equal(o.interrupted, 1);
	assert_false(o.interruptions_spent);
	o = decide(QW_RESULT_FAILED, QW_CANCEL_SHUTDOWN, 1, 2, 2);
	assert_int_equal(o.dest, QW_DEST_DEAD);
	assert_string_equal(o.counters, "dead");
	assert_int_equal(o.interrupted, 3);
	assert_true(o.interruptions_spent);
}

static void
test_done_after_shutdown_is_a_success(void **state)
{
	struct qw_outcome o = decide(QW_RESULT_OK, QW_CANCEL_SHUTDOWN, 0, 2, 0);

	assert_int_equal(o.dest, QW_DEST_DONE);
	assert_string_equal(o.counters, "succeeded");
	assert_int_equal(o.interrupted, 0);
}

static void
test_share_follows_weights(void **state)
{
	struct qw_share qs[3] = { { 1, 100, 0 }, { 2, 100, 0 }, { 5, 100, 0 } };
	unsigned want[3], total[3] = { 0, 0, 0 };

	/* One slot at a time, as jobs end one by one: the smooth round robin
	 * must still give 1:2:5 over every 8 slots. */
	for (int i = 0; i < 80; i++) {
		qw_decide_share(qs, 3, 1, want);
		for (int k = 0; k < 3; k++)
			total[k] += want[k];
	}
	assert_int_equal(total[0], 10);
	assert_int_equal(total[1], 20);
	assert_int_equal(total[2], 50);
}

static void
test_share_respects_room(void **state)
{
	struct qw_share qs[3] = { { 1, 0, 0 }, { 10, 2, 0 }, { 1, 100, 0 } };
	unsigned want[3];

	qw_decide_share(qs, 3, 8, want);
	assert_int_equal(want[0], 0);
	assert_int_equal(want[1], 2);
	assert_int_equal(want[2], 6);
	qs[2].room = 0;
	qw_decide_share(qs, 3, 8, want);
	assert_int_equal(want[0] + want[2], 0);
	assert_int_equal(want[1], 2);
	qw_decide_share(qs, 3, 0, want);
	assert_int_equal(want[0] + want[1] + want[2], 0);
}

static void
test_fmt_u64(void **state)
{
	char b[QW_FMT_U64_LEN];

	assert_int_equal(qw_fmt_u64(b, 0), 1);
	assert_string_equal(b, "0");
	assert_int_equal(qw_fmt_u64(b, 18446744073709551615ULL), 20);
	assert_string_equal(b, "18446744073709551615");
	qw_fmt_u64(b, 1000);
	assert_string_equal(b, "1000");
}

static void
test_fmt_duration(void **state)
{
	char b[40];

	assert_string_equal(qw_fmt_duration(b, sizeof(b), 25000), "25s");
	assert_string_equal(qw_fmt_duration(b, sizeof(b), 7200000), "2h");
	assert_string_equal(qw_fmt_duration(b, sizeof(b), 90000), "90s");
	assert_string_equal(qw_fmt_duration(b, sizeof(b), 120000), "2m");
	assert_string_equal(qw_fmt_duration(b, sizeof(b), 1500), "1.5s");
	assert_string_equal(qw_fmt_duration(b, sizeof(b), 500), "500ms");
	assert_string_equal(qw_fmt_duration(b, sizeof(b), 0), "0ms");
	assert_string_equal(qw_fmt_seconds(b, sizeof(b), 31536000000ULL), "31536000");
	assert_string_equal(qw_fmt_seconds(b, sizeof(b), 2500), "2.5");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_success),
		cmocka_unit_test(test_failure_retries_until_the_last_attempt),
		cmocka_unit_test(test_permanent_goes_dead_at_once),
		cmocka_unit_test(test_timeout_is_a_failure_whatever_the_exit),
		cmocka_unit_test(test_shutdown_requeues_without_an_attempt),
		cmocka_unit_test(test_done_after_shutdown_is_a_success),
		cmocka_unit_test(test_share_follows_weights),
		cmocka_unit_test(test_share_respects_room),
		cmocka_unit_test(test_fmt_u64),
		cmocka_unit_test(test_fmt_duration),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
