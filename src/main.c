/* main.c - owns the daemon's single state object: command line, startup,
 * signals, reload, the status/watchdog tick, and the exit status. */
#include "config.h"

#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conf.h"
#include "fmt.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "pool.h"
#include "redis.h"
#include "schedule.h"
#include "token.h"

#ifndef QW_DEFAULT_CONF
#define QW_DEFAULT_CONF "/etc/qworkerd/qworkerd.conf"
#endif

struct qw_daemon {
	struct event_base *base;
	struct evdns_base *dns;	/* looks up Redis's host name without blocking */
	struct qw_conf *conf;
	const char *conf_path;
	int verbose;
	struct qw_pool *pool;
	struct qw_metrics *metrics;
	struct qw_schedule *schedule;	/* the [cron] sections */
	struct qw_cts *shutdown;	/* every job's token is linked to it */
	unsigned terms;		/* SIGTERM/SIGINT received */
	struct event *sig_ev[6];
	struct event *tick_ev, *watchdog_ev;
	int64_t drain_end_ms;	/* monotonic: when the drain budget runs out */
	int exit_code;
};

static void
qw_usage(FILE *f)
{
	fprintf(f, "usage: qworkerd [-c FILE] [-t] [-f] [-v] [--version] [--help]\n"
	    "  -c, --config FILE  configuration file (default %s)\n"
	    "  -t, --test         check the configuration and exit\n"
	    "  -f, --foreground   accepted for compatibility; qworkerd never forks\n"
	    "  -v, --verbose      raise the log level (repeat for more)\n"
	    "      --version      print the version and exit\n"
	    "      --help         print this help and exit\n", QW_DEFAULT_CONF);
}

/* systemd connects stderr to the journal and says so in JOURNAL_STREAM. */
static bool
qw_stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
		return false;
	return st.st_dev == dev && st.st_ino == ino;
}

static int
qw_effective_level(const struct qw_daemon *d, int level)
{
	level += d->verbose;
	return level > LOG_DEBUG ? LOG_DEBUG : level;
}

static void
qw_daemon_ready(struct qw_pool *pool, void *arg)
{
	struct qw_daemon *d = arg;
	char nq[48], nw[48];

	qw_log_notice("ready: %s, %s, instance %s",
	    qw_fmt_count(nq, sizeof(nq), d->conf->nqueues, "queue", "queues"),
	    qw_fmt_count(nw, sizeof(nw), d->conf->concurrency, "worker", "workers"),
	    d->conf->instance);
	qw_notify_ready();
}

static void
qw_daemon_drained(struct qw_pool *pool, void *arg)
{
	struct qw_daemon *d = arg;

	event_base_loopbreak(d->base);
}

static void
qw_daemon_stop(struct qw_daemon *d, int sig)
{
	const struct qw_conf *c = d->conf;
	char dur[32];

	d->terms++;
	if (d->terms == 1) {
		qw_log_notice("SIG%s: stopping; running jobs get up to %s", sigabbrev_np(sig),
		    qw_fmt_duration(dur, sizeof(dur), c->shutdown_timeout_ms));
		qw_notify_stopping();
		qw_schedule_stop(d->schedule);
		d->drain_end_ms = qw_clock_mono_ms() + (int64_t)(c->shutdown_timeout_ms + c->kill_grace_ms);
		qw_notify_extend_timeout((c->shutdown_timeout_ms + c->kill_grace_ms + 2000) * 1000);
		if (qw_cts_cancel_after(d->shutdown, d->base, c->shutdown_timeout_ms,
		    QW_CANCEL_SHUTDOWN) < 0)
			qw_cts_cancel(d->shutdown, QW_CANCEL_SHUTDOWN);
		qw_pool_shutdown(d->pool, c->shutdown_timeout_ms + c->kill_grace_ms + 1000);
	} else {
		qw_log_notice("SIG%s again: cancelling every running job now", sigabbrev_np(sig));
		qw_cts_cancel(d->shutdown, QW_CANCEL_SHUTDOWN);
		qw_pool_shutdown(d->pool, c->kill_grace_ms + 1000);
	}
}

