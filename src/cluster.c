/* cluster.c - Redis Cluster on hiredis 0.14, which has no cluster support:
 * key slots (CRC16), the slot map (CLUSTER SLOTS), one connection to each
 * master, and the MOVED and ASK redirections (redis.c hands them here). */
#include "config.h"

#include <event2/event.h>
#include <stdio.h>
#include <sys/types.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cluster.h"
#include "conf.h"
#include "log.h"
#include "redis.h"

#define QW_CLUSTER_NONE 0xffff
/* More masters than a cluster may have (the specification advises 1000). */
#define QW_CLUSTER_MAX_NODES 2000
/* The map is asked again this often even without a redirection: a
 * failover or a resharding of slots we do not use yet says nothing. */
#define QW_CLUSTER_REFRESH_MS 2000

/* The map's life:
 *   EMPTY        -> ASKING        the control connection is up
 *   MAPPED       -> ASKING        the refresh timer, a redirection, a lost master
 *   ASKING       -> ASKING_AGAIN  asked to refresh while a reply is due
 *   ASKING(_AGAIN) -> MAPPED      a map came (ASKING_AGAIN asks once more)
 *   ASKING(_AGAIN) -> EMPTY       no map yet and the reply failed
 *   ASKING(_AGAIN) -> MAPPED      a map was known and the reply failed
 * The map itself (owner) is kept through a failed ask: a stale map still
 * names the right master for most slots, and MOVED mends the rest. */
enum qw_cluster_state { QW_CL_EMPTY, QW_CL_ASKING, QW_CL_ASKING_AGAIN, QW_CL_MAPPED };

struct qw_cluster_node {
	char *addr;
	struct qw_redis *r;
};

struct qw_cluster {
	struct event_base *base;
	struct evdns_base *dns;
	const struct qw_conf *conf;
	enum qw_cluster_state state;
	struct qw_redis *control;
	struct qw_cluster_node *nodes;
	size_t nnodes;
	uint16_t owner[QW_CLUSTER_SLOTS];	/* index into nodes, or NONE */
	struct event *refresh_ev;
	qw_cluster_fn *fn;
	void *arg;
};

static void qw_cluster_ask(struct qw_cluster *cl);

/* Where a failed ask goes back to: a map once read is kept, stale or not. */
static enum qw_cluster_state
qw_cluster_settled(const struct qw_cluster *cl)
{
	for (size_t s = 0; s < QW_CLUSTER_SLOTS; s++)
		if (cl->owner[s] != QW_CLUSTER_NONE)
			return QW_CL_MAPPED;
	return QW_CL_EMPTY;
}

/* ---- pure helpers ------------------------------------------------------- */

