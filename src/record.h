/* record.h - one in-memory record per job this process knows, for the whole
 * of its life here: from the moment a fetch takes it from Redis (it is then
 * in our active hash) until its result is written back. Records are indexed
 * by their active-hash field, so "do we know this job" is one lookup that
 * also covers results still on their way to Redis.
 *
 * Every record is in exactly one state, and in its queue's list for that
 * state; qw_record_move is the only way from one state to another, and it
 * checks where the record comes from (an impossible move is a bug: it
 * aborts in debug builds and is logged and refused otherwise).
 *
 *   BUFFERED    taken, waiting for a free slot (prefetch)
 *   RUNNING     its handler runs; it holds a slot
 *   CANCELLING  its token fired (deadline, shutdown); it still holds its
 *               slot until the handler ends or is given up on
 *   FENCED      its job was taken over by another process (we were fenced,
 *               SPEC 10): its handler is being stopped and it holds its slot
 *               until the handler ends; then it is freed with nothing written
 *   FINISHED    its result is decided and waits to be sent
 *   SETTLING    its result is in a settle script call in flight
 *
 *   (new)       -> BUFFERED    a fetch brought it
 *   (new)       -> FINISHED    reconcile or recovery decided its result at once
 *   BUFFERED    -> RUNNING     a slot was free
 *   BUFFERED    -> FINISHED    given back (quiet, drain), or it cannot run at all
 *   RUNNING     -> CANCELLING  its token fired
 *   RUNNING     -> FINISHED    its handler ended
 *   CANCELLING  -> FINISHED    its handler ended, or kill_grace passed
 *   RUNNING, CANCELLING -> FENCED   its job is gone from our active hash
 *   FENCED      -> (freed)     its handler ended, or kill_grace passed
 *   FINISHED    -> SETTLING    sent to Redis
 *   SETTLING    -> FINISHED    the reply was lost or an error came: sent again
 *   SETTLING    -> (freed)     written
 *   any         -> (freed)     forgotten: left in Redis as it is, for reconcile
 *                              or recovery (out of memory), or gone from it
 *                              (a BUFFERED job another process took over)
 */
#ifndef QW_RECORD_H
#define QW_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "decide.h"

struct qw_queue;
struct qw_run;

enum qw_rec_state {
	QW_REC_NEW,		/* made, in no list yet */
	QW_REC_BUFFERED,
	QW_REC_RUNNING,
	QW_REC_CANCELLING,
	QW_REC_FENCED,
	QW_REC_FINISHED,
	QW_REC_SETTLING,
	QW_REC_NSTATES
};

struct qw_rec {
	TAILQ_ENTRY(qw_rec) link;	/* in its queue's list for its state */
	struct qw_rec *hnext;		/* the index's chain */
	struct qw_queue *q;
	enum qw_rec_state state;
	char *field;		/* its field in the active hash (owned) */
	uint64_t seq;		/* ours: the sequence number in the field */
	int64_t seen_ms;	/* BUFFERED, RUNNING: when a fetch brought it (wall clock) */
	char *owner;		/* NULL: ours; else the dead instance whose job this is */
	/* BUFFERED: the element as taken; FINISHED, SETTLING: the element that
	 * goes back (NULL when none does). Owned. */
	char *elem;
	size_t len;
	struct qw_run *run;	/* RUNNING, CANCELLING, FENCED */
	unsigned mark;		/* scratch: lease.c's check against the active hash */
	enum qw_dest dest;	/* FINISHED, SETTLING: the result */
	uint64_t delay_ms;
	const char *counters;	/* static string */
	int breaker;		/* FINISHED, SETTLING: qw_outcome's breaker */
	/* FINISHED, SETTLING: the unique_for hold its result ends with the job
	 * (the job's id and its "unique" member), or NULL. Owned. */
	char *hold_id, *hold_token;
	/* field points here when it fits: a fetched job's field ("RUNID" and
	 * a sequence number) always does, and then costs no allocation. */
	char field_buf[40];
};
TAILQ_HEAD(qw_recs, qw_rec);

/* The records of one queue: a list per state, and the index. */
struct qw_recset {
	const char *name;	/* the queue's, for log lines (borrowed) */
	struct qw_recs list[QW_REC_NSTATES];
	unsigned n[QW_REC_NSTATES];
	struct qw_rec **bucket;
	size_t nbuckets, count;
	/* Freed records kept for the next ones (linked through hnext). */
	struct qw_rec *spare;
	unsigned nspare;
};

int qw_record_set_init(struct qw_recset *rs, const char *name);
/* Frees every record; their runs must have been detached already. */
void qw_record_set_fini(struct qw_recset *rs);

/* Takes ownership of FIELD and OWNER (freed on failure). Returns a NEW
 * record, indexed, or NULL when out of memory. */
struct qw_rec *qw_record_new(struct qw_recset *rs, struct qw_queue *q, char *field, char *owner);
/* The same with a copy of FIELD (LEN bytes) and no owner. */
struct qw_rec *qw_record_new_copy(struct qw_recset *rs, struct qw_queue *q, const char *field,
    size_t len);
/* Moves REC to state TO; returns -1 (and changes nothing) when that move is
 * not one of the moves above. */
int qw_record_move(struct qw_recset *rs, struct qw_rec *rec, enum qw_rec_state to);
/* Sets REC's result (taking ELEM) and moves it to FINISHED, with no hold. */
int qw_record_finish(struct qw_recset *rs, struct qw_rec *rec, enum qw_dest dest, char *elem,
    size_t len, uint64_t delay_ms, const char *counters);
/* Makes REC's result (FINISHED) end the unique_for hold TOKEN of job ID
 * (both copied). -1 when out of memory: the hold then only runs out. */
int qw_record_hold(struct qw_rec *rec, const char *id, const char *token);
/* Unindexes and frees REC: its result is written, or it is left in Redis as
 * it is. Its run must have been detached. */
void qw_record_free(struct qw_recset *rs, struct qw_rec *rec);
/* The record with FIELD (LEN bytes), or NULL. */
struct qw_rec *qw_record_find(const struct qw_recset *rs, const char *field, size_t len);
const char *qw_record_state_name(enum qw_rec_state s);

#endif
