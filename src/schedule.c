/* schedule.c - owns the running of [cron NAME] sections: each section's
 * timer on the loop, and the cron script call that enqueues its tick's job.
 * Every instance calls the script at every tick; the script enqueues the
 * job only for a tick later than the one PREFIX:{QUEUE}:cron records for
 * the name, so one job results however many instances run. Ticks come from
 * cron.c; the wall clock decides when they are due.
 *
 * Only the current tick is ever sent: a tick whose next one is due before
 * it could be sent (Redis away, the process stopped) is given up, so a
 * long outage does not end in a burst of jobs. */
#include "config.h"

#include <event2/event.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "conf.h"
#include "cron.h"
#include "log.h"
#include "redis.h"
#include "schedule.h"

/* Long waits are cut into pieces this long, so that a change of the wall
 * clock (the loop's timers run on the monotonic one) is seen in time. */
#define QW_SCHEDULE_NAP_MS 30000
#define QW_SCHEDULE_RETRY_MS 500
/* How far ahead of the Redis clock a tick may be (the script refuses it). */
#define QW_SCHEDULE_AHEAD_MS 5000

/* A section's state, moved only by qw_schedule_move, which checks where it
 * comes from:
 *   WAITING  -> SENDING   its tick came: the script call was sent
 *   WAITING  -> RETRYING  its tick came, but Redis is not up
 *   SENDING  -> WAITING   the reply came: the next tick is armed
 *   SENDING  -> RETRYING  the reply was lost with the connection (the call
 *                         may have run: sending it again is harmless)
 *   RETRYING -> SENDING   the retry timer: the current tick is sent
 *   RETRYING -> RETRYING  Redis is still not up
 *   RETRYING -> WAITING   a reload changed the schedule
 *   any      -> STOPPED   the drain began, or the section was removed
 *                         (freed then, or on its reply when SENDING) */
enum qw_sched_state {
	QW_SCHED_WAITING,
	QW_SCHED_SENDING,
	QW_SCHED_RETRYING,
	QW_SCHED_STOPPED,
};

struct qw_sched_entry {
	struct qw_sched_entry *next;
	struct qw_schedule *s;
	char *name, *queue, *payload;
	char *key_cron, *key_pending;
	struct qw_cron cron;
	enum qw_sched_state state;
	int64_t tick;		/* the tick waited for, being sent or retried (Unix ms) */
	struct event *ev;
	bool removed;		/* STOPPED by a reload: freed when its reply comes */
	char *err;		/* the last problem, logged once (owned) */
};

struct qw_schedule {
	struct event_base *base;
	qw_schedule_route_fn *route;
	void *route_arg;
	struct qw_sched_entry *entries;
	bool stopped;
};

static void qw_schedule_send(struct qw_sched_entry *e);

static const char *
qw_schedule_state_name(enum qw_sched_state st)
{
	static const char *const names[] = { "waiting", "sending", "retrying", "stopped" };

	return names[st];
}

static void
qw_schedule_move(struct qw_sched_entry *e, enum qw_sched_state to)
{
	static const unsigned allowed[] = {
		[QW_SCHED_WAITING] = 1u << QW_SCHED_SENDING | 1u << QW_SCHED_RETRYING,
		[QW_SCHED_SENDING] = 1u << QW_SCHED_WAITING | 1u << QW_SCHED_RETRYING,
		[QW_SCHED_RETRYING] = 1u << QW_SCHED_SENDING | 1u << QW_SCHED_RETRYING |
		    1u << QW_SCHED_WAITING,
		[QW_SCHED_STOPPED] = 0,
	};

	if (to != QW_SCHED_STOPPED && !(allowed[e->state] & (1u << to))) {
		qw_log_err("cron %s: internal error: %s -> %s", e->name,
		    qw_schedule_state_name(e->state), qw_schedule_state_name(to));
		abort();
	}
	e->state = to;
}

static void
qw_schedule_entry_free(struct qw_sched_entry *e)
{
	if (e == NULL)
		return;
	if (e->ev != NULL)
		event_free(e->ev);
	free(e->name);
	free(e->queue);
	free(e->payload);
	free(e->key_cron);
	free(e->key_pending);
	free(e->err);
	free(e);
}

/* Waits for e->tick, in naps of at most QW_SCHEDULE_NAP_MS. */
static void
qw_schedule_arm(struct qw_sched_entry *e)
{
	int64_t wait = e->tick - qw_clock_wall_ms();

	if (e->tick < 0)
		return;		/* no tick in the horizon: nothing to wait for */
	qw_clock_arm(e->ev, wait < 0 ? 0 : wait > QW_SCHEDULE_NAP_MS ? QW_SCHEDULE_NAP_MS :
	    (uint64_t)wait);
}

/* The next tick after the one just dealt with, waited for. */
static void
qw_schedule_wait_next(struct qw_sched_entry *e)
{
	e->tick = qw_cron_next(&e->cron, e->tick);
	qw_schedule_arm(e);
}

/* Logs a problem once, not at each tick while it lasts: WHAT says what is
 * wrong and is compared with the last one; DETAIL (the tick, how far)
 * changes from tick to tick and is only logged with it. */
