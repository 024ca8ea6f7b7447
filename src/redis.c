/* redis.c - owns a Redis connection: name lookup, connect, AUTH, SELECT,
 * script loading, reconnect with capped backoff, and the one place that knows
 * hiredis's callback rules (a NULL reply means the connection went away). */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/adapters/libevent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conf.h"
#include "library.h"
#include "log.h"
#include "redis.h"
#include "scripts.h"
#include "sentinel.h"
#include "tally.h"

#define QW_REDIS_BACKOFF_MIN_MS 100
#define QW_REDIS_BACKOFF_MAX_MS 5000

/* A connection's life:
 *   DOWN      -> HANDSHAKE  connecting (after the backoff)
 *   DOWN      -> AWAIT      with Sentinel: no master known yet
 *   AWAIT     -> HANDSHAKE  the sentinels named and confirmed one
 *   HANDSHAKE -> UP         every handshake command went through
 *   HANDSHAKE, UP -> DOWN   lost, refused, dropped; the backoff is armed */
enum qw_redis_state { QW_R_DOWN, QW_R_AWAIT, QW_R_HANDSHAKE, QW_R_UP };

/* Replies that say this server cannot take our writes now, whatever the
 * command: the connection is dropped and made again (after a new lookup),
 * since a failover moves the master to another address or back. */
enum qw_redis_refusal {
	QW_REFUSAL_NONE,
	QW_REFUSAL_READONLY,	/* a replica, or a demoted master (READONLY, ROLE) */
	QW_REFUSAL_MASTERDOWN,	/* a replica that lost its master, serving no stale data */
	QW_REFUSAL_LOADING,	/* still loading its data set */
	QW_REFUSAL_NOT_MASTER,	/* ROLE names something else (a Sentinel) */
};

/* A host name lookup in flight. It can outlive its connection: evdns
 * reports a cancelled lookup later, from the loop, so the connection is
 * reached through R, which a connection freed first sets to NULL. */
struct qw_lookup {
	struct qw_redis *r;
	struct evdns_getaddrinfo_request *req;
};

struct qw_redis {
	/* Where a command is formatted before hiredis copies it (kept: a
	 * large malloc per settle batch cost more than formatting it). */
	char *scratch;
	size_t scratch_cap;
	struct event_base *base;
	struct evdns_base *dns;
	struct qw_sentinel *sentinel;	/* names the address; NULL: conf's address */
	struct qw_lookup *lookup;
	unsigned failures;	/* connects failed in a row: picks the next address */
	redisAsyncContext *ac;
	enum qw_redis_state state;
	char *name;
	char *address;
	char *seeds;	/* a cluster's seed nodes, comma separated, tried in turn; or NULL */
	char *node;	/* a cluster node's address, kept across reloads; NULL: conf's */
	qw_redis_redirect_fn *redirect_fn;	/* a cluster's: MOVED and ASK */
	void *redirect_arg;
	char *password;
	unsigned db;
	bool load_scripts;	/* and the function library */
	char sha[QW_SCRIPT_COUNT][41];
	/* The function library: the version Redis held when we asked (0 none),
	 * and why it could not be loaded, logged once (owned). */
	long long lib_theirs;
	char *lib_err;
	long long client_id;	/* CLIENT ID, where Redis sends this connection's tracking */
	char client_name[128];
	unsigned backoff_ms;
	struct event *retry_ev;
	int64_t retry_ms;	/* when the backoff after the last loss ends */
	/* The watch: commands sent and answered on this connection, how many
	 * were answered at the last look, and since when nothing moved. */
	struct event *watch_ev;
	uint64_t sent, answered, seen;
	int64_t still_ms;
	int64_t watched_ms;	/* when the watch last ran */
	int64_t patience_ms;
	char drop_why[200];	/* why we dropped the connection, for the log */
	enum qw_redis_refusal refusal;	/* set when we drop it for a refusal */
	enum qw_redis_refusal down_refusal;	/* why it is down, for STATUS= and /health */
	unsigned short rnd[3];	/* jitter of the reconnect backoff */
	qw_redis_state_fn *state_fn;
	void *arg;
	char errbuf[160];
	/* A subscription (qw_redis_subscribe): the connection then takes no
	 * other command, and subscribes again every QW_REDIS_LONGEST_WAIT_MS,
	 * whose confirmation is the answer the watch waits for. */
	char *sub_channel;
	qw_redis_reply_fn *sub_fn;
	void *sub_priv;
	bool subscribed;
	int64_t sub_ms;		/* when it last (re)subscribed */
	struct qw_tally_hist cmd_hist;	/* qw_redis_cmd's round trips, for /metrics */
};

static void qw_redis_connect(struct qw_redis *r);
static int qw_redis_send_subscribe(struct qw_redis *r);

static void
qw_redis_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	qw_redis_connect(arg);
}

/* Between half of BACKOFF_MS and all of it, as R (in [0, 1)) falls: after
 * a Redis restart, many instances spread their reconnects instead of
 * coming back in lockstep at each step of the backoff. */
unsigned
qw_redis_jitter_ms(unsigned backoff_ms, double r)
{
	unsigned half = backoff_ms / 2;

	return half + (unsigned)(r * (double)(backoff_ms - half));
}

/* What an error reply says about the server, by its code (the first word;
 * a script's error keeps the code of the command that failed in it). */
static enum qw_redis_refusal
qw_redis_refusal_of(const redisReply *reply)
{
	static const struct {
		const char *code;
		enum qw_redis_refusal refusal;
	} codes[] = {
		{ "READONLY ", QW_REFUSAL_READONLY },
		{ "MASTERDOWN ", QW_REFUSAL_MASTERDOWN },
		{ "LOADING ", QW_REFUSAL_LOADING },
	};

	if (reply == NULL || reply->type != REDIS_REPLY_ERROR)
		return QW_REFUSAL_NONE;
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (reply->len >= strlen(codes[i].code) &&
		    memcmp(reply->str, codes[i].code, strlen(codes[i].code)) == 0)
			return codes[i].refusal;
	return QW_REFUSAL_NONE;
}

static const char *
qw_redis_refusal_text(enum qw_redis_refusal refusal)
{
	switch (refusal) {
	case QW_REFUSAL_READONLY: return "is a read-only replica";
	case QW_REFUSAL_MASTERDOWN: return "is a replica whose master is down";
	case QW_REFUSAL_LOADING: return "is loading its data";
	case QW_REFUSAL_NOT_MASTER: return "is not a Redis master";
	case QW_REFUSAL_NONE: break;
	}
	return NULL;
}

/* Drops a connection this server cannot serve us on (DETAIL: its reply).
 * Replies still outstanding arrive first, then the disconnect plans a
 * reconnect with the usual backoff. */
