/* sentinel.c - owns finding the Redis master through Redis Sentinel, as the
 * Sentinel client guidelines on redis.io describe it: the sentinels are
 * asked in turn (SENTINEL get-master-addr-by-name), the address one names
 * is confirmed with ROLE on the master itself, and the sentinel that
 * answered is asked first next time. One connection to a sentinel stays
 * subscribed to +switch-master, so a failover is followed the moment the
 * sentinels agree on it; a connection to the master that is lost or
 * refused (READONLY, MASTERDOWN) makes redis.c call qw_sentinel_suspect,
 * which starts a new search too. redis.c's connections listen for every
 * confirmed master and move to it.
 *
 * hiredis 0.14 has no Sentinel support, and needs none: each step of the
 * search is a short-lived plain connection. The sentinels are given as IP
 * addresses (conf.c), so no step waits on a name server. */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "clock.h"
#include "conf.h"
#include "log.h"
#include "redis.h"
#include "sentinel.h"

#define QW_SENTINEL_STEP_MS 2000	/* a step without an answer by then fails */
#define QW_SENTINEL_BACKOFF_MIN_MS 100
#define QW_SENTINEL_BACKOFF_MAX_MS 2000
#define QW_SENTINEL_TICK_MS 500
#define QW_SENTINEL_RESUB_MS 5000	/* the subscription proves it is alive */
#define QW_SENTINEL_ADDR_MAX 300

/* The search for the master, moved only by qw_sentinel_move:
 *   ASKING   -> CHECKING   a sentinel named the master: ask it ROLE
 *   ASKING   -> ASKING     that sentinel failed: ask the next one
 *   ASKING   -> BACKOFF    every sentinel failed in this round
 *   CHECKING -> KNOWN      ROLE says master: tell the listeners
 *   CHECKING -> ASKING     it is no master, or did not answer: next sentinel
 *   CHECKING -> BACKOFF    ... and that was the round's last
 *   CHECKING -> CHECKING   a +switch-master names another address meanwhile
 *   ASKING   -> CHECKING   (idem)
 *   BACKOFF  -> ASKING     the backoff (with jitter) ran out
 *   BACKOFF  -> CHECKING   a +switch-master came meanwhile
 *   KNOWN    -> ASKING     the master was lost or refused us, or the
 *                          subscription came back (a switch may have gone
 *                          unheard)
 *   KNOWN    -> CHECKING   a +switch-master named a new address
 * ASKING and CHECKING have one connection open (ac) and the step timer
 * armed; BACKOFF has the backoff timer armed. */
enum qw_sentinel_state {
	QW_SENT_ASKING,
	QW_SENT_CHECKING,
	QW_SENT_BACKOFF,
	QW_SENT_KNOWN,
	QW_SENT_NSTATES
};

/* The subscription to +switch-master on one sentinel, moved only by
 * qw_sentinel_sub_move:
 *   DOWN    -> OPENING  connecting, AUTH and SUBSCRIBE sent (tick, when due)
 *   OPENING -> UP       the first confirmation came
 *   OPENING -> DOWN     connecting or AUTH failed, or no confirmation
 *   UP      -> DOWN     lost, or a confirmation of a new SUBSCRIBE overdue
 * DOWN waits for sub_retry_ms, then opens to the next sentinel. */
enum qw_sentinel_sub {
	QW_SUB_DOWN,
	QW_SUB_OPENING,
	QW_SUB_UP,
	QW_SUB_NSTATES
};

struct qw_sentinel_listener {
	qw_sentinel_fn *fn;
	void *arg;
};

