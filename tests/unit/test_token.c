/* test_token.c - unit tests for src/token.c: cancellation sources and tokens
 * (see token.h for the contract): first reason wins, callbacks and their
 * registrations, delays on a libevent loop, linked sources, the eventfd, the
 * timed wait and races between threads.
 *
 * Timing is only ever checked from below (a delay is not early); nothing
 * asserts that something happened quickly, because CI machines are slow. */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "token.h"

/* ------------------------------------------------------------------------ */
/* Helpers */

/* Monotonic time in microseconds. */
static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Busy-waits a little without giving the CPU away (sched_yield would hand
 * it to whatever else runs on a loaded machine for a whole time slice). */
static void
spin(unsigned n)
{
	for (volatile unsigned i = 0; i < n; i++)
		;
}

/* True when FD polls readable right now (timeout 0). */
static bool
fd_readable(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int n = poll(&pfd, 1, 0);

	assert_true(n >= 0);
	return n == 1 && (pfd.revents & POLLIN) != 0;
}

static struct qw_cts *
new_cts(void)
{
	struct qw_cts *s = qw_cts_new();

	assert_non_null(s);
	assert_non_null(qw_cts_token(s));
	return s;
}

/* A log of callback runs: which callback (its tag) and with what reason. */
#define LOG_MAX 16
struct cb_log {
	int n;
	int tag[LOG_MAX];
	int reason[LOG_MAX];
};

struct cb_arg {
	struct cb_log *log;
	int tag;
	/* Optional actions, done after logging. */
	qw_token *unreg_tok;		/* unregister UNREG_ID on UNREG_TOK */
	uint64_t unreg_id;
	int unreg_result;		/* -1 until done, then 0 or 1 */
	struct qw_cts *cancel_src;	/* cancel CANCEL_SRC with CANCEL_REASON */
	int cancel_reason;
	int cancel_result;		/* -1 until done, then 0 or 1 */
	qw_token *reg_tok;		/* register a logging callback on REG_TOK */
	struct cb_arg *reg_arg;
	int reg_ran_inside;		/* -1 until done; 1 when it ran during register */
};

static void
cb_arg_init(struct cb_arg *a, struct cb_log *log, int tag)
{
	memset(a, 0, sizeof(*a));
	a->log = log;
	a->tag = tag;
	a->unreg_result = -1;
	a->cancel_result = -1;
	a->reg_ran_inside = -1;
}

static void
log_cb(void *arg, int reason)
{
	struct cb_arg *a = arg;

	if (a->log->n < LOG_MAX) {
		a->log->tag[a->log->n] = a->tag;
		a->log->reason[a->log->n] = reason;
	}
	a->log->n++;
	if (a->unreg_tok != NULL)
		a->unreg_result = qw_token_unregister(a->unreg_tok, a->unreg_id);
	if (a->cancel_src != NULL)
		a->cancel_result = qw_cts_cancel(a->cancel_src, a->cancel_reason);
	if (a->reg_tok != NULL) {
		int before = a->reg_arg->log->n;
		uint64_t id = qw_token_register(a->reg_tok, log_cb, a->reg_arg);

		a->reg_ran_inside = id > 0 && a->reg_arg->log->n == before + 1;
	}
}

/* Counts runs; the argument is an atomic_int. */
static void
count_cb(void *arg, int reason)
{
	atomic_fetch_add((atomic_int *)arg, 1);
}

/* ------------------------------------------------------------------------ */
/* Basic state */

static void
test_initial_state(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);

	(void)state;
	assert_false(qw_token_is_cancelled(t));
	assert_int_equal(qw_token_reason(t), QW_CANCEL_NONE);
	assert_false(qw_token_wait(t, 0));
	qw_cts_free(s);
}

static void
test_cancel_sets_reason(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);

	(void)state;
	assert_true(qw_cts_cancel(s, QW_CANCEL_TIMEOUT));
	assert_true(qw_token_is_cancelled(t));
	assert_int_equal(qw_token_reason(t), QW_CANCEL_TIMEOUT);
	qw_cts_free(s);

	s = new_cts();
	t = qw_cts_token(s);
	assert_true(qw_cts_cancel(s, QW_CANCEL_SHUTDOWN));
	assert_true(qw_token_is_cancelled(t));
	assert_int_equal(qw_token_reason(t), QW_CANCEL_SHUTDOWN);
	qw_cts_free(s);
}

static void
test_first_reason_wins(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);

	(void)state;
	assert_true(qw_cts_cancel(s, QW_CANCEL_TIMEOUT));
	assert_false(qw_cts_cancel(s, QW_CANCEL_SHUTDOWN));
	assert_false(qw_cts_cancel(s, QW_CANCEL_TIMEOUT));
	assert_true(qw_token_is_cancelled(t));
	assert_int_equal(qw_token_reason(t), QW_CANCEL_TIMEOUT);
	qw_cts_free(s);
}

/* ------------------------------------------------------------------------ */
/* Callbacks */

static void
test_callbacks_run_once_in_order(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);
	struct cb_log log = { 0 };
	struct cb_arg a[4];
	uint64_t ids[4];

	(void)state;
	for (int i = 0; i < 4; i++) {
		cb_arg_init(&a[i], &log, i + 1);
		ids[i] = qw_token_register(t, log_cb, &a[i]);
		assert_true(ids[i] > 0);
		for (int j = 0; j < i; j++)
			assert_true(ids[i] != ids[j]);
	}
	assert_int_equal(log.n, 0);	/* nothing runs before the cancel */

	assert_true(qw_cts_cancel(s, QW_CANCEL_SHUTDOWN));
	assert_int_equal(log.n, 4);	/* all ran before cancel returned */
	for (int i = 0; i < 4; i++) {
		assert_int_equal(log.tag[i], i + 1);
		assert_int_equal(log.reason[i], QW_CANCEL_SHUTDOWN);
	}

	/* A second cancel runs nothing again; ran callbacks cannot be removed. */
	assert_false(qw_cts_cancel(s, QW_CANCEL_TIMEOUT));
	assert_int_equal(log.n, 4);
	for (int i = 0; i < 4; i++)
		assert_false(qw_token_unregister(t, ids[i]));
	assert_int_equal(log.n, 4);
	qw_cts_free(s);
}