static void
qw_redis_refused(struct qw_redis *r, redisAsyncContext *ac, enum qw_redis_refusal refusal,
    const char *detail, size_t len)
{
	if (ac->c.flags & REDIS_DISCONNECTING)
		return;
	r->refusal = refusal;
	snprintf(r->drop_why, sizeof(r->drop_why), "it %s (%.*s)", qw_redis_refusal_text(refusal),
	    (int)(len > 80 ? 80 : len), detail);
	redisAsyncDisconnect(ac);
}

/* Marks the connection lost and plans the next attempt. */
static void
qw_redis_lost(struct qw_redis *r, const char *why)
{
	struct timeval tv;
	bool was_up = r->state == QW_R_UP;

	unsigned delay_ms;

	r->ac = NULL;
	r->state = QW_R_DOWN;
	r->subscribed = false;
	r->sent = r->answered = r->seen = 0;
	r->down_refusal = r->refusal;
	r->refusal = QW_REFUSAL_NONE;
	if (was_up) {
		qw_log_warn("redis %s: connection to %s lost: %s; reconnecting", r->name,
		    r->address, why);
	} else {
		qw_log(r->backoff_ms >= QW_REDIS_BACKOFF_MAX_MS ? LOG_DEBUG : LOG_WARNING,
		    "redis %s: cannot connect to %s: %s (retrying)", r->name, r->address, why);
	}
	/* A server that refused us is not the one to ask again first: with a
	 * name that has several addresses, the next one is tried. */
	if (!was_up || r->down_refusal != QW_REFUSAL_NONE)
		r->failures++;
	r->drop_why[0] = '\0';
	/* Ours or not, the master may have gone: the sentinels are asked
	 * again unless they named another one meanwhile. */
	if (r->sentinel != NULL)
		qw_sentinel_suspect(r->sentinel, r->address, why);
	delay_ms = qw_redis_jitter_ms(r->backoff_ms, erand48(r->rnd));
	tv.tv_sec = delay_ms / 1000;
	tv.tv_usec = (delay_ms % 1000) * 1000;
	evtimer_add(r->retry_ev, &tv);
	r->retry_ms = qw_clock_mono_ms() + delay_ms;
	r->backoff_ms = r->backoff_ms * 2 > QW_REDIS_BACKOFF_MAX_MS ?
	    QW_REDIS_BACKOFF_MAX_MS : r->backoff_ms * 2;
	if (was_up && r->state_fn != NULL)
		r->state_fn(r, false, r->arg);
}

static void
qw_redis_on_connect(const redisAsyncContext *ac, int status)
{
	struct qw_redis *r = ac->data;

	if (r == NULL || status == REDIS_OK)
		return;
	/* hiredis frees the context after this callback and calls no disconnect. */
	qw_redis_lost(r, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void
qw_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct qw_redis *r = ac->data;

	if (r == NULL)
		return;
	qw_redis_lost(r, r->drop_why[0] ? r->drop_why : status == REDIS_OK ? "closed" :
	    ac->errstr[0] ? ac->errstr : "connection error");
}

const char *
qw_redis_errstr(struct qw_redis *r, const redisReply *reply)
{
	if (reply == NULL || r == NULL)
		return "connection lost";
	if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(r->errbuf, sizeof(r->errbuf), "%.*s", (int)reply->len, reply->str);
		return r->errbuf;
	}
	return "unexpected reply";
}

static void qw_redis_handshake_step(redisAsyncContext *ac, void *rep, void *priv);

/* Redis before 7.0 refuses a script with a shebang (the lease scripts' Redis
 * 7 flags): load it again without its first line. Returns -1 when WHAT is
 * not such a script. Its hash may come after the connection is up: a
 * script call fails until then, and the caller's timer tries again. */
static int
qw_redis_load_plain(struct qw_redis *r, const char *what)
{
	/* Same text as the handshake's, but ours: a second refusal is final. */
	static char plain[QW_SCRIPT_COUNT][32];

	for (int i = 0; i < QW_SCRIPT_COUNT; i++) {
		const char *body = strchr(qw_scripts[i], '\n');
		if (what == plain[i] || strncmp(what, "SCRIPT LOAD ", 12) != 0 ||
		    strcmp(what + 12, qw_script_names[i]) != 0 ||
		    strncmp(qw_scripts[i], "#!", 2) != 0 || body == NULL)
			continue;
		const char *argv[] = { "SCRIPT", "LOAD", body + 1 };
		snprintf(plain[i], sizeof(plain[i]), "%s", what);
		qw_log_notice("redis %s: Redis refused the %s script's flags (before 7.0?); loading it "
		    "without them", r->name, qw_script_names[i]);
		return redisAsyncCommandArgv(r->ac, qw_redis_handshake_step, plain[i], 3, argv,
		    NULL) == REDIS_OK ? 0 : -1;
	}
	return -1;
}

/* A failed handshake step closes the connection; the retry timer reopens it. */
static void
qw_redis_handshake_step(redisAsyncContext *ac, void *rep, void *priv)
{
	struct qw_redis *r = ac->data;
	redisReply *reply = rep;
	const char *what = priv;

	if (r == NULL || reply == NULL || (ac->c.flags & REDIS_DISCONNECTING))
		return;
	if (qw_redis_refusal_of(reply) != QW_REFUSAL_NONE) {
		qw_redis_refused(r, ac, qw_redis_refusal_of(reply), reply->str, reply->len);
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		if (qw_redis_load_plain(r, what) == 0)
			return;
		qw_log_err("redis %s: %s failed: %.*s", r->name, what, (int)reply->len, reply->str);
		redisAsyncDisconnect(ac);
		return;
	}
	if (strcmp(what, "CLIENT ID") == 0 && reply->type == REDIS_REPLY_INTEGER)
		r->client_id = reply->integer;
	if (strncmp(what, "SCRIPT LOAD ", 12) == 0) {
		for (int i = 0; i < QW_SCRIPT_COUNT; i++)
			if (strcmp(what + 12, qw_script_names[i]) == 0 &&
			    reply->type == REDIS_REPLY_STRING && reply->len == 40)
				memcpy(r->sha[i], reply->str, 41);
	}
}

/* FUNCTION LOAD's reply. The library is for producers: a Redis that will
 * not take it (before 7.0, an ACL, a renamed command) costs qw_enqueue,
 * never the jobs, so the connection stays; the reason is logged once. */
