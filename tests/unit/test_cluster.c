/* test_cluster.c - unit tests for the pure parts of src/cluster.c: CRC16
 * and key slots against the published vectors (and the slots a real
 * redis-server computes with CLUSTER KEYSLOT), the MOVED and ASK errors,
 * and the ranges of CLUSTER SLOTS, well formed or not. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cluster.h"

#define STR(s) { .type = REDIS_REPLY_STRING, .str = (char *)(s), .len = sizeof(s) - 1 }
#define INT(i) { .type = REDIS_REPLY_INTEGER, .integer = (i) }
#define ERR(s) { .type = REDIS_REPLY_ERROR, .str = (char *)(s), .len = sizeof(s) - 1 }

static unsigned
slot(const char *key)
{
	return qw_cluster_slot(key, strlen(key));
}

static void
test_crc16(void **state)
{
	(void)state;
	/* The check value of CRC-16/XMODEM, as the cluster specification gives it. */
	assert_int_equal(qw_cluster_crc16("123456789", 9), 0x31c3);
	assert_int_equal(qw_cluster_crc16("", 0), 0);
}

static void
test_slots(void **state)
{
	(void)state;
	assert_int_equal(slot("foo"), 12182);
	assert_int_equal(slot("bar"), 5061);
	assert_int_equal(slot("{user1000}.following"), 3443);
	assert_int_equal(slot("{user1000}.followers"), 3443);
	/* An empty tag does not count: the whole key is hashed. */
	assert_int_equal(slot("foo{}{bar}"), 8363);
	assert_int_equal(slot("{}"), 15257);
	/* The first { and the first } after it. */
	assert_int_equal(slot("foo{{bar}}zap"), 4015);
	assert_int_equal(slot("foo{bar}{zap}"), 5061);
	assert_int_equal(slot(""), 0);
	/* A queue's keys all land on its name's slot. */
	assert_int_equal(slot("qw:{mail}:pending"), 4247);
	assert_int_equal(slot("qw:{mail}:active:host-a"), 4247);
	assert_int_equal(slot("mail"), 4247);
	assert_int_equal(slot("qw:{q0}:leases"), 3387);
	/* An unclosed tag: the whole key. */
	assert_int_equal(slot("{mail"), qw_cluster_crc16("{mail", 5) & 16383);
}