static void
test_register_after_cancel_runs_at_once(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);
	struct cb_log log = { 0 };
	struct cb_arg a;
	uint64_t id;

	(void)state;
	cb_arg_init(&a, &log, 7);
	assert_true(qw_cts_cancel(s, QW_CANCEL_TIMEOUT));
	id = qw_token_register(t, log_cb, &a);
	assert_true(id > 0);
	assert_int_equal(log.n, 1);	/* ran before register returned */
	assert_int_equal(log.tag[0], 7);
	assert_int_equal(log.reason[0], QW_CANCEL_TIMEOUT);

	/* It ran already: unregister says so, and it never runs again. */
	assert_false(qw_token_unregister(t, id));
	assert_false(qw_cts_cancel(s, QW_CANCEL_SHUTDOWN));
	assert_int_equal(log.n, 1);
	qw_cts_free(s);
}

static void
test_unregister_before_cancel(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);
	struct cb_log log = { 0 };
	struct cb_arg a[3];
	uint64_t ids[3];

	(void)state;
	for (int i = 0; i < 3; i++) {
		cb_arg_init(&a[i], &log, i + 1);
		ids[i] = qw_token_register(t, log_cb, &a[i]);
		assert_true(ids[i] > 0);
	}
	assert_true(qw_token_unregister(t, ids[1]));
	assert_false(qw_token_unregister(t, ids[1]));	/* gone already */

	assert_true(qw_cts_cancel(s, QW_CANCEL_SHUTDOWN));
	assert_int_equal(log.n, 2);
	assert_int_equal(log.tag[0], 1);
	assert_int_equal(log.tag[1], 3);
	assert_false(qw_token_unregister(t, ids[1]));
	qw_cts_free(s);
}

static void
test_unregister_after_run(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);
	atomic_int runs = 0;
	uint64_t id;

	(void)state;
	id = qw_token_register(t, count_cb, &runs);
	assert_true(id > 0);
	assert_true(qw_cts_cancel(s, QW_CANCEL_SHUTDOWN));
	assert_int_equal(atomic_load(&runs), 1);
	assert_false(qw_token_unregister(t, id));
	assert_int_equal(atomic_load(&runs), 1);
	qw_cts_free(s);
}

/* An id that was never handed out (0 is what register returns on failure)
 * is nothing to remove: false, at once. Done on another thread so that a
 * hang is reported instead of stalling the suite. */
struct unreg_zero {
	qw_token *t;
	uint64_t id;
	atomic_int done;
	atomic_int result;
};

static void *
unreg_zero_thread(void *arg)
{
	struct unreg_zero *u = arg;

	atomic_store(&u->result, qw_token_unregister(u->t, u->id));
	atomic_store(&u->done, 1);
	return NULL;
}

/* Rescue for a hung unregister: keeps the callback "running" until the
 * stuck thread has got out. */
static void
rescue_cb(void *arg, int reason)
{
	struct unreg_zero *u = arg;

	for (int i = 0; i < 5000 && !atomic_load(&u->done); i++)
		sleep_ms(1);
}

static void
test_unregister_unknown_id(void **state)
{
	static const uint64_t ids[] = { 0, 999999 };

	(void)state;
	for (size_t k = 0; k < sizeof(ids) / sizeof(ids[0]); k++) {
		struct qw_cts *s = new_cts();
		struct unreg_zero u = { .t = qw_cts_token(s), .id = ids[k] };
		atomic_int runs = 0;
		pthread_t th;
		int waited;

		atomic_init(&u.done, 0);
		atomic_init(&u.result, -1);
		/* A live registration that must not be disturbed. */
		assert_true(qw_token_register(u.t, count_cb, &runs) > 0);
		assert_int_equal(pthread_create(&th, NULL, unreg_zero_thread, &u), 0);
		/* Hang detection only (2 s for a call that takes microseconds). */
		for (waited = 0; waited < 2000 && !atomic_load(&u.done); waited++)
			sleep_ms(1);
		if (!atomic_load(&u.done)) {
			/* Unblock it so the test can clean up, then fail. */
			uint64_t rid = qw_token_register(u.t, rescue_cb, &u);

			(void)rid;
			qw_cts_cancel(s, QW_CANCEL_SHUTDOWN);
			pthread_join(th, NULL);
			qw_cts_free(s);
			fail_msg("qw_token_unregister(t, %llu) blocked (no such registration)",
			    (unsigned long long)ids[k]);
		}
		pthread_join(th, NULL);
		assert_int_equal(atomic_load(&u.result), 0);
		assert_true(qw_cts_cancel(s, QW_CANCEL_SHUTDOWN));
		assert_int_equal(atomic_load(&runs), 1);
		qw_cts_free(s);
	}
}

static void
test_callback_unregisters_other(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);
	struct cb_log log = { 0 };
	struct cb_arg a, b, c;
	uint64_t ida, idb, idc;

	(void)state;
	cb_arg_init(&a, &log, 1);
	cb_arg_init(&b, &log, 2);
	cb_arg_init(&c, &log, 3);
	ida = qw_token_register(t, log_cb, &a);
	idb = qw_token_register(t, log_cb, &b);
	idc = qw_token_register(t, log_cb, &c);
	assert_true(ida > 0 && idb > 0 && idc > 0);
	a.unreg_tok = t;		/* the first removes the second */
	a.unreg_id = idb;

	assert_true(qw_cts_cancel(s, QW_CANCEL_TIMEOUT));
	assert_int_equal(a.unreg_result, 1);
	assert_int_equal(log.n, 2);
	assert_int_equal(log.tag[0], 1);
	assert_int_equal(log.tag[1], 3);
	assert_int_equal(log.reason[1], QW_CANCEL_TIMEOUT);
	qw_cts_free(s);
}

static void
test_callback_unregisters_itself(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);
	struct cb_log log = { 0 };
	struct cb_arg a, b;
	uint64_t ida, idb;

	(void)state;
	cb_arg_init(&a, &log, 1);
	cb_arg_init(&b, &log, 2);
	ida = qw_token_register(t, log_cb, &a);
	idb = qw_token_register(t, log_cb, &b);
	assert_true(ida > 0 && idb > 0);
	a.unreg_tok = t;		/* removing itself neither waits nor fails */
	a.unreg_id = ida;

	assert_true(qw_cts_cancel(s, QW_CANCEL_SHUTDOWN));
	assert_int_equal(a.unreg_result, 0);	/* it is running: not removed */
	assert_int_equal(log.n, 2);
	assert_int_equal(log.tag[0], 1);
	assert_int_equal(log.tag[1], 2);
	qw_cts_free(s);
}