static void
qw_redis_library_loaded(redisAsyncContext *ac, void *rep, void *priv)
{
	struct qw_redis *r = ac->data;
	redisReply *reply = rep;
	char held[40] = "none";

	if (r == NULL || reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		char why[160];
		qw_library_error(reply, why, sizeof(why));
		qw_log(qw_log_changed(&r->lib_err, why) ? LOG_WARNING : LOG_DEBUG,
		    "redis %s: cannot load the function library %s, so producers cannot use FCALL "
		    "qw_enqueue (jobs run as usual): %s", r->name, QW_LIBRARY_NAME, why);
		return;
	}
	if (r->lib_theirs != 0)
		snprintf(held, sizeof(held), "version %lld", r->lib_theirs);
	qw_log(qw_log_changed(&r->lib_err, NULL) || r->lib_theirs != QW_LIBRARY_VERSION ?
	    LOG_NOTICE : LOG_DEBUG, "redis %s: loaded the function library %s version %d for "
	    "FCALL qw_enqueue (Redis held %s)", r->name, QW_LIBRARY_NAME, QW_LIBRARY_VERSION, held);
}

/* The version of the library Redis holds: ours goes in unless it is newer
 * (library.c). Asked in the handshake, so that the load is sent before
 * anything that follows the connection coming up, and done before READY. */
static void
qw_redis_library_probed(redisAsyncContext *ac, void *rep, void *priv)
{
	struct qw_redis *r = ac->data;

	if (r == NULL || rep == NULL || (ac->c.flags & REDIS_DISCONNECTING))
		return;
	if (qw_library_verdict(rep, &r->lib_theirs) == QW_LIBRARY_KEEP) {
		char why[96];
		snprintf(why, sizeof(why), "version %lld", r->lib_theirs);
		if (qw_log_changed(&r->lib_err, why))
			qw_log_notice("redis %s: Redis holds the function library %s version %lld, newer "
			    "than this qworkerd's %d: left as it is", r->name, QW_LIBRARY_NAME,
			    r->lib_theirs, QW_LIBRARY_VERSION);
		return;
	}
	/* hiredis takes argv without the second const, and only reads it. */
	redisAsyncCommandArgv(ac, qw_redis_library_loaded, NULL, 4,
	    (const char **)qw_library_load, NULL);
}

/* Only a master counts as up: a daemon must never take jobs from a replica
 * (its writes fail, and a replica's data lags). A server that does not let
 * us ask (ACLs) is taken at its word: READONLY on the first write still
 * drops the connection. */
static void
qw_redis_role(redisAsyncContext *ac, void *rep, void *priv)
{
	struct qw_redis *r = ac->data;
	redisReply *reply = rep, *role;

	if (r == NULL || reply == NULL || (ac->c.flags & REDIS_DISCONNECTING))
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		if (qw_redis_refusal_of(reply) != QW_REFUSAL_NONE)
			qw_redis_refused(r, ac, qw_redis_refusal_of(reply), reply->str, reply->len);
		else
			qw_log_debug("redis %s: ROLE failed, taking %s as a master: %.*s", r->name,
			    r->address, (int)reply->len, reply->str);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
	    (role = reply->element[0])->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(role->str, "master") == 0)
		return;
	qw_redis_refused(r, ac, strcmp(role->str, "slave") == 0 ||
	    strcmp(role->str, "replica") == 0 ? QW_REFUSAL_READONLY : QW_REFUSAL_NOT_MASTER,
	    role->str, role->len);
}

static void
qw_redis_handshake_done(redisAsyncContext *ac, void *rep, void *priv)
{
	struct qw_redis *r = ac->data;
	redisReply *reply = rep;

	if (r == NULL || reply == NULL || r->state != QW_R_HANDSHAKE ||
	    (ac->c.flags & REDIS_DISCONNECTING))
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		qw_redis_handshake_step(ac, rep, "PING");
		return;
	}
	if (r->backoff_ms > QW_REDIS_BACKOFF_MIN_MS)
		qw_log_notice("redis %s: connected to %s", r->name, r->address);
	else
		qw_log_debug("redis %s: connected to %s", r->name, r->address);
	r->state = QW_R_UP;
	r->down_refusal = QW_REFUSAL_NONE;
	r->backoff_ms = QW_REDIS_BACKOFF_MIN_MS;
	r->failures = 0;
	r->still_ms = qw_clock_mono_ms();	/* a slow handshake is not the commands' fault */
	if (r->state_fn != NULL)
		r->state_fn(r, true, r->arg);
}

/* Queues AUTH, SELECT, SCRIPT LOAD and the function library's version
 * probe; hiredis sends them once connected and
 * Redis answers in order, so PING's reply means all of them went through. */
static void
qw_redis_handshake(struct qw_redis *r)
{
	static char auth[] = "AUTH", select_[] = "SELECT", ping[] = "PING", cid[] = "CLIENT ID";
	char dbuf[16];

	if (r->password != NULL) {
		const char *argv[] = { "AUTH", r->password };
		redisAsyncCommandArgv(r->ac, qw_redis_handshake_step, auth, 2, argv, NULL);
	}
	if (r->db != 0) {
		snprintf(dbuf, sizeof(dbuf), "%u", r->db);
		const char *argv[] = { "SELECT", dbuf };
		redisAsyncCommandArgv(r->ac, qw_redis_handshake_step, select_, 2, argv, NULL);
	}
	const char *rolev[] = { "ROLE" };
	redisAsyncCommandArgv(r->ac, qw_redis_role, NULL, 1, rolev, NULL);
	if (r->load_scripts) {
		static char what[QW_SCRIPT_COUNT][32];
		for (int i = 0; i < QW_SCRIPT_COUNT; i++) {
			const char *argv[] = { "SCRIPT", "LOAD", qw_scripts[i] };
			snprintf(what[i], sizeof(what[i]), "SCRIPT LOAD %s", qw_script_names[i]);
			redisAsyncCommandArgv(r->ac, qw_redis_handshake_step, what[i], 3, argv, NULL);
		}
		redisAsyncCommandArgv(r->ac, qw_redis_library_probed, NULL, 3,
		    (const char **)qw_library_probe, NULL);
	}
	/* A name for CLIENT LIST: qworkerd/INSTANCE/CONNECTION. */
	const char *setname[] = { "CLIENT", "SETNAME", r->client_name };
	static char setname_what[] = "CLIENT SETNAME";
	redisAsyncCommandArgv(r->ac, qw_redis_handshake_step, setname_what, 3, setname, NULL);
	const char *idv[] = { "CLIENT", "ID" };
	redisAsyncCommandArgv(r->ac, qw_redis_handshake_step, cid, 2, idv, NULL);
	const char *argv[] = { "PING" };
	redisAsyncCommandArgv(r->ac, qw_redis_handshake_done, ping, 1, argv, NULL);
}