uint16_t
qw_cluster_crc16(const char *buf, size_t len)
{
	uint16_t crc = 0;

	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)((unsigned char)buf[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

unsigned
qw_cluster_slot(const char *key, size_t len)
{
	const char *open = memchr(key, '{', len), *close;

	if (open != NULL &&
	    (close = memchr(open + 1, '}', len - (size_t)(open + 1 - key))) != NULL &&
	    close > open + 1)
		return qw_cluster_crc16(open + 1, (size_t)(close - open - 1)) &
		    (QW_CLUSTER_SLOTS - 1);
	return qw_cluster_crc16(key, len) & (QW_CLUSTER_SLOTS - 1);
}

/* "IP:PORT", IPv6 in brackets; -1 for an unknown endpoint ("" or "?"). */
static int
qw_cluster_format_addr(const char *ip, size_t iplen, long long port, char *addr, size_t len)
{
	int n;

	if (iplen == 0 || (iplen == 1 && ip[0] == '?') || port < 1 || port > 65535 ||
	    memchr(ip, ' ', iplen) != NULL)
		return -1;
	n = memchr(ip, ':', iplen) != NULL ?
	    snprintf(addr, len, "[%.*s]:%lld", (int)iplen, ip, port) :
	    snprintf(addr, len, "%.*s:%lld", (int)iplen, ip, port);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

int
qw_cluster_parse_redirect(const redisReply *reply, unsigned *slot, char *addr, size_t len)
{
	int kind;
	const char *p, *end, *colon;
	char *e;
	unsigned long s;

	if (reply == NULL || reply->type != REDIS_REPLY_ERROR || reply->str == NULL)
		return 0;
	if (reply->len > 6 && memcmp(reply->str, "MOVED ", 6) == 0)
		kind = 1, p = reply->str + 6;
	else if (reply->len > 4 && memcmp(reply->str, "ASK ", 4) == 0)
		kind = 2, p = reply->str + 4;
	else
		return 0;
	s = strtoul(p, &e, 10);
	if (e == p || *e != ' ' || s >= QW_CLUSTER_SLOTS)
		return 0;
	p = e + 1;
	end = reply->str + reply->len;
	colon = NULL;
	for (const char *c = p; c < end; c++)
		if (*c == ':')
			colon = c;
	if (colon == NULL || colon + 1 >= end)
		return 0;
	long long port = strtoll(colon + 1, &e, 10);
	if (e != end)
		return 0;
	/* IPv6 comes bare in a redirection: brackets are added here. */
	if (qw_cluster_format_addr(p, (size_t)(colon - p), port, addr, len) < 0)
		return 0;
	*slot = (unsigned)s;
	return kind;
}

/* The host of ASKED ("HOST:PORT", IPv6 in brackets), into *HOST, *LEN. */
static void
qw_cluster_host_of(const char *asked, const char **host, size_t *len)
{
	const char *colon = strrchr(asked, ':');

	*host = asked;
	*len = colon != NULL ? (size_t)(colon - asked) : strlen(asked);
	if (*len >= 2 && asked[0] == '[' && asked[*len - 1] == ']') {
		(*host)++;
		*len -= 2;
	}
}

int
qw_cluster_parse_range(const redisReply *range, const char *asked, unsigned *start,
    unsigned *end, char *addr, size_t len)
{
	const redisReply *m;
	const char *host;
	size_t hlen;

	if (range == NULL || range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
	    range->element[0]->type != REDIS_REPLY_INTEGER ||
	    range->element[1]->type != REDIS_REPLY_INTEGER)
		return -1;
	m = range->element[2];
	if (range->element[0]->integer < 0 || range->element[1]->integer >= QW_CLUSTER_SLOTS ||
	    range->element[0]->integer > range->element[1]->integer ||
	    m->type != REDIS_REPLY_ARRAY || m->elements < 2 ||
	    (m->element[0]->type != REDIS_REPLY_STRING && m->element[0]->type != REDIS_REPLY_NIL) ||
	    m->element[1]->type != REDIS_REPLY_INTEGER)
		return -1;
	host = m->element[0]->str;
	hlen = m->element[0]->len;
	/* NULL: an endpoint the node does not know (behind a load balancer);
	 * "": a node that does not know its own IP (a cluster of one node, or
	 * one not yet joined). Either way CLUSTER SLOTS says to use the host
	 * it was asked on, with the port it gives. */
	if ((m->element[0]->type == REDIS_REPLY_NIL || hlen == 0) && asked != NULL)
		qw_cluster_host_of(asked, &host, &hlen);
	if (qw_cluster_format_addr(host, hlen, m->element[1]->integer, addr, len) < 0)
		return -1;
	*start = (unsigned)range->element[0]->integer;
	*end = (unsigned)range->element[1]->integer;
	return 0;
}

/* ---- the map ------------------------------------------------------------ */

static void
qw_cluster_move(struct qw_cluster *cl, enum qw_cluster_state to)
{
	static const unsigned char ok[4][4] = {
		/* from EMPTY */ { [QW_CL_ASKING] = 1 },
		/* ASKING */ { [QW_CL_ASKING_AGAIN] = 1, [QW_CL_MAPPED] = 1, [QW_CL_EMPTY] = 1 },
		/* ASKING_AGAIN */ { [QW_CL_ASKING] = 1, [QW_CL_MAPPED] = 1, [QW_CL_EMPTY] = 1 },
		/* MAPPED */ { [QW_CL_ASKING] = 1 },
	};

	if (!ok[cl->state][to]) {
		qw_log_err("cluster: bad map state change %d -> %d", (int)cl->state, (int)to);
		return;
	}
	cl->state = to;
}

static struct qw_redis *qw_cluster_redirected(void *arg, struct qw_redis *r,
    const redisReply *reply);

static void
qw_cluster_node_state(struct qw_redis *r, bool up, void *arg)
{
	struct qw_cluster *cl = arg;

	/* A master that went may have failed over: its replica serves its
	 * slots now, and the map says so once the cluster agrees. */
	if (!up)
		qw_cluster_ask(cl);
	cl->fn(cl->arg, r, up);
}

static ssize_t
qw_cluster_find(const struct qw_cluster *cl, const char *addr)
{
	for (size_t i = 0; i < cl->nnodes; i++)
		if (strcmp(cl->nodes[i].addr, addr) == 0)
			return (ssize_t)i;
	return -1;
}

/* The node at ADDR, connected to when new. Returns its index, or -1. */
static ssize_t
qw_cluster_node(struct qw_cluster *cl, const char *addr)
{
	ssize_t i = qw_cluster_find(cl, addr);
	struct qw_cluster_node *more;
	char name[100];

	if (i >= 0)
		return i;
	if (cl->nnodes >= QW_CLUSTER_MAX_NODES ||
	    (more = realloc(cl->nodes, (cl->nnodes + 1) * sizeof(*more))) == NULL)
		return -1;
	cl->nodes = more;
	snprintf(name, sizeof(name), "master %s", addr);
	more[cl->nnodes].addr = strdup(addr);
	if (more[cl->nnodes].addr == NULL)
		return -1;
	/* Scripts and the function library on every master: FCALL
	 * qw_enqueue goes to whichever master serves the producer's queue. */
	more[cl->nnodes].r = qw_redis_new_node(cl->base, cl->dns, cl->conf, addr, name, true,
	    qw_cluster_node_state, cl);
	if (more[cl->nnodes].r == NULL) {
		free(more[cl->nnodes].addr);
		return -1;
	}
	qw_redis_set_redirect(more[cl->nnodes].r, qw_cluster_redirected, cl);
	qw_log_info("cluster: master %s is in the slot map", addr);
	return (ssize_t)cl->nnodes++;
}

/* Drops the connections to nodes that serve no slot any more (a demoted
 * master, a node removed): the callers' queues moved already. */
static void
qw_cluster_prune(struct qw_cluster *cl)
{
	unsigned used[QW_CLUSTER_MAX_NODES] = { 0 };
	uint16_t renum[QW_CLUSTER_MAX_NODES];
	size_t keep = 0;

	for (size_t s = 0; s < QW_CLUSTER_SLOTS; s++)
		if (cl->owner[s] != QW_CLUSTER_NONE)
			used[cl->owner[s]]++;
	for (size_t i = 0; i < cl->nnodes; i++) {
		if (used[i] == 0) {
			qw_log_info("cluster: %s serves no slot now; closing its connection",
			    cl->nodes[i].addr);
			qw_redis_free(cl->nodes[i].r);
			free(cl->nodes[i].addr);
			continue;
		}
		renum[i] = (uint16_t)keep;
		cl->nodes[keep++] = cl->nodes[i];
	}
	for (size_t s = 0; s < QW_CLUSTER_SLOTS; s++)
		if (cl->owner[s] != QW_CLUSTER_NONE)
			cl->owner[s] = renum[cl->owner[s]];
	cl->nnodes = keep;
}

/* Reads a CLUSTER SLOTS reply into OWNER; -1 when nothing in it is usable. */
static int
qw_cluster_read_map(struct qw_cluster *cl, const redisReply *reply, uint16_t *owner)
{
	const char *asked = qw_redis_target(cl->control);
	char addr[80];
	unsigned start, end;
	size_t ranges = 0;

	if (reply->type != REDIS_REPLY_ARRAY)
		return -1;
	for (size_t s = 0; s < QW_CLUSTER_SLOTS; s++)
		owner[s] = QW_CLUSTER_NONE;
	for (size_t i = 0; i < reply->elements; i++) {
		ssize_t n;
		if (qw_cluster_parse_range(reply->element[i], asked, &start, &end, addr,
		    sizeof(addr)) < 0 ||
		    (n = qw_cluster_node(cl, addr)) < 0)
			continue;
		for (unsigned s = start; s <= end; s++)
			owner[s] = (uint16_t)n;
		ranges++;
	}
	return ranges > 0 ? 0 : -1;
}

static void
qw_cluster_slots_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_cluster *cl = priv;
	uint16_t *owner;
	bool again;

	if (r == NULL)
		return;		/* freed */
	again = cl->state == QW_CL_ASKING_AGAIN;
	owner = malloc(sizeof(cl->owner));
	if (reply == NULL || owner == NULL || qw_cluster_read_map(cl, reply, owner) < 0) {
		if (reply != NULL)
			qw_log_warn("cluster: cannot read the slot map from %s: %s",
			    qw_redis_target(r), owner == NULL ? "out of memory" :
			    reply->type == REDIS_REPLY_ERROR ? qw_redis_errstr(r, reply) :
			    "no usable slot range");
		free(owner);
		qw_cluster_move(cl, qw_cluster_settled(cl));
		return;
	}
	if (memcmp(owner, cl->owner, sizeof(cl->owner)) != 0) {
		memcpy(cl->owner, owner, sizeof(cl->owner));
		cl->fn(cl->arg, NULL, false);
		qw_cluster_prune(cl);
	}
	free(owner);
	qw_cluster_move(cl, QW_CL_MAPPED);
	if (again)
		qw_cluster_ask(cl);
}

/* Asks for the map on the control connection; a request while one is due
 * is remembered, so a burst of redirections asks twice at most. */
static void
qw_cluster_ask(struct qw_cluster *cl)
{
	const char *argv[] = { "CLUSTER", "SLOTS" };

	switch (cl->state) {
	case QW_CL_ASKING:
		qw_cluster_move(cl, QW_CL_ASKING_AGAIN);
		return;
	case QW_CL_ASKING_AGAIN:
		return;
	case QW_CL_EMPTY:
	case QW_CL_MAPPED:
		if (qw_redis_cmd(cl->control, qw_cluster_slots_reply, cl, 2, argv, NULL) == 0)
			qw_cluster_move(cl, QW_CL_ASKING);
		return;
	}
}

/* A MOVED or ASK reply on any of our connections. MOVED: the slot is
 * served elsewhere for good; the map is mended at once and asked again
 * (a failover or a resharding moves more than one slot). The caller's
 * command failed and is sent again by its own retry, to the new master.
 * ASK: the slot is being migrated and this key went ahead; the command
 * goes to the target once, after ASKING (redis.c): returns that node. */
static struct qw_redis *
qw_cluster_redirected(void *arg, struct qw_redis *r, const redisReply *reply)
{
	struct qw_cluster *cl = arg;
	char addr[80];
	unsigned slot;
	int kind = qw_cluster_parse_redirect(reply, &slot, addr, sizeof(addr));
	ssize_t n;

	if (kind == 0 || (n = qw_cluster_node(cl, addr)) < 0)
		return NULL;
	if (kind == 2)
		return cl->nodes[n].r;
	qw_log_info("cluster: slot %u moved to %s", slot, addr);
	if (cl->owner[slot] != (uint16_t)n) {
		cl->owner[slot] = (uint16_t)n;
		cl->fn(cl->arg, NULL, false);
	}
	qw_cluster_ask(cl);
	return NULL;
}

static void
qw_cluster_refresh_cb(evutil_socket_t fd, short what, void *arg)
{
	qw_cluster_ask(arg);
}

static void
qw_cluster_control_state(struct qw_redis *r, bool up, void *arg)
{
	struct qw_cluster *cl = arg;

	if (up)
		qw_cluster_ask(cl);
	else if (cl->state != QW_CL_MAPPED && cl->state != QW_CL_EMPTY)
		qw_cluster_move(cl, qw_cluster_settled(cl));
	cl->fn(cl->arg, r, up);
}

struct qw_cluster *
qw_cluster_new(struct event_base *base, struct evdns_base *dns, const struct qw_conf *conf,
    qw_cluster_fn *fn, void *arg)
{
	struct qw_cluster *cl = calloc(1, sizeof(*cl));

	if (cl == NULL)
		return NULL;
	cl->base = base;
	cl->dns = dns;
	cl->conf = conf;
	cl->fn = fn;
	cl->arg = arg;
	for (size_t s = 0; s < QW_CLUSTER_SLOTS; s++)
		cl->owner[s] = QW_CLUSTER_NONE;
	cl->refresh_ev = event_new(base, -1, EV_PERSIST, qw_cluster_refresh_cb, cl);
	/* The control connection goes through the seed nodes in turn until
	 * one answers (redis.c takes a comma separated list). */
	cl->control = qw_redis_new(base, dns, NULL, conf, "main", false, qw_cluster_control_state,
	    cl);
	if (cl->refresh_ev == NULL || cl->control == NULL ||
	    event_add(cl->refresh_ev, &(struct timeval){ QW_CLUSTER_REFRESH_MS / 1000,
	    (QW_CLUSTER_REFRESH_MS % 1000) * 1000 }) < 0) {
		qw_cluster_free(cl);
		return NULL;
	}
	qw_redis_set_redirect(cl->control, qw_cluster_redirected, cl);
	return cl;
}

void
qw_cluster_free(struct qw_cluster *cl)
{
	if (cl == NULL)
		return;
	if (cl->refresh_ev != NULL)
		event_free(cl->refresh_ev);
	for (size_t i = 0; i < cl->nnodes; i++) {
		qw_redis_free(cl->nodes[i].r);
		free(cl->nodes[i].addr);
	}
	free(cl->nodes);
	qw_redis_free(cl->control);
	free(cl);
}

void
qw_cluster_reconfigure(struct qw_cluster *cl, const struct qw_conf *conf)
{
	cl->conf = conf;
	qw_redis_reconfigure(cl->control, conf);
	for (size_t i = 0; i < cl->nnodes; i++)
		qw_redis_reconfigure(cl->nodes[i].r, conf);
}

struct qw_redis *
qw_cluster_control(struct qw_cluster *cl)
{
	return cl->control;
}

struct qw_redis *
qw_cluster_redis(struct qw_cluster *cl, unsigned slot)
{
	uint16_t n = cl->owner[slot & (QW_CLUSTER_SLOTS - 1)];

	return n == QW_CLUSTER_NONE ? NULL : cl->nodes[n].r;
}

const char *
qw_cluster_addr(const struct qw_cluster *cl, unsigned slot)
{
	uint16_t n = cl->owner[slot & (QW_CLUSTER_SLOTS - 1)];

	return n == QW_CLUSTER_NONE ? NULL : cl->nodes[n].addr;
}

void
qw_cluster_counts(const struct qw_cluster *cl, size_t *masters, size_t *up)
{
	*masters = cl->nnodes;
	*up = 0;
	for (size_t i = 0; i < cl->nnodes; i++)
		*up += qw_redis_is_up(cl->nodes[i].r);
}