static void
test_callback_cancels_other_source(void **state)
{
	struct qw_cts *s1 = new_cts(), *s2 = new_cts();
	struct cb_log log = { 0 };
	struct cb_arg a, b;

	(void)state;
	cb_arg_init(&a, &log, 1);
	cb_arg_init(&b, &log, 2);
	a.cancel_src = s2;
	a.cancel_reason = QW_CANCEL_TIMEOUT;
	assert_true(qw_token_register(qw_cts_token(s1), log_cb, &a) > 0);
	assert_true(qw_token_register(qw_cts_token(s2), log_cb, &b) > 0);

	assert_true(qw_cts_cancel(s1, QW_CANCEL_SHUTDOWN));
	assert_int_equal(a.cancel_result, 1);
	assert_int_equal(qw_token_reason(qw_cts_token(s1)), QW_CANCEL_SHUTDOWN);
	assert_int_equal(qw_token_reason(qw_cts_token(s2)), QW_CANCEL_TIMEOUT);
	assert_int_equal(log.n, 2);
	assert_int_equal(log.tag[0], 1);
	assert_int_equal(log.reason[0], QW_CANCEL_SHUTDOWN);
	assert_int_equal(log.tag[1], 2);
	assert_int_equal(log.reason[1], QW_CANCEL_TIMEOUT);
	qw_cts_free(s1);
	qw_cts_free(s2);
}

/* A callback that registers on its own (now cancelled) token: the new one
 * runs at once, inside register, and only once. */
static void
test_callback_registers_on_cancelled_token(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);
	struct cb_log log = { 0 };
	struct cb_arg a, b;

	(void)state;
	cb_arg_init(&a, &log, 1);
	cb_arg_init(&b, &log, 2);
	a.reg_tok = t;
	a.reg_arg = &b;
	assert_true(qw_token_register(t, log_cb, &a) > 0);
	assert_true(qw_cts_cancel(s, QW_CANCEL_SHUTDOWN));
	assert_int_equal(a.reg_ran_inside, 1);
	assert_int_equal(log.n, 2);
	assert_int_equal(log.tag[1], 2);
	assert_int_equal(log.reason[1], QW_CANCEL_SHUTDOWN);
	qw_cts_free(s);
}

/* A source freed with callbacks still registered does not run them. */
static void
test_free_with_pending_callbacks(void **state)
{
	struct qw_cts *s = new_cts();
	atomic_int runs = 0;

	(void)state;
	assert_true(qw_token_register(qw_cts_token(s), count_cb, &runs) > 0);
	assert_true(qw_token_register(qw_cts_token(s), count_cb, &runs) > 0);
	qw_cts_free(s);
	assert_int_equal(atomic_load(&runs), 0);
}

/* unregister waits while the callback runs on another thread. */
struct slow_cb {
	atomic_int started;
	atomic_int proceed;
	atomic_int finished;
	struct qw_cts *s;
};

static void
slow_fn(void *arg, int reason)
{
	struct slow_cb *c = arg;

	atomic_store(&c->started, 1);
	for (int i = 0; i < 10000 && !atomic_load(&c->proceed); i++)
		sleep_ms(1);
	sleep_ms(50);		/* unregister is (most likely) waiting now */
	atomic_store(&c->finished, 1);
}

static void *
cancel_thread(void *arg)
{
	struct slow_cb *c = arg;

	qw_cts_cancel(c->s, QW_CANCEL_SHUTDOWN);
	return NULL;
}

static void
test_unregister_waits_for_running_callback(void **state)
{
	struct slow_cb c;
	pthread_t th;
	uint64_t id;
	bool removed;

	(void)state;
	atomic_init(&c.started, 0);
	atomic_init(&c.proceed, 0);
	atomic_init(&c.finished, 0);
	c.s = new_cts();
	id = qw_token_register(qw_cts_token(c.s), slow_fn, &c);
	assert_true(id > 0);
	assert_int_equal(pthread_create(&th, NULL, cancel_thread, &c), 0);
	while (!atomic_load(&c.started))
		sleep_ms(1);
	atomic_store(&c.proceed, 1);
	removed = qw_token_unregister(qw_cts_token(c.s), id);
	/* Whatever the interleaving, it has returned by now. */
	assert_int_equal(atomic_load(&c.finished), 1);
	assert_false(removed);
	assert_int_equal(pthread_join(th, NULL), 0);
	qw_cts_free(c.s);
}

/* ------------------------------------------------------------------------ */
/* Delays on an event loop */

static void
test_cancel_after(void **state)
{
	struct event_base *base = event_base_new();
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);
	struct cb_log log = { 0 };
	struct cb_arg a;
	int64_t start, elapsed;

	(void)state;
	assert_non_null(base);
	cb_arg_init(&a, &log, 1);
	assert_true(qw_token_register(t, log_cb, &a) > 0);
	start = now_us();
	assert_int_equal(qw_cts_cancel_after(s, base, 50, QW_CANCEL_TIMEOUT), 0);
	assert_false(qw_token_is_cancelled(t));	/* not before the loop runs */

	assert_true(event_base_loop(base, 0) >= 0);	/* until the timer fired */
	elapsed = now_us() - start;
	assert_true(qw_token_is_cancelled(t));
	assert_int_equal(qw_token_reason(t), QW_CANCEL_TIMEOUT);
	assert_int_equal(log.n, 1);
	assert_int_equal(log.reason[0], QW_CANCEL_TIMEOUT);
	if (elapsed < 40000)
		fail_msg("cancel_after(50 ms) fired after %lld us", (long long)elapsed);
	qw_cts_free(s);
	event_base_free(base);
}

static void
test_cancel_after_shutdown_reason(void **state)
{
	struct event_base *base = event_base_new();
	struct qw_cts *s = new_cts();

	(void)state;
	assert_non_null(base);
	assert_int_equal(qw_cts_cancel_after(s, base, 5, QW_CANCEL_SHUTDOWN), 0);
	assert_true(event_base_loop(base, 0) >= 0);
	assert_int_equal(qw_token_reason(qw_cts_token(s)), QW_CANCEL_SHUTDOWN);
	qw_cts_free(s);
	event_base_free(base);
}

