/* metrics.c - owns the HTTP endpoint: Prometheus text on /metrics and a
 * liveness answer on /health. Served from the event loop; every figure comes
 * from memory, so a scrape never waits on Redis.
 *
 * The endpoint is bounded (SPEC 13) so that no client can take memory or
 * file descriptors that jobs need: GET and HEAD only, no request body, at
 * most QW_HTTP_HEAD_MAX bytes of request, QW_HTTP_CONN_MAX connections,
 * QW_HTTP_IDLE_S of silence, and as long to send the request head. evhttp (libevent 2.1) cannot count or cap its
 * connections and offers no way to hand it an accepted socket or to learn
 * when it closes one, so this file owns the listener and speaks the little
 * HTTP it needs itself: one request per connection, answered with
 * "Connection: close". */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netdb.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "redis.h"
#include "tally.h"

#define QW_HTTP_HEAD_MAX 8192	/* request line and headers */
#define QW_HTTP_CONN_MAX 64
#define QW_HTTP_IDLE_S 5
#define QW_HTTP_PAUSE_MS 250	/* listener rest after accept() ran out of descriptors */

struct qw_http_conn;

struct qw_metrics {
	struct event_base *base;
	TAILQ_HEAD(, qw_http_conn) conn_list;
	struct evconnlistener *listener;
	struct event *resume_ev;	/* ends a pause of the listener */
	struct qw_pool *pool;
	unsigned conns;		/* open connections */
	time_t accept_err_logged;	/* when an accept error was last logged */
	unsigned long accept_errs;	/* accept errors not logged since */
};

/* One client connection: reading its request, then writing the answer. */
enum qw_http_state { QW_HTTP_READING, QW_HTTP_WRITING };

struct qw_http_conn {
	TAILQ_ENTRY(qw_http_conn) link;
	struct qw_metrics *m;
	struct bufferevent *bev;
	enum qw_http_state state;
	time_t deadline;	/* the whole request head must have come by then */
};

static time_t
qw_http_now(void)
{
	return (time_t)(qw_clock_mono_ms() / 1000);
}

/* The families of one value per queue, read from qw_pool_queue_info (each
 * an int64_t field there); a queue whose figure is unknown (-1: Redis did
 * not answer the last poll) has no sample in that family, rather than a 0
 * a graph would take for the truth. */
static const struct qw_metrics_gauge {
	const char *name, *help;
	size_t off;
} qw_metrics_gauges[] = {
	{ "qworkerd_queue_pending", "Length of the queue's pending list (polled once a second).",
	  offsetof(struct qw_pool_queue_info, pending) },
	{ "qworkerd_queue_scheduled", "Jobs in the queue's scheduled set: delayed jobs and "
	  "retries (polled once a second).", offsetof(struct qw_pool_queue_info, scheduled) },
	{ "qworkerd_queue_dead", "Length of the queue's dead list (polled once a second).",
	  offsetof(struct qw_pool_queue_info, dead) },
	{ "qworkerd_queue_running", "Jobs of the queue running in this process now.",
	  offsetof(struct qw_pool_queue_info, running) },
	{ "qworkerd_queue_slots", "Jobs of the queue this process may run at once "
	  "(its concurrency).", offsetof(struct qw_pool_queue_info, slots) },
	{ "qworkerd_queue_paused", "1 while the queue is paused (its paused key exists), "
	  "as last seen.", offsetof(struct qw_pool_queue_info, paused) },
	{ "qworkerd_breaker_open", "1 while the queue's circuit breaker is open or half-open "
	  "as this instance last saw it (its last fetch or result), else 0.",
	  offsetof(struct qw_pool_queue_info, breaker) },
};