static void
qw_schedule_problem(struct qw_sched_entry *e, int prio, const char *what, const char *detail)
{
	if (qw_log_changed(&e->err, what))
		qw_log(prio, "cron %s: %s%s", e->name, what, detail);
}

static void
qw_schedule_reply(struct qw_redis *r, redisReply *reply, void *priv)
{
	struct qw_sched_entry *e = priv;
	char why[256], detail[96];

	if (e->removed) {
		qw_schedule_entry_free(e);
		return;
	}
	if (e->state != QW_SCHED_SENDING)
		return;		/* stopped by the drain */
	if (reply == NULL) {
		qw_schedule_move(e, QW_SCHED_RETRYING);
		qw_clock_arm(e->ev, QW_SCHEDULE_RETRY_MS);
		return;
	}
	qw_schedule_move(e, QW_SCHED_WAITING);
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_INTEGER ||
	    reply->element[1]->type != REDIS_REPLY_INTEGER) {
		snprintf(why, sizeof(why), "ticks of queue %s not enqueued: %s", e->queue,
		    qw_redis_errstr(r, reply));
		snprintf(detail, sizeof(detail), " (from tick %" PRId64 " on)", e->tick);
		qw_schedule_problem(e, LOG_ERR, why, detail);
	} else if (reply->element[0]->integer < 0) {
		snprintf(why, sizeof(why), "ticks refused: this host's clock is more than %dms ahead "
		    "of Redis's", QW_SCHEDULE_AHEAD_MS);
		snprintf(detail, sizeof(detail), " (tick %" PRId64 ": %lldms ahead)", e->tick,
		    (long long)(e->tick - reply->element[1]->integer));
		qw_schedule_problem(e, LOG_WARNING, why, detail);
	} else {
		if (qw_log_changed(&e->err, NULL))
			qw_log_notice("cron %s: ticks are enqueued again", e->name);
		if (reply->element[0]->integer == 1)
			qw_log_info("cron %s: job cron:%s:%" PRId64 " enqueued on queue %s", e->name,
			    e->name, e->tick, e->queue);
		else
			qw_log_debug("cron %s: tick %" PRId64 " was enqueued by another instance",
			    e->name, e->tick);
	}
	qw_schedule_wait_next(e);
}

/* The tick's job as an envelope without its closing brace: the script
 * adds enqueued_at from the Redis clock. */
static char *
qw_schedule_envelope(const struct qw_sched_entry *e)
{
	char id[QW_QUEUE_NAME_MAX + 32];
	json_t *j;
	char *text;

	snprintf(id, sizeof(id), "cron:%s:%" PRId64, e->name, e->tick);
	j = json_pack("{s:s, s:s}", "payload", e->payload, "id", id);
	text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(j);
	if (text != NULL)
		text[strlen(text) - 1] = '\0';
	return text;
}

/* Sends the current tick, or waits for Redis to be up. */
static void
qw_schedule_send(struct qw_sched_entry *e)
{
	char tick[24], ahead[16], *env = qw_schedule_envelope(e);
	const char *argv[] = { e->key_cron, e->key_pending, e->name, tick, env, ahead };

	snprintf(tick, sizeof(tick), "%" PRId64, e->tick);
	snprintf(ahead, sizeof(ahead), "%d", QW_SCHEDULE_AHEAD_MS);
	if (env != NULL && qw_redis_script(e->s->route(e->s->route_arg, e->key_cron),
	    QW_SCRIPT_CRON, qw_schedule_reply, e, 2,
	    6, argv, NULL) == 0) {
		qw_schedule_move(e, QW_SCHED_SENDING);
	} else {
		qw_schedule_move(e, QW_SCHED_RETRYING);
		qw_clock_arm(e->ev, QW_SCHEDULE_RETRY_MS);
	}
	free(env);
}

/* The section's timer: its tick is due (or a nap ended), or a retry. */
static void
qw_schedule_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_sched_entry *e = arg;
	int64_t now = qw_clock_wall_ms(), cur;

	if (e->state == QW_SCHED_STOPPED || e->tick < 0)
		return;
	if (now < e->tick) {
		qw_schedule_arm(e);	/* a nap ended, or the wall clock went back */
		return;
	}
	cur = qw_cron_latest(&e->cron, e->tick, now);
	if (cur != e->tick && e->state == QW_SCHED_RETRYING)
		qw_schedule_problem(e, LOG_WARNING, "ticks are missed while Redis is not up", "");
	else if (cur != e->tick)
		qw_log_warn("cron %s: ticks from %" PRId64 " to before %" PRId64 " missed: the "
		    "timer fired late (the process was stopped, or the clock jumped)", e->name,
		    e->tick, cur);
	e->tick = cur;
	qw_schedule_send(e);
}