/* A second cancel_after replaces the first: its delay and its reason. */
static void
test_cancel_after_replaces(void **state)
{
	struct event_base *base = event_base_new();
	struct qw_cts *s = new_cts();
	int64_t start, elapsed;

	(void)state;
	assert_non_null(base);
	start = now_us();
	assert_int_equal(qw_cts_cancel_after(s, base, 10, QW_CANCEL_TIMEOUT), 0);
	assert_int_equal(qw_cts_cancel_after(s, base, 80, QW_CANCEL_SHUTDOWN), 0);
	assert_true(event_base_loop(base, 0) >= 0);
	elapsed = now_us() - start;
	assert_int_equal(qw_token_reason(qw_cts_token(s)), QW_CANCEL_SHUTDOWN);
	if (elapsed < 70000)
		fail_msg("replaced delay (80 ms) fired after %lld us", (long long)elapsed);
	qw_cts_free(s);
	event_base_free(base);
}

/* Cancelled by hand before the delay: the first reason stays. */
static void
test_cancel_before_delay(void **state)
{
	struct event_base *base = event_base_new();
	struct qw_cts *s = new_cts();
	atomic_int runs = 0;

	(void)state;
	assert_non_null(base);
	assert_true(qw_token_register(qw_cts_token(s), count_cb, &runs) > 0);
	assert_int_equal(qw_cts_cancel_after(s, base, 10, QW_CANCEL_TIMEOUT), 0);
	assert_true(qw_cts_cancel(s, QW_CANCEL_SHUTDOWN));
	assert_true(event_base_loop(base, 0) >= 0);	/* the timer may still fire */
	assert_int_equal(qw_token_reason(qw_cts_token(s)), QW_CANCEL_SHUTDOWN);
	assert_int_equal(atomic_load(&runs), 1);
	qw_cts_free(s);
	event_base_free(base);
}

/* Freeing stops the delay: the loop has nothing left and touches nothing. */
static void
test_free_stops_delay(void **state)
{
	struct event_base *base = event_base_new();
	struct qw_cts *s = new_cts();

	(void)state;
	assert_non_null(base);
	assert_int_equal(qw_cts_cancel_after(s, base, 10, QW_CANCEL_TIMEOUT), 0);
	qw_cts_free(s);
	/* 1: no events pending (a freed-but-pending timer would run here). */
	assert_int_equal(event_base_loop(base, 0), 1);
	event_base_free(base);
}

/* ------------------------------------------------------------------------ */
/* Linked sources */

static void
test_linked_parent_cancel(void **state)
{
	struct qw_cts *p = new_cts(), *c;
	struct cb_log log = { 0 };
	struct cb_arg a;

	(void)state;
	c = qw_cts_new_linked(&p, 1, NULL, 0, 0);
	assert_non_null(c);
	assert_false(qw_token_is_cancelled(qw_cts_token(c)));
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_NONE);
	cb_arg_init(&a, &log, 1);
	assert_true(qw_token_register(qw_cts_token(c), log_cb, &a) > 0);

	assert_true(qw_cts_cancel(p, QW_CANCEL_SHUTDOWN));
	assert_true(qw_token_is_cancelled(qw_cts_token(c)));
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_SHUTDOWN);
	assert_int_equal(log.n, 1);
	assert_int_equal(log.reason[0], QW_CANCEL_SHUTDOWN);
	/* The child is cancelled already. */
	assert_false(qw_cts_cancel(c, QW_CANCEL_TIMEOUT));
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_SHUTDOWN);
	qw_cts_free(c);
	qw_cts_free(p);
}

/* Cancelling the child leaves the parent alone. */
static void
test_linked_child_cancel_leaves_parent(void **state)
{
	struct qw_cts *p = new_cts(), *c;

	(void)state;
	c = qw_cts_new_linked(&p, 1, NULL, 0, 0);
	assert_non_null(c);
	assert_true(qw_cts_cancel(c, QW_CANCEL_TIMEOUT));
	assert_false(qw_token_is_cancelled(qw_cts_token(p)));
	assert_true(qw_cts_cancel(p, QW_CANCEL_SHUTDOWN));
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_TIMEOUT);
	qw_cts_free(c);
	qw_cts_free(p);
}

/* A reset source is as new: not cancelled, no callbacks, no eventfd value,
 * and no longer reached by the parent it was linked to (a job's source kept
 * for the next job must not hear the shutdown meant for nobody). */
static void
test_reset_unlinks_and_uncancels(void **state)
{
	struct qw_cts *p = new_cts(), *c;
	atomic_int runs = 0;
	int fd;
	uint64_t v;

	(void)state;
	c = qw_cts_new_linked(&p, 1, NULL, 0, 0);
	assert_non_null(c);
	assert_true(qw_token_register(qw_cts_token(c), count_cb, &runs) > 0);
	assert_true(qw_cts_cancel(c, QW_CANCEL_TIMEOUT));
	assert_true((fd = qw_token_fd(qw_cts_token(c))) >= 0);
	assert_int_equal(atomic_load(&runs), 1);

	qw_cts_reset(c);
	assert_false(qw_token_is_cancelled(qw_cts_token(c)));
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_NONE);
	assert_true((fd = qw_token_fd(qw_cts_token(c))) >= 0);
	assert_true(read(fd, &v, sizeof(v)) < 0);	/* not readable: not cancelled */
	assert_true(qw_token_register(qw_cts_token(c), count_cb, &runs) > 0);
	qw_cts_reset(c);	/* drops that callback unrun */
	assert_true(qw_cts_cancel(p, QW_CANCEL_SHUTDOWN));
	assert_false(qw_token_is_cancelled(qw_cts_token(c)));
	assert_int_equal(atomic_load(&runs), 1);
	qw_cts_free(c);
	qw_cts_free(p);
}

/* A reset source linked again hears its new parent, and only it, once. */
static void
test_reset_then_link(void **state)
{
	struct qw_cts *p1 = new_cts(), *p2 = new_cts(), *c;
	atomic_int runs = 0;

	(void)state;
	c = qw_cts_new_linked(&p1, 1, NULL, 0, 0);
	assert_non_null(c);
	qw_cts_reset(c);
	assert_int_equal(qw_cts_link(c, &p2, 1, NULL, 0, 0), 0);
	assert_true(qw_token_register(qw_cts_token(c), count_cb, &runs) > 0);
	assert_true(qw_cts_cancel(p1, QW_CANCEL_SHUTDOWN));
	assert_false(qw_token_is_cancelled(qw_cts_token(c)));
	assert_true(qw_cts_cancel(p2, QW_CANCEL_TIMEOUT));
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_TIMEOUT);
	assert_int_equal(atomic_load(&runs), 1);
	/* Linked to a parent that is cancelled already: cancelled at once. */
	qw_cts_reset(c);
	assert_int_equal(qw_cts_link(c, &p1, 1, NULL, 0, 0), 0);
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_SHUTDOWN);
	qw_cts_free(c);
	qw_cts_free(p2);
	qw_cts_free(p1);
}

