/* metrics.h - the optional HTTP endpoint: GET /metrics and GET /health. */
#ifndef QW_METRICS_H
#define QW_METRICS_H

struct event_base;
struct qw_metrics;
struct qw_pool;

/* Listens on ADDRESS ("host:port", "[v6]:port"). Returns NULL with *err
 * (static text) set when it cannot. */
struct qw_metrics *qw_metrics_start(struct event_base *base, const char *address,
    struct qw_pool *pool, const char **err);
void qw_metrics_free(struct qw_metrics *m);

#endif