/* Nameservers and search domains, read again on reload as the C library
 * notices a changed file; /etc/hosts only at start (evdns adds its entries
 * to those it has). Without a nameserver, evdns asks one on localhost. */
static void
qw_daemon_read_resolv_conf(struct qw_daemon *d, bool hosts)
{
	int rc;

	evdns_base_clear_nameservers_and_suspend(d->dns);
	evdns_base_search_clear(d->dns);
	rc = evdns_base_resolv_conf_parse(d->dns,
	    hosts ? DNS_OPTIONS_ALL : DNS_OPTIONS_ALL & ~DNS_OPTION_HOSTSFILE, "/etc/resolv.conf");
	/* A file that cannot be read leaves no nameserver at all, and lookups
	 * would wait for one forever. */
	if (evdns_base_count_nameservers(d->dns) == 0)
		evdns_base_nameserver_ip_add(d->dns, "127.0.0.1");
	if (rc != 0)
		qw_log_info("/etc/resolv.conf: %s; host names are asked of 127.0.0.1",
		    rc == 1 ? "no such file" : rc == 6 ? "no nameserver in it" : "cannot read it");
	evdns_base_resume(d->dns);
}

static void
qw_daemon_reload(struct qw_daemon *d)
{
	struct qw_conf *nc;
	char *err;
	const char *why;

	qw_notify_reloading();
	if (qw_conf_load(d->conf_path, &nc, &err) < 0) {
		qw_log_err("reload refused, old configuration kept: %s", err ? err : "out of memory");
		free(err);
		qw_notify_ready();
		return;
	}
	if (qw_pool_reconfigure(d->pool, nc, &why) < 0) {
		qw_log_err("reload refused, old configuration kept: %s", why);
		qw_conf_free(nc);
		qw_notify_ready();
		return;
	}
	qw_schedule_reconfigure(d->schedule, nc);
	qw_conf_free(d->conf);
	d->conf = nc;
	qw_daemon_read_resolv_conf(d, false);
	qw_log_set_level(qw_effective_level(d, nc->log_level));
	qw_log_notice("reloaded %s: %u workers", d->conf_path, nc->concurrency);
	qw_notify_ready();
}

static void
qw_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct qw_daemon *d = arg;

	switch (sig) {
	case SIGTERM:
	case SIGINT:
		qw_daemon_stop(d, (int)sig);
		break;
	case SIGHUP:
		if (qw_pool_stage(d->pool) == QW_STAGE_RUNNING ||
		    qw_pool_stage(d->pool) == QW_STAGE_QUIET)
			qw_daemon_reload(d);
		break;
	case SIGUSR1:
		qw_log_notice("SIGUSR1: quiet, no new jobs are taken");
		qw_pool_quiet(d->pool, true);
		break;
	case SIGUSR2:
		qw_log_notice("SIGUSR2: taking jobs again");
		qw_pool_quiet(d->pool, false);
		break;
	}
}

/* Once a second: STATUS= for systemctl status, pending counts for the next
 * one, and while draining, more time from systemd for a drain on schedule. */