/* Reset with its delay pending: the delay is gone; linked again with a new
 * delay on the loop, that one fires with its reason. */
static void
test_reset_stops_delay(void **state)
{
	struct event_base *base = event_base_new();
	struct qw_cts *p = new_cts(), *c;

	(void)state;
	assert_non_null(base);
	c = qw_cts_new_linked(&p, 1, base, 5, QW_CANCEL_TIMEOUT);
	assert_non_null(c);
	qw_cts_reset(c);
	assert_true(event_base_loop(base, 0) >= 0);	/* nothing left to run */
	assert_false(qw_token_is_cancelled(qw_cts_token(c)));
	assert_int_equal(qw_cts_link(c, &p, 1, base, 5, QW_CANCEL_SHUTDOWN), 0);
	assert_true(event_base_loop(base, 0) >= 0);
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_SHUTDOWN);
	qw_cts_free(c);
	qw_cts_free(p);
	event_base_free(base);
}

/* The child's own delay first: its own reason, the parent is unaffected and a
 * later parent cancel changes nothing. */
static void
test_linked_own_delay_first(void **state)
{
	struct event_base *base = event_base_new();
	struct qw_cts *p = new_cts(), *c;
	atomic_int runs = 0;
	int64_t start, elapsed;

	(void)state;
	assert_non_null(base);
	start = now_us();
	c = qw_cts_new_linked(&p, 1, base, 30, QW_CANCEL_TIMEOUT);
	assert_non_null(c);
	assert_true(qw_token_register(qw_cts_token(c), count_cb, &runs) > 0);
	assert_false(qw_token_is_cancelled(qw_cts_token(c)));

	assert_true(event_base_loop(base, 0) >= 0);
	elapsed = now_us() - start;
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_TIMEOUT);
	assert_false(qw_token_is_cancelled(qw_cts_token(p)));
	assert_int_equal(qw_token_reason(qw_cts_token(p)), QW_CANCEL_NONE);
	assert_int_equal(atomic_load(&runs), 1);
	if (elapsed < 20000)
		fail_msg("linked delay (30 ms) fired after %lld us", (long long)elapsed);

	assert_true(qw_cts_cancel(p, QW_CANCEL_SHUTDOWN));
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_TIMEOUT);
	assert_int_equal(atomic_load(&runs), 1);
	qw_cts_free(c);
	qw_cts_free(p);
	event_base_free(base);
}

/* The parent first: the parent's reason; the child's delay no longer counts. */
static void
test_linked_parent_before_delay(void **state)
{
	struct event_base *base = event_base_new();
	struct qw_cts *p = new_cts(), *c;

	(void)state;
	assert_non_null(base);
	c = qw_cts_new_linked(&p, 1, base, 20, QW_CANCEL_TIMEOUT);
	assert_non_null(c);
	assert_true(qw_cts_cancel(p, QW_CANCEL_SHUTDOWN));
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_SHUTDOWN);
	assert_true(event_base_loop(base, 0) >= 0);	/* the delay may fire */
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_SHUTDOWN);
	qw_cts_free(c);
	qw_cts_free(p);
	event_base_free(base);
}

/* No parents, only a delay. */
static void
test_linked_no_parents_delay(void **state)
{
	struct event_base *base = event_base_new();
	struct qw_cts *c;

	(void)state;
	assert_non_null(base);
	c = qw_cts_new_linked(NULL, 0, base, 5, QW_CANCEL_TIMEOUT);
	assert_non_null(c);
	assert_false(qw_token_is_cancelled(qw_cts_token(c)));
	assert_true(event_base_loop(base, 0) >= 0);
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_TIMEOUT);
	qw_cts_free(c);
	event_base_free(base);
}

/* Two parents: whichever is cancelled first gives its reason. */
static void
test_linked_two_parents(void **state)
{
	(void)state;
	for (int first = 0; first < 2; first++) {
		struct qw_cts *ps[2] = { new_cts(), new_cts() }, *c;
		int reason_first = first == 0 ? QW_CANCEL_TIMEOUT : QW_CANCEL_SHUTDOWN;
		int reason_second = first == 0 ? QW_CANCEL_SHUTDOWN : QW_CANCEL_TIMEOUT;
		atomic_int runs = 0;

		c = qw_cts_new_linked(ps, 2, NULL, 0, 0);
		assert_non_null(c);
		assert_true(qw_token_register(qw_cts_token(c), count_cb, &runs) > 0);

		assert_true(qw_cts_cancel(ps[first], reason_first));
		assert_int_equal(qw_token_reason(qw_cts_token(c)), reason_first);
		assert_false(qw_token_is_cancelled(qw_cts_token(ps[1 - first])));
		assert_int_equal(atomic_load(&runs), 1);

		assert_true(qw_cts_cancel(ps[1 - first], reason_second));
		assert_int_equal(qw_token_reason(qw_cts_token(c)), reason_first);
		assert_int_equal(atomic_load(&runs), 1);
		qw_cts_free(c);
		qw_cts_free(ps[0]);
		qw_cts_free(ps[1]);
	}
}

/* A parent cancelled already: the child is born cancelled with its reason,
 * and its own delay is moot. */
static void
test_linked_parent_already_cancelled(void **state)
{
	struct event_base *base = event_base_new();
	struct qw_cts *p = new_cts(), *live = new_cts(), *c;
	struct qw_cts *ps[2];
	atomic_int runs = 0;

	(void)state;
	assert_non_null(base);
	assert_true(qw_cts_cancel(p, QW_CANCEL_TIMEOUT));

	c = qw_cts_new_linked(&p, 1, NULL, 0, 0);
	assert_non_null(c);
	assert_true(qw_token_is_cancelled(qw_cts_token(c)));
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_TIMEOUT);
	assert_false(qw_cts_cancel(c, QW_CANCEL_SHUTDOWN));
	qw_cts_free(c);

	/* Second of two parents cancelled, and a delay with another reason. */
	ps[0] = live;
	ps[1] = p;
	c = qw_cts_new_linked(ps, 2, base, 5, QW_CANCEL_SHUTDOWN);
	assert_non_null(c);
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_TIMEOUT);
	assert_true(qw_token_register(qw_cts_token(c), count_cb, &runs) > 0);
	assert_int_equal(atomic_load(&runs), 1);
	assert_true(event_base_loop(base, 0) >= 0);
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_TIMEOUT);
	assert_true(qw_cts_cancel(live, QW_CANCEL_SHUTDOWN));
	assert_int_equal(qw_token_reason(qw_cts_token(c)), QW_CANCEL_TIMEOUT);
	assert_int_equal(atomic_load(&runs), 1);
	qw_cts_free(c);
	qw_cts_free(live);
	qw_cts_free(p);
	event_base_free(base);
}