/* Takes over a context hiredis has begun to connect. */
static void
qw_redis_open(struct qw_redis *r, redisAsyncContext *ac)
{
	if (ac == NULL) {
		qw_redis_lost(r, strerror(ENOMEM));
		return;
	}
	if (ac->err) {
		char why[160];
		snprintf(why, sizeof(why), "%s", ac->errstr);
		redisAsyncFree(ac);
		qw_redis_lost(r, why);
		return;
	}
	/* Handlers never inherit it: exec handlers close what they inherit,
	 * but a plugin that starts a process of its own would not. */
	if (fcntl(ac->c.fd, F_SETFD, FD_CLOEXEC) < 0)
		qw_log_warn("redis %s: cannot set close-on-exec: %s", r->name, strerror(errno));
	ac->data = r;
	r->ac = ac;
	r->state = QW_R_HANDSHAKE;
	r->still_ms = qw_clock_mono_ms();
	/* Notice a peer that vanished without a reset (TCP only). */
	if (strncmp(r->address, "unix:", 5) != 0)
		redisEnableKeepAlive(&ac->c);
	redisLibeventAttach(ac, r->base);
	redisAsyncSetConnectCallback(ac, qw_redis_on_connect);
	redisAsyncSetDisconnectCallback(ac, qw_redis_on_disconnect);
	qw_redis_handshake(r);
}

/* The Nth address of RES, IPv4 ones first as hiredis orders them, as text. */
static int
qw_redis_pick(const struct evutil_addrinfo *res, unsigned n, char *ip, size_t len)
{
	static const int families[] = { AF_INET, AF_INET6 };
	const struct evutil_addrinfo *ai;
	unsigned count = 0;

	for (ai = res; ai != NULL; ai = ai->ai_next)
		count += ai->ai_family == AF_INET || ai->ai_family == AF_INET6;
	if (count == 0)
		return -1;
	n %= count;
	for (size_t f = 0; f < 2; f++)
		for (ai = res; ai != NULL; ai = ai->ai_next) {
			if (ai->ai_family != families[f] || n-- != 0)
				continue;
			const void *a = families[f] == AF_INET ?
			    (const void *)&((const struct sockaddr_in *)ai->ai_addr)->sin_addr :
			    (const void *)&((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
			return evutil_inet_ntop(families[f], a, ip, len) == NULL ? -1 : 0;
		}
	return -1;
}

static void
qw_redis_resolved(int err, struct evutil_addrinfo *res, void *arg)
{
	struct qw_lookup *lk = arg;
	struct qw_redis *r = lk->r;
	char ip[INET6_ADDRSTRLEN], why[200];
	int picked = -1;

	free(lk);
	if (r != NULL && err == 0)
		picked = qw_redis_pick(res, r->failures, ip, sizeof(ip));
	if (res != NULL)
		evutil_freeaddrinfo(res);
	if (r == NULL)
		return;
	r->lookup = NULL;
	if (err != 0 || picked < 0) {
		snprintf(why, sizeof(why), "cannot look up the host: %s",
		    err != 0 ? evutil_gai_strerror(err) : "no IPv4 or IPv6 address");
		qw_redis_lost(r, why);
		return;
	}
	qw_log_debug("redis %s: %s is %s", r->name, r->address, ip);
	qw_redis_open(r, redisAsyncConnect(ip, atoi(strrchr(r->address, ':') + 1)));
}

/* Host names are looked up with evdns, not getaddrinfo: a slow or dead
 * nameserver must not stop the loop, and with it every job's timers and
 * the watchdog. Addresses (and /etc/hosts names) answer at once. */
static void
qw_redis_resolve(struct qw_redis *r, const char *host)
{
	struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
		.ai_protocol = IPPROTO_TCP };
	struct qw_lookup *lk = calloc(1, sizeof(*lk));
	struct evdns_getaddrinfo_request *req;

	if (lk == NULL) {
		qw_redis_lost(r, strerror(ENOMEM));
		return;
	}
	lk->r = r;
	r->lookup = lk;
	req = evdns_getaddrinfo(r->dns, host, NULL, &hints, qw_redis_resolved, lk);
	/* NULL: an answer at hand came already, and freed LK. */
	if (req != NULL)
		lk->req = req;
}

/* With Sentinel, the address is the master the sentinels confirmed last;
 * none yet: wait for them (qw_redis_master_cb). Returns -1 then. */
static int
qw_redis_follow(struct qw_redis *r)
{
	const char *master;
	char *addr;

	if (r->sentinel == NULL)
		return 0;
	if ((master = qw_sentinel_master(r->sentinel)) == NULL ||
	    (addr = strdup(master)) == NULL) {
		r->state = QW_R_AWAIT;
		return -1;
	}
	free(r->address);
	r->address = addr;
	return 0;
}

/* With seed nodes, the address is the next of them after a failure: any
 * node of a cluster answers CLUSTER SLOTS. */
static int
qw_redis_next_seed(struct qw_redis *r)
{
	size_t n = 1, pick;
	const char *p;
	char *addr;

	if (r->seeds == NULL)
		return 0;
	for (p = r->seeds; (p = strchr(p, ',')) != NULL; p++)
		n++;
	pick = r->failures % n;
	for (p = r->seeds; pick > 0; pick--)
		p = strchr(p, ',') + 1;
	p += strspn(p, " \t");
	if ((addr = strndup(p, strcspn(p, ", \t"))) == NULL) {
		qw_redis_lost(r, strerror(ENOMEM));
		return -1;
	}
	free(r->address);
	r->address = addr;
	return 0;
}

static void
qw_redis_connect(struct qw_redis *r)
{
	char host[256];
	unsigned char bin[sizeof(struct in6_addr)];
	const char *colon, *h;
	size_t hlen;

	if (qw_redis_follow(r) < 0 || qw_redis_next_seed(r) < 0)
		return;
	colon = strrchr(r->address, ':');
	h = r->address;
	hlen = (size_t)(colon - r->address);
	if (strncmp(r->address, "unix:", 5) == 0) {
		qw_redis_open(r, redisAsyncConnectUnix(r->address + 5));
		return;
	}
	if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']')
		h++, hlen -= 2;
	snprintf(host, sizeof(host), "%.*s", (int)hlen, h);
	if (evutil_inet_pton(AF_INET, host, bin) == 1 || evutil_inet_pton(AF_INET6, host, bin) == 1)
		qw_redis_open(r, redisAsyncConnect(host, atoi(colon + 1)));
	else
		qw_redis_resolve(r, host);
}

/* Forgets a lookup in flight; its answer, when it comes, goes nowhere. */
static void
qw_redis_forget_lookup(struct qw_redis *r)
{
	struct qw_lookup *lk = r->lookup;

	if (lk == NULL)
		return;
	r->lookup = NULL;
	lk->r = NULL;
	evdns_getaddrinfo_cancel(lk->req);
}