static void
qw_metrics_process(struct qw_metrics *m, struct evbuffer *b)
{
	struct qw_pool_stats st;

	qw_pool_stats(m->pool, &st);
	evbuffer_add_printf(b,
	    "# HELP qworkerd_workers Worker slots in the pool.\n"
	    "# TYPE qworkerd_workers gauge\nqworkerd_workers %u\n"
	    "# HELP qworkerd_busy Worker slots running or fetching a job.\n"
	    "# TYPE qworkerd_busy gauge\nqworkerd_busy %u\n"
	    "# HELP qworkerd_jobs_processed_total Jobs run to an outcome by this process.\n"
	    "# TYPE qworkerd_jobs_processed_total counter\nqworkerd_jobs_processed_total %llu\n"
	    "# HELP qworkerd_jobs_failed_total Runs that failed (retried or dead).\n"
	    "# TYPE qworkerd_jobs_failed_total counter\nqworkerd_jobs_failed_total %llu\n"
	    "# HELP qworkerd_jobs_recovered_total Jobs of dead instances put back.\n"
	    "# TYPE qworkerd_jobs_recovered_total counter\nqworkerd_jobs_recovered_total %llu\n"
	    "# HELP qworkerd_results_unsaved Results waiting to be written to Redis.\n"
	    "# TYPE qworkerd_results_unsaved gauge\nqworkerd_results_unsaved %u\n"
	    "# HELP qworkerd_redis_up Whether the main Redis connection is up.\n"
	    "# TYPE qworkerd_redis_up gauge\nqworkerd_redis_up %d\n",
	    st.total, st.busy, (unsigned long long)st.processed, (unsigned long long)st.failed,
	    (unsigned long long)st.recovered, st.unsettled,
	    qw_redis_is_up(qw_pool_redis(m->pool)) ? 1 : 0);
}

/* NAME_bucket, NAME_sum and NAME_count of H, with LABELS ("queue=\"q\"",
 * or "") before le. */
static void
qw_metrics_hist(struct evbuffer *b, const char *name, const char *labels,
    const struct qw_tally_hist *h, const struct qw_tally_bounds *bounds)
{
	const char *sep = labels[0] ? "," : "";
	uint64_t cum = 0;

	for (unsigned i = 0; i < bounds->n; i++) {
		cum += h->bucket[i];
		evbuffer_add_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
		    (double)bounds->le_us[i] / 1e6, (unsigned long long)cum);
	}
	evbuffer_add_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
	    (unsigned long long)h->count);
	evbuffer_add_printf(b, "%s_sum%s%s%s %.6f\n%s_count%s%s%s %llu\n", name,
	    labels[0] ? "{" : "", labels, labels[0] ? "}" : "", (double)h->sum_us / 1e6,
	    name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
	    (unsigned long long)h->count);
}

static void
qw_metrics_queue_hists(struct qw_metrics *m, struct evbuffer *b, const char *name,
    const char *help, size_t off)
{
	char labels[96];

	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (size_t i = 0; i < qw_pool_nqueues(m->pool); i++) {
		struct qw_pool_queue_info qi;
		qw_pool_queue_info(m->pool, i, &qi);
		snprintf(labels, sizeof(labels), "queue=\"%s\"", qi.name);
		qw_metrics_hist(b, name, labels,
		    (const struct qw_tally_hist *)((const char *)qi.tally + off), &qw_tally_job_bounds);
	}
}