/* Freeing a child unlinks it: cancelling the parent later must not touch the
 * freed child (valgrind / ASan would see it), and the parent's other
 * callbacks still run, in order. */
static void
test_linked_free_child_unlinks(void **state)
{
	struct qw_cts *p = new_cts(), *c1, *c2, *c3;
	struct qw_cts *ps[2];
	struct cb_log log = { 0 };
	struct cb_arg a, b;

	(void)state;
	cb_arg_init(&a, &log, 1);
	cb_arg_init(&b, &log, 2);
	assert_true(qw_token_register(qw_cts_token(p), log_cb, &a) > 0);
	c1 = qw_cts_new_linked(&p, 1, NULL, 0, 0);
	c2 = qw_cts_new_linked(&p, 1, NULL, 0, 0);
	assert_non_null(c1);
	assert_non_null(c2);
	ps[0] = p;
	ps[1] = c2;
	c3 = qw_cts_new_linked(ps, 2, NULL, 0, 0);	/* a grandchild too */
	assert_non_null(c3);
	assert_true(qw_token_register(qw_cts_token(p), log_cb, &b) > 0);

	qw_cts_free(c1);
	qw_cts_free(c3);
	assert_true(qw_cts_cancel(p, QW_CANCEL_SHUTDOWN));
	assert_int_equal(log.n, 2);
	assert_int_equal(log.tag[0], 1);
	assert_int_equal(log.tag[1], 2);
	assert_int_equal(qw_token_reason(qw_cts_token(c2)), QW_CANCEL_SHUTDOWN);
	qw_cts_free(c2);
	qw_cts_free(p);
}

/* A child of a child: the reason goes all the way down. */
static void
test_linked_chain(void **state)
{
	struct qw_cts *p = new_cts(), *c, *g;

	(void)state;
	c = qw_cts_new_linked(&p, 1, NULL, 0, 0);
	assert_non_null(c);
	g = qw_cts_new_linked(&c, 1, NULL, 0, 0);
	assert_non_null(g);
	assert_true(qw_cts_cancel(p, QW_CANCEL_TIMEOUT));
	assert_int_equal(qw_token_reason(qw_cts_token(g)), QW_CANCEL_TIMEOUT);
	qw_cts_free(g);
	qw_cts_free(c);
	qw_cts_free(p);
}

/* ------------------------------------------------------------------------ */
/* The eventfd */

static void
test_fd_readable_after_cancel(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);
	int fd = qw_token_fd(t);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(qw_token_fd(t), fd);	/* one fd per token */
	assert_false(fd_readable(fd));
	assert_true(qw_cts_cancel(s, QW_CANCEL_SHUTDOWN));
	assert_true(fd_readable(fd));
	assert_true(fd_readable(fd));		/* and stays so */
	assert_false(qw_cts_cancel(s, QW_CANCEL_TIMEOUT));
	assert_true(fd_readable(fd));
	assert_int_equal(qw_token_fd(t), fd);
	qw_cts_free(s);
}

static void
test_fd_created_after_cancel(void **state)
{
	struct qw_cts *s = new_cts();
	int fd;

	(void)state;
	assert_true(qw_cts_cancel(s, QW_CANCEL_TIMEOUT));
	fd = qw_token_fd(qw_cts_token(s));
	assert_true(fd >= 0);
	assert_true(fd_readable(fd));
	qw_cts_free(s);
}

static void
test_fd_linked_child(void **state)
{
	struct qw_cts *p = new_cts(), *c;
	int fd;

	(void)state;
	c = qw_cts_new_linked(&p, 1, NULL, 0, 0);
	assert_non_null(c);
	fd = qw_token_fd(qw_cts_token(c));
	assert_true(fd >= 0);
	assert_false(fd_readable(fd));
	assert_true(qw_cts_cancel(p, QW_CANCEL_SHUTDOWN));
	assert_true(fd_readable(fd));
	qw_cts_free(c);
	qw_cts_free(p);
}

/* ------------------------------------------------------------------------ */
/* The timed wait */

struct delayed_cancel {
	struct qw_cts *s;
	long delay_ms;
	int reason;
	atomic_int result;
};

static void *
delayed_cancel_thread(void *arg)
{
	struct delayed_cancel *d = arg;

	sleep_ms(d->delay_ms);
	atomic_store(&d->result, qw_cts_cancel(d->s, d->reason));
	return NULL;
}

static void
test_wait_times_out(void **state)
{
	struct qw_cts *s = new_cts();
	int64_t start, elapsed;

	(void)state;
	start = now_us();
	assert_false(qw_token_wait(qw_cts_token(s), 50));
	elapsed = now_us() - start;
	if (elapsed < 45000)
		fail_msg("wait(50 ms) returned after %lld us", (long long)elapsed);
	assert_false(qw_token_is_cancelled(qw_cts_token(s)));
	assert_false(qw_token_wait(qw_cts_token(s), 0));
	qw_cts_free(s);
}

static void
test_wait_already_cancelled(void **state)
{
	struct qw_cts *s = new_cts();
	qw_token *t = qw_cts_token(s);

	(void)state;
	assert_true(qw_cts_cancel(s, QW_CANCEL_TIMEOUT));
	assert_true(qw_token_wait(t, 0));
	assert_true(qw_token_wait(t, 10000));
	assert_true(qw_token_wait(t, -1));
	qw_cts_free(s);
}

static void
test_wait_cancelled_by_other_thread(void **state)
{
	(void)state;
	/* A finite wait, an endless one, and one on a linked child. */
	for (int k = 0; k < 3; k++) {
		struct qw_cts *s = new_cts(), *w = s;
		struct delayed_cancel d = { .s = s, .delay_ms = 30, .reason = QW_CANCEL_SHUTDOWN };
		pthread_t th;
		int64_t start, elapsed;

		atomic_init(&d.result, -1);
		if (k == 2) {
			w = qw_cts_new_linked(&s, 1, NULL, 0, 0);
			assert_non_null(w);
		}
		start = now_us();
		assert_int_equal(pthread_create(&th, NULL, delayed_cancel_thread, &d), 0);
		assert_true(qw_token_wait(qw_cts_token(w), k == 1 ? -1 : 10000));
		elapsed = now_us() - start;
		assert_int_equal(pthread_join(th, NULL), 0);
		assert_int_equal(atomic_load(&d.result), 1);
		assert_int_equal(qw_token_reason(qw_cts_token(w)), QW_CANCEL_SHUTDOWN);
		if (elapsed < 20000)
			fail_msg("wait returned after %lld us, before the cancel",
			    (long long)elapsed);
		if (w != s)
			qw_cts_free(w);
		qw_cts_free(s);
	}
}