struct qw_sentinel {
	struct event_base *base;
	char **addrs;
	size_t n;
	char *name;
	char *password;		/* the sentinels' */
	char *redis_password;	/* the master's, for ROLE */
	enum qw_sentinel_state state;
	size_t first;		/* the sentinel a round asks first */
	size_t tried;		/* sentinels asked in this round */
	size_t cur;		/* the one asked now */
	redisAsyncContext *ac;	/* the step's connection */
	struct event *step_ev;	/* step timeout, or the backoff */
	unsigned backoff_ms;
	char candidate[QW_SENTINEL_ADDR_MAX];
	char master[QW_SENTINEL_ADDR_MAX];	/* confirmed; "" while searching */
	char known[QW_SENTINEL_ADDR_MAX];	/* the last confirmed, for the log */
	char cause[256];	/* why the search started, or the master moved */
	char last_why[200];	/* why the last step failed, for STATUS= */
	char *err;		/* the last error reply, logged once (owned) */
	char where[640];	/* where the master is, and why it moved there */
	char desc[640];		/* that, or what the search is doing */
	struct qw_sentinel_listener *listeners;
	size_t nlisteners;
	enum qw_sentinel_sub sub_state;
	redisAsyncContext *sub;
	size_t sub_idx;
	int64_t sub_retry_ms;	/* DOWN: when to open again */
	int64_t sub_sent_ms, sub_confirmed_ms;
	unsigned sub_backoff_ms;
	struct event *tick_ev;
	unsigned short rnd[3];
};

static void qw_sentinel_ask(struct qw_sentinel *s);
static void qw_sentinel_check(struct qw_sentinel *s, const char *addr);

/* ---- reply parsing ----------------------------------------------------- */

/* An address from a sentinel becomes part of log lines and a connect: only
 * the characters of IP addresses and host names pass. */
static bool
qw_sentinel_plain(const char *s, size_t len)
{
	if (len == 0 || len > 255)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') || strchr(".:-_%", s[i]) != NULL) || s[i] == '\0')
			return false;
	return true;
}

static int
qw_sentinel_join(const char *ip, size_t iplen, const char *port, size_t portlen, char *buf,
    size_t len)
{
	char *end;
	char pbuf[8];
	long p;

	if (!qw_sentinel_plain(ip, iplen) || portlen == 0 || portlen >= sizeof(pbuf))
		return -1;
	memcpy(pbuf, port, portlen);
	pbuf[portlen] = '\0';
	p = strtol(pbuf, &end, 10);
	if (*end != '\0' || p < 1 || p > 65535)
		return -1;
	if ((size_t)snprintf(buf, len, memchr(ip, ':', iplen) ? "[%.*s]:%ld" : "%.*s:%ld",
	    (int)iplen, ip, p) >= len)
		return -1;
	return 0;
}

int
qw_sentinel_parse_addr(const redisReply *reply, char *buf, size_t len)
{
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    reply->element[1]->type != REDIS_REPLY_STRING)
		return -1;
	return qw_sentinel_join(reply->element[0]->str, reply->element[0]->len,
	    reply->element[1]->str, reply->element[1]->len, buf, len);
}

int
qw_sentinel_parse_switch(const redisReply *reply, const char *name, char *buf, size_t len)
{
	const char *w[5], *p, *end;
	size_t wl[5], n = 0;
	const redisReply *msg;

	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(reply->element[0]->str, "message") != 0)
		return 1;
	if ((msg = reply->element[2])->type != REDIS_REPLY_STRING)
		return -1;
	/* Exactly five words, one space apart. */
	for (p = msg->str, end = msg->str + msg->len; p != NULL && n < 5; n++) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		w[n] = p;
		wl[n] = sp ? (size_t)(sp - p) : (size_t)(end - p);
		p = sp ? sp + 1 : NULL;
	}
	if (n != 5 || p != NULL)
		return -1;
	if (wl[0] != strlen(name) || memcmp(w[0], name, wl[0]) != 0)
		return 1;
	return qw_sentinel_join(w[3], wl[3], w[4], wl[4], buf, len);
}

int
qw_sentinel_parse_role(const redisReply *reply)
{
	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
	    reply->element[0]->type != REDIS_REPLY_STRING)
		return -1;
	return strcmp(reply->element[0]->str, "master") == 0 ? 1 : 0;
}

/* ---- connections ------------------------------------------------------- */

/* "IP:PORT" or "[IP6]:PORT" into a host and a port for hiredis. */
static int
qw_sentinel_split(const char *addr, char *host, size_t len, int *port)
{
	const char *colon = strrchr(addr, ':');
	size_t hlen;

	if (colon == NULL)
		return -1;
	hlen = (size_t)(colon - addr);
	if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']')
		addr++, hlen -= 2;
	if (hlen == 0 || hlen >= len)
		return -1;
	memcpy(host, addr, hlen);
	host[hlen] = '\0';
	*port = atoi(colon + 1);
	return 0;
}

