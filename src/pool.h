/* pool.h - the worker pool: which queue gets a free slot, running jobs,
 * and turning each outcome into a settle in Redis. */
#ifndef QW_POOL_H
#define QW_POOL_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct evdns_base;
struct qw_conf;
struct qw_cts;
struct qw_pool;
struct qw_redis;

/* The daemon's stages, one at a time; qworkerd(8) describes them. Only
 * pool.c moves them (qw_pool_stage_move), checking where each move comes
 * from:
 *   STARTING  -> LEASING      the connection to Redis came up for the first time
 *   LEASING   -> RUNNING      every queue holds its lease and has settled what
 *                             an earlier process left: READY=1
 *   RUNNING   -> QUIET        SIGUSR1: no new jobs, running ones finish
 *   QUIET     -> RUNNING      SIGUSR2 (-> LEASING when not ready yet)
 *   STARTING, LEASING -> QUIET  SIGUSR1 before ready (READY=1 still comes)
 *   STARTING, LEASING, RUNNING, QUIET -> DRAINING   SIGTERM or SIGINT
 *   DRAINING  -> RELEASING    nothing runs and every result is written: the
 *                             leases are given up
 *   DRAINING, RELEASING -> DONE   released (or Redis is away), or the drain's
 *                             give-up time passed with results unwritten */
enum qw_stage {
	QW_STAGE_STARTING,
	QW_STAGE_LEASING,
	QW_STAGE_RUNNING,
	QW_STAGE_QUIET,
	QW_STAGE_DRAINING,
	QW_STAGE_RELEASING,
	QW_STAGE_DONE,
	QW_STAGE_NSTAGES
};
const char *qw_pool_stage_name(enum qw_stage s);
enum qw_stage qw_pool_stage(const struct qw_pool *pool);

/* Called when a drain has finished: nothing runs and every result is written
 * (or could not be written before the give-up time). */
typedef void qw_pool_drained_fn(struct qw_pool *pool, void *arg);

/* Called once, when Redis first answers and the pool starts taking jobs. */
typedef void qw_pool_ready_fn(struct qw_pool *pool, void *arg);

/* Every job's token is linked to SHUTDOWN; DNS looks up Redis's host name
 * (both owned by the caller). NULL with errno set when a system call failed,
 * or with errno 0 when it failed for a reason it has logged (a plugin that
 * does not load, or whose qw_plugin_init() returns an error). */
struct qw_pool *qw_pool_new(struct event_base *base, struct evdns_base *dns,
    const struct qw_conf *conf, struct qw_cts *shutdown, qw_pool_ready_fn *ready,
    qw_pool_drained_fn *drained, void *arg);
void qw_pool_free(struct qw_pool *pool);

/* The main connection came up or went away. */
void qw_pool_redis_state(struct qw_pool *pool, bool up);
struct qw_redis *qw_pool_redis(struct qw_pool *pool);
/* The connection for a command on KEY (a queue's key): in a cluster, the
 * master serving its slot. */
struct qw_redis *qw_pool_key_redis(struct qw_pool *pool, const char *key);
/* With cluster = yes, "cluster: N of M masters up" into BUF; else "". */
void qw_pool_cluster_status(const struct qw_pool *pool, char *buf, size_t len);

/* Quiet (true) stops taking new jobs; running ones finish. */
void qw_pool_quiet(struct qw_pool *pool, bool quiet);
/* Applies a reloaded configuration; queues must be the same set. Returns
 * -1 with *why set when the new config cannot be applied live. */
int qw_pool_reconfigure(struct qw_pool *pool, const struct qw_conf *conf, const char **why);

/* Starts the drain: no more fetching, blocked fetches abandoned. Running jobs
 * end when done or when the shutdown source fires (then requeued). After
 * GIVEUP_MS the drain ends even if Redis has not taken every result. */
void qw_pool_shutdown(struct qw_pool *pool, uint64_t giveup_ms);

/* Asks Redis for each queue's pending, scheduled and dead lengths and its
 * breaker key, for the next status line and /metrics. */
void qw_pool_poll(struct qw_pool *pool);
/* "busy/total busy, N processed, N failed; pending q=N ..." and warnings,
 * the paused queues, and the queues that wait for their lease. */
void qw_pool_status(const struct qw_pool *pool, char *buf, size_t len);
/* Why a queue waits for its instance's lease (who holds it), or NULL. */
const char *qw_pool_lease_wait(const struct qw_pool *pool);

struct qw_pool_stats {
	unsigned busy, total;
	uint64_t processed, failed, recovered;
	unsigned unsettled;	/* results waiting for Redis */
};
void qw_pool_stats(const struct qw_pool *pool, struct qw_pool_stats *st);

struct qw_tally;
struct qw_pool_queue_info {
	const char *name;
	int64_t running, slots;
	/* At the last qw_pool_poll; -1 unknown. Breaker: 1 while it is open
	 * or half-open, as this instance last saw it. Paused: 1 while the queue is paused, as last seen. */
	int64_t pending, scheduled, dead, paused, breaker;
	const struct qw_tally *tally;	/* jobs by outcome, durations, waits */
};
size_t qw_pool_nqueues(const struct qw_pool *pool);
void qw_pool_queue_info(const struct qw_pool *pool, size_t i, struct qw_pool_queue_info *qi);

#endif