/* The fd wakes a poller on another thread too. */
static void
test_fd_poll_cancelled_by_other_thread(void **state)
{
	struct qw_cts *s = new_cts();
	struct delayed_cancel d = { .s = s, .delay_ms = 20, .reason = QW_CANCEL_TIMEOUT };
	struct pollfd pfd;
	pthread_t th;

	(void)state;
	atomic_init(&d.result, -1);
	pfd.fd = qw_token_fd(qw_cts_token(s));
	pfd.events = POLLIN;
	assert_true(pfd.fd >= 0);
	assert_int_equal(pthread_create(&th, NULL, delayed_cancel_thread, &d), 0);
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	assert_true(pfd.revents & POLLIN);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(qw_token_reason(qw_cts_token(s)), QW_CANCEL_TIMEOUT);
	qw_cts_free(s);
}

/* ------------------------------------------------------------------------ */
/* Races between threads */

#define N_WORKERS 8
#define ROUNDS 200
#define REGS_PER_WORKER 4

/* One registration's bookkeeping. Only atomics are shared. */
struct stress_reg {
	atomic_int runs;
	atomic_int running;
};

static struct {
	pthread_barrier_t start, end;
	struct qw_cts *src;		/* this round's source */
	atomic_int reason;		/* this round's reason */
	struct stress_reg regs[N_WORKERS][REGS_PER_WORKER];
	int removed[N_WORKERS][REGS_PER_WORKER];	/* written by the owner */
	atomic_int bad_twice;		/* a callback ran more than once */
	atomic_int bad_concurrent;	/* a callback ran on two threads at once */
	atomic_int bad_reason;		/* a callback saw the wrong reason */
	atomic_int bad_removed_ran;	/* unregister true, yet it ran */
	atomic_int bad_not_removed_not_run;	/* false, yet it had not run */
	atomic_int bad_still_running;	/* running after unregister returned */
	atomic_int bad_register;	/* register returned 0 */
	atomic_int unreg_while_running;	/* statistics: the waiting case */
} st;

static void
stress_cb(void *arg, int reason)
{
	struct stress_reg *r = arg;

	if (atomic_fetch_add(&r->running, 1) != 0)
		atomic_fetch_add(&st.bad_concurrent, 1);
	if (reason != atomic_load(&st.reason))
		atomic_fetch_add(&st.bad_reason, 1);
	spin(5000);		/* give unregister a chance to find it running */
	if (atomic_fetch_add(&r->runs, 1) != 0)
		atomic_fetch_add(&st.bad_twice, 1);
	atomic_fetch_sub(&r->running, 1);
}

static void *
stress_worker(void *arg)
{
	int w = (int)(intptr_t)arg;
	unsigned seed = (unsigned)w * 7919u + 1;

	for (int round = 0; round < ROUNDS; round++) {
		qw_token *t;
		uint64_t ids[REGS_PER_WORKER];

		pthread_barrier_wait(&st.start);
		t = qw_cts_token(st.src);
		spin(rand_r(&seed) % 400);
		for (int j = 0; j < REGS_PER_WORKER; j++) {
			ids[j] = qw_token_register(t, stress_cb, &st.regs[w][j]);
			if (ids[j] == 0)
				atomic_fetch_add(&st.bad_register, 1);
			spin(rand_r(&seed) % 200);
		}
		/* Half the time, unregister as soon as the cancel has begun, while
		 * the callbacks are being run. */
		if (rand_r(&seed) % 2)
			(void)qw_token_wait(t, 10000);
		/* Unregister in a shuffled order, some after a pause. */
		for (int k = 0; k < REGS_PER_WORKER; k++) {
			int j = (k + w + round) % REGS_PER_WORKER;
			struct stress_reg *r = &st.regs[w][j];
			bool removed;

			spin(rand_r(&seed) % 200);
			if (atomic_load(&r->running) != 0)
				atomic_fetch_add(&st.unreg_while_running, 1);
			removed = qw_token_unregister(t, ids[j]);
			st.removed[w][j] = removed;
			if (atomic_load(&r->running) != 0)
				atomic_fetch_add(&st.bad_still_running, 1);
			if (removed && atomic_load(&r->runs) != 0)
				atomic_fetch_add(&st.bad_removed_ran, 1);
			if (!removed && atomic_load(&r->runs) != 1)
				atomic_fetch_add(&st.bad_not_removed_not_run, 1);
		}
		pthread_barrier_wait(&st.end);
	}
	return NULL;
}