static void
qw_metrics_queues(struct qw_metrics *m, struct evbuffer *b)
{
	size_t n = qw_pool_nqueues(m->pool);

	evbuffer_add_printf(b, "# HELP qworkerd_jobs_total Job outcomes decided by this "
	    "process, by queue and outcome (the counters of the queue's stats hash).\n"
	    "# TYPE qworkerd_jobs_total counter\n");
	for (size_t i = 0; i < n; i++) {
		struct qw_pool_queue_info qi;
		qw_pool_queue_info(m->pool, i, &qi);
		for (int o = 0; o < QW_TALLY_NOUTCOMES; o++)
			evbuffer_add_printf(b, "qworkerd_jobs_total{queue=\"%s\",outcome=\"%s\"} %llu\n",
			    qi.name, qw_tally_outcome_name(o), (unsigned long long)qi.tally->outcome[o]);
	}
	qw_metrics_queue_hists(m, b, "qworkerd_job_duration_seconds", "Time from a handler's "
	    "start to its job's outcome.", offsetof(struct qw_tally, duration));
	qw_metrics_queue_hists(m, b, "qworkerd_job_wait_seconds", "Time from a job's enqueued_at "
	    "(or when this process took a job without one) to its handler's start.",
	    offsetof(struct qw_tally, wait));
	for (size_t g = 0; g < sizeof(qw_metrics_gauges) / sizeof(qw_metrics_gauges[0]); g++) {
		const struct qw_metrics_gauge *mg = &qw_metrics_gauges[g];
		evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", mg->name, mg->help,
		    mg->name);
		for (size_t i = 0; i < n; i++) {
			struct qw_pool_queue_info qi;
			qw_pool_queue_info(m->pool, i, &qi);
			int64_t v = *(const int64_t *)((const char *)&qi + mg->off);
			if (v >= 0)
				evbuffer_add_printf(b, "%s{queue=\"%s\"} %lld\n", mg->name, qi.name,
				    (long long)v);
		}
	}
}

static void
qw_metrics_body(struct qw_metrics *m, struct evbuffer *b)
{
	qw_metrics_process(m, b);
	qw_metrics_queues(m, b);
	evbuffer_add_printf(b, "# HELP qworkerd_redis_command_seconds Round trips of the "
	    "commands on the main Redis connection, from sending to the reply.\n"
	    "# TYPE qworkerd_redis_command_seconds histogram\n");
	qw_metrics_hist(b, "qworkerd_redis_command_seconds", "",
	    qw_redis_cmd_hist(qw_pool_redis(m->pool)), &qw_tally_redis_bounds);
}

static void
qw_http_close(struct qw_http_conn *c)
{
	TAILQ_REMOVE(&c->m->conn_list, c, link);
	c->m->conns--;
	bufferevent_free(c->bev);
	free(c);
}

/* Queues the whole answer; the connection closes once it is written. */
static void
qw_http_reply(struct qw_http_conn *c, int code, const char *reason, const char *type,
    struct evbuffer *body, bool head)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	c->state = QW_HTTP_WRITING;
	bufferevent_disable(c->bev, EV_READ);
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	    "%sConnection: close\r\n\r\n", code, reason, type, evbuffer_get_length(body),
	    code == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (!head)
		evbuffer_add_buffer(out, body);
}

static void
qw_http_error(struct qw_http_conn *c, int code, const char *reason)
{
	struct evbuffer *b = evbuffer_new();

	if (b == NULL) {
		qw_http_close(c);
		return;
	}
	evbuffer_add_printf(b, "%s\n", reason);
	qw_http_reply(c, code, reason, "text/plain", b, false);
	evbuffer_free(b);
}

/* True when the header lines (after the request line) announce a body:
 * any Transfer-Encoding, or a Content-Length that is not 0. */
static bool
qw_http_has_body(const char *l)
{
	for (; *l; l += strcspn(l, "\n"), l += *l == '\n') {
		if (strncasecmp(l, "Transfer-Encoding:", 18) == 0)
			return true;
		if (strncasecmp(l, "Content-Length:", 15) == 0) {
			char *e;
			const char *v = l + 15 + strspn(l + 15, " \t");
			if (strtoull(v, &e, 10) != 0 || e == v)
				return true;
		}
	}
	return false;
}

