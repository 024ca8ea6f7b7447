/* conf.h - the configuration file (qworkerd.conf(5)). */
#ifndef QW_CONF_H
#define QW_CONF_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cron.h"

#define QW_QUEUE_NAME_MAX 64
/* prefetch = auto: the pool sizes the buffer from what it measures. */
#define QW_PREFETCH_AUTO UINT_MAX

struct qw_plugin;

/* rate = N/s, N/m or N/h: at most N job starts per period (n 0: no limit). */
struct qw_rate {
	unsigned n;
	uint64_t period_ms;
};

struct qw_queue_conf {
	char *name;
	char **argv;		/* exec handler, argv[0] resolved to an absolute path */
	struct qw_plugin *plugin;	/* or an in-process handler (owned) */
	char **worker_argv;	/* or persistent workers (SPEC 12), resolved like argv */
	unsigned worker_processes;
	unsigned worker_inflight;	/* jobs outstanding per worker process */
	unsigned worker_max_jobs;	/* jobs before a process is replaced; 0: never */
	uint64_t timeout_ms;
	uint64_t retry_base_ms;
	uint64_t retry_max_ms;
	unsigned max_attempts;
	unsigned weight;
	unsigned concurrency;	/* 0: limited only by the pool */
	uint64_t max_payload;
	unsigned max_interruptions;
	uint64_t dead_max;
	unsigned prefetch;	/* jobs taken ahead of free slots, or QW_PREFETCH_AUTO */
	/* Flow control shared by all instances (qworkerd(8), "FLOW CONTROL"). */
	unsigned breaker_failures;	/* 0: no circuit breaker */
	uint64_t breaker_cooldown_ms;
	struct qw_rate rate;
	unsigned global_concurrency;	/* 0: no limit */
};

/* A [cron NAME] section: each tick of sched enqueues one job. */
struct qw_cron_conf {
	char *name;		/* the section's NAME: job ids are cron:NAME:TICK */
	char *queue;		/* a [queue] of the same file */
	char *payload;		/* "" when not set */
	struct qw_cron sched;	/* its tz is the timezone key */
	unsigned line;		/* of the section header */
	unsigned queue_line;	/* of the queue key */
	bool has_sched;
};

struct qw_conf {
	char *path;
	/* [redis] */
	char *redis_address;	/* "host:port" or "unix:/path" */
	unsigned db;
	char *password_file;
	char *password;		/* read at load time; NULL when none */
	char *prefix;
	/* Sentinel (instead of redis_address): the sentinels' IP:PORT
	 * addresses and the master's name; the password is read at load time. */
	char **sentinels;
	size_t nsentinels;
	char *master_name;
	char *sentinel_password_file;
	char *sentinel_password;	/* NULL when none */
	/* Redis Cluster (cluster = yes): address names seed nodes, split
	 * here; the slot map says where each queue lives (cluster.c). */
	bool cluster;
	char **nodes;
	size_t nnodes;
	/* Claims and results are confirmed by WAIT wait_replicas (0: not). */
	unsigned wait_replicas;
	uint64_t wait_timeout_ms;
	/* [workers] */
	unsigned concurrency;
	uint64_t shutdown_timeout_ms;
	uint64_t kill_grace_ms;
	uint64_t lease_timeout_ms;
	char *instance;
	int log_level;
	char *metrics_listen;
	struct qw_queue_conf *queues;
	size_t nqueues;
	struct qw_cron_conf *crons;
	size_t ncrons;
};

/* Loads and checks PATH. On error returns -1 and sets *err to a malloc'd
 * "FILE:LINE: message" (the caller frees it). */
int qw_conf_load(const char *path, struct qw_conf **out, char **err);
/* The same for a client (qworkerctl): the same grammar and checks, but
 * what only the daemon needs is left out, so that it cannot fail: handlers
 * are not looked up (argv stays NULL), plugins not loaded, and a file
 * without queues is fine. */
int qw_conf_load_client(const char *path, struct qw_conf **out, char **err);
void qw_conf_free(struct qw_conf *conf);

/* Value parsers, shared with the unit tests. Return 0 or -1. */
int qw_conf_parse_duration(const char *s, uint64_t *ms);
int qw_conf_parse_size(const char *s, uint64_t *bytes);
/* "100/s", "5/m", "1000/h". */
int qw_conf_parse_rate(const char *s, struct qw_rate *r);
/* Splits like sh(1) splits words, without expansions. Returns a NULL-terminated
 * malloc'd vector (free with qw_conf_free_argv) or NULL with *err set. */
char **qw_conf_split_words(const char *s, const char **err);
void qw_conf_free_argv(char **argv);
int qw_conf_valid_queue_name(const char *name);

#endif