/* A connection to ADDR on the loop, with DATA and the callbacks; AUTH
 * PASSWORD first when there is one (FN gets its reply with PRIV "AUTH"). */
static redisAsyncContext *
qw_sentinel_open(struct qw_sentinel *s, const char *addr, redisConnectCallback *on_conn,
    redisDisconnectCallback *on_disc, const char *password, redisCallbackFn *fn)
{
	static char auth[] = "AUTH";
	char host[QW_SENTINEL_ADDR_MAX];
	int port;
	redisAsyncContext *ac;

	if (qw_sentinel_split(addr, host, sizeof(host), &port) < 0 ||
	    (ac = redisAsyncConnect(host, port)) == NULL)
		return NULL;
	if (ac->err) {
		qw_log_debug("sentinel: cannot connect to %s: %s", addr, ac->errstr);
		redisAsyncFree(ac);
		return NULL;
	}
	ac->data = s;
	redisLibeventAttach(ac, s->base);
	redisAsyncSetConnectCallback(ac, on_conn);
	redisAsyncSetDisconnectCallback(ac, on_disc);
	if (password != NULL) {
		const char *argv[] = { "AUTH", password };
		redisAsyncCommandArgv(ac, fn, auth, 2, argv, NULL);
	}
	return ac;
}

/* Lets go of a connection: its callbacks, still to come with NULL, find
 * no data and do nothing. Inside one of its callbacks hiredis frees it on
 * the way out. */
static void
qw_sentinel_close(redisAsyncContext **acp)
{
	redisAsyncContext *ac = *acp;

	if (ac == NULL)
		return;
	*acp = NULL;
	ac->data = NULL;
	redisAsyncFree(ac);
}

/* ---- the search -------------------------------------------------------- */

static const char *const qw_sentinel_names[QW_SENT_NSTATES] = {
	[QW_SENT_ASKING] = "asking", [QW_SENT_CHECKING] = "checking",
	[QW_SENT_BACKOFF] = "backoff", [QW_SENT_KNOWN] = "known",
};

#define B(x) (1u << (x))
static const unsigned qw_sentinel_moves[QW_SENT_NSTATES] = {
	[QW_SENT_ASKING] = B(QW_SENT_ASKING) | B(QW_SENT_CHECKING) | B(QW_SENT_BACKOFF),
	[QW_SENT_CHECKING] = B(QW_SENT_ASKING) | B(QW_SENT_CHECKING) | B(QW_SENT_BACKOFF) |
	    B(QW_SENT_KNOWN),
	[QW_SENT_BACKOFF] = B(QW_SENT_ASKING) | B(QW_SENT_CHECKING),
	[QW_SENT_KNOWN] = B(QW_SENT_ASKING) | B(QW_SENT_CHECKING),
};
#undef B

static void
qw_sentinel_move(struct qw_sentinel *s, enum qw_sentinel_state to)
{
	if (!(qw_sentinel_moves[s->state] & (1u << to))) {
		qw_log_err("sentinel: search cannot move from %s to %s (a bug)",
		    qw_sentinel_names[s->state], qw_sentinel_names[to]);
		assert(!"illegal sentinel move");
		return;
	}
	qw_log_debug("sentinel: %s -> %s", qw_sentinel_names[s->state], qw_sentinel_names[to]);
	s->state = to;
}

static void
qw_sentinel_notify(struct qw_sentinel *s)
{
	for (size_t i = 0; i < s->nlisteners; i++)
		s->listeners[i].fn(s->listeners[i].arg, s->master);
}

static void
qw_sentinel_confirmed(struct qw_sentinel *s)
{
	bool first = s->known[0] == '\0', moved = !first && strcmp(s->known, s->candidate) != 0;

	qw_sentinel_close(&s->ac);
	event_del(s->step_ev);
	qw_sentinel_move(s, QW_SENT_KNOWN);
	snprintf(s->master, sizeof(s->master), "%s", s->candidate);
	s->backoff_ms = QW_SENTINEL_BACKOFF_MIN_MS;
	qw_log_changed(&s->err, NULL);
	if (first || moved) {
		if (moved)
			snprintf(s->where, sizeof(s->where), "master %.100s at %.100s (moved from "
			    "%.100s: %.200s)", s->name, s->master, s->known, s->cause);
		else
			snprintf(s->where, sizeof(s->where), "master %.100s at %.100s", s->name,
			    s->master);
		qw_log_notice("sentinel: %s", s->where);
	} else {
		qw_log_info("sentinel: master %s is still at %s (%s)", s->name, s->master, s->cause);
	}
	snprintf(s->desc, sizeof(s->desc), "%s", s->where);
	snprintf(s->known, sizeof(s->known), "%s", s->master);
	qw_sentinel_notify(s);
}

