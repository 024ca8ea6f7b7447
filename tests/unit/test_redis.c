/* test_redis.c - unit tests for the pure parts of src/redis.c: the jitter
 * of the reconnect backoff. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "redis.h"

/* Between half the backoff and all of it, never outside, whatever R is. */
static void
test_jitter_stays_within_half_and_all(void **state)
{
	static const unsigned backoffs[] = { 1, 2, 3, 100, 101, 2500, 5000 };

	(void)state;
	for (size_t i = 0; i < sizeof(backoffs) / sizeof(backoffs[0]); i++) {
		unsigned b = backoffs[i];
		for (double r = 0; r < 1; r += 0.001) {
			unsigned d = qw_redis_jitter_ms(b, r);
			assert_true(d >= b / 2);
			assert_true(d <= b);
		}
		assert_int_equal(qw_redis_jitter_ms(b, 0), b / 2);
	}
}

/* Spread: two instances with different draws wait different times, so a
 * Redis restart does not bring them back in lockstep. */
static void
test_jitter_spreads_the_delays(void **state)
{
	unsigned seen[5001] = { 0 }, distinct = 0;

	(void)state;
	for (int i = 0; i < 1000; i++) {
		unsigned d = qw_redis_jitter_ms(5000, i / 1000.0);
		distinct += seen[d]++ == 0;
	}
	assert_true(distinct >= 900);
	assert_true(qw_redis_jitter_ms(5000, 0.999) > 4990);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jitter_stays_within_half_and_all),
		cmocka_unit_test(test_jitter_spreads_the_delays),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
