/* test_redis.c - unit tests for the pure parts of src/redis.c and
 * src/library.c: the jitter of the reconnect backoff, and when the function
 * library is loaded. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "library.h"
#include "redis.h"
#include "scripts.h"

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

/* Ours goes in over none, an older or the same version; a newer one stays. */
static void
test_library_verdict(void **state)
{
	redisReply version = { .type = REDIS_REPLY_INTEGER };
	redisReply missing = { .type = REDIS_REPLY_ERROR, .str = (char *)"ERR Function not found",
		.len = 22 };
	long long theirs = -1;

	(void)state;
	assert_int_equal(qw_library_verdict(NULL, &theirs), QW_LIBRARY_LOAD);
	assert_int_equal(theirs, 0);
	assert_int_equal(qw_library_verdict(&missing, &theirs), QW_LIBRARY_LOAD);
	assert_int_equal(theirs, 0);
	for (long long v = 0; v <= QW_LIBRARY_VERSION; v++) {
		version.integer = v;
		assert_int_equal(qw_library_verdict(&version, &theirs), QW_LIBRARY_LOAD);
		assert_int_equal(theirs, v);
	}
	version.integer = QW_LIBRARY_VERSION + 1;
	assert_int_equal(qw_library_verdict(&version, &theirs), QW_LIBRARY_KEEP);
	assert_int_equal(theirs, QW_LIBRARY_VERSION + 1);
}

/* An "unknown command" error quotes the command's arguments, the library's
 * code among them: the message stops before them. */
static void
test_library_error_drops_the_code(void **state)
{
	static const char unknown[] = "ERR unknown command 'FUNCTION', with args beginning "
	    "with: 'LOAD' 'REPLACE' '#!lua name=qworkerd local VERSION = 1 ";
	redisReply r = { .type = REDIS_REPLY_ERROR, .str = (char *)unknown,
		.len = sizeof(unknown) - 1 };
	char why[100];

	(void)state;
	qw_library_error(&r, why, sizeof(why));
	assert_string_equal(why, "ERR unknown command 'FUNCTION'");
	r.str = (char *)"NOPERM this user has no permissions to run the 'function' command";
	r.len = strlen(r.str);
	qw_library_error(&r, why, sizeof(why));
	assert_string_equal(why, r.str);
	assert_true(strncmp(qw_library_code, "#!lua name=" QW_LIBRARY_NAME "\n", 20) == 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jitter_stays_within_half_and_all),
		cmocka_unit_test(test_jitter_spreads_the_delays),
		cmocka_unit_test(test_library_verdict),
		cmocka_unit_test(test_library_error_drops_the_code),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