/* Every sentinel has been tried in this round: wait, then start over. */
static void
qw_sentinel_backoff(struct qw_sentinel *s)
{
	unsigned ms = qw_redis_jitter_ms(s->backoff_ms, erand48(s->rnd));

	qw_sentinel_close(&s->ac);
	qw_sentinel_move(s, QW_SENT_BACKOFF);
	snprintf(s->desc, sizeof(s->desc), "master %.100s (no sentinel of %zu named one that "
	    "answers; last: %.200s)", s->name, s->n, s->last_why);
	qw_log(s->backoff_ms >= QW_SENTINEL_BACKOFF_MAX_MS ? LOG_DEBUG : LOG_WARNING,
	    "sentinel: %s; asking again", s->desc);
	qw_clock_arm(s->step_ev, ms);
	s->backoff_ms = s->backoff_ms * 2 > QW_SENTINEL_BACKOFF_MAX_MS ?
	    QW_SENTINEL_BACKOFF_MAX_MS : s->backoff_ms * 2;
}

/* This step failed (WHY): the next sentinel, or the backoff. */
static void
qw_sentinel_step_failed(struct qw_sentinel *s, const char *why)
{
	const char *who = s->state == QW_SENT_CHECKING ? s->candidate : s->addrs[s->cur];

	qw_log_info("sentinel: %s %s: %s", s->state == QW_SENT_CHECKING ? "master candidate" :
	    "sentinel", who, why);
	snprintf(s->last_why, sizeof(s->last_why), "%.100s: %.90s", who, why);
	qw_sentinel_close(&s->ac);
	qw_sentinel_ask(s);
}

static void
qw_sentinel_step_connected(const redisAsyncContext *ac, int status)
{
	struct qw_sentinel *s = ac->data;
	char why[160];

	if (s == NULL || status == REDIS_OK)
		return;
	/* hiredis frees the context after this callback, and first calls the
	 * commands' callbacks with NULL: they must find no data. */
	snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr[0] ? ac->errstr : "failed");
	((redisAsyncContext *)ac)->data = NULL;
	s->ac = NULL;
	qw_sentinel_step_failed(s, why);
}

static void
qw_sentinel_step_disconnected(const redisAsyncContext *ac, int status)
{
	struct qw_sentinel *s = ac->data;

	if (s == NULL)
		return;
	s->ac = NULL;
	qw_sentinel_step_failed(s, "connection closed");
}

/* An error reply to a step's command WHAT. A master that will not tell
 * its role (an ACL) is taken at its word, as redis.c does; a refusal
 * (LOADING, MASTERDOWN, READONLY) is no master. */
static void
qw_sentinel_step_error(struct qw_sentinel *s, const char *what, const redisReply *reply)
{
	char esc[120], why[200];

	qw_log_escape(esc, sizeof(esc), reply->str, reply->len);
	if (strcmp(what, "ROLE") == 0 && strncmp(reply->str, "LOADING", 7) != 0 &&
	    strncmp(reply->str, "MASTERDOWN", 10) != 0 && strncmp(reply->str, "READONLY", 8) != 0) {
		qw_log_debug("sentinel: ROLE failed on %s, taking it as the master: %s",
		    s->candidate, esc);
		qw_sentinel_confirmed(s);
		return;
	}
	snprintf(why, sizeof(why), "%s failed: %s", what, esc);
	/* A refusal (a wrong password, an unknown command) lasts: said
	 * loudly once, then at info with every retry. */
	if (qw_log_changed(&s->err, why))
		qw_log_err("sentinel: %s %s: %s", s->state == QW_SENT_CHECKING ?
		    "master candidate" : "sentinel", s->state == QW_SENT_CHECKING ?
		    s->candidate : s->addrs[s->cur], why);
	qw_sentinel_step_failed(s, why);
}

