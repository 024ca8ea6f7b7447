/* flow.h - flow control shared by every instance through Redis (SPEC 14):
 * the circuit breaker's states and what the fetch and settle scripts say of
 * them and of the rate and global_concurrency limits. The limits themselves
 * are enforced inside those scripts (scripts.c); see qworkerd(8), "FLOW
 * CONTROL". */
#ifndef QW_FLOW_H
#define QW_FLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A queue's circuit breaker, kept in the hash PREFIX:{Q}:breaker (field
 * "state"; absent: CLOSED). The scripts move it, atomically for all
 * instances; the instance whose script made a move logs it:
 *   CLOSED    -> OPEN       breaker_failures failed runs in a row (settle)
 *   OPEN      -> HALF_OPEN  the first fetch after breaker_cooldown, which
 *                           may take the one trial job (fetch)
 *   HALF_OPEN -> CLOSED     the trial job succeeded (settle)
 *   HALF_OPEN -> OPEN       the trial job failed (settle)
 * qw_flow_breaker_move checks a move a script reports against this table. */
enum qw_breaker_state {
	QW_BREAKER_CLOSED,
	QW_BREAKER_OPEN,
	QW_BREAKER_HALF_OPEN,
	QW_BREAKER_NSTATES
};

/* What a fetch script call said of the queue's flow control: its trailing
 * status "flow STATE FROM WAIT" (qw_lua_fetch). */
struct qw_flow_seen {
	bool breaker;			/* the breaker is on: STATE is known */
	enum qw_breaker_state state;
	bool moved;			/* this call moved it from FROM to STATE */
	enum qw_breaker_state from;
	uint64_t wait_ms;		/* a limit held it back: ask again after this */
};

const char *qw_flow_breaker_name(enum qw_breaker_state s);
/* "closed", "open" or "half-open" (LEN bytes); -1 when it is none of them. */
int qw_flow_breaker_parse(const char *s, size_t len, enum qw_breaker_state *out);
/* Whether FROM -> TO is one of the moves above. */
bool qw_flow_breaker_move(enum qw_breaker_state from, enum qw_breaker_state to);
/* Reads a fetch reply's flow status (LEN bytes); -1 when malformed. */
int qw_flow_parse(const char *s, size_t len, struct qw_flow_seen *out);
/* Logs a move a script of this instance made (QUEUE's breaker, FROM to
 * TO) at warning, once; a move the table does not know is logged as a bug. */
void qw_flow_say_moved(const char *queue, enum qw_breaker_state from, enum qw_breaker_state to,
    unsigned failures, uint64_t cooldown_ms);

#endif
