/* decide.h - the pool's decisions as pure functions, so each is tested on
 * its own (tests/unit/test_decide.c): what a handler's end means for its job
 * (SPEC 4), which queue gets the free slots, and how many jobs a queue takes
 * ahead of them (prefetch = auto). Backoff is qw_job_backoff_ms in job.h. */
#ifndef QW_DECIDE_H
#define QW_DECIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How a handler ended, as far as the job is concerned. */
enum qw_result {
	QW_RESULT_OK,		/* exit 0, or the plugin returned QW_PLUGIN_OK */
	QW_RESULT_FAILED,	/* any other end: exit status, signal, could not start */
	QW_RESULT_PERMANENT,	/* exit 65 (EX_DATAERR) or QW_PLUGIN_PERMANENT */
};

/* Where a job goes; the values are what the settle script is sent. */
enum qw_dest {
	QW_DEST_DONE = 0,		/* removed: nothing more to do */
	QW_DEST_PENDING = 'p',		/* back on the tail of pending */
	QW_DEST_SCHEDULED = 's',	/* retried after a backoff */
	QW_DEST_DEAD = 'd',		/* not retried */
};

struct qw_outcome_in {
	enum qw_result result;
	int reason;		/* the job token's cancel reason (token.h), or 0 */
	unsigned attempt;	/* failed runs before this one */
	unsigned max_attempts;
	unsigned interrupted;	/* runs cut short by a shutdown before this one */
	unsigned max_interruptions;
};

struct qw_outcome {
	enum qw_dest dest;
	const char *counters;	/* stats counters to bump, space separated (static) */
	unsigned attempt;	/* the job's new attempt and interrupted */
	unsigned interrupted;
	bool timed_out;		/* the error is "timed out after Ns" */
	bool cancelled;		/* the error is "cancelled: TEXT" */
	bool interruptions_spent;	/* dead because of max_interruptions */
	/* What the run means for the circuit breaker (SPEC 14): +1 a success,
	 * -1 a failed run that counts (exit status, signal, timeout), 0 neither
	 * (a permanent failure, a cancel, a shutdown). */
	int breaker;
};

void qw_decide_outcome(const struct qw_outcome_in *in, struct qw_outcome *out);

/* One queue's standing in the weighted share of free slots. */
struct qw_share {
	unsigned weight;
	unsigned room;		/* slots it could use now (0: none) */
	int cw;			/* smooth weighted round robin: kept between calls */
};

/* Hands FREE slots to the N queues by smooth weighted round robin (nginx's
 * upstream algorithm), at most ROOM each; WANT[i] gets queue i's share.
 * Updates each cw. */
void qw_decide_share(struct qw_share *qs, size_t n, unsigned free_slots, unsigned *want);

/* What prefetch = auto knows of a queue. Times are smoothed measurements on
 * the monotonic clock (qw_decide_smooth), in microseconds; 0: none yet. */
struct qw_prefetch_in {
	uint64_t job_us;	/* from a job's start to its end */
	uint64_t fetch_us;	/* from sending a fetch to its reply */
	unsigned slots;		/* the queue's slots */
	unsigned max;		/* the bound */
};

/* How many jobs to keep taken ahead of free slots: while jobs end faster
 * than a fetch comes back, enough that the slots never wait for Redis (what
 * ends during eight round trips, as the buffer is refilled once half empty);
 * none while fewer than one job ends per round trip, and none until both
 * times are known. At most MAX. */
unsigned qw_decide_prefetch(const struct qw_prefetch_in *in);

/* A moving average of durations: AVG moved by 1/2^UP of the way to a SAMPLE
 * above it, by 1/2^DOWN to one below it. AVG 0 (none yet) takes SAMPLE;
 * a result of 0 is 1, so that it still says "measured". */
uint64_t qw_decide_smooth(uint64_t avg, uint64_t sample, unsigned up, unsigned down);

#endif