/* Gives up on a connection that stopped answering. Once up, it goes as a
 * lost connection goes (outstanding commands get NULL), so the callers'
 * one path for "may or may not have run" covers it. */
static void
qw_redis_drop(struct qw_redis *r, int64_t still_ms)
{
	redisAsyncContext *ac = r->ac;

	snprintf(r->drop_why, sizeof(r->drop_why), "no reply for %llds%s",
	    (long long)(still_ms / 1000), r->state == QW_R_UP ? "" : " while connecting");
	if (r->state == QW_R_UP) {
		redisAsyncFree(ac);	/* calls qw_redis_on_disconnect */
		return;
	}
	/* Connecting: no command of a caller waits, and hiredis calls no
	 * disconnect callback for a socket that never connected. */
	ac->data = NULL;
	redisAsyncFree(ac);
	qw_redis_lost(r, r->drop_why);
}

/* Once a second. TCP alone can wait a quarter of an hour for a peer that
 * vanished with commands unacknowledged (a failover that moved Redis, a
 * network that drops everything): a connection whose commands, or whose
 * connecting, have had no answer for longer than Redis may pause is
 * dropped and opened again. */
static void
qw_redis_watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_redis *r = arg;
	int64_t now = qw_clock_mono_ms();
	bool held_up = now - r->watched_ms > 2000;
	int unread = 0;

	/* The loop itself may have been held up (SIGSTOP, a busy machine)
	 * rather than Redis: a late watch, or bytes not yet read, count as
	 * an answer. */
	r->watched_ms = now;
	if (r->subscribed && r->state == QW_R_UP && now - r->sub_ms >= QW_REDIS_LONGEST_WAIT_MS)
		qw_redis_send_subscribe(r);
	if (r->ac != NULL)
		(void)ioctl(r->ac->c.fd, FIONREAD, &unread);
	if (r->state == QW_R_DOWN || r->state == QW_R_AWAIT || held_up || unread > 0 ||
	    (r->state == QW_R_UP && (r->answered != r->seen || r->sent == r->answered))) {
		r->seen = r->answered;
		r->still_ms = now;
		return;
	}
	if (now - r->still_ms > r->patience_ms)
		qw_redis_drop(r, now - r->still_ms);
}

static int
qw_redis_set_target(struct qw_redis *r, const struct qw_conf *conf)
{
	char *addr = strdup(r->node != NULL ? r->node :
	    r->sentinel != NULL && r->address != NULL ? r->address : conf->redis_address);
	char *pw = conf->password ? strdup(conf->password) : NULL;

	if (addr == NULL || (conf->password && pw == NULL)) {
		free(addr);
		free(pw);
		return -1;
	}
	free(r->seeds);
	r->seeds = NULL;
	if (strchr(addr, ',') != NULL && (r->seeds = strdup(addr)) == NULL) {
		free(addr);
		free(pw);
		return -1;
	}
	free(r->address);
	free(r->password);
	r->address = addr;
	r->password = pw;
	r->db = conf->db;
	return 0;
}

/* Leaves the server we are connected (or connecting) to, for another. */
static void
qw_redis_disconnect(struct qw_redis *r)
{
	redisAsyncContext *ac = r->ac;

	if (r->state == QW_R_UP) {
		redisAsyncDisconnect(ac);	/* outstanding replies still arrive */
		return;
	}
	/* Still connecting, with no command of a caller waiting: go to the
	 * new one now. */
	ac->data = NULL;
	r->ac = NULL;
	r->state = QW_R_DOWN;
	redisAsyncFree(ac);
	qw_redis_connect(r);
}

/* The sentinels confirmed MASTER: a connection waiting for it, or waiting
 * out its backoff, connects now; one open to another address is dropped
 * (its outstanding commands end as with any lost connection) and made
 * again to MASTER. */
static void
qw_redis_master_cb(void *arg, const char *master)
{
	struct qw_redis *r = arg;
	bool elsewhere = strcmp(r->address, master) != 0;
	int64_t wait_ms = r->retry_ms - qw_clock_mono_ms();

	switch (r->state) {
	case QW_R_AWAIT:
		/* The backoff still holds for the same server: one that
		 * refuses us (a wrong password) must not be asked in a loop. */
		r->state = QW_R_DOWN;
		if (!elsewhere && wait_ms > 0)
			qw_clock_arm(r->retry_ev, (uint64_t)wait_ms);
		else
			qw_redis_connect(r);
		return;
	case QW_R_DOWN:
		if (!elsewhere)
			return;		/* its backoff, or its lookup, goes on */
		qw_redis_forget_lookup(r);
		evtimer_del(r->retry_ev);
		qw_redis_connect(r);
		return;
	case QW_R_HANDSHAKE:
	case QW_R_UP:
		if (!elsewhere)
			return;
		/* At once, not after the replies outstanding: the old master
		 * may hold them for long (a WAIT no replica will answer), and
		 * what it still writes a failover may lose anyway. Callers take
		 * a NULL reply as "may or may not have run". */
		snprintf(r->drop_why, sizeof(r->drop_why), "the master moved to %s", master);
		if (r->state == QW_R_UP) {
			redisAsyncFree(r->ac);	/* calls qw_redis_on_disconnect */
			evtimer_del(r->retry_ev);
			qw_redis_connect(r);
		} else {
			qw_redis_disconnect(r);
		}
		return;
	}
}

static struct qw_redis *
qw_redis_create(struct event_base *base, struct evdns_base *dns, struct qw_sentinel *sentinel,
    const struct qw_conf *conf, const char *node, const char *name, bool load_scripts,
    qw_redis_state_fn *state_fn, void *arg)
{
	struct qw_redis *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	if (node != NULL && (r->node = strdup(node)) == NULL) {
		free(r);
		return NULL;
	}
	r->base = base;
	r->dns = dns;
	r->sentinel = sentinel;
	r->load_scripts = load_scripts;
	r->state_fn = state_fn;
	r->arg = arg;
	r->backoff_ms = QW_REDIS_BACKOFF_MIN_MS;
	/* Seeded apart in every process, so instances do not share a jitter. */
	if (getrandom(r->rnd, sizeof(r->rnd), GRND_NONBLOCK) != (ssize_t)sizeof(r->rnd)) {
		r->rnd[0] = (unsigned short)getpid();
		r->rnd[1] = (unsigned short)(qw_clock_mono_ms() & 0xffff);
	}
	r->name = strdup(name);
	snprintf(r->client_name, sizeof(r->client_name), "qworkerd/%s/%s", conf->instance, name);
	for (char *c = r->client_name; *c; c++)
		if (*c <= ' ' || *c > '~')
			*c = '_';
	r->patience_ms = (int64_t)(conf->lease_timeout_ms + QW_REDIS_LONGEST_WAIT_MS);
	r->retry_ev = evtimer_new(base, qw_redis_retry_cb, r);
	r->watch_ev = event_new(base, -1, EV_PERSIST, qw_redis_watch_cb, r);
	if (r->name == NULL || r->retry_ev == NULL || r->watch_ev == NULL ||
	    event_add(r->watch_ev, &(struct timeval){ 1, 0 }) < 0 ||
	    qw_redis_set_target(r, conf) < 0 ||
	    (sentinel != NULL && qw_sentinel_listen(sentinel, qw_redis_master_cb, r) < 0)) {
		qw_redis_free(r);
		return NULL;
	}
	qw_redis_connect(r);
	return r;
}

