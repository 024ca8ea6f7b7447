/* metrics.c - owns the HTTP endpoint (evhttp): Prometheus text on /metrics
 * and a liveness answer on /health. Served from the event loop; every
 * figure comes from memory, so a scrape never waits on Redis. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "redis.h"

struct qw_metrics {
	struct evhttp *http;
	struct qw_pool *pool;
};

static void
qw_metrics_body(struct qw_metrics *m, struct evbuffer *b)
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
	evbuffer_add_printf(b, "# HELP qworkerd_queue_running Jobs of the queue running now.\n"
	    "# TYPE qworkerd_queue_running gauge\n");
	for (size_t i = 0; i < qw_pool_nqueues(m->pool); i++) {
		struct qw_pool_queue_info qi;
		qw_pool_queue_info(m->pool, i, &qi);
		evbuffer_add_printf(b, "qworkerd_queue_running{queue=\"%s\"} %u\n", qi.name, qi.running);
	}
	evbuffer_add_printf(b, "# HELP qworkerd_queue_pending Length of the queue's pending list "
	    "at the last check (once a second).\n# TYPE qworkerd_queue_pending gauge\n");
	for (size_t i = 0; i < qw_pool_nqueues(m->pool); i++) {
		struct qw_pool_queue_info qi;
		qw_pool_queue_info(m->pool, i, &qi);
		if (qi.pending >= 0)
			evbuffer_add_printf(b, "qworkerd_queue_pending{queue=\"%s\"} %lld\n", qi.name,
			    (long long)qi.pending);
	}
}

static void
qw_metrics_cb(struct evhttp_request *req, void *arg)
{
	struct qw_metrics *m = arg;
	struct evbuffer *b = evbuffer_new();
	const char *path = evhttp_request_get_uri(req);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	if (b == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET &&
	    evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		evhttp_send_error(req, 405, "Method Not Allowed");
	} else if (strcmp(path, "/metrics") == 0) {
		qw_metrics_body(m, b);
		evhttp_add_header(h, "Content-Type", "text/plain; version=0.0.4");
		evhttp_send_reply(req, HTTP_OK, "OK", b);
	} else if (strcmp(path, "/health") == 0) {
		const char *refused = qw_redis_down_reason(qw_pool_redis(m->pool));
		bool up = qw_redis_is_up(qw_pool_redis(m->pool));
		if (up)
			evbuffer_add_printf(b, "ok\n");
		else if (refused != NULL)
			evbuffer_add_printf(b, "Redis %s; reconnecting\n", refused);
		else
			evbuffer_add_printf(b, "waiting for Redis\n");
		evhttp_add_header(h, "Content-Type", "text/plain");
		evhttp_send_reply(req, up ? HTTP_OK : 503, up ? "OK" : "Service Unavailable", b);
	} else {
		evhttp_send_error(req, HTTP_NOTFOUND, NULL);
	}
	evbuffer_free(b);
}

struct qw_metrics *
qw_metrics_start(struct event_base *base, const char *address, struct qw_pool *pool,
    const char **err)
{
	struct qw_metrics *m = calloc(1, sizeof(*m));
	const char *colon = strrchr(address, ':');
	char host[256];
	size_t hlen = colon ? (size_t)(colon - address) : 0;
	const char *hp = address;

	*err = "out of memory";
	if (m == NULL)
		return NULL;
	if (hlen >= 2 && hp[0] == '[' && hp[hlen - 1] == ']')
		hp++, hlen -= 2;
	snprintf(host, sizeof(host), "%.*s", (int)hlen, hp);
	m->pool = pool;
	m->http = evhttp_new(base);
	if (m->http == NULL)
		goto fail;
	if (evhttp_bind_socket(m->http, host, (ev_uint16_t)atoi(colon + 1)) < 0) {
		*err = strerror(errno ? errno : EADDRINUSE);
		goto fail;
	}
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
	    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_gencb(m->http, qw_metrics_cb, m);
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
	if (m->http != NULL)
		evhttp_free(m->http);
	free(m);
}
