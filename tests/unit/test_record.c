/* test_record.c - unit tests for src/record.c: a job record's moves, the
 * list and count per state, and the index by field (growing past its first
 * size, finding by a field that is not NUL-terminated, freeing). */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "record.h"

static struct qw_rec *
new_rec(struct qw_recset *rs, const char *field)
{
	struct qw_rec *rec = qw_record_new(rs, NULL, strdup(field), NULL);

	assert_non_null(rec);
	assert_int_equal(rec->state, QW_REC_NEW);
	return rec;
}

static void
test_life_of_a_job(void **state)
{
	struct qw_recset rs;
	struct qw_rec *rec;

	assert_int_equal(qw_record_set_init(&rs, "mail"), 0);
	rec = new_rec(&rs, "abc-1");
	rec->elem = strdup("payload");
	rec->len = 7;
	assert_int_equal(qw_record_move(&rs, rec, QW_REC_BUFFERED), 0);
	assert_int_equal(rs.n[QW_REC_BUFFERED], 1);
	assert_ptr_equal(TAILQ_FIRST(&rs.list[QW_REC_BUFFERED]), rec);
	assert_int_equal(qw_record_move(&rs, rec, QW_REC_RUNNING), 0);
	assert_int_equal(rs.n[QW_REC_BUFFERED], 0);
	assert_int_equal(rs.n[QW_REC_RUNNING], 1);
	assert_int_equal(qw_record_move(&rs, rec, QW_REC_CANCELLING), 0);
	assert_int_equal(qw_record_finish(&rs, rec, QW_DEST_SCHEDULED, strdup("again"), 5, 1000,
	    "failed retried"), 0);
	assert_int_equal(rec->state, QW_REC_FINISHED);
	assert_string_equal(rec->elem, "again");
	assert_int_equal(rec->delay_ms, 1000);
	assert_int_equal(rs.n[QW_REC_CANCELLING], 0);
	assert_int_equal(qw_record_move(&rs, rec, QW_REC_SETTLING), 0);
	/* A lost reply: back to FINISHED, then sent again. */
	assert_int_equal(qw_record_move(&rs, rec, QW_REC_FINISHED), 0);
	assert_int_equal(qw_record_move(&rs, rec, QW_REC_SETTLING), 0);
	assert_ptr_equal(qw_record_find(&rs, "abc-1", 5), rec);
	qw_record_free(&rs, rec);
	assert_null(qw_record_find(&rs, "abc-1", 5));
	assert_int_equal(rs.count, 0);
	assert_int_equal(rs.n[QW_REC_SETTLING], 0);
	qw_record_set_fini(&rs);
}

static void
test_give_back_keeps_the_element(void **state)
{
	struct qw_recset rs;
	struct qw_rec *rec;

	assert_int_equal(qw_record_set_init(&rs, "mail"), 0);
	rec = new_rec(&rs, "abc-2");
	rec->elem = strdup("as taken");
	rec->len = 8;
	assert_int_equal(qw_record_move(&rs, rec, QW_REC_BUFFERED), 0);
	assert_int_equal(qw_record_finish(&rs, rec, QW_DEST_PENDING, rec->elem, rec->len, 0, ""), 0);
	assert_string_equal(rec->elem, "as taken");
	assert_int_equal(rs.n[QW_REC_FINISHED], 1);
	qw_record_set_fini(&rs);	/* frees what is left, elements included */
}

static void
test_index_grows_and_finds(void **state)
{
	struct qw_recset rs;
	char field[32];
	enum { N = 5000 };

	assert_int_equal(qw_record_set_init(&rs, "mail"), 0);
	for (int i = 0; i < N; i++) {
		snprintf(field, sizeof(field), "0123456789ab-%d", i);
		struct qw_rec *rec = new_rec(&rs, field);
		assert_int_equal(qw_record_move(&rs, rec, QW_REC_BUFFERED), 0);
	}
	assert_true(rs.nbuckets >= N);
	assert_int_equal(rs.count, N);
	for (int i = 0; i < N; i++) {
		/* As a reply gives it: not NUL-terminated where the field ends. */
		int n = snprintf(field, sizeof(field), "0123456789ab-%dX", i);
		struct qw_rec *rec = qw_record_find(&rs, field, (size_t)n - 1);
		assert_non_null(rec);
		assert_int_equal(strncmp(rec->field, field, (size_t)n - 1), 0);
	}
	assert_null(qw_record_find(&rs, "0123456789ab-", 13));
	assert_null(qw_record_find(&rs, "0123456789ab-50000", 18));
	/* Forgetting records in any state keeps the rest findable. */
	for (int i = 0; i < N; i += 2) {
		snprintf(field, sizeof(field), "0123456789ab-%d", i);
		qw_record_free(&rs, qw_record_find(&rs, field, strlen(field)));
	}
	assert_int_equal(rs.count, N / 2);
	assert_int_equal(rs.n[QW_REC_BUFFERED], N / 2);
	for (int i = 1; i < N; i += 2) {
		snprintf(field, sizeof(field), "0123456789ab-%d", i);
		assert_non_null(qw_record_find(&rs, field, strlen(field)));
	}
	qw_record_set_fini(&rs);
}

/* A job another process took over while it ran here: FENCED keeps it (and
 * its slot) from RUNNING or CANCELLING until its handler ends, then it is
 * freed without ever reaching FINISHED. */