static void
qw_http_route(struct qw_http_conn *c, const char *target, bool head)
{
	struct qw_metrics *m = c->m;
	struct evbuffer *b = evbuffer_new();
	size_t plen = strcspn(target, "?");

	if (b == NULL) {
		qw_http_close(c);
		return;
	}
	if (plen == 8 && strncmp(target, "/metrics", 8) == 0) {
		qw_metrics_body(m, b);
		qw_http_reply(c, 200, "OK", "text/plain; version=0.0.4", b, head);
	} else if (plen == 7 && strncmp(target, "/health", 7) == 0) {
		const char *refused = qw_redis_down_reason(qw_pool_redis(m->pool));
		bool up = qw_redis_is_up(qw_pool_redis(m->pool));
		const char *master = qw_redis_master_info(qw_pool_redis(m->pool));
		if (up)
			evbuffer_add_printf(b, "ok\n");
		else if (refused != NULL)
			evbuffer_add_printf(b, "Redis %s; reconnecting\n", refused);
		else
			evbuffer_add_printf(b, "waiting for Redis\n");
		/* With Sentinel: which master, and why it moved there. */
		if (master != NULL)
			evbuffer_add_printf(b, "%s\n", master);
		qw_http_reply(c, up ? 200 : 503, up ? "OK" : "Service Unavailable", "text/plain",
		    b, head);
	} else {
		evbuffer_add_printf(b, "Not Found\n");
		qw_http_reply(c, 404, "Not Found", "text/plain", b, head);
	}
	evbuffer_free(b);
}

/* HEAD is the request line and its header lines, NUL-terminated. */
static void
qw_http_request(struct qw_http_conn *c, char *head)
{
	char *sp1, *sp2, *eol = head + strcspn(head, "\r\n");
	bool is_head;

	*eol = '\0';
	sp1 = strchr(head, ' ');
	sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (sp1 == NULL || sp2 == NULL || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp1[1] != '/') {
		qw_http_error(c, 400, "Bad Request");
		return;
	}
	*sp1 = *sp2 = '\0';
	is_head = strcmp(head, "HEAD") == 0;
	if (!is_head && strcmp(head, "GET") != 0) {
		qw_http_error(c, 405, "Method Not Allowed");
		return;
	}
	if (qw_http_has_body(eol + 1)) {
		qw_http_error(c, 413, "Payload Too Large");
		return;
	}
	qw_http_route(c, sp1 + 1, is_head);
}

/* Reads until the blank line that ends the head. Nothing past it is ever
 * read: a body is refused by its headers, and the read high-water mark
 * keeps at most QW_HTTP_HEAD_MAX bytes of anything in memory. */
static void
qw_http_read_cb(struct bufferevent *bev, void *arg)
{
	struct qw_http_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	size_t len;
	char *head;

	if (c->state != QW_HTTP_READING)
		return;
	if (end.pos < 0)
		end = evbuffer_search(in, "\n\n", 2, NULL);
	if (end.pos < 0) {
		if (evbuffer_get_length(in) >= QW_HTTP_HEAD_MAX)
			qw_http_error(c, 431, "Request Header Fields Too Large");
		else if (qw_http_now() > c->deadline)	/* a byte now and then */
			qw_http_close(c);
		return;
	}
	len = (size_t)end.pos + 1;
	if ((head = malloc(len + 1)) == NULL) {
		qw_http_close(c);
		return;
	}
	evbuffer_copyout(in, head, len);
	head[len] = '\0';
	qw_http_request(c, head);
	free(head);
}

static void
qw_http_write_cb(struct bufferevent *bev, void *arg)
{
	struct qw_http_conn *c = arg;

	if (c->state == QW_HTTP_WRITING)
		qw_http_close(c);
}

/* The peer closed, an error, or QW_HTTP_IDLE_S without progress. A peer
 * that only shut down its sending side still gets the answer. */
static void
qw_http_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct qw_http_conn *c = arg;

	if (c->state == QW_HTTP_WRITING && what == (BEV_EVENT_READING | BEV_EVENT_EOF))
		return;
	qw_http_close(c);
}