struct qw_redis *
qw_redis_new(struct event_base *base, struct evdns_base *dns, struct qw_sentinel *sentinel,
    const struct qw_conf *conf, const char *name, bool load_scripts,
    qw_redis_state_fn *state_fn, void *arg)
{
	return qw_redis_create(base, dns, sentinel, conf, NULL, name, load_scripts, state_fn, arg);
}

struct qw_redis *
qw_redis_new_node(struct event_base *base, struct evdns_base *dns, const struct qw_conf *conf,
    const char *address, const char *name, bool load_scripts, qw_redis_state_fn *state_fn,
    void *arg)
{
	return qw_redis_create(base, dns, NULL, conf, address, name, load_scripts, state_fn, arg);
}

void
qw_redis_set_redirect(struct qw_redis *r, qw_redis_redirect_fn *fn, void *arg)
{
	r->redirect_fn = fn;
	r->redirect_arg = arg;
}

void
qw_redis_reconfigure(struct qw_redis *r, const struct qw_conf *conf)
{
	bool same;

	r->patience_ms = (int64_t)(conf->lease_timeout_ms + QW_REDIS_LONGEST_WAIT_MS);
	same = (r->sentinel != NULL || r->node != NULL ||
	    strcmp(r->seeds != NULL ? r->seeds : r->address, conf->redis_address) == 0) &&
	    r->db == conf->db &&
	    ((r->password == NULL && conf->password == NULL) ||
	    (r->password && conf->password && strcmp(r->password, conf->password) == 0));

	if (same || qw_redis_set_target(r, conf) < 0)
		return;
	qw_log_notice("redis %s: reconnecting to %s", r->name, r->address);
	r->failures = 0;
	if (r->ac != NULL) {
		qw_redis_disconnect(r);
	} else if (r->lookup != NULL) {
		/* Looking up the old host: look up the new one instead. */
		qw_redis_forget_lookup(r);
		qw_redis_connect(r);
	}
}

void
qw_redis_free(struct qw_redis *r)
{
	if (r == NULL)
		return;
	qw_redis_forget_lookup(r);
	if (r->sentinel != NULL)
		qw_sentinel_unlisten(r->sentinel, qw_redis_master_cb, r);
	if (r->ac != NULL) {
		redisAsyncContext *ac = r->ac;
		/* Detach first: the callbacks hiredis runs while freeing must not
		 * plan a reconnect for a connection we are closing on purpose. */
		ac->data = NULL;
		r->ac = NULL;
		redisAsyncFree(ac);
	}
	if (r->retry_ev != NULL)
		event_free(r->retry_ev);
	if (r->watch_ev != NULL)
		event_free(r->watch_ev);
	free(r->sub_channel);
	free(r->lib_err);
	free(r->name);
	free(r->address);
	free(r->seeds);
	free(r->node);
	if (r->password != NULL)
		explicit_bzero(r->password, strlen(r->password));
	free(r->password);
	free(r->scratch);
	free(r);
}

const char *
qw_redis_target(const struct qw_redis *r)
{
	return r->sentinel != NULL ? qw_sentinel_describe(r->sentinel) : r->address;
}

const char *
qw_redis_master_info(const struct qw_redis *r)
{
	return r->sentinel != NULL ? qw_sentinel_describe(r->sentinel) : NULL;
}

long long
qw_redis_client_id(const struct qw_redis *r)
{
	return r->state == QW_R_UP ? r->client_id : 0;
}

const char *
qw_redis_down_reason(const struct qw_redis *r)
{
	return r->state == QW_R_UP ? NULL : qw_redis_refusal_text(r->down_refusal);
}

bool
qw_redis_is_up(const struct qw_redis *r)
{
	return r->state == QW_R_UP;
}

/* Trampoline: hiredis passes the context, our callers want the qw_redis. */
struct qw_redis_call {
	struct qw_redis *r;
	qw_redis_reply_fn *fn;
	void *priv;
	uint64_t sent_us;	/* monotonic: when it was queued */
	/* In a cluster, the command as sent, for an ASK redirection to
	 * send it on; NULL once sent there (a command is redirected once). */
	char *cmd;
	size_t len;
};

static int qw_redis_send(struct qw_redis *r, struct qw_redis_call *call, const char *cmd,
    size_t len);

/* An ASK reply: the command goes to the node migrating the slot in,
 * after ASKING, on the same call. Returns 0 when it went. */
static int
qw_redis_ask(struct qw_redis_call *call, const redisReply *reply)
{
	static const char asking[] = "*1\r\n$6\r\nASKING\r\n";
	struct qw_redis *to;
	char *cmd = call->cmd;

	if (cmd == NULL || call->r->redirect_fn == NULL ||
	    (to = call->r->redirect_fn(call->r->redirect_arg, call->r, reply)) == NULL ||
	    to->state != QW_R_UP)
		return -1;
	call->cmd = NULL;
	if (redisAsyncFormattedCommand(to->ac, NULL, NULL, asking, sizeof(asking) - 1) !=
	    REDIS_OK || qw_redis_send(to, call, cmd, call->len) < 0) {
		call->cmd = cmd;
		return -1;
	}
	free(cmd);
	return 0;
}