static void
test_fenced_job(void **state)
{
	struct qw_recset rs;
	struct qw_rec *a, *b;

	assert_int_equal(qw_record_set_init(&rs, "mail"), 0);
	a = new_rec(&rs, "abc-3");
	b = new_rec(&rs, "abc-4");
	assert_int_equal(qw_record_move(&rs, a, QW_REC_BUFFERED), 0);
	assert_int_equal(qw_record_move(&rs, b, QW_REC_BUFFERED), 0);
	assert_int_equal(qw_record_move(&rs, a, QW_REC_RUNNING), 0);
	assert_int_equal(qw_record_move(&rs, b, QW_REC_RUNNING), 0);
	assert_int_equal(qw_record_move(&rs, b, QW_REC_CANCELLING), 0);
	assert_int_equal(qw_record_move(&rs, a, QW_REC_FENCED), 0);
	assert_int_equal(qw_record_move(&rs, b, QW_REC_FENCED), 0);
	assert_int_equal(rs.n[QW_REC_FENCED], 2);
	assert_int_equal(rs.n[QW_REC_RUNNING] + rs.n[QW_REC_CANCELLING], 0);
	assert_string_equal(qw_record_state_name(QW_REC_FENCED), "fenced");
	qw_record_free(&rs, a);
	assert_int_equal(rs.n[QW_REC_FENCED], 1);
	assert_ptr_equal(TAILQ_FIRST(&rs.list[QW_REC_FENCED]), b);
	qw_record_free(&rs, b);
	assert_int_equal(rs.count, 0);
	qw_record_set_fini(&rs);
}

/* A result may end the job's unique_for hold; a new result (the record
 * finished again) starts without one, and freeing the record frees it. */
static void
test_hold(void **state)
{
	struct qw_recset rs;
	struct qw_rec *rec;

	assert_int_equal(qw_record_set_init(&rs, "mail"), 0);
	rec = new_rec(&rs, "abc-5");
	assert_int_equal(qw_record_finish(&rs, rec, QW_DEST_DONE, NULL, 0, 0, "succeeded"), 0);
	assert_null(rec->hold_id);
	assert_int_equal(qw_record_hold(rec, "u-1", "1700000000000:7"), 0);
	assert_string_equal(rec->hold_id, "u-1");
	assert_string_equal(rec->hold_token, "1700000000000:7");
	assert_int_equal(qw_record_hold(rec, "u-2", "1:2"), 0);
	assert_string_equal(rec->hold_id, "u-2");
	assert_int_equal(qw_record_move(&rs, rec, QW_REC_SETTLING), 0);
	assert_int_equal(qw_record_move(&rs, rec, QW_REC_FINISHED), 0);
	assert_string_equal(rec->hold_token, "1:2");	/* sent again as it was */
	qw_record_free(&rs, rec);

	rec = new_rec(&rs, "abc-6");
	assert_int_equal(qw_record_move(&rs, rec, QW_REC_BUFFERED), 0);
	assert_int_equal(qw_record_hold(rec, "u-3", "1:3"), 0);
	assert_int_equal(qw_record_finish(&rs, rec, QW_DEST_PENDING, strdup("e"), 1, 0, ""), 0);
	assert_null(rec->hold_id);
	assert_null(rec->hold_token);
	qw_record_free(&rs, rec);
	qw_record_set_fini(&rs);
}

/* A freed record is kept and made again clean: nothing of the job before
 * (state, result, hold, owner) shows in the next one, short fields live in
 * the record and long ones are copied, and the index finds each. */
static void
test_reuse_is_clean(void **state)
{
	struct qw_recset rs;
	struct qw_rec *a, *b, *c;
	char longf[100];

	(void)state;
	assert_int_equal(qw_record_set_init(&rs, "mail"), 0);
	a = qw_record_new(&rs, NULL, strdup("old-1"), strdup("dead-instance"));
	assert_non_null(a);
	assert_int_equal(qw_record_move(&rs, a, QW_REC_BUFFERED), 0);
	a->seq = 7;
	a->mark = 3;
	assert_int_equal(qw_record_finish(&rs, a, QW_DEST_DEAD, strdup("x"), 1, 5, "dead"), 0);
	assert_int_equal(qw_record_hold(a, "id", "token"), 0);
	qw_record_free(&rs, a);
	assert_int_equal(rs.nspare, 1);

	b = qw_record_new_copy(&rs, NULL, "new-12345", 5);	/* "new-1" */
	assert_non_null(b);
	assert_int_equal(rs.nspare, 0);
	assert_string_equal(b->field, "new-1");
	assert_ptr_equal(b->field, b->field_buf);
	assert_int_equal(b->state, QW_REC_NEW);
	assert_null(b->owner);
	assert_null(b->elem);
	assert_null(b->hold_id);
	assert_null(b->run);
	assert_int_equal(b->seq, 0);
	assert_int_equal(b->mark, 0);
	assert_int_equal(b->dest, 0);
	assert_null(b->counters);

	memset(longf, 'f', sizeof(longf) - 1);
	longf[sizeof(longf) - 1] = '\0';
	c = qw_record_new_copy(&rs, NULL, longf, strlen(longf));
	assert_non_null(c);
	assert_true(c->field != c->field_buf);
	assert_string_equal(c->field, longf);
	assert_ptr_equal(qw_record_find(&rs, "new-1", 5), b);
	assert_ptr_equal(qw_record_find(&rs, longf, strlen(longf)), c);
	assert_null(qw_record_find(&rs, "old-1", 5));
	qw_record_free(&rs, b);
	qw_record_free(&rs, c);
	assert_int_equal(rs.count, 0);
	qw_record_set_fini(&rs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_life_of_a_job),
		cmocka_unit_test(test_give_back_keeps_the_element),
		cmocka_unit_test(test_index_grows_and_finds),
		cmocka_unit_test(test_fenced_job),
		cmocka_unit_test(test_hold),
		cmocka_unit_test(test_reuse_is_clean),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