static void
qw_metrics_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct qw_metrics *m = arg;
	struct qw_http_conn *c;
	struct timeval idle = { QW_HTTP_IDLE_S, 0 };

	/* Over the limit: closed at once, so the client learns it now and the
	 * descriptor is free for a handler. */
	if (m->conns >= QW_HTTP_CONN_MAX || (c = calloc(1, sizeof(*c))) == NULL) {
		evutil_closesocket(fd);
		return;
	}
	c->m = m;
	c->deadline = qw_http_now() + QW_HTTP_IDLE_S;
	c->bev = bufferevent_socket_new(m->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		free(c);
		return;
	}
	m->conns++;
	TAILQ_INSERT_TAIL(&m->conn_list, c, link);
	bufferevent_setcb(c->bev, qw_http_read_cb, qw_http_write_cb, qw_http_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, QW_HTTP_HEAD_MAX);
	bufferevent_set_timeouts(c->bev, &idle, &idle);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void
qw_metrics_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_metrics *m = arg;

	evconnlistener_enable(m->listener);
}

/* accept() failed, most often out of descriptors (EMFILE, ENFILE) with a
 * connection still waiting: retrying at once would spin. The listener rests
 * a little, and the log says so at most once a second. */
static void
qw_metrics_accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct qw_metrics *m = arg;
	int err = EVUTIL_SOCKET_ERROR();
	time_t now = time(NULL);

	m->accept_errs++;
	if (now != m->accept_err_logged) {
		qw_log_warn("metrics: cannot accept a connection: %s; pausing the listener "
		    "(%lu such errors since the last line)", evutil_socket_error_to_string(err),
		    m->accept_errs);
		m->accept_err_logged = now;
		m->accept_errs = 0;
	}
	evconnlistener_disable(l);
	struct timeval pause = { 0, QW_HTTP_PAUSE_MS * 1000 };
	evtimer_add(m->resume_ev, &pause);
}

static struct evconnlistener *
qw_metrics_listen(struct qw_metrics *m, const char *address, const char **err)
{
	struct evutil_addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
		.ai_protocol = IPPROTO_TCP, .ai_flags = EVUTIL_AI_PASSIVE };
	struct evutil_addrinfo *res = NULL;
	struct evconnlistener *l;
	const char *colon = strrchr(address, ':'), *hp = address;
	size_t hlen = colon ? (size_t)(colon - address) : 0;
	char host[256];

	if (hlen >= 2 && hp[0] == '[' && hp[hlen - 1] == ']')
		hp++, hlen -= 2;
	snprintf(host, sizeof(host), "%.*s", (int)hlen, hp);
	if (evutil_getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res) != 0) {
		*err = "cannot resolve the address";
		return NULL;
	}
	l = evconnlistener_new_bind(m->base, qw_metrics_accept_cb, m, LEV_OPT_CLOSE_ON_FREE |
	    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128, res->ai_addr, (int)res->ai_addrlen);
	if (l == NULL)
		*err = strerror(errno ? errno : EADDRINUSE);
	evutil_freeaddrinfo(res);
	return l;
}

struct qw_metrics *
qw_metrics_start(struct event_base *base, const char *address, struct qw_pool *pool,
    const char **err)
{
	struct qw_metrics *m = calloc(1, sizeof(*m));

	*err = "out of memory";
	if (m == NULL)
		return NULL;
	m->base = base;
	m->pool = pool;
	TAILQ_INIT(&m->conn_list);
	m->resume_ev = evtimer_new(base, qw_metrics_resume_cb, m);
	if (m->resume_ev == NULL)
		goto fail;
	m->listener = qw_metrics_listen(m, address, err);
	if (m->listener == NULL)
		goto fail;
	evconnlistener_set_error_cb(m->listener, qw_metrics_accept_error_cb);
	*err = NULL;
	return m;
fail:
	qw_metrics_free(m);
	return NULL;
}

void
qw_metrics_free(struct qw_metrics *m)
{
	if (m == NULL)
		return;
	while (!TAILQ_EMPTY(&m->conn_list))
		qw_http_close(TAILQ_FIRST(&m->conn_list));
	if (m->listener != NULL)
		evconnlistener_free(m->listener);
	if (m->resume_ev != NULL)
		event_free(m->resume_ev);
	free(m);
}
