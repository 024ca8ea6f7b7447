/* ctl.h - qworkerctl(1), the operator's command (SPEC 11): what its files
 * share. ctl.c parses the command line, ctl_redis.c talks to Redis,
 * ctl_jobs.c reads jobs, ctl_out.c prints, ctl_read.c and ctl_change.c
 * hold the commands. */
#ifndef QW_CTL_H
#define QW_CTL_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys.h"

/* Exit statuses (sysexits). */
enum qw_ctl_exit {
	QW_CTL_OK = 0,
	QW_CTL_NOTFOUND = 1,	/* no such queue or job */
	QW_CTL_USAGE = 2,	/* bad command line */
	QW_CTL_DATAERR = 65,	/* Redis holds or refused data (a key of the wrong type) */
	QW_CTL_UNAVAILABLE = 69,	/* Redis cannot be reached, or refuses us */
	QW_CTL_TEMPFAIL = 75,	/* Redis is busy for a while (loading, a script) */
	QW_CTL_CONFIG = 78,	/* the configuration file cannot be read */
};

struct qw_conf;

/* What the command line asked for, and the connection. */
struct qw_ctl {
	const char *conf_path;	/* -c, or the default */
	bool conf_given;
	const char *address;	/* -a, else the config's */
	const char *prefix;	/* --prefix, else the config's */
	bool json;
	uint64_t timeout_ms;	/* for connect and each reply */
	struct qw_conf *conf;	/* NULL when none was read */
	redisContext *c;
	char *password;		/* when the config has none (ctl_redis.c) */
	char cred_hint[4200];	/* a credential we could not read, for errors */
	char master[320];	/* with sentinels: the master they named */
	int fail;		/* the exit status of the last failed command */
	/* The command's own options. */
	long n;			/* ls -n: at most this many, 0 all, -1 not given */
	bool all, yes;
	const char *id, *reason;
	const char *delay, *job_timeout, *max_attempts, *unique_for;
	char **args;		/* the words after the command */
	int nargs;
};

/* ctl_redis.c */
int qw_ctl_connect(struct qw_ctl *ctl);
void qw_ctl_disconnect(struct qw_ctl *ctl);
/* A command, as redisCommand takes it; the reply or NULL (ctl->fail set,
 * the reason printed) when the connection failed or Redis answered with an
 * error. */
redisReply *qw_ctl_cmd(struct qw_ctl *ctl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The same with argv; errors are left in the reply for the caller. */
redisReply *qw_ctl_cmdv_raw(struct qw_ctl *ctl, int argc, const char **argv,
    const size_t *lens);
/* Reports an error REPLY (or the connection's when NULL) about WHAT and
 * returns the exit status it stands for. */
int qw_ctl_fail(struct qw_ctl *ctl, const redisReply *reply, const char *what);
/* Redis server time in Unix ms; -1 on failure. */
int64_t qw_ctl_now(struct qw_ctl *ctl);
/* The key of QUEUE named WHICH (and INSTANCE for per-instance keys) into BUF. */
const char *qw_ctl_key(struct qw_ctl *ctl, char *buf, size_t len, const char *queue,
    enum qw_key which, const char *instance);
#define QW_CTL_KEY_MAX 512

/* ctl_jobs.c */
struct qw_ctl_job {
	enum qw_key where;	/* PENDING, SCHEDULED, DEAD or ACTIVE (running) */
	char *elem;		/* as read from Redis */
	size_t len;
	json_t *env;		/* the envelope, or NULL for a raw job */
	char *id;
	int64_t due;		/* scheduled: due time (ms) */
	char *instance;		/* running: the instance, and its active field */
	char *field;
	bool started;		/* running: started, not only taken ahead */
};
struct qw_ctl_jobs {
	struct qw_ctl_job *v;
	size_t n, cap;
};
void qw_ctl_jobs_free(struct qw_ctl_jobs *jobs);
/* Reads up to LIMIT (0: all; running jobs: always all) jobs of QUEUE in
 * WHERE, in the order they leave it. Returns an exit status. */
int qw_ctl_jobs_read(struct qw_ctl *ctl, const char *queue, enum qw_key where, size_t limit,
    struct qw_ctl_jobs *out);
/* Finds job ID in the keys of MASK (bits 1 << QW_KEY_*): the first match
 * is added to OUT. Returns 0, QW_CTL_NOTFOUND (said where it looked) or
 * another exit status. */
int qw_ctl_jobs_find(struct qw_ctl *ctl, const char *queue, const char *id, unsigned mask,
    struct qw_ctl_jobs *out);
/* Every queue seen in Redis or named in the config, sorted. */
int qw_ctl_jobs_queues(struct qw_ctl *ctl, char ***names, size_t *n);
void qw_ctl_jobs_free_names(char **names, size_t n);
/* 0 when QUEUE is a valid name that Redis or the config knows; prints why
 * not and returns the exit status otherwise. */
int qw_ctl_jobs_check_queue(struct qw_ctl *ctl, const char *queue, bool must_exist);
/* The job's envelope member NAME as an integer, or DEF. */
long long qw_ctl_job_int(const struct qw_ctl_job *job, const char *name, long long def);
const char *qw_ctl_job_str(const struct qw_ctl_job *job, const char *name);
const char *qw_ctl_where_name(enum qw_key where);
/* "pending", "scheduled", "dead", and with RUNNING "running" (QW_KEY_ACTIVE). */
bool qw_ctl_jobs_parse_where(const char *s, enum qw_key *where, bool running);

/* ctl_out.c */
struct qw_ctl_table;
struct qw_ctl_table *qw_ctl_table_new(size_t ncols, const char *const *heads);
/* Adds a row of NCOLS cells (NULL prints "-"); copies them. */
int qw_ctl_table_add(struct qw_ctl_table *t, const char *const *cells);
/* Prints with columns aligned and control characters escaped; frees T. */
void qw_ctl_table_print(struct qw_ctl_table *t);
void qw_ctl_table_free(struct qw_ctl_table *t);
/* Prints DOC as one JSON document and drops the reference. */
int qw_ctl_json_print(json_t *doc);
/* Escapes LEN bytes of S for a terminal; malloc'd. */
char *qw_ctl_escape(const char *s, size_t len);
/* A job's bytes as JSON: a string when UTF-8, else {"base64": "..."}. */
json_t *qw_ctl_json_bytes(const char *s, size_t len);
/* "3s", "2m5s", "1h2m", "4d3h" for MS (negative: "-" prefixed). */
const char *qw_ctl_fmt_age(char *buf, size_t len, int64_t ms);
/* "2026-12-07T12:00:03Z" for Unix MS. */
const char *qw_ctl_fmt_time(char *buf, size_t len, int64_t ms);
void qw_ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void qw_ctl_verr(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* ctl_read.c */
int qw_ctl_status(struct qw_ctl *ctl);
int qw_ctl_ls(struct qw_ctl *ctl);
int qw_ctl_show(struct qw_ctl *ctl);
int qw_ctl_instances(struct qw_ctl *ctl);

/* ctl_change.c */
int qw_ctl_enqueue(struct qw_ctl *ctl);
int qw_ctl_retry(struct qw_ctl *ctl);
int qw_ctl_delete(struct qw_ctl *ctl);
int qw_ctl_pause(struct qw_ctl *ctl);
int qw_ctl_resume(struct qw_ctl *ctl);
int qw_ctl_cancel(struct qw_ctl *ctl);

#endif