static int
qw_schedule_entry_set(struct qw_sched_entry *e, const struct qw_conf *conf,
    const struct qw_cron_conf *cc)
{
	char *queue = strdup(cc->queue), *payload = strdup(cc->payload), *kc = NULL, *kp = NULL;

	if (queue == NULL || payload == NULL ||
	    asprintf(&kc, "%s:{%s}:cron", conf->prefix, cc->queue) < 0 ||
	    asprintf(&kp, "%s:{%s}:pending", conf->prefix, cc->queue) < 0) {
		free(queue);
		free(payload);
		free(kc);
		return -1;
	}
	free(e->queue);
	free(e->payload);
	free(e->key_cron);
	free(e->key_pending);
	e->queue = queue;
	e->payload = payload;
	e->key_cron = kc;
	e->key_pending = kp;
	e->cron = cc->sched;
	return 0;
}

static struct qw_sched_entry *
qw_schedule_entry_new(struct qw_schedule *s, const struct qw_conf *conf,
    const struct qw_cron_conf *cc)
{
	struct qw_sched_entry *e = calloc(1, sizeof(*e));

	if (e == NULL)
		return NULL;
	e->s = s;
	e->name = strdup(cc->name);
	e->ev = evtimer_new(s->base, qw_schedule_timer_cb, e);
	if (e->name == NULL || e->ev == NULL || qw_schedule_entry_set(e, conf, cc) < 0) {
		qw_schedule_entry_free(e);
		return NULL;
	}
	e->tick = qw_cron_next(&e->cron, qw_clock_wall_ms());
	qw_schedule_arm(e);
	return e;
}

/* Applies a reloaded section CC to the running E: with a new schedule it
 * waits for that schedule's next tick from now. */
static int
qw_schedule_entry_update(struct qw_sched_entry *e, const struct qw_conf *conf,
    const struct qw_cron_conf *cc)
{
	bool same = qw_cron_equal(&e->cron, &cc->sched);

	if (qw_schedule_entry_set(e, conf, cc) < 0)
		return -1;
	if (same || e->state == QW_SCHED_SENDING)
		return 0;	/* its reply takes the new schedule's next tick */
	if (e->state == QW_SCHED_RETRYING)
		qw_schedule_move(e, QW_SCHED_WAITING);
	e->tick = qw_cron_next(&e->cron, qw_clock_wall_ms());
	qw_schedule_arm(e);
	return 0;
}

static const struct qw_cron_conf *
qw_schedule_find_conf(const struct qw_conf *conf, const char *name)
{
	for (size_t i = 0; i < conf->ncrons; i++)
		if (strcmp(conf->crons[i].name, name) == 0)
			return &conf->crons[i];
	return NULL;
}

static struct qw_sched_entry *
qw_schedule_find(struct qw_schedule *s, const char *name)
{
	for (struct qw_sched_entry *e = s->entries; e != NULL; e = e->next)
		if (strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

/* Stops E, unlinked from the list, and frees it, now or (SENDING) when its
 * reply comes. */
static void
qw_schedule_entry_remove(struct qw_sched_entry *e)
{
	bool sending = e->state == QW_SCHED_SENDING;

	qw_schedule_move(e, QW_SCHED_STOPPED);
	event_del(e->ev);
	if (sending)
		e->removed = true;
	else
		qw_schedule_entry_free(e);
}

int
qw_schedule_reconfigure(struct qw_schedule *s, const struct qw_conf *conf)
{
	struct qw_sched_entry *e, **link = &s->entries;
	int rc = 0;

	if (s->stopped)
		return 0;
	tzset();	/* timezone = local: a changed TZ file applies on reload */
	while ((e = *link) != NULL) {
		if (qw_schedule_find_conf(conf, e->name) != NULL) {
			link = &e->next;
			continue;
		}
		*link = e->next;
		qw_log_info("cron %s: removed", e->name);
		qw_schedule_entry_remove(e);
	}
	for (size_t i = 0; i < conf->ncrons; i++) {
		const struct qw_cron_conf *cc = &conf->crons[i];
		e = qw_schedule_find(s, cc->name);
		if (e != NULL) {
			if (qw_schedule_entry_update(e, conf, cc) == 0)
				continue;
		} else if ((e = qw_schedule_entry_new(s, conf, cc)) != NULL) {
			e->next = s->entries;
			s->entries = e;
			continue;
		}
		qw_log_err("cron %s: cannot start it: out of memory", cc->name);
		rc = -1;
	}
	return rc;
}

struct qw_schedule *
qw_schedule_new(struct event_base *base, qw_schedule_route_fn *route, void *arg,
    const struct qw_conf *conf)
{
	struct qw_schedule *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->base = base;
	s->route = route;
	s->route_arg = arg;
	if (qw_schedule_reconfigure(s, conf) < 0) {
		qw_schedule_free(s);
		return NULL;
	}
	return s;
}

void
qw_schedule_stop(struct qw_schedule *s)
{
	struct qw_sched_entry *e;

	if (s == NULL)
		return;
	s->stopped = true;
	for (e = s->entries; e != NULL; e = e->next) {
		qw_schedule_move(e, QW_SCHED_STOPPED);
		event_del(e->ev);
	}
}

void
qw_schedule_free(struct qw_schedule *s)
{
	struct qw_sched_entry *e;

	if (s == NULL)
		return;
	while ((e = s->entries) != NULL) {
		s->entries = e->next;
		qw_schedule_entry_free(e);
	}
	free(s);
}