/* One reply callback for both steps: PRIV says which command answered. */
static void
qw_sentinel_step_reply(redisAsyncContext *ac, void *rep, void *priv)
{
	struct qw_sentinel *s = ac->data;
	redisReply *reply = rep;
	const char *what = priv;
	char addr[QW_SENTINEL_ADDR_MAX], why[200];

	if (s == NULL)
		return;
	if (reply == NULL) {
		ac->data = NULL;	/* hiredis is closing it */
		s->ac = NULL;
		qw_sentinel_step_failed(s, "connection lost");
	} else if (reply->type == REDIS_REPLY_ERROR) {
		qw_sentinel_step_error(s, what, reply);
	} else if (strcmp(what, "AUTH") == 0) {
		return;
	} else if (s->state == QW_SENT_ASKING) {
		if (qw_sentinel_parse_addr(reply, addr, sizeof(addr)) < 0) {
			qw_sentinel_step_failed(s, reply->type == REDIS_REPLY_NIL ?
			    "does not know the master by that name" : "malformed reply");
			return;
		}
		qw_sentinel_close(&s->ac);
		qw_sentinel_check(s, addr);
	} else if (qw_sentinel_parse_role(reply) == 1) {
		s->first = s->cur;	/* the one that answered right goes first */
		qw_sentinel_confirmed(s);
	} else {
		snprintf(why, sizeof(why), "ROLE says it is no master (sentinel %s named it)",
		    s->addrs[s->cur]);
		qw_sentinel_step_failed(s, why);
	}
}

static void
qw_sentinel_step_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_sentinel *s = arg;
	char why[80];

	if (s->state == QW_SENT_BACKOFF) {
		s->tried = 0;
		qw_sentinel_ask(s);
		return;
	}
	snprintf(why, sizeof(why), "no answer within %dms", QW_SENTINEL_STEP_MS);
	qw_sentinel_step_failed(s, why);
}

/* Asks the round's next sentinel, or backs off when none is left. */
static void
qw_sentinel_ask(struct qw_sentinel *s)
{
	static char ask[] = "SENTINEL get-master-addr-by-name";

	if (s->tried >= s->n) {
		qw_sentinel_backoff(s);
		return;
	}
	s->cur = (s->first + s->tried++) % s->n;
	qw_sentinel_move(s, QW_SENT_ASKING);
	s->ac = qw_sentinel_open(s, s->addrs[s->cur], qw_sentinel_step_connected,
	    qw_sentinel_step_disconnected, s->password, qw_sentinel_step_reply);
	if (s->ac == NULL) {
		qw_sentinel_step_failed(s, "cannot connect");
		return;
	}
	const char *argv[] = { "SENTINEL", "get-master-addr-by-name", s->name };
	redisAsyncCommandArgv(s->ac, qw_sentinel_step_reply, ask, 3, argv, NULL);
	qw_clock_arm(s->step_ev, QW_SENTINEL_STEP_MS);
}

/* Whether ADDR ("IP:PORT", "[IP6]:PORT" or "NAME:PORT") names an IP. */
static bool
qw_sentinel_is_ip(const char *addr)
{
	char host[QW_SENTINEL_ADDR_MAX];
	unsigned char bin[sizeof(struct in6_addr)];
	int port;

	return qw_sentinel_split(addr, host, sizeof(host), &port) == 0 &&
	    (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1);
}

/* Asks ADDR, named as the master, whether it is one. A host name (the
 * sentinels' announce-hostnames) is not looked up here, where hiredis
 * would wait on the name server: it is taken as named, and redis.c, which
 * looks names up without waiting, asks ROLE in its handshake and comes
 * back here if it is no master. */
