/* pool_int.h - the pool's state, shared by the files that make up the pool:
 * pool.c (slots, fetching), run.c (one job's handler and outcome), settle.c
 * (writing results) and lease.c (instance leases and recovery). Nothing
 * outside them includes it. */
#ifndef QW_POOL_INT_H
#define QW_POOL_INT_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>

#include "conf.h"
#include "job.h"
#include "plugin_host.h"
#include "pool.h"
#include "redis.h"

#define QW_OUTPUT_MAX (64 * 1024)
#define QW_SETTLE_BATCH 512
#define QW_FETCH_MAX 1000
#define QW_SETTLE_DELAY_US 1000
#define QW_PROMOTE_MS 200
#define QW_PROMOTE_LIMIT 1000
#define QW_LEASE_TICK_MS 500

enum { K_PENDING, K_CLAIM, K_ACTIVE, K_SCHEDULED, K_DEAD, K_STATS, K_LEASES, K_HOLDERS,
	K_COUNT };

/* One result on its way to Redis. */
struct qw_op {
	TAILQ_ENTRY(qw_op) link;
	char *field;
	char where;		/* 0 done, 'p' pending tail, 's' scheduled, 'd' dead */
	char *elem;
	size_t elem_len;
	uint64_t delay_ms;
	const char *counters;
	char *owner;		/* NULL: ours; else a dead instance whose job this is */
};
TAILQ_HEAD(qw_ops, qw_op);

struct qw_run {
	TAILQ_ENTRY(qw_run) link;
	struct qw_queue *q;
	char *field;
	struct qw_job job;
	struct qw_exec *exec;
	struct qw_cts *cts;	/* linked to the shutdown source, with the job's deadline */
	struct qw_work work;	/* a plugin job on a worker thread */
	bool in_thread;		/* work is with a worker thread */
	bool abandoned;		/* settled without waiting for its thread */
	bool unstarted;		/* cancelled before a thread took it */
	struct event *grace_ev;	/* a cancelled plugin's kill_grace */
};
TAILQ_HEAD(qw_runs, qw_run);

/* A job taken from Redis (in the active hash) that has not started yet. */
struct qw_taken {
	TAILQ_ENTRY(qw_taken) link;
	char *field;
	char *elem;
	size_t len;
};
TAILQ_HEAD(qw_takens, qw_taken);

enum qw_lease_state {
	QW_LEASE_NONE,		/* not checked yet */
	QW_LEASE_CHECKING,	/* asking who holds our identity */
	QW_LEASE_HELD,		/* ours: renewed every tick */
	QW_LEASE_RELEASED,	/* given up at the end of a drain */
};

struct qw_queue {
	struct qw_pool *pool;
	struct qw_queue_conf qc;	/* copy; strings borrowed from pool->conf but the name */
	char *name;			/* owned; qc.name points here */
	char *key[K_COUNT];
	unsigned running;
	bool fetching;		/* a fetch script is in flight (one at a time) */
	unsigned asked;		/* jobs it asked for */
	unsigned asked_slots;	/* of which slots reserved to run them at once */
	struct qw_takens buffer;	/* taken, waiting for a slot (prefetch) */
	unsigned nbuffered;
	uint64_t first_seq;	/* the sequence number of its first job */
	bool empty;		/* last fetch came back short */
	bool hold;		/* an error: wait for retry_ev before fetching */
	int cw;			/* smooth weighted round robin */
	struct qw_redis *blk;	/* tells the queue of new jobs while it is empty */
	bool blocking;		/* that wake-up is armed (subscribed) */
	bool woken;		/* pending changed while a fetch was in flight */
	struct qw_ops ops;	/* results not yet sent */
	unsigned nops;
	unsigned sending;	/* batches in flight */
	struct qw_runs runs;
	struct qw_plugin *plugin;	/* the pool's own reference, or NULL */
	void *plugin_state;
	struct event *promote_ev, *retry_ev, *lease_ev;
	bool reconciled;
	enum qw_lease_state lease;
	bool lease_warned;
	char *reaping;		/* the dead instance being recovered, if any */
	int64_t pending;	/* LLEN of pending at the last status tick; -1 unknown */
};

struct qw_pool {
	struct event_base *base;
	struct evdns_base *dns;
	const struct qw_conf *conf;
	struct qw_redis *redis;
	struct qw_queue *queues;
	size_t nqueues;
	unsigned concurrency;
	unsigned busy;		/* running + slots reserved by fetches, over all queues */
	bool filling, refill;	/* qw_pool_fill is running / must run again */
	bool fetching;		/* not quiet */
	bool stopping;
	char runid[16];		/* names this process's fields in the active hashes */
	char *holder;		/* host, boot id, pid, start time: proves we are alive */
	uint64_t seq;
	struct event *flush_ev, *giveup_ev;
	struct qw_execs *execs;		/* running exec handlers */
	struct qw_workers *workers;	/* threads for plugin handlers */
	struct qw_cts *shutdown;	/* the daemon's; fired by SIGTERM/SIGINT */
	char **env;		/* the daemon's environment without QW_* */
	size_t nenv;
	uint64_t processed, failed, recovered;
	unsigned short rnd[3];
	unsigned releasing;	/* lease releases in flight at the end of a drain */
	unsigned abandoned;	/* threads still inside a plugin whose job is settled */
	qw_pool_drained_fn *drained;
	qw_pool_ready_fn *ready;
	void *cb_arg;
	bool drained_called, ready_called;
	char *policy_warning;	/* set while Redis may evict keys */
};

int64_t qw_now_ms(void);
void qw_arm(struct event *ev, uint64_t ms);
void qw_pool_fill(struct qw_pool *pool);
void qw_pool_check_drained(struct qw_pool *pool);
void qw_pool_maybe_ready(struct qw_pool *pool);
void qw_queue_give_back(struct qw_queue *q);

/* run.c */
/* Takes ownership of FIELD and ELEM: starts one job fresh out of Redis. */
void qw_queue_start_job(struct qw_queue *q, char *field, char *elem, size_t len);
void qw_run_free(struct qw_run *run);

/* settle.c */
/* Queues a result; takes FIELD, ELEM and OWNER (NULL for our own jobs). */
int qw_queue_add_op(struct qw_queue *q, char *field, char where, char *elem, size_t elem_len,
    uint64_t delay_ms, const char *counters, char *owner);
void qw_op_free(struct qw_op *op);
void qw_pool_flush_cb(evutil_socket_t fd, short what, void *arg);
unsigned qw_pool_unsettled(const struct qw_pool *pool);

/* lease.c */
int qw_lease_init(struct qw_pool *pool);
void qw_lease_start(struct qw_queue *q);
void qw_lease_release(struct qw_pool *pool);
/* Finds jobs in our active hash that this process does not know about. */
void qw_queue_reconcile(struct qw_queue *q);

#endif
