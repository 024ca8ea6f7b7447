/* test_decide.c - unit tests for src/decide.c (what a handler's end means
 * for its job, SPEC 4; the weighted share of free slots; prefetch = auto)
 * and src/fmt.c (numbers and durations as qworkerd writes them). */
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
test_cancelled_goes_dead_whatever_the_exit(void **state)
{
	static const enum qw_result rs[] = { QW_RESULT_OK, QW_RESULT_FAILED,
		QW_RESULT_PERMANENT };

	for (size_t i = 0; i < 3; i++) {
		struct qw_outcome o = decide(rs[i], QW_CANCEL_CANCELLED, 0, 5, 1);
		assert_true(o.cancelled);
		assert_false(o.timed_out);
		assert_int_equal(o.dest, QW_DEST_DEAD);
		assert_string_equal(o.counters, "cancelled dead");
		assert_int_equal(o.attempt, 1);
		assert_int_equal(o.interrupted, 1);
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

static unsigned
prefetch(uint64_t job_us, uint64_t fetch_us, unsigned slots)
{
	struct qw_prefetch_in in = { .job_us = job_us, .fetch_us = fetch_us, .slots = slots,
		.max = 1000 };

	return qw_decide_prefetch(&in);
}

static void
test_prefetch_short_jobs_keep_eight_round_trips(void **state)
{
	/* 10 slots, 100us jobs, 200us fetches: 20 jobs end during one fetch. */
	assert_int_equal(prefetch(100, 200, 10), 160);
	/* 1ms jobs, 500us fetches: 5 end during one. */
	assert_int_equal(prefetch(1000, 500, 10), 40);
	/* Exactly one ends during a fetch. */
	assert_int_equal(prefetch(2000, 200, 10), 8);
	/* It grows as jobs get shorter and as fetches get slower. */
	assert_true(prefetch(100, 200, 10) > prefetch(200, 200, 10));
	assert_true(prefetch(200, 400, 10) > prefetch(200, 200, 10));
	/* And with the slots. */
	assert_true(prefetch(200, 200, 20) > prefetch(200, 200, 10));
}

static void
test_prefetch_long_jobs_take_only_free_slots(void **state)
{
	/* Fewer than one job ends during a fetch: nothing ahead. */
	assert_int_equal(prefetch(2001, 200, 10), 0);
	assert_int_equal(prefetch(1000000, 300, 10), 0);
	assert_int_equal(prefetch(30000000, 1000, 10000), 0);
	/* Just below one job per fetch. */
	assert_int_equal(prefetch(801, 200, 4), 0);
	assert_int_equal(prefetch(800, 200, 4), 8);
	/* Jobs that got long again: the buffer shrinks to nothing. */
	assert_true(prefetch(50, 200, 4) > 0);
	assert_int_equal(prefetch(5000, 200, 4), 0);
}

static void
test_prefetch_unknown_until_measured(void **state)
{
	/* Until a job has ended and a fetch come back, only free slots. */
	assert_int_equal(prefetch(0, 200, 10), 0);
	assert_int_equal(prefetch(5, 0, 10), 0);
	assert_int_equal(prefetch(0, 0, 10), 0);
	/* A queue without slots takes nothing. */
	assert_int_equal(prefetch(5, 200, 0), 0);
}

static void
test_prefetch_bound(void **state)
{
	struct qw_prefetch_in in = { .job_us = 1, .fetch_us = 1000, .slots = 10, .max = 256 };

	assert_int_equal(qw_decide_prefetch(&in), 256);
	/* Noop jobs of 5us with 200us fetches would want 3200. */
	assert_int_equal(prefetch(5, 200, 10), 1000);
	assert_int_equal(prefetch(1, 1000000, 10000), 1000);
	/* No overflow with absurd times. */
	assert_int_equal(prefetch(1, UINT64_MAX, 10000), 1000);
	assert_int_equal(prefetch(UINT64_MAX, UINT64_MAX, 1), 8);
	in.max = 0;
	assert_int_equal(qw_decide_prefetch(&in), 0);
}

static void
test_smooth(void **state)
{
	uint64_t a = qw_decide_smooth(0, 100, 1, 3);

	/* The first sample is taken as it is. */
	assert_int_equal(a, 100);
	/* Up by half the way, down by an eighth. */
	assert_int_equal(qw_decide_smooth(100, 300, 1, 3), 200);
	assert_int_equal(qw_decide_smooth(100, 20, 1, 3), 90);
	assert_int_equal(qw_decide_smooth(100, 100, 1, 3), 100);
	/* "Measured" stays apart from "not yet": never 0. */
	assert_int_equal(qw_decide_smooth(0, 0, 1, 3), 1);
	/* One long job among short ones: the average goes up at once and
	 * comes down again over many short ones. */
	a = 5;
	a = qw_decide_smooth(a, 1000000, 1, 3);
	assert_true(a >= 500000);
	for (int i = 0; i < 200; i++)
		a = qw_decide_smooth(a, 5, 1, 3);
	assert_true(a < 50);
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
test_fmt_count(void **state)
{
	char b[40];

	assert_string_equal(qw_fmt_count(b, sizeof(b), 1, "queue", "queues"), "1 queue");
	assert_string_equal(qw_fmt_count(b, sizeof(b), 0, "queue", "queues"), "0 queues");
	assert_string_equal(qw_fmt_count(b, sizeof(b), 12, "worker", "workers"), "12 workers");
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
	assert_string_equal(qw_fmt_duration(b, sizeof(b), 86400000), "1d");
	assert_string_equal(qw_fmt_duration(b, sizeof(b), 365 * 86400000ULL), "365d");
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
		cmocka_unit_test(test_cancelled_goes_dead_whatever_the_exit),
		cmocka_unit_test(test_shutdown_requeues_without_an_attempt),
		cmocka_unit_test(test_done_after_shutdown_is_a_success),
		cmocka_unit_test(test_share_follows_weights),
		cmocka_unit_test(test_share_respects_room),
		cmocka_unit_test(test_prefetch_short_jobs_keep_eight_round_trips),
		cmocka_unit_test(test_prefetch_long_jobs_take_only_free_slots),
		cmocka_unit_test(test_prefetch_unknown_until_measured),
		cmocka_unit_test(test_prefetch_bound),
		cmocka_unit_test(test_smooth),
		cmocka_unit_test(test_fmt_u64),
		cmocka_unit_test(test_fmt_duration),
		cmocka_unit_test(test_fmt_count),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