static void
qw_sentinel_check(struct qw_sentinel *s, const char *addr)
{
	static char role[] = "ROLE";

	snprintf(s->candidate, sizeof(s->candidate), "%s", addr);
	qw_sentinel_move(s, QW_SENT_CHECKING);
	if (!qw_sentinel_is_ip(addr)) {
		qw_sentinel_confirmed(s);
		return;
	}
	s->ac = qw_sentinel_open(s, addr, qw_sentinel_step_connected,
	    qw_sentinel_step_disconnected, s->redis_password, qw_sentinel_step_reply);
	if (s->ac == NULL) {
		qw_sentinel_step_failed(s, "cannot connect");
		return;
	}
	const char *argv[] = { "ROLE" };
	redisAsyncCommandArgv(s->ac, qw_sentinel_step_reply, role, 1, argv, NULL);
	qw_clock_arm(s->step_ev, QW_SENTINEL_STEP_MS);
}

/* Starts a round from KNOWN (CAUSE says why); a search under way goes on. */
static void
qw_sentinel_search(struct qw_sentinel *s, const char *cause)
{
	if (s->state != QW_SENT_KNOWN)
		return;
	snprintf(s->cause, sizeof(s->cause), "%s", cause);
	s->tried = 0;
	qw_sentinel_ask(s);
}

void
qw_sentinel_suspect(struct qw_sentinel *s, const char *addr, const char *why)
{
	char cause[sizeof(s->cause)];

	if (s == NULL || s->master[0] == '\0' || strcmp(addr, s->master) != 0)
		return;
	snprintf(cause, sizeof(cause), "%.100s: %.150s", addr, why);
	qw_log_notice("sentinel: master %s at %s: %s; asking the sentinels", s->name, addr, why);
	s->master[0] = '\0';
	snprintf(s->desc, sizeof(s->desc), "master %.100s (asking the sentinels: %.200s)",
	    s->name, cause);
	qw_sentinel_search(s, cause);
}

/* ---- the subscription -------------------------------------------------- */

static void
qw_sentinel_sub_move(struct qw_sentinel *s, enum qw_sentinel_sub to)
{
	static const char *const names[QW_SUB_NSTATES] = { "down", "opening", "up" };
	static const unsigned moves[QW_SUB_NSTATES] = {
		[QW_SUB_DOWN] = 1u << QW_SUB_OPENING,
		[QW_SUB_OPENING] = 1u << QW_SUB_UP | 1u << QW_SUB_DOWN,
		[QW_SUB_UP] = 1u << QW_SUB_DOWN,
	};

	if (!(moves[s->sub_state] & (1u << to))) {
		qw_log_err("sentinel: subscription cannot move from %s to %s (a bug)",
		    names[s->sub_state], names[to]);
		assert(!"illegal subscription move");
		return;
	}
	qw_log_debug("sentinel: subscription %s -> %s", names[s->sub_state], names[to]);
	s->sub_state = to;
}

static void
qw_sentinel_sub_lost(struct qw_sentinel *s, const char *why)
{
	bool was_up = s->sub_state == QW_SUB_UP;

	qw_sentinel_close(&s->sub);
	if (s->sub_state != QW_SUB_DOWN)
		qw_sentinel_sub_move(s, QW_SUB_DOWN);
	qw_log(was_up ? LOG_WARNING : LOG_INFO, "sentinel: subscription to +switch-master on "
	    "%s lost: %s; trying the next sentinel", s->addrs[s->sub_idx], why);
	s->sub_idx = (s->sub_idx + 1) % s->n;
	s->sub_retry_ms = qw_clock_mono_ms() + qw_redis_jitter_ms(s->sub_backoff_ms,
	    erand48(s->rnd));
	s->sub_backoff_ms = s->sub_backoff_ms * 2 > QW_SENTINEL_BACKOFF_MAX_MS ?
	    QW_SENTINEL_BACKOFF_MAX_MS : s->sub_backoff_ms * 2;
}

static void
qw_sentinel_sub_connected(const redisAsyncContext *ac, int status)
{
	struct qw_sentinel *s = ac->data;

	if (s == NULL || status == REDIS_OK)
		return;
	((redisAsyncContext *)ac)->data = NULL;	/* as in qw_sentinel_step_connected */
	s->sub = NULL;
	qw_sentinel_sub_lost(s, ac->errstr[0] ? ac->errstr : "cannot connect");
}

static void
qw_sentinel_sub_disconnected(const redisAsyncContext *ac, int status)
{
	struct qw_sentinel *s = ac->data;

	if (s == NULL)
		return;
	s->sub = NULL;
	qw_sentinel_sub_lost(s, "connection closed");
}

