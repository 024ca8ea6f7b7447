/* redis.h - one Redis connection that reconnects by itself. */
#ifndef QW_REDIS_H
#define QW_REDIS_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest a connection waits on purpose for an answer: how often a
 * subscribed connection subscribes again. A connection is given up when a
 * reply is later than this plus lease_timeout. */
#define QW_REDIS_LONGEST_WAIT_MS 5000

struct event_base;
struct evdns_base;
struct qw_conf;
struct qw_redis;
struct qw_sentinel;

enum qw_script {
	QW_SCRIPT_FETCH,	/* claim list, then pending -> active hash */
	QW_SCRIPT_SETTLE,	/* active hash -> ack, pending, scheduled or dead */
	QW_SCRIPT_PROMOTE,	/* due scheduled -> pending */
	QW_SCRIPT_UNCLAIM,	/* claim list -> pending tail */
	QW_SCRIPT_LEASE,	/* renew our lease if still ours, list expired ones */
	QW_SCRIPT_TAKE,		/* take an instance's lease (compare-and-set) */
	QW_SCRIPT_FORGET,	/* drop an instance's lease once it holds no job */
	QW_SCRIPT_INFLIGHT,	/* an instance's in-flight jobs and started marks */
	QW_SCRIPT_CRON,		/* a [cron] tick's job, once over all instances */
	QW_SCRIPT_CANCELS,	/* cancel requests for our jobs; drop stale ones */
	QW_SCRIPT_COUNT
};

/* REPLY is NULL when the connection went away before the reply came: the
 * command may or may not have run. The library frees REPLY afterwards. */
typedef void qw_redis_reply_fn(struct qw_redis *r, redisReply *reply, void *priv);
/* Called when the connection becomes usable (UP) or is lost. */
typedef void qw_redis_state_fn(struct qw_redis *r, bool up, void *arg);

/* Host names in the address are looked up through DNS (owned by the caller,
 * and freed after every connection that uses it). With SENTINEL (owned by
 * the caller, freed after every connection that uses it) the address is
 * the master it names, and the connection follows it; else conf's. */
struct qw_redis *qw_redis_new(struct event_base *base, struct evdns_base *dns,
    struct qw_sentinel *sentinel, const struct qw_conf *conf, const char *name,
    bool load_scripts, qw_redis_state_fn *state_fn, void *arg);
/* As qw_redis_new, to ADDRESS (a cluster's node) rather than conf's; a
 * reload changes only its password. */
struct qw_redis *qw_redis_new_node(struct event_base *base, struct evdns_base *dns,
    const struct qw_conf *conf, const char *address, const char *name, bool load_scripts,
    qw_redis_state_fn *state_fn, void *arg);
/* A MOVED or ASK reply (REPLY) came on R: FN is told before the caller.
 * For ASK it returns the connection to send the command to, after ASKING,
 * once; the caller then gets that node's reply. NULL: the caller gets
 * REPLY as it is. */
typedef struct qw_redis *qw_redis_redirect_fn(void *arg, struct qw_redis *r,
    const redisReply *reply);
void qw_redis_set_redirect(struct qw_redis *r, qw_redis_redirect_fn *fn, void *arg);
/* Drops the connection now: outstanding commands get a NULL reply. No
 * reconnect afterwards. */
void qw_redis_free(struct qw_redis *r);
bool qw_redis_is_up(const struct qw_redis *r);
/* While not up because the server refused us (a replica, a replica whose
 * master is down, still loading): what it is, as "is a read-only replica";
 * NULL when up, or down for another reason (unreachable, refused). */
const char *qw_redis_down_reason(const struct qw_redis *r);
/* The next reconnect's delay: between half of BACKOFF_MS and all of it, as
 * R in [0, 1) says. */
unsigned qw_redis_jitter_ms(unsigned backoff_ms, double r);
/* What the connection is pointed at, for STATUS= and /health: the
 * address, or with Sentinel which master and why it moved there. */
const char *qw_redis_target(const struct qw_redis *r);
/* With Sentinel, the same; NULL without. */
const char *qw_redis_master_info(const struct qw_redis *r);
/* The server's CLIENT ID for this connection; 0 while not up. */
long long qw_redis_client_id(const struct qw_redis *r);
/* Points the connection at another address/password after a reload; it
 * reconnects when any of them changed. */
void qw_redis_reconfigure(struct qw_redis *r, const struct qw_conf *conf);

/* Both return -1 when the connection is not up (nothing was sent). */
int qw_redis_cmd(struct qw_redis *r, qw_redis_reply_fn *fn, void *priv,
    int argc, const char **argv, const size_t *lens);
/* ARGV holds the keys first, then the arguments. */
int qw_redis_script(struct qw_redis *r, enum qw_script s, qw_redis_reply_fn *fn,
    void *priv, int nkeys, int argc, const char **argv, const size_t *lens);
/* Takes REPLY's string (NUL-terminated, reply->len bytes) out of it, for
 * the caller to free(): a job's bytes then cost no copy. hiredis 0.14 makes
 * it with malloc and frees a NULL one, as qw_redis_reply_dup's copies. */
char *qw_redis_take_str(redisReply *reply);

/* As qw_redis_script, with WAIT REPLICAS TIMEOUT_MS pipelined right after
 * it (REPLICAS 0: qw_redis_script). FN gets the script's reply only once
 * WAIT has answered; when fewer replicas confirmed it, an error reply that
 * qw_redis_unconfirmed recognizes instead (the script ran on the master,
 * but a failover may still lose what it wrote); NULL when the connection
 * went before WAIT answered. */
int qw_redis_script_wait(struct qw_redis *r, enum qw_script s, unsigned replicas,
    uint64_t timeout_ms, qw_redis_reply_fn *fn, void *priv, int nkeys, int argc,
    const char **argv, const size_t *lens);
bool qw_redis_unconfirmed(const redisReply *reply);

/* Subscribes to CHANNEL for as long as the connection lasts (call it again
 * after it comes back up). FN gets each message and each confirmation: the
 * first, and one about every QW_REDIS_LONGEST_WAIT_MS after, since the
 * connection subscribes again to prove it is alive; then NULL when the
 * connection goes (R NULL when it was freed). The connection takes no other
 * command after this. */
int qw_redis_subscribe(struct qw_redis *r, const char *channel, qw_redis_reply_fn *fn,
    void *priv);

/* Round trips of the commands sent with qw_redis_cmd (and so
 * qw_redis_script) on this connection and answered, from queueing to the
 * reply: what a caller waits. Kept across reconnects. */
struct qw_tally_hist;
const struct qw_tally_hist *qw_redis_cmd_hist(const struct qw_redis *r);

/* Writes what is queued to the socket now, rather than on the loop's next
 * turn; an error is left for the loop to handle. */
void qw_redis_flush(struct qw_redis *r);

/* A reply's status for a log line: "ERR ..." or the hiredis error. */
const char *qw_redis_errstr(struct qw_redis *r, const redisReply *reply);

#endif
