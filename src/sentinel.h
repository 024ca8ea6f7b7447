/* sentinel.h - finds the Redis master through Redis Sentinel and follows
 * it through failovers (SPEC 15). */
#ifndef QW_SENTINEL_H
#define QW_SENTINEL_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct qw_conf;
struct qw_sentinel;

/* Told each time a master is confirmed (MASTER, "IP:PORT"), whether it
 * moved or not: a connection waiting for it connects, one open to another
 * address moves. */
typedef void qw_sentinel_fn(void *arg, const char *master);

/* Starts asking the sentinels of CONF (which must name some) at once. */
struct qw_sentinel *qw_sentinel_new(struct event_base *base, const struct qw_conf *conf);
void qw_sentinel_free(struct qw_sentinel *s);
/* The sentinel password may change on reload; the sentinels and the
 * master's name may not (the pool refuses that reload). */
void qw_sentinel_reconfigure(struct qw_sentinel *s, const struct qw_conf *conf);

/* The master last confirmed, or NULL while it is being looked for. */
const char *qw_sentinel_master(const struct qw_sentinel *s);
/* Why the master is where it is (or what the search is doing), for STATUS=,
 * the log and /health: "master NAME at IP:PORT since +switch-master ...". */
const char *qw_sentinel_describe(const struct qw_sentinel *s);

int qw_sentinel_listen(struct qw_sentinel *s, qw_sentinel_fn *fn, void *arg);
void qw_sentinel_unlisten(struct qw_sentinel *s, qw_sentinel_fn *fn, void *arg);
/* A connection to ADDR was lost or refused (WHY): when ADDR is the master
 * we know, look for the master again. */
void qw_sentinel_suspect(struct qw_sentinel *s, const char *addr, const char *why);

/* Reply parsing, shared with the unit tests; each returns 0, or -1 for a
 * reply not of the documented shape. SENTINEL get-master-addr-by-name:
 * [ip, port] into BUF as "IP:PORT" (IPv6 in brackets); a nil reply (an
 * unknown name) is -1 too. */
int qw_sentinel_parse_addr(const redisReply *reply, char *buf, size_t len);
/* A +switch-master message ["message", "+switch-master", "NAME OLDIP
 * OLDPORT NEWIP NEWPORT"] about master NAME: the new address into BUF.
 * Returns 1 for a message about another master, or any other message. */
int qw_sentinel_parse_switch(const redisReply *reply, const char *name, char *buf, size_t len);
/* ROLE: 1 for a master, 0 for anything else that answered ROLE. */
int qw_sentinel_parse_role(const redisReply *reply);

#endif