static void
test_race_register_unregister_cancel(void **state)
{
	pthread_t th[N_WORKERS];
	unsigned seed = 12345;
	int removed_total = 0, ran_total = 0;

	(void)state;
	memset(&st, 0, sizeof(st));
	assert_int_equal(pthread_barrier_init(&st.start, NULL, N_WORKERS + 1), 0);
	assert_int_equal(pthread_barrier_init(&st.end, NULL, N_WORKERS + 1), 0);
	for (int w = 0; w < N_WORKERS; w++)
		assert_int_equal(pthread_create(&th[w], NULL, stress_worker,
		    (void *)(intptr_t)w), 0);

	for (int round = 0; round < ROUNDS; round++) {
		int reason = round % 2 ? QW_CANCEL_TIMEOUT : QW_CANCEL_SHUTDOWN;
		unsigned pause = rand_r(&seed) % 1000;

		for (int w = 0; w < N_WORKERS; w++) {
			for (int j = 0; j < REGS_PER_WORKER; j++) {
				atomic_store(&st.regs[w][j].runs, 0);
				atomic_store(&st.regs[w][j].running, 0);
			}
		}
		st.src = qw_cts_new();
		assert_non_null(st.src);
		atomic_store(&st.reason, reason);
		pthread_barrier_wait(&st.start);
		/* This thread cancels, at a different moment each round. */
		spin(pause);
		if (!qw_cts_cancel(st.src, reason))
			fail_msg("round %d: cancel returned false", round);
		pthread_barrier_wait(&st.end);

		/* Everyone is done: check the final state of every registration. */
		for (int w = 0; w < N_WORKERS; w++) {
			for (int j = 0; j < REGS_PER_WORKER; j++) {
				int runs = atomic_load(&st.regs[w][j].runs);

				if (st.removed[w][j]) {
					removed_total++;
					if (runs != 0)
						fail_msg("round %d: removed callback ran %d times",
						    round, runs);
				} else {
					ran_total++;
					if (runs != 1)
						fail_msg("round %d: callback not removed ran %d times",
						    round, runs);
				}
			}
		}
		qw_cts_free(st.src);
		st.src = NULL;
	}
	for (int w = 0; w < N_WORKERS; w++)
		assert_int_equal(pthread_join(th[w], NULL), 0);
	pthread_barrier_destroy(&st.start);
	pthread_barrier_destroy(&st.end);

	assert_int_equal(atomic_load(&st.bad_register), 0);
	assert_int_equal(atomic_load(&st.bad_twice), 0);
	assert_int_equal(atomic_load(&st.bad_concurrent), 0);
	assert_int_equal(atomic_load(&st.bad_reason), 0);
	assert_int_equal(atomic_load(&st.bad_removed_ran), 0);
	assert_int_equal(atomic_load(&st.bad_not_removed_not_run), 0);
	assert_int_equal(atomic_load(&st.bad_still_running), 0);
	assert_int_equal(removed_total + ran_total, ROUNDS * N_WORKERS * REGS_PER_WORKER);
	print_message("    %d removed before running, %d ran, %d unregistered while running\n",
	    removed_total, ran_total, atomic_load(&st.unreg_while_running));
}

/* Several threads cancel one source at once: exactly one wins, its reason
 * sticks, and each callback runs once. */
#define N_CANCELLERS 8

static struct {
	pthread_barrier_t start, end;
	struct qw_cts *src;
	atomic_int won[N_CANCELLERS];
} cr;

static void *
cancel_racer(void *arg)
{
	int i = (int)(intptr_t)arg;

	for (int round = 0; round < ROUNDS; round++) {
		pthread_barrier_wait(&cr.start);
		atomic_store(&cr.won[i], qw_cts_cancel(cr.src,
		    i % 2 ? QW_CANCEL_TIMEOUT : QW_CANCEL_SHUTDOWN));
		pthread_barrier_wait(&cr.end);
	}
	return NULL;
}

struct reason_count {
	atomic_int runs;
	atomic_int reason;
};

static void
reason_cb(void *arg, int reason)
{
	struct reason_count *rc = arg;

	atomic_store(&rc->reason, reason);
	atomic_fetch_add(&rc->runs, 1);
}

static void
test_race_concurrent_cancel(void **state)
{
	pthread_t th[N_CANCELLERS];

	(void)state;
	memset(&cr, 0, sizeof(cr));
	assert_int_equal(pthread_barrier_init(&cr.start, NULL, N_CANCELLERS + 1), 0);
	assert_int_equal(pthread_barrier_init(&cr.end, NULL, N_CANCELLERS + 1), 0);
	for (int i = 0; i < N_CANCELLERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, cancel_racer,
		    (void *)(intptr_t)i), 0);

	for (int round = 0; round < ROUNDS; round++) {
		struct reason_count rc[3];
		int winners = 0, winner = -1, want;

		cr.src = qw_cts_new();
		assert_non_null(cr.src);
		for (int k = 0; k < 3; k++) {
			atomic_init(&rc[k].runs, 0);
			atomic_init(&rc[k].reason, 0);
			assert_true(qw_token_register(qw_cts_token(cr.src), reason_cb, &rc[k]) > 0);
		}
		pthread_barrier_wait(&cr.start);
		pthread_barrier_wait(&cr.end);

		for (int i = 0; i < N_CANCELLERS; i++) {
			if (atomic_load(&cr.won[i])) {
				winners++;
				winner = i;
			}
		}
		if (winners != 1)
			fail_msg("round %d: %d cancels returned true", round, winners);
		want = winner % 2 ? QW_CANCEL_TIMEOUT : QW_CANCEL_SHUTDOWN;
		assert_int_equal(qw_token_reason(qw_cts_token(cr.src)), want);
		for (int k = 0; k < 3; k++) {
			assert_int_equal(atomic_load(&rc[k].runs), 1);
			assert_int_equal(atomic_load(&rc[k].reason), want);
		}
		qw_cts_free(cr.src);
		cr.src = NULL;
	}
	for (int i = 0; i < N_CANCELLERS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	pthread_barrier_destroy(&cr.start);
	pthread_barrier_destroy(&cr.end);
}

/* ------------------------------------------------------------------------ */

int
main(void)
{
#define T(f) cmocka_unit_test(f)
	const struct CMUnitTest tests[] = {
		T(test_initial_state),
		T(test_cancel_sets_reason),
		T(test_first_reason_wins),
		T(test_callbacks_run_once_in_order),
		T(test_register_after_cancel_runs_at_once),
		T(test_unregister_before_cancel),
		T(test_unregister_after_run),
		T(test_unregister_unknown_id),
		T(test_callback_unregisters_other),
		T(test_callback_unregisters_itself),
		T(test_callback_cancels_other_source),
		T(test_callback_registers_on_cancelled_token),
		T(test_free_with_pending_callbacks),
		T(test_unregister_waits_for_running_callback),
		T(test_cancel_after),
		T(test_cancel_after_shutdown_reason),
		T(test_cancel_after_replaces),
		T(test_cancel_before_delay),
		T(test_free_stops_delay),
		T(test_linked_parent_cancel),
		T(test_linked_child_cancel_leaves_parent),
		T(test_reset_unlinks_and_uncancels),
		T(test_reset_then_link),
		T(test_reset_stops_delay),
		T(test_linked_own_delay_first),
		T(test_linked_parent_before_delay),
		T(test_linked_no_parents_delay),
		T(test_linked_two_parents),
		T(test_linked_parent_already_cancelled),
		T(test_linked_free_child_unlinks),
		T(test_linked_chain),
		T(test_fd_readable_after_cancel),
		T(test_fd_created_after_cancel),
		T(test_fd_linked_child),
		T(test_wait_times_out),
		T(test_wait_already_cancelled),
		T(test_wait_cancelled_by_other_thread),
		T(test_fd_poll_cancelled_by_other_thread),
		T(test_race_register_unregister_cancel),
		T(test_race_concurrent_cancel),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
