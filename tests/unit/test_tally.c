/* test_tally.c - unit tests for src/tally.c: outcome words to counts, every
 * result decide.c makes counted as its stats counters say, histogram
 * buckets at their edges, and what recording one job costs. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "decide.h"
#include "tally.h"
#include "token.h"

static void
test_outcome_words(void **state)
{
	struct qw_tally t;

	memset(&t, 0, sizeof(t));
	qw_tally_outcomes(&t, "failed retried timed_out");
	qw_tally_outcomes(&t, "succeeded");
	qw_tally_outcomes(&t, "recovered dead");
	qw_tally_outcomes(&t, "requeued");
	qw_tally_outcomes(&t, "cancelled dead");
	qw_tally_outcomes(&t, "");
	qw_tally_outcomes(&t, "retriedx dea succeededs bogus  ");	/* none of ours */
	assert_int_equal(t.outcome[QW_TALLY_FAILED], 1);
	assert_int_equal(t.outcome[QW_TALLY_RETRIED], 1);
	assert_int_equal(t.outcome[QW_TALLY_TIMED_OUT], 1);
	assert_int_equal(t.outcome[QW_TALLY_SUCCEEDED], 1);
	assert_int_equal(t.outcome[QW_TALLY_RECOVERED], 1);
	assert_int_equal(t.outcome[QW_TALLY_DEAD], 2);
	assert_int_equal(t.outcome[QW_TALLY_REQUEUED], 1);
	assert_int_equal(t.outcome[QW_TALLY_CANCELLED], 1);
	for (int o = 0; o < QW_TALLY_NOUTCOMES; o++)
		assert_string_not_equal(qw_tally_outcome_name(o), "?");
}

/* Every counters string decide.c hands out counts each of its words. */
static void
test_every_decided_outcome_is_counted(void **state)
{
	const enum qw_result results[] = { QW_RESULT_OK, QW_RESULT_FAILED, QW_RESULT_PERMANENT };
	const int reasons[] = { QW_CANCEL_NONE, QW_CANCEL_TIMEOUT, QW_CANCEL_SHUTDOWN };

	for (size_t r = 0; r < 3; r++)
		for (size_t c = 0; c < 3; c++)
			for (unsigned a = 0; a < 3; a++) {
				struct qw_outcome_in in = { .result = results[r], .reason = reasons[c],
					.attempt = a, .max_attempts = 2, .interrupted = a,
					.max_interruptions = 2 };
				struct qw_outcome o;
				struct qw_tally t;
				uint64_t n = 0;
				memset(&t, 0, sizeof(t));
				qw_decide_outcome(&in, &o);
				qw_tally_outcomes(&t, o.counters);
				for (int k = 0; k < QW_TALLY_NOUTCOMES; k++)
					n += t.outcome[k];
				/* as many counts as words */
				uint64_t words = o.counters[0] != '\0';
				for (const char *p = o.counters; *p; p++)
					words += *p == ' ';
				assert_int_equal(n, words);
			}
}

static void
test_buckets_at_their_edges(void **state)
{
	const struct qw_tally_bounds *b = &qw_tally_job_bounds;
	struct qw_tally_hist h;

	memset(&h, 0, sizeof(h));
	assert_true(b->n <= QW_TALLY_MAXB && qw_tally_redis_bounds.n <= QW_TALLY_MAXB);
	assert_int_equal(b->le_us[0], 1000);
	assert_int_equal(b->le_us[b->n - 1], 3600000000ULL);
	for (unsigned i = 1; i < b->n; i++)
		assert_true(b->le_us[i] > b->le_us[i - 1]);
	qw_tally_observe(&h, b, 0);		/* le 0.001 */
	qw_tally_observe(&h, b, 1000);		/* le 0.001: the bound is inclusive */
	qw_tally_observe(&h, b, 1001);		/* le 0.0025 */
	qw_tally_observe(&h, b, 3600000000ULL);	/* le 3600 */
	qw_tally_observe(&h, b, 3600000001ULL);	/* +Inf */
	assert_int_equal(h.bucket[0], 2);
	assert_int_equal(h.bucket[1], 1);
	assert_int_equal(h.bucket[b->n - 1], 1);
	assert_int_equal(h.bucket[b->n], 1);
	assert_int_equal(h.count, 5);
	assert_int_equal(h.sum_us, 1000 + 1001 + 3600000000ULL + 3600000001ULL);
}

/* What the hot path adds per job: its outcome words, a duration and a
 * wait. Printed, not asserted (no timing asserts on a shared machine). */
static void
test_cost_of_recording_a_job(void **state)
{
	static struct qw_tally t;
	const char *counters[] = { "succeeded", "failed retried", "succeeded", "failed dead" };
	const int n = 2000000;
	struct timespec a, z;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < n; i++) {
		qw_tally_outcomes(&t, counters[i & 3]);
		qw_tally_observe(&t.duration, &qw_tally_job_bounds, (uint64_t)(i & 0xffff) * 8);
		qw_tally_observe(&t.wait, &qw_tally_job_bounds, (uint64_t)(i & 0xff) * 100);
	}
	clock_gettime(CLOCK_MONOTONIC, &z);
	printf("recording a job: %.1f ns\n",
	    ((double)(z.tv_sec - a.tv_sec) * 1e9 + (double)(z.tv_nsec - a.tv_nsec)) / n);
	assert_int_equal(t.duration.count, (uint64_t)n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_outcome_words),
		cmocka_unit_test(test_every_decided_outcome_is_counted),
		cmocka_unit_test(test_buckets_at_their_edges),
		cmocka_unit_test(test_cost_of_recording_a_job),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