/* A +switch-master: check the address it names at once (a search under
 * way is cut short, since it may be confirming the old master). */
static void
qw_sentinel_switched(struct qw_sentinel *s, const redisReply *reply)
{
	char addr[QW_SENTINEL_ADDR_MAX];
	int rc = qw_sentinel_parse_switch(reply, s->name, addr, sizeof(addr));

	if (rc == 1)
		return;
	if (rc < 0) {
		qw_log_warn("sentinel: malformed +switch-master message from %s ignored",
		    s->addrs[s->sub_idx]);
		return;
	}
	snprintf(s->cause, sizeof(s->cause), "+switch-master from sentinel %s",
	    s->addrs[s->sub_idx]);
	qw_log_notice("sentinel: %s: master %s is now at %s", s->cause, s->name, addr);
	if (s->state == QW_SENT_BACKOFF)
		event_del(s->step_ev);
	qw_sentinel_close(&s->ac);
	s->tried = 0;
	qw_sentinel_check(s, addr);
}

static void
qw_sentinel_sub_reply(redisAsyncContext *ac, void *rep, void *priv)
{
	struct qw_sentinel *s = ac->data;
	redisReply *reply = rep;

	if (s == NULL)
		return;
	if (reply == NULL) {
		ac->data = NULL;
		s->sub = NULL;
		qw_sentinel_sub_lost(s, "connection lost");
		return;
	}
	if (priv != NULL) {	/* AUTH */
		if (reply->type == REDIS_REPLY_ERROR)
			qw_sentinel_sub_lost(s, "AUTH failed");
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
	    reply->element[0]->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(reply->element[0]->str, "subscribe") != 0) {
		qw_sentinel_switched(s, reply);
		return;
	}
	s->sub_confirmed_ms = qw_clock_mono_ms();
	if (s->sub_state != QW_SUB_OPENING)
		return;
	qw_sentinel_sub_move(s, QW_SUB_UP);
	s->sub_backoff_ms = QW_SENTINEL_BACKOFF_MIN_MS;
	qw_log_info("sentinel: listening for +switch-master on %s", s->addrs[s->sub_idx]);
	/* A switch while nobody listened went unheard: ask once more. */
	qw_sentinel_search(s, "subscribed again");
}

static void
qw_sentinel_sub_send(struct qw_sentinel *s)
{
	const char *argv[] = { "SUBSCRIBE", "+switch-master" };

	redisAsyncCommandArgv(s->sub, qw_sentinel_sub_reply, NULL, 2, argv, NULL);
	s->sub_sent_ms = qw_clock_mono_ms();
}

static void
qw_sentinel_sub_open(struct qw_sentinel *s)
{
	s->sub = qw_sentinel_open(s, s->addrs[s->sub_idx], qw_sentinel_sub_connected,
	    qw_sentinel_sub_disconnected, s->password, qw_sentinel_sub_reply);
	if (s->sub == NULL) {
		qw_sentinel_sub_lost(s, "cannot connect");
		return;
	}
	qw_sentinel_sub_move(s, QW_SUB_OPENING);
	s->sub_confirmed_ms = 0;
	qw_sentinel_sub_send(s);
}

/* Opens the subscription when due; subscribes again now and then, and
 * drops a connection whose confirmation is overdue (a sentinel that froze
 * or vanished without a reset would otherwise be listened to for ever). */
static void
qw_sentinel_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_sentinel *s = arg;
	int64_t now = qw_clock_mono_ms();

	if (s->sub_state == QW_SUB_DOWN) {
		if (now >= s->sub_retry_ms)
			qw_sentinel_sub_open(s);
		return;
	}
	if (s->sub_confirmed_ms < s->sub_sent_ms && now - s->sub_sent_ms > QW_SENTINEL_STEP_MS) {
		qw_sentinel_sub_lost(s, "no answer");
		return;
	}
	if (s->sub_state == QW_SUB_UP && now - s->sub_sent_ms >= QW_SENTINEL_RESUB_MS)
		qw_sentinel_sub_send(s);
}

/* ---- life -------------------------------------------------------------- */