static void
qw_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_daemon *d = arg;
	struct qw_pool_stats st;
	enum qw_stage stage = qw_pool_stage(d->pool);
	char status[1024], line[900], cluster[64];
	const char *refused;

	qw_pool_stats(d->pool, &st);
	qw_pool_cluster_status(d->pool, cluster, sizeof(cluster));
	qw_pool_status(d->pool, line, sizeof(line));
	refused = qw_redis_down_reason(qw_pool_redis(d->pool));
	if (refused != NULL)
		snprintf(status, sizeof(status), "Redis at %s %s; reconnecting; %u/%u busy, "
		    "%u results waiting to be written", qw_redis_target(qw_pool_redis(d->pool)),
		    refused, st.busy,
		    st.total, st.unsettled);
	else if (!qw_redis_is_up(qw_pool_redis(d->pool)))
		snprintf(status, sizeof(status), "waiting for Redis at %s; %u/%u busy, "
		    "%u results waiting to be written", qw_redis_target(qw_pool_redis(d->pool)),
		    st.busy, st.total,
		    st.unsettled);
	else if (stage <= QW_STAGE_LEASING && qw_pool_lease_wait(d->pool) != NULL)
		snprintf(status, sizeof(status), "starting: %s", qw_pool_lease_wait(d->pool));
	else if (stage <= QW_STAGE_LEASING)
		snprintf(status, sizeof(status), "starting: taking over instance %s", d->conf->instance);
	else
		snprintf(status, sizeof(status), "%s%s%s%s%s%s", stage == QW_STAGE_RUNNING ? "" :
		    qw_pool_stage_name(stage), stage == QW_STAGE_RUNNING ? "" : ": ", line,
		    d->conf->nsentinels > 0 || d->conf->cluster ? "; " : "",
		    d->conf->nsentinels > 0 ? qw_redis_target(qw_pool_redis(d->pool)) : "",
		    cluster);
	qw_notify_status(status);
	qw_pool_poll(d->pool);
	if (stage == QW_STAGE_DRAINING || stage == QW_STAGE_RELEASING) {
		int64_t left = d->drain_end_ms - qw_clock_mono_ms();
		if (left > 0)
			qw_notify_extend_timeout((uint64_t)(left + 2000) * 1000);
	}
}

/* The watchdog says the loop turns, not that Redis answers: a Redis outage,
 * or a master demoted to a replica, must never get the daemon killed and
 * restarted (it would only come back to the same Redis, with its running
 * jobs interrupted). /health and STATUS= tell those apart. */
static void
qw_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	qw_notify_watchdog();
}

/* Every job's handler needs descriptors (its pipes), as do Redis and the
 * metrics endpoint: take all the system allows (the soft limit, often 1024,
 * raised to the hard one), so that a flood of connections runs out later,
 * if at all. Handlers inherit the raised limit. */
static void
qw_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		qw_log_warn("cannot raise the open-file limit to %llu: %s",
		    (unsigned long long)rl.rlim_max, strerror(errno));
	else
		qw_log_debug("open-file limit raised to %llu", (unsigned long long)rl.rlim_max);
}

/* The cron ticks' connection: in a cluster, the master of the queue's slot. */
static struct qw_redis *
qw_daemon_route(void *arg, const char *key)
{
	return qw_pool_key_redis(arg, key);
}

static int
qw_daemon_setup(struct qw_daemon *d)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 };

	signal(SIGPIPE, SIG_IGN);
	qw_raise_nofile();
	d->base = event_base_new();
	if (d->base == NULL || qw_log_attach(d->base) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		d->sig_ev[i] = evsignal_new(d->base, sigs[i], qw_signal_cb, d);
		if (d->sig_ev[i] == NULL || event_add(d->sig_ev[i], NULL) < 0)
			return -1;
	}
	d->tick_ev = event_new(d->base, -1, EV_PERSIST, qw_tick_cb, d);
	if (d->tick_ev == NULL || event_add(d->tick_ev, &(struct timeval){ 1, 0 }) < 0)
		return -1;
	/* Pinged from the loop itself: a stuck loop stops the pings. */
	uint64_t wd = qw_notify_watchdog_interval_usec();
	if (wd > 0) {
		struct timeval tv = { (time_t)(wd / 1000000), (suseconds_t)(wd % 1000000) };
		d->watchdog_ev = event_new(d->base, -1, EV_PERSIST, qw_watchdog_cb, d);
		if (d->watchdog_ev == NULL || event_add(d->watchdog_ev, &tv) < 0)
			return -1;
	}
	d->shutdown = qw_cts_new();
	if (d->shutdown == NULL)
		return -1;
	d->dns = evdns_base_new(d->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (d->dns == NULL)
		return -1;
	qw_daemon_read_resolv_conf(d, true);
	d->pool = qw_pool_new(d->base, d->dns, d->conf, d->shutdown, qw_daemon_ready, qw_daemon_drained, d);
	if (d->pool == NULL)
		return -1;
	d->schedule = qw_schedule_new(d->base, qw_daemon_route, d->pool, d->conf);
	if (d->schedule == NULL)
		return -1;
	if (d->conf->metrics_listen != NULL) {
		const char *err;
		d->metrics = qw_metrics_start(d->base, d->conf->metrics_listen, d->pool, &err);
		if (d->metrics == NULL) {
			qw_log_err("metrics_listen %s: %s", d->conf->metrics_listen, err);
			return -1;
		}
		qw_log_info("metrics on http://%s/metrics", d->conf->metrics_listen);
	}
	return 0;
}

