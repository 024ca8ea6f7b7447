/* test_keys.c - unit tests for src/keys.c: a queue's key names, written
 * and read back. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "keys.h"

static void
test_names(void **state)
{
	char buf[128];

	(void)state;
	assert_int_equal(qw_keys_name(buf, sizeof(buf), "qw", "mail", QW_KEY_PENDING), 17);
	assert_string_equal(buf, "qw:{mail}:pending");
	qw_keys_name(buf, sizeof(buf), "app:qw", "a.b-c_1", QW_KEY_PAUSED);
	assert_string_equal(buf, "app:qw:{a.b-c_1}:paused");
	qw_keys_instance(buf, sizeof(buf), "qw", "mail", QW_KEY_ACTIVE, "web-1:qworkerd");
	assert_string_equal(buf, "qw:{mail}:active:web-1:qworkerd");
	assert_int_equal(qw_keys_name(buf, 10, "qw", "mail", QW_KEY_PENDING), -1);
	assert_int_equal(qw_keys_name(buf, sizeof(buf), "qw", "mail", QW_KEY_COUNT), -1);
	assert_string_equal(qw_keys_word(QW_KEY_UNIQUE), "unique");
	assert_string_equal(qw_keys_word(QW_KEY_SEQ), "seq");
	assert_string_equal(qw_keys_word(QW_KEY_CANCEL), "cancel");
	assert_true(qw_keys_per_instance(QW_KEY_STARTED));
	assert_false(qw_keys_per_instance(QW_KEY_LEASES));
}

static void
test_split(void **state)
{
	char q[65];
	enum qw_key k;
	const char *inst;

	(void)state;
	assert_int_equal(qw_keys_split("qw:{mail}:dead", "qw", q, sizeof(q), &k, &inst), 0);
	assert_string_equal(q, "mail");
	assert_int_equal(k, QW_KEY_DEAD);
	assert_null(inst);
	assert_int_equal(qw_keys_split("qw:{mail}:active:web-1:qworkerd", "qw", q, sizeof(q), &k,
	    &inst), 0);
	assert_int_equal(k, QW_KEY_ACTIVE);
	assert_string_equal(inst, "web-1:qworkerd");
	/* Not a key of a queue: another prefix, no or a bad queue name, an
	 * unknown kind, an instance where none belongs or none where one does. */
	assert_int_equal(qw_keys_split("other:{mail}:dead", "qw", q, sizeof(q), &k, &inst), -1);
	assert_int_equal(qw_keys_split("qwx:{mail}:dead", "qw", q, sizeof(q), &k, &inst), -1);
	assert_int_equal(qw_keys_split("qw:{}:dead", "qw", q, sizeof(q), &k, &inst), -1);
	assert_int_equal(qw_keys_split("qw:{a b}:dead", "qw", q, sizeof(q), &k, &inst), -1);
	assert_int_equal(qw_keys_split("qw:{mail}:deadx", "qw", q, sizeof(q), &k, &inst), -1);
	assert_int_equal(qw_keys_split("qw:{mail}:dead:x", "qw", q, sizeof(q), &k, &inst), -1);
	assert_int_equal(qw_keys_split("qw:{mail}:active", "qw", q, sizeof(q), &k, &inst), -1);
	assert_int_equal(qw_keys_split("qw:{mail", "qw", q, sizeof(q), &k, &inst), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_split),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
