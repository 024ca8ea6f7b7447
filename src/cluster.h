/* cluster.h - Redis Cluster (SPEC 15): the slot of a key, the slot map
 * from CLUSTER SLOTS, and one connection to each master in the map. */
#ifndef QW_CLUSTER_H
#define QW_CLUSTER_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QW_CLUSTER_SLOTS 16384

struct event_base;
struct evdns_base;
struct qw_conf;
struct qw_cluster;
struct qw_redis;

/* NODE's connection came up or went (UP); NODE NULL: the map changed, so
 * a slot may be served by another connection now (qw_cluster_redis). */
typedef void qw_cluster_fn(void *arg, struct qw_redis *node, bool up);

/* Starts asking CONF's nodes (conf->cluster set) for the slot map. */
struct qw_cluster *qw_cluster_new(struct event_base *base, struct evdns_base *dns,
    const struct qw_conf *conf, qw_cluster_fn *fn, void *arg);
void qw_cluster_free(struct qw_cluster *cl);
void qw_cluster_reconfigure(struct qw_cluster *cl, const struct qw_conf *conf);
/* The connection the map is asked on (any node): for STATUS=, /health
 * and commands tied to no queue. */
struct qw_redis *qw_cluster_control(struct qw_cluster *cl);
/* The connection to the master serving SLOT; NULL while the map has none. */
struct qw_redis *qw_cluster_redis(struct qw_cluster *cl, unsigned slot);
/* Its address ("IP:PORT"); NULL while the map has none. */
const char *qw_cluster_addr(const struct qw_cluster *cl, unsigned slot);
/* Masters in the map, and how many of their connections are up. */
void qw_cluster_counts(const struct qw_cluster *cl, size_t *masters, size_t *up);

/* Pure helpers, shared with the unit tests. CRC16-CCITT (XMODEM) as the
 * cluster specification gives it. */
uint16_t qw_cluster_crc16(const char *buf, size_t len);
/* The slot of KEY: of its hash tag (the first {...} with something in it)
 * when it has one, else of the whole key. */
unsigned qw_cluster_slot(const char *key, size_t len);
/* A MOVED or ASK error: 1 for MOVED, 2 for ASK (SLOT and "IP:PORT" into
 * ADDR), 0 for any other reply or a malformed one. */
int qw_cluster_parse_redirect(const redisReply *reply, unsigned *slot, char *addr, size_t len);
/* One range of CLUSTER SLOTS ([start, end, [ip, port, ...], replicas...]):
 * START, END and the master's "IP:PORT" into ADDR; -1 for a malformed one.
 * A master whose IP is NULL or "" is on the host of ASKED ("HOST:PORT", the
 * node asked; NULL: such a master is unusable). */
int qw_cluster_parse_range(const redisReply *range, const char *asked, unsigned *start,
    unsigned *end, char *addr, size_t len);

#endif
