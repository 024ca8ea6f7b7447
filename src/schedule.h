/* schedule.h - runs the [cron NAME] sections: a timer for each on the
 * loop, and the cron script that turns each tick into one job over all
 * instances. */
#ifndef QW_SCHEDULE_H
#define QW_SCHEDULE_H

struct event_base;
struct qw_conf;
struct qw_redis;
struct qw_schedule;

/* Starts the sections of CONF (borrowed until the next reconfigure) on
 * REDIS (borrowed: free the schedule after it). Ticks wait for REDIS to
 * be up. NULL when out of memory. */
struct qw_schedule *qw_schedule_new(struct event_base *base, struct qw_redis *redis,
    const struct qw_conf *conf);
/* A reload: sections keep their next tick when their schedule still has
 * it; new ones start from now; removed ones stop. -1 when out of memory
 * (logged; the sections it could not start are missing). */
int qw_schedule_reconfigure(struct qw_schedule *s, const struct qw_conf *conf);
/* The drain began: no more ticks. */
void qw_schedule_stop(struct qw_schedule *s);
/* Call after REDIS is freed: every reply has come (NULL) by then. */
void qw_schedule_free(struct qw_schedule *s);

#endif
