/* tally.h - what /metrics counts, kept where it happens: per queue, jobs by
 * outcome and two histograms (a job's run, its wait before it); per Redis
 * connection, a histogram of command round trips.
 *
 * Every count is made on the event loop: exec handlers end there, plugin
 * jobs are handed back to it by their worker threads (qw_workers_done_cb),
 * persistent workers' answers are read there (worker.c), and replies come
 * there. So recording is a few plain adds, with no lock
 * and no atomic, and a scrape, also on the loop, reads a consistent
 * picture. The counts live in the pool's queues and connections, which a
 * reload keeps, so they survive SIGHUP. */
#ifndef QW_TALLY_H
#define QW_TALLY_H

#include <stdint.h>

/* The outcome label of qworkerd_jobs_total (SPEC 13), one count per word of
 * a result's stats counters. */
enum qw_tally_outcome {
	QW_TALLY_SUCCEEDED,
	QW_TALLY_FAILED,
	QW_TALLY_RETRIED,
	QW_TALLY_TIMED_OUT,
	QW_TALLY_REQUEUED,
	QW_TALLY_RECOVERED,
	QW_TALLY_DEAD,
	QW_TALLY_CANCELLED,
	QW_TALLY_NOUTCOMES
};
const char *qw_tally_outcome_name(enum qw_tally_outcome o);

#define QW_TALLY_MAXB 24

/* A histogram's upper bounds, in microseconds, ascending; +Inf is implied. */
struct qw_tally_bounds {
	const uint64_t *le_us;
	unsigned n;
};
/* Jobs: 1 ms to 1 h. Redis commands: 100 us to 5 s. qworkerd(8) lists them. */
extern const struct qw_tally_bounds qw_tally_job_bounds, qw_tally_redis_bounds;

/* Counts per bucket, not cumulative (a scrape adds them up); bucket[n] is
 * the +Inf one. */
struct qw_tally_hist {
	uint64_t count, sum_us;
	uint64_t bucket[QW_TALLY_MAXB + 1];
};

void qw_tally_observe(struct qw_tally_hist *h, const struct qw_tally_bounds *b, uint64_t us);

/* One queue's jobs. */
struct qw_tally {
	uint64_t outcome[QW_TALLY_NOUTCOMES];
	struct qw_tally_hist duration;	/* handler start to outcome */
	struct qw_tally_hist wait;	/* enqueued (or first seen) to handler start */
};

/* Counts each word of COUNTERS ("failed retried timed_out"): the stats
 * counters a result bumps in Redis. Unknown words are not counted. */
void qw_tally_outcomes(struct qw_tally *t, const char *counters);

#endif
