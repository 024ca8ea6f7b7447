/* schedule.h - runs the [cron NAME] sections: a timer for each on the
 * loop, and the cron script that turns each tick into one job over all
 * instances. */
#ifndef QW_SCHEDULE_H
#define QW_SCHEDULE_H

struct event_base;
struct qw_conf;
struct qw_redis;
struct qw_schedule;

/* The connection a command on KEY goes to (in a cluster, the master of
 * its slot); the connections are borrowed: free the schedule after them. */
typedef struct qw_redis *qw_schedule_route_fn(void *arg, const char *key);

/* Starts the sections of CONF (borrowed until the next reconfigure) on
 * the connections ROUTE names. Ticks wait for them to be up. NULL when
 * out of memory. */
struct qw_schedule *qw_schedule_new(struct event_base *base, qw_schedule_route_fn *route,
    void *arg, const struct qw_conf *conf);
/* A reload: sections keep their next tick when their schedule still has
 * it; new ones start from now; removed ones stop. -1 when out of memory
 * (logged; the sections it could not start are missing). */
int qw_schedule_reconfigure(struct qw_schedule *s, const struct qw_conf *conf);
/* The drain began: no more ticks. */
void qw_schedule_stop(struct qw_schedule *s);
/* Call after REDIS is freed: every reply has come (NULL) by then. */
void qw_schedule_free(struct qw_schedule *s);

#endif