static int
qw_sentinel_set_passwords(struct qw_sentinel *s, const struct qw_conf *conf)
{
	char *pw = conf->sentinel_password ? strdup(conf->sentinel_password) : NULL;
	char *rpw = conf->password ? strdup(conf->password) : NULL;

	if ((conf->sentinel_password && pw == NULL) || (conf->password && rpw == NULL)) {
		free(pw);
		free(rpw);
		return -1;
	}
	if (s->password != NULL)
		explicit_bzero(s->password, strlen(s->password));
	if (s->redis_password != NULL)
		explicit_bzero(s->redis_password, strlen(s->redis_password));
	free(s->password);
	free(s->redis_password);
	s->password = pw;
	s->redis_password = rpw;
	return 0;
}

struct qw_sentinel *
qw_sentinel_new(struct event_base *base, const struct qw_conf *conf)
{
	struct qw_sentinel *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->base = base;
	s->state = QW_SENT_ASKING;
	s->backoff_ms = s->sub_backoff_ms = QW_SENTINEL_BACKOFF_MIN_MS;
	if (getrandom(s->rnd, sizeof(s->rnd), GRND_NONBLOCK) != (ssize_t)sizeof(s->rnd))
		s->rnd[0] = (unsigned short)getpid();
	s->name = strdup(conf->master_name);
	s->addrs = calloc(conf->nsentinels, sizeof(*s->addrs));
	s->step_ev = evtimer_new(base, qw_sentinel_step_cb, s);
	s->tick_ev = event_new(base, -1, EV_PERSIST, qw_sentinel_tick_cb, s);
	if (s->name == NULL || s->addrs == NULL || s->step_ev == NULL || s->tick_ev == NULL ||
	    qw_sentinel_set_passwords(s, conf) < 0)
		goto fail;
	for (; s->n < conf->nsentinels; s->n++)
		if ((s->addrs[s->n] = strdup(conf->sentinels[s->n])) == NULL)
			goto fail;
	snprintf(s->desc, sizeof(s->desc), "master %.100s (asking the sentinels)", s->name);
	snprintf(s->cause, sizeof(s->cause), "at start");
	event_add(s->tick_ev, &(struct timeval){ 0, QW_SENTINEL_TICK_MS * 1000 });
	qw_sentinel_ask(s);
	return s;
fail:
	qw_sentinel_free(s);
	return NULL;
}

void
qw_sentinel_reconfigure(struct qw_sentinel *s, const struct qw_conf *conf)
{
	if (qw_sentinel_set_passwords(s, conf) < 0)
		qw_log_err("sentinel: out of memory taking the new passwords; old ones kept");
}

void
qw_sentinel_free(struct qw_sentinel *s)
{
	if (s == NULL)
		return;
	qw_sentinel_close(&s->ac);
	qw_sentinel_close(&s->sub);
	if (s->step_ev != NULL)
		event_free(s->step_ev);
	if (s->tick_ev != NULL)
		event_free(s->tick_ev);
	for (size_t i = 0; i < s->n; i++)
		free(s->addrs[i]);
	free(s->addrs);
	free(s->name);
	free(s->listeners);
	s->nlisteners = 0;
	free(s->err);
	qw_sentinel_set_passwords(s, &(struct qw_conf){ 0 });
	free(s);
}

const char *
qw_sentinel_master(const struct qw_sentinel *s)
{
	return s->master[0] != '\0' ? s->master : NULL;
}

const char *
qw_sentinel_describe(const struct qw_sentinel *s)
{
	return s->desc;
}

int
qw_sentinel_listen(struct qw_sentinel *s, qw_sentinel_fn *fn, void *arg)
{
	struct qw_sentinel_listener *l = realloc(s->listeners, (s->nlisteners + 1) * sizeof(*l));

	if (l == NULL)
		return -1;
	s->listeners = l;
	l[s->nlisteners++] = (struct qw_sentinel_listener){ fn, arg };
	return 0;
}

void
qw_sentinel_unlisten(struct qw_sentinel *s, qw_sentinel_fn *fn, void *arg)
{
	for (size_t i = 0; i < s->nlisteners; i++)
		if (s->listeners[i].fn == fn && s->listeners[i].arg == arg) {
			s->listeners[i] = s->listeners[--s->nlisteners];
			return;
		}
}
