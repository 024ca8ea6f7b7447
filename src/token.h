/* token.h - cancellation tokens, the C counterpart of .NET's
 * CancellationTokenSource / CancellationToken.
 *
 * A source is cancelled once, with a reason; the first reason wins. Its token
 * is what observers see: whether and why it was cancelled, callbacks, an
 * eventfd that turns readable on cancellation, and a timed wait. A linked
 * source is cancelled when any parent is (taking the parent's reason) or when
 * its own delay fires (taking its own reason).
 *
 * Threads: cancelling, checking, waiting, registering and unregistering are
 * safe from any thread. Callbacks run on the thread that cancels (or at once
 * on the registering thread when the token is already cancelled). Delays run
 * on the event loop given to them, which must be the caller's own loop. */
#ifndef QW_TOKEN_H
#define QW_TOKEN_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct qw_cts;
typedef struct qw_cts qw_token;	/* the observer's view of a source */

enum qw_cancel_reason {
	QW_CANCEL_NONE = 0,
	QW_CANCEL_TIMEOUT = 1,	/* the job's own deadline passed */
	QW_CANCEL_SHUTDOWN = 2,	/* the daemon is stopping */
	QW_CANCEL_CANCELLED = 3,	/* an operator cancelled the job (PREFIX:{Q}:cancel) */
};

typedef void qw_token_fn(void *arg, int reason);

struct qw_cts *qw_cts_new(void);
/* A source cancelled when any of the N parents is, or after DELAY_MS (if
 * BASE is not NULL) with REASON. */
struct qw_cts *qw_cts_new_linked(struct qw_cts *const *parents, unsigned n,
    struct event_base *base, uint64_t delay_ms, int reason);
/* Cancels with REASON (> 0). Returns false when it was cancelled already. */
bool qw_cts_cancel(struct qw_cts *s, int reason);
/* Cancels with REASON after DELAY_MS on BASE; replaces an earlier delay. */
int qw_cts_cancel_after(struct qw_cts *s, struct event_base *base, uint64_t delay_ms,
    int reason);
/* Unlinks from the parents, stops the delay and frees. No other thread may
 * use the source or its token any more. */
void qw_cts_free(struct qw_cts *s);
/* For a caller that keeps sources to use again instead of freeing them (a
 * job's then costs no allocation): unlinks S from its parents, stops its
 * delay, drops its callbacks and eventfd; S is then as qw_cts_new made it.
 * As for qw_cts_free, no other thread may still use S. */
void qw_cts_reset(struct qw_cts *s);
/* Links S (new or reset) as qw_cts_new_linked links the source it makes.
 * -1 when out of memory: S is then cancelled with REASON (or SHUTDOWN),
 * and may be reset or freed. */
int qw_cts_link(struct qw_cts *s, struct qw_cts *const *parents, unsigned n,
    struct event_base *base, uint64_t delay_ms, int reason);
qw_token *qw_cts_token(struct qw_cts *s);

bool qw_token_is_cancelled(const qw_token *t);
/* QW_CANCEL_NONE while not cancelled. */
int qw_token_reason(const qw_token *t);
/* An eventfd that becomes readable (and stays so) once cancelled; owned by
 * the token. -1 with errno set when it cannot be made. */
int qw_token_fd(qw_token *t);
/* Waits up to TIMEOUT_MS (< 0: forever). True when cancelled. */
bool qw_token_wait(qw_token *t, int64_t timeout_ms);
/* Returns a registration id (> 0), or 0 when out of memory. When the token is
 * cancelled already the callback runs at once, before this returns. */
uint64_t qw_token_register(qw_token *t, qw_token_fn *fn, void *arg);
/* Returns true when the callback was removed before it ran. When it is
 * running on another thread, waits until it has returned. */
bool qw_token_unregister(qw_token *t, uint64_t id);

#endif