static void
qw_redis_call_cb(redisAsyncContext *ac, void *rep, void *priv)
{
	struct qw_redis_call *call = priv;

	/* After qw_redis_free the context is detached: the caller gets r == NULL. */
	redisReply *reply = rep;

	if (reply != NULL && ac->data != NULL) {
		call->r->answered++;
		qw_tally_observe(&call->r->cmd_hist, &qw_tally_redis_bounds,
		    qw_clock_mono_us() - call->sent_us);
	}
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR && ac->data != NULL &&
	    call->r->redirect_fn != NULL) {
		if (reply->len > 4 && memcmp(reply->str, "ASK ", 4) == 0 &&
		    qw_redis_ask(call, reply) == 0)
			return;		/* the call goes on, on the node the slot goes to */
		if (reply->len > 6 && memcmp(reply->str, "MOVED ", 6) == 0)
			call->r->redirect_fn(call->r->redirect_arg, call->r, reply);
	}
	if (call->fn != NULL)
		call->fn(ac->data ? call->r : NULL, rep, call->priv);
	/* The script cache was flushed (SCRIPT FLUSH, a failover): reconnect,
	 * and the handshake loads the scripts again. */
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR && reply->len >= 8 &&
	    memcmp(reply->str, "NOSCRIPT", 8) == 0 && ac->data != NULL &&
	    !(ac->c.flags & REDIS_DISCONNECTING)) {
		qw_log_warn("redis %s: Redis lost qworkerd's scripts; reconnecting to load them",
		    call->r->name);
		redisAsyncDisconnect(ac);
	}
	/* A failover demoted this server, or it restarts: nothing we send
	 * here will be written until we find the master again. */
	if (qw_redis_refusal_of(reply) != QW_REFUSAL_NONE && ac->data != NULL)
		qw_redis_refused(call->r, ac, qw_redis_refusal_of(reply), reply->str, reply->len);
	free(call->cmd);
	free(call);
}

/* Writes V in decimal at P; returns the end. */
static char *
qw_resp_uint(char *p, size_t v)
{
	char tmp[24];
	int n = 0;

	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

/* The most a command's RESP takes, with a NUL. */
static size_t
qw_resp_size(int argc, const char **argv, const size_t *lens)
{
	size_t total = 16;

	for (int i = 0; i < argc; i++)
		total += 32 + (lens ? lens[i] : strlen(argv[i]));
	return total;
}

/* Formats a command in RESP into BUF (qw_resp_size bytes); its length.
 * hiredis's own formatter goes through sdscatfmt for every argument, which
 * showed as a third of the daemon's instructions on the fast path; this is
 * one pass. */
static size_t
qw_resp_write(char *buf, int argc, const char **argv, const size_t *lens)
{
	char *p = buf;
	size_t len;

	*p++ = '*';
	p = qw_resp_uint(p, (size_t)argc);
	*p++ = '\r';
	*p++ = '\n';
	for (int i = 0; i < argc; i++) {
		len = lens ? lens[i] : strlen(argv[i]);
		*p++ = '$';
		p = qw_resp_uint(p, len);
		*p++ = '\r';
		*p++ = '\n';
		memcpy(p, argv[i], len);
		p += len;
		*p++ = '\r';
		*p++ = '\n';
	}
	/* Not sent: hiredis scans a SUBSCRIBE's channels with strchr, which
	 * needs the end of the command to be a string's end. */
	*p = '\0';
	return (size_t)(p - buf);
}

/* The command in RESP in a buffer of its own (the caller frees it). */
static char *
qw_resp_format(int argc, const char **argv, const size_t *lens, size_t *outlen)
{
	char *buf = malloc(qw_resp_size(argc, argv, lens));

	if (buf != NULL)
		*outlen = qw_resp_write(buf, argc, argv, lens);
	return buf;
}

/* The command in RESP in R's scratch buffer, valid until the next one. */
static char *
qw_redis_format(struct qw_redis *r, int argc, const char **argv, const size_t *lens,
    size_t *outlen)
{
	size_t need = qw_resp_size(argc, argv, lens);

	if (need > r->scratch_cap) {
		char *n = realloc(r->scratch, need);
		if (n == NULL)
			return NULL;
		r->scratch = n;
		r->scratch_cap = need;
	}
	*outlen = qw_resp_write(r->scratch, argc, argv, lens);
	return r->scratch;
}

const struct qw_tally_hist *
qw_redis_cmd_hist(const struct qw_redis *r)
{
	return &r->cmd_hist;
}

void
qw_redis_flush(struct qw_redis *r)
{
	int done;

	/* The context's own write, not redisAsyncHandleWrite: a failure only
	 * sets the context's error, and the write event already armed for the
	 * queued bytes then disconnects from the loop, outside our caller. */
	if (r->state == QW_R_UP)
		redisBufferWrite(&r->ac->c, &done);
}

/* Queues CMD on R for CALL; in a cluster CALL keeps CMD for an ASK. */
static int
qw_redis_send(struct qw_redis *r, struct qw_redis_call *call, const char *cmd, size_t len)
{
	if (redisAsyncFormattedCommand(r->ac, qw_redis_call_cb, call, cmd, len) != REDIS_OK)
		return -1;
	call->r = r;
	r->sent++;
	return 0;
}

int
qw_redis_cmd(struct qw_redis *r, qw_redis_reply_fn *fn, void *priv,
    int argc, const char **argv, const size_t *lens)
{
	struct qw_redis_call *call;
	/* A cluster's commands are kept to send again after MOVED or ASK. */
	bool keep = r->redirect_fn != NULL;
	char *cmd;
	size_t len = 0;

	if (r->state != QW_R_UP)
		return -1;
	call = malloc(sizeof(*call));
	cmd = keep ? qw_resp_format(argc, argv, lens, &len) :
	    qw_redis_format(r, argc, argv, lens, &len);
	if (call == NULL || cmd == NULL)
		goto fail;
	*call = (struct qw_redis_call){ .r = r, .fn = fn, .priv = priv, .len = len,
		.cmd = keep ? cmd : NULL, .sent_us = qw_clock_mono_us() };
	if (qw_redis_send(r, call, cmd, len) < 0)
		goto fail;
	return 0;
fail:
	free(call);
	if (keep)
		free(cmd);
	return -1;
}

int
qw_redis_script(struct qw_redis *r, enum qw_script s, qw_redis_reply_fn *fn, void *priv,
    int nkeys, int argc, const char **argv, const size_t *lens)
{
	const char *sv[argc + 3];
	size_t sl[argc + 3];
	char nk[16];

	if (r->state != QW_R_UP || r->sha[s][0] == '\0')
		return -1;
	snprintf(nk, sizeof(nk), "%d", nkeys);
	sv[0] = "EVALSHA";
	sv[1] = r->sha[s];
	sv[2] = nk;
	for (int i = 0; i < 3; i++)
		sl[i] = strlen(sv[i]);
	for (int i = 0; i < argc; i++) {
		sv[i + 3] = argv[i];
		sl[i + 3] = lens ? lens[i] : strlen(argv[i]);
	}
	return qw_redis_cmd(r, fn, priv, argc + 3, sv, sl);
}

/* ---- WAIT ---------------------------------------------------------------- */

#define QW_UNCONFIRMED "UNCONFIRMED "

/* A script call waiting for its WAIT: the script's reply is kept (hiredis
 * frees it after its callback) until WAIT says whether it counts. */
struct qw_redis_wait {
	qw_redis_reply_fn *fn;
	void *priv;
	unsigned replicas;
	uint64_t timeout_ms;
	bool wait_sent;
	redisReply *kept;	/* a copy (freeReplyObject frees it); NULL: none came */
};

/* A deep copy of REPLY, laid out as hiredis lays out its own. */
static redisReply *
qw_redis_reply_dup(const redisReply *reply)
{
	redisReply *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->type = reply->type;
	c->integer = reply->integer;
	c->len = reply->len;
	if (reply->str != NULL && (c->str = malloc(reply->len + 1)) != NULL) {
		memcpy(c->str, reply->str, reply->len);
		c->str[reply->len] = '\0';
	}
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
	    (c->element = calloc(reply->elements, sizeof(*c->element))) != NULL) {
		for (c->elements = 0; c->elements < reply->elements; c->elements++)
			if ((c->element[c->elements] = qw_redis_reply_dup(
			    reply->element[c->elements])) == NULL)
				break;
	}
	if ((reply->str != NULL && c->str == NULL) || c->elements != reply->elements) {
		freeReplyObject(c);
		return NULL;
	}
	return c;
}

