/* test_sentinel.c - unit tests for the reply parsing of src/sentinel.c:
 * what a sentinel or a master says, well formed or not. A malformed reply
 * is -1 (that sentinel is passed over), never a crash or an address made
 * of junk. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sentinel.h"

#define STR(s) { .type = REDIS_REPLY_STRING, .str = (char *)(s), .len = sizeof(s) - 1 }

static redisReply *
array(redisReply *a, size_t n, redisReply **slots)
{
	for (size_t i = 0; i < n; i++)
		slots[i] = &a[i];
	static redisReply r;
	r = (redisReply){ .type = REDIS_REPLY_ARRAY, .elements = n, .element = slots };
	return &r;
}

static void
test_addr_well_formed(void **state)
{
	redisReply v4[] = { STR("10.0.0.5"), STR("6379") }, v6[] = { STR("::1"), STR("6380") };
	redisReply *slots[2];
	char buf[64];

	(void)state;
	assert_int_equal(qw_sentinel_parse_addr(array(v4, 2, slots), buf, sizeof(buf)), 0);
	assert_string_equal(buf, "10.0.0.5:6379");
	assert_int_equal(qw_sentinel_parse_addr(array(v6, 2, slots), buf, sizeof(buf)), 0);
	assert_string_equal(buf, "[::1]:6380");
}

static void
test_addr_malformed(void **state)
{
	redisReply nil = { .type = REDIS_REPLY_NIL };
	redisReply err = { .type = REDIS_REPLY_ERROR, .str = (char *)"ERR no", .len = 6 };
	redisReply one[] = { STR("10.0.0.5") };
	redisReply three[] = { STR("10.0.0.5"), STR("6379"), STR("x") };
	redisReply port0[] = { STR("10.0.0.5"), STR("0") };
	redisReply portbig[] = { STR("10.0.0.5"), STR("65536") };
	redisReply portjunk[] = { STR("10.0.0.5"), STR("63x9") };
	redisReply portempty[] = { STR("10.0.0.5"), STR("") };
	redisReply hostempty[] = { STR(""), STR("6379") };
	redisReply hostctl[] = { STR("10.0.0.5\n+OK"), STR("6379") };
	redisReply hostnul[] = { { .type = REDIS_REPLY_STRING, .str = (char *)"10\0.1", .len = 5 },
		STR("6379") };
	redisReply intport[] = { STR("10.0.0.5"), { .type = REDIS_REPLY_INTEGER, .integer = 6379 } };
	redisReply *slots[3];
	char buf[64], tiny[8];

	(void)state;
	assert_int_equal(qw_sentinel_parse_addr(NULL, buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(&nil, buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(&err, buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(array(one, 1, slots), buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(array(three, 3, slots), buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(array(port0, 2, slots), buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(array(portbig, 2, slots), buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(array(portjunk, 2, slots), buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(array(portempty, 2, slots), buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(array(hostempty, 2, slots), buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(array(hostctl, 2, slots), buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(array(hostnul, 2, slots), buf, sizeof(buf)), -1);
	assert_int_equal(qw_sentinel_parse_addr(array(intport, 2, slots), buf, sizeof(buf)), -1);
	/* Too long for the buffer: refused, not cut. */
	redisReply ok[] = { STR("10.0.0.5"), STR("6379") };
	assert_int_equal(qw_sentinel_parse_addr(array(ok, 2, slots), tiny, sizeof(tiny)), -1);
}