static void
test_redirects(void **state)
{
	redisReply moved = ERR("MOVED 3999 127.0.0.1:6381"), ask = ERR("ASK 12 10.0.0.2:7000"),
	    v6 = ERR("MOVED 1 ::1:7001"), other = ERR("ERR nope"), st = STR("MOVED 1 a:1");
	redisReply bad[] = { ERR("MOVED 16384 127.0.0.1:1"), ERR("MOVED x 127.0.0.1:1"),
		ERR("MOVED 1 127.0.0.1"), ERR("MOVED 1 127.0.0.1:0"), ERR("MOVED 1 :7000"),
		ERR("MOVED 1 127.0.0.1:7000x"), ERR("ASK 1"), ERR("MOVED "), ERR("TRYAGAIN x") };
	unsigned s = 0;
	char addr[64];

	(void)state;
	assert_int_equal(qw_cluster_parse_redirect(&moved, &s, addr, sizeof(addr)), 1);
	assert_int_equal(s, 3999);
	assert_string_equal(addr, "127.0.0.1:6381");
	assert_int_equal(qw_cluster_parse_redirect(&ask, &s, addr, sizeof(addr)), 2);
	assert_int_equal(s, 12);
	assert_string_equal(addr, "10.0.0.2:7000");
	assert_int_equal(qw_cluster_parse_redirect(&v6, &s, addr, sizeof(addr)), 1);
	assert_string_equal(addr, "[::1]:7001");
	assert_int_equal(qw_cluster_parse_redirect(&other, &s, addr, sizeof(addr)), 0);
	assert_int_equal(qw_cluster_parse_redirect(&st, &s, addr, sizeof(addr)), 0);
	assert_int_equal(qw_cluster_parse_redirect(NULL, &s, addr, sizeof(addr)), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(qw_cluster_parse_redirect(&bad[i], &s, addr, sizeof(addr)), 0);
	/* Too small a buffer is no address. */
	assert_int_equal(qw_cluster_parse_redirect(&moved, &s, addr, 8), 0);
}

static redisReply *
range_of(redisReply *start, redisReply *end, redisReply *node, redisReply *out,
    redisReply **slots)
{
	slots[0] = start;
	slots[1] = end;
	slots[2] = node;
	*out = (redisReply){ .type = REDIS_REPLY_ARRAY, .elements = 3, .element = slots };
	return out;
}

static void
test_ranges(void **state)
{
	redisReply ip = STR("127.0.0.1"), port = INT(7000), id = STR("e7d1eecce"), v6 = STR("::1"),
	    empty = STR(""), qmark = STR("?"), nil = { .type = REDIS_REPLY_NIL }, huge = INT(70000), zero = INT(0), last = INT(16383), big = INT(16384),
	    neg = INT(-1), five = INT(5);
	redisReply *ns[3], node = { .type = REDIS_REPLY_ARRAY, .elements = 3, .element = ns };
	redisReply *rs[3], r;
	unsigned a, b;
	char addr[64];

	(void)state;
	ns[0] = &ip, ns[1] = &port, ns[2] = &id;
	assert_int_equal(qw_cluster_parse_range(range_of(&zero, &last, &node, &r, rs), "10.0.0.9:7001", &a, &b,
	    addr, sizeof(addr)), 0);
	assert_int_equal(a, 0);
	assert_int_equal(b, 16383);
	assert_string_equal(addr, "127.0.0.1:7000");
	ns[0] = &v6;
	assert_int_equal(qw_cluster_parse_range(range_of(&zero, &five, &node, &r, rs), "10.0.0.9:7001", &a, &b,
	    addr, sizeof(addr)), 0);
	assert_string_equal(addr, "[::1]:7000");
	/* An endpoint the node does not know ("" when it does not know its
	 * own IP, a cluster of one node; NULL behind a load balancer): the
	 * host that was asked, with the port given. Unusable with none. */
	ns[0] = &empty;
	assert_int_equal(qw_cluster_parse_range(range_of(&zero, &five, &node, &r, rs), "10.0.0.9:7001", &a, &b,
	    addr, sizeof(addr)), 0);
	assert_string_equal(addr, "10.0.0.9:7000");
	assert_int_equal(qw_cluster_parse_range(range_of(&zero, &five, &node, &r, rs), "[::1]:7001", &a, &b,
	    addr, sizeof(addr)), 0);
	assert_string_equal(addr, "[::1]:7000");
	ns[0] = &nil;
	assert_int_equal(qw_cluster_parse_range(range_of(&zero, &five, &node, &r, rs), "h.example:7001", &a, &b,
	    addr, sizeof(addr)), 0);
	assert_string_equal(addr, "h.example:7000");
	assert_int_equal(qw_cluster_parse_range(range_of(&zero, &five, &node, &r, rs), NULL, &a, &b,
	    addr, sizeof(addr)), -1);
	ns[0] = &qmark;
	assert_int_equal(qw_cluster_parse_range(range_of(&zero, &five, &node, &r, rs), "10.0.0.9:7001", &a, &b,
	    addr, sizeof(addr)), -1);
	/* A bad port, slots out of range or reversed. */
	ns[0] = &ip, ns[1] = &huge;
	assert_int_equal(qw_cluster_parse_range(range_of(&zero, &five, &node, &r, rs), "10.0.0.9:7001", &a, &b,
	    addr, sizeof(addr)), -1);
	ns[1] = &port;
	assert_int_equal(qw_cluster_parse_range(range_of(&zero, &big, &node, &r, rs), "10.0.0.9:7001", &a, &b,
	    addr, sizeof(addr)), -1);
	assert_int_equal(qw_cluster_parse_range(range_of(&neg, &five, &node, &r, rs), "10.0.0.9:7001", &a, &b,
	    addr, sizeof(addr)), -1);
	assert_int_equal(qw_cluster_parse_range(range_of(&five, &zero, &node, &r, rs), "10.0.0.9:7001", &a, &b,
	    addr, sizeof(addr)), -1);
	/* Not an array where one belongs. */
	assert_int_equal(qw_cluster_parse_range(range_of(&zero, &five, &ip, &r, rs), "10.0.0.9:7001", &a, &b,
	    addr, sizeof(addr)), -1);
	assert_int_equal(qw_cluster_parse_range(&ip, NULL, &a, &b, addr, sizeof(addr)), -1);
	assert_int_equal(qw_cluster_parse_range(NULL, NULL, &a, &b, addr, sizeof(addr)), -1);
	node.elements = 1;
	assert_int_equal(qw_cluster_parse_range(range_of(&zero, &five, &node, &r, rs), "10.0.0.9:7001", &a, &b,
	    addr, sizeof(addr)), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc16),
		cmocka_unit_test(test_slots),
		cmocka_unit_test(test_redirects),
		cmocka_unit_test(test_ranges),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
