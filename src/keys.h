/* keys.h - the names of a queue's Redis keys (SPEC 2, qworkerd-jobs(7)),
 * one list shared by qworkerd and qworkerctl. */
#ifndef QW_KEYS_H
#define QW_KEYS_H

#include <stdbool.h>
#include <stddef.h>

/* PREFIX:{QUEUE}:WORD, or PREFIX:{QUEUE}:WORD:INSTANCE for the keys each
 * instance keeps of its own (qw_keys_per_instance). The keys the daemon
 * holds names of come first, in the order of pool_int.h's K_*, which are
 * these values (K_COUNT must follow the last of them). */
enum qw_key {
	QW_KEY_PENDING,		/* list: producers LPUSH, the tail runs next */
	QW_KEY_CLAIM,		/* list, per instance: an old blocking pop's jobs */
	QW_KEY_ACTIVE,		/* hash, per instance: field -> job in flight */
	QW_KEY_SCHEDULED,	/* sorted set: job -> due time (ms) */
	QW_KEY_DEAD,		/* list: failed for good, newest first */
	QW_KEY_STATS,		/* hash: counters */
	QW_KEY_LEASES,		/* sorted set: instance -> lease end (ms) */
	QW_KEY_HOLDERS,		/* hash: instance -> holder info (lease.h) */
	QW_KEY_STARTED,		/* hash, per instance: run -> highest started n */
	QW_KEY_UNIQUE,		/* hash: id -> unique_for hold */
	QW_KEY_PAUSED,		/* string: set while the queue is paused */
	QW_KEY_CANCEL,		/* hash: active field -> reason, cancels asked for */
	QW_KEY_BREAKER,		/* the circuit breaker's state (SPEC 14) */
	QW_KEY_RATE,		/* the rate limit's starts (SPEC 14) */
	QW_KEY_SEQ,		/* string: qw_enqueue's counter */
	QW_KEY_COUNT
};

/* "pending", "active", ...; NULL for a value out of range. */
const char *qw_keys_word(enum qw_key which);
bool qw_keys_per_instance(enum qw_key which);

/* Writes the key's name into BUF; INSTANCE only for the per-instance keys
 * (NULL: none). Returns -1 when it does not fit, else its length. */
int qw_keys_name(char *buf, size_t len, const char *prefix, const char *queue,
    enum qw_key which);
int qw_keys_instance(char *buf, size_t len, const char *prefix, const char *queue,
    enum qw_key which, const char *instance);

/* Reads KEY back: its queue into QUEUE (QLEN bytes at least 65), its kind
 * into *WHICH and, for a per-instance key, where its instance name starts
 * into *INSTANCE (else NULL). Returns -1 when KEY is no key of a queue
 * under PREFIX, or names a queue that breaks SPEC 2's pattern. */
int qw_keys_split(const char *key, const char *prefix, char *queue, size_t qlen,
    enum qw_key *which, const char **instance);

#endif