char *
qw_redis_take_str(redisReply *reply)
{
	char *str = reply->str;

	reply->str = NULL;
	return str;
}

bool
qw_redis_unconfirmed(const redisReply *reply)
{
	return reply != NULL && reply->type == REDIS_REPLY_ERROR &&
	    reply->len >= strlen(QW_UNCONFIRMED) &&
	    memcmp(reply->str, QW_UNCONFIRMED, strlen(QW_UNCONFIRMED)) == 0;
}

/* Gives FN the kept reply, or the error saying why it does not count. */
static void
qw_redis_wait_deliver(struct qw_redis *r, struct qw_redis_wait *w, const redisReply *wait)
{
	char msg[200];
	redisReply err = { .type = REDIS_REPLY_ERROR, .str = msg };

	if (w->kept == NULL || w->kept->type == REDIS_REPLY_ERROR ||
	    (wait != NULL && wait->type == REDIS_REPLY_INTEGER &&
	    wait->integer >= (long long)w->replicas)) {
		w->fn(r, w->kept, w->priv);
		return;
	}
	if (wait != NULL && wait->type == REDIS_REPLY_INTEGER)
		snprintf(msg, sizeof(msg), "%sonly %lld of %u replicas confirmed the write within "
		    "%llums", QW_UNCONFIRMED, wait->integer, w->replicas,
		    (unsigned long long)w->timeout_ms);
	else {
		/* The reply reaches the log: escaped here, once. */
		char esc[128] = "";
		if (wait != NULL && wait->str != NULL)
			qw_log_escape(esc, sizeof(esc), wait->str, wait->len);
		snprintf(msg, sizeof(msg), "%sWAIT failed: %s", QW_UNCONFIRMED, esc);
	}
	err.len = strlen(msg);
	w->fn(r, &err, w->priv);
}

static void
qw_redis_wait_script_cb(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_redis_wait *w = priv;

	/* NULL: WAIT's callback gets NULL too, and says so. */
	if (reply != NULL)
		w->kept = qw_redis_reply_dup(reply);
	if (w->wait_sent)
		return;
	qw_redis_wait_deliver(r, w, NULL);	/* WAIT could not be sent */
	if (w->kept != NULL)
		freeReplyObject(w->kept);
	free(w);
}

static void
qw_redis_wait_cb(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_redis_wait *w = priv;

	if (reply == NULL)
		w->fn(r, NULL, w->priv);
	else
		qw_redis_wait_deliver(r, w, reply);
	if (w->kept != NULL)
		freeReplyObject(w->kept);
	free(w);
}

int
qw_redis_script_wait(struct qw_redis *r, enum qw_script s, unsigned replicas,
    uint64_t timeout_ms, qw_redis_reply_fn *fn, void *priv, int nkeys, int argc,
    const char **argv, const size_t *lens)
{
	struct qw_redis_wait *w;
	char nb[16], tb[24];
	const char *wv[] = { "WAIT", nb, tb };

	if (replicas == 0)
		return qw_redis_script(r, s, fn, priv, nkeys, argc, argv, lens);
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return -1;
	*w = (struct qw_redis_wait){ .fn = fn, .priv = priv, .replicas = replicas,
		.timeout_ms = timeout_ms };
	if (qw_redis_script(r, s, qw_redis_wait_script_cb, w, nkeys, argc, argv, lens) < 0) {
		free(w);
		return -1;
	}
	snprintf(nb, sizeof(nb), "%u", replicas);
	snprintf(tb, sizeof(tb), "%llu", (unsigned long long)timeout_ms);
	w->wait_sent = qw_redis_cmd(r, qw_redis_wait_cb, w, 3, wv, NULL) == 0;
	return 0;
}

/* hiredis calls a subscription's callback for every message and every
 * confirmation, and once with NULL when the connection goes; PRIV is the
 * connection, which outlives its context. */
static void
qw_redis_sub_cb(redisAsyncContext *ac, void *rep, void *priv)
{
	struct qw_redis *r = priv;
	redisReply *reply = rep;

	if (ac->data == NULL) {
		/* Closed on purpose (qw_redis_free): the caller gets r == NULL. */
		if (r->sub_fn != NULL)
			r->sub_fn(NULL, NULL, r->sub_priv);
		return;
	}
	/* Only a confirmation answers a command; messages come unasked. */
	if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
	    reply->element[0]->type == REDIS_REPLY_STRING && reply->element[0]->len == 9 &&
	    memcmp(reply->element[0]->str, "subscribe", 9) == 0)
		r->answered++;
	if (r->sub_fn != NULL)
		r->sub_fn(r, reply, r->sub_priv);
}

static int
qw_redis_send_subscribe(struct qw_redis *r)
{
	const char *argv[] = { "SUBSCRIBE", r->sub_channel };
	char *cmd;
	size_t len;
	int rc;

	if ((cmd = qw_resp_format(2, argv, NULL, &len)) == NULL)
		return -1;
	rc = redisAsyncFormattedCommand(r->ac, qw_redis_sub_cb, r, cmd, len);
	free(cmd);
	if (rc != REDIS_OK)
		return -1;
	r->sent++;
	r->sub_ms = qw_clock_mono_ms();
	return 0;
}

int
qw_redis_subscribe(struct qw_redis *r, const char *channel, qw_redis_reply_fn *fn, void *priv)
{
	char *ch;

	if (r->state != QW_R_UP || r->subscribed || (ch = strdup(channel)) == NULL)
		return -1;
	free(r->sub_channel);
	r->sub_channel = ch;
	r->sub_fn = fn;
	r->sub_priv = priv;
	if (qw_redis_send_subscribe(r) < 0)
		return -1;
	r->subscribed = true;
	return 0;
}