static void
qw_daemon_teardown(struct qw_daemon *d)
{
	qw_metrics_free(d->metrics);
	qw_pool_free(d->pool);
	qw_schedule_free(d->schedule);	/* after its connection: every reply came */
	qw_cts_free(d->shutdown);
	for (size_t i = 0; i < sizeof(d->sig_ev) / sizeof(d->sig_ev[0]); i++)
		if (d->sig_ev[i] != NULL)
			event_free(d->sig_ev[i]);
	if (d->tick_ev != NULL)
		event_free(d->tick_ev);
	if (d->watchdog_ev != NULL)
		event_free(d->watchdog_ev);
	if (d->dns != NULL) {
		/* Lookups cancelled with their connections report so from the
		 * loop: one more turn lets them free what they hold. */
		event_base_loop(d->base, EVLOOP_NONBLOCK);
		evdns_base_free(d->dns, 0);
	}
	qw_log_detach();
	if (d->base != NULL)
		event_base_free(d->base);
	qw_conf_free(d->conf);
}

static int
qw_parse_args(struct qw_daemon *d, int argc, char **argv, bool *test)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "test", no_argument, NULL, 't' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:tfvh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': d->conf_path = optarg; break;
		case 't': *test = true; break;
		case 'f': break;
		case 'v': d->verbose++; break;
		case 'V': printf("qworkerd %s\n", PACKAGE_VERSION); exit(0);
		case 'h': qw_usage(stdout); exit(0);
		default: qw_usage(stderr); return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "qworkerd: unexpected argument '%s'\n", argv[optind]);
		qw_usage(stderr);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct qw_daemon d = { .conf_path = QW_DEFAULT_CONF, .exit_code = 0 };
	bool test = false;
	char *err = NULL;

	qw_log_init(qw_stderr_is_journal(), LOG_INFO);
	qw_log_capture_libevent();
	if (qw_parse_args(&d, argc, argv, &test) < 0)
		return EX_USAGE;
	if (qw_conf_load(d.conf_path, &d.conf, &err) < 0) {
		fprintf(stderr, "%s\n", err ? err : "out of memory");
		qw_notify_errno(EINVAL, err ? err : "configuration error");
		free(err);
		return EX_CONFIG;
	}
	if (test) {
		char nq[48], nc[48] = "";

		if (d.conf->ncrons > 0)
			snprintf(nc, sizeof(nc), ", %s", qw_fmt_count(nq, sizeof(nq),
			    d.conf->ncrons, "cron schedule", "cron schedules"));
		printf("%s: configuration OK (%s%s)\n", d.conf_path,
		    qw_fmt_count(nq, sizeof(nq), d.conf->nqueues, "queue", "queues"), nc);
		qw_conf_free(d.conf);
		return 0;
	}
	qw_log_set_level(qw_effective_level(&d, d.conf->log_level));
	qw_log_info("qworkerd %s starting: %s, Redis at %s", PACKAGE_VERSION, d.conf_path,
	    d.conf->redis_address);
	qw_notify_status("connecting to Redis");
	errno = 0;
	if (qw_daemon_setup(&d) < 0) {
		/* errno 0: the step that failed logged its own cause (qw_pool_new). */
		int cause = errno;
		qw_log_err("startup failed%s%s", cause ? ": " : "", cause ? strerror(cause) : "");
		if (cause)
			qw_notify_errno(cause, "startup failed");
		else
			qw_notify_status("startup failed");
		qw_daemon_teardown(&d);
		return EX_SOFTWARE;
	}
	if (event_base_dispatch(d.base) < 0) {
		qw_log_err("event loop failed");
		d.exit_code = EX_SOFTWARE;
	}
	qw_log_notice("stopped");
	qw_daemon_teardown(&d);
	return d.exit_code;
}