static void
test_switch_message(void **state)
{
	redisReply msg[] = { STR("message"), STR("+switch-master"),
		STR("mymaster 10.0.0.5 6379 10.0.0.6 6380") };
	redisReply other[] = { STR("message"), STR("+switch-master"),
		STR("theirs 10.0.0.5 6379 10.0.0.6 6380") };
	redisReply prefix[] = { STR("message"), STR("+switch-master"),
		STR("mymasterX 10.0.0.5 6379 10.0.0.6 6380") };
	redisReply sub[] = { STR("subscribe"), STR("+switch-master"),
		{ .type = REDIS_REPLY_INTEGER, .integer = 1 } };
	redisReply *slots[3];
	char buf[64];

	(void)state;
	assert_int_equal(qw_sentinel_parse_switch(array(msg, 3, slots), "mymaster", buf,
	    sizeof(buf)), 0);
	assert_string_equal(buf, "10.0.0.6:6380");
	assert_int_equal(qw_sentinel_parse_switch(array(other, 3, slots), "mymaster", buf,
	    sizeof(buf)), 1);
	assert_int_equal(qw_sentinel_parse_switch(array(prefix, 3, slots), "mymaster", buf,
	    sizeof(buf)), 1);
	assert_int_equal(qw_sentinel_parse_switch(array(sub, 3, slots), "mymaster", buf,
	    sizeof(buf)), 1);
	assert_int_equal(qw_sentinel_parse_switch(NULL, "mymaster", buf, sizeof(buf)), 1);
}

static void
test_switch_malformed(void **state)
{
	static const char *const bad[] = {
		"mymaster 10.0.0.5 6379 10.0.0.6",		/* four words */
		"mymaster 10.0.0.5 6379 10.0.0.6 6380 x",	/* six */
		"mymaster 10.0.0.5 6379 10.0.0.6 0",		/* port 0 */
		"mymaster 10.0.0.5 6379 10.0.0.6 99999",	/* port too large */
		"mymaster 10.0.0.5 6379  6380",		/* empty address */
		"mymaster 10.0.0.5 6379 10.0.0.6\t 6380",	/* control byte */
		"mymaster 10.0.0.5 6379 10.0.0.6 6380 ",	/* trailing space */
		"",
	};
	redisReply *slots[3];
	char buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		redisReply msg[] = { STR("message"), STR("+switch-master"),
			{ .type = REDIS_REPLY_STRING, .str = (char *)bad[i], .len = strlen(bad[i]) } };
		assert_int_equal(qw_sentinel_parse_switch(array(msg, 3, slots), "mymaster", buf,
		    sizeof(buf)), -1);
	}
	redisReply notstr[] = { STR("message"), STR("+switch-master"),
		{ .type = REDIS_REPLY_INTEGER, .integer = 3 } };
	assert_int_equal(qw_sentinel_parse_switch(array(notstr, 3, slots), "mymaster", buf,
	    sizeof(buf)), -1);
}

static void
test_role(void **state)
{
	redisReply master[] = { STR("master"), { .type = REDIS_REPLY_INTEGER } };
	redisReply slave[] = { STR("slave"), STR("10.0.0.5") };
	redisReply sentinel[] = { STR("sentinel") };
	redisReply intfirst[] = { { .type = REDIS_REPLY_INTEGER, .integer = 1 } };
	redisReply status = { .type = REDIS_REPLY_STATUS, .str = (char *)"OK", .len = 2 };
	redisReply *slots[2];

	(void)state;
	assert_int_equal(qw_sentinel_parse_role(array(master, 2, slots)), 1);
	assert_int_equal(qw_sentinel_parse_role(array(slave, 2, slots)), 0);
	assert_int_equal(qw_sentinel_parse_role(array(sentinel, 1, slots)), 0);
	assert_int_equal(qw_sentinel_parse_role(array(intfirst, 1, slots)), -1);
	assert_int_equal(qw_sentinel_parse_role(array(master, 0, slots)), -1);
	assert_int_equal(qw_sentinel_parse_role(&status), -1);
	assert_int_equal(qw_sentinel_parse_role(NULL), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_well_formed),
		cmocka_unit_test(test_addr_malformed),
		cmocka_unit_test(test_switch_message),
		cmocka_unit_test(test_switch_malformed),
		cmocka_unit_test(test_role),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
