/* log.c - owns the log format: journald priority prefixes under systemd,
 * timestamps otherwise. One write(2) per line so lines from one process never
 * interleave mid-line. */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static struct {
	bool journal;
	int level;
} qw_log_state = { false, LOG_INFO };

static const char *const qw_log_names[] = {
	[LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
	[LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void
qw_log_init(bool journal, int level)
{
	qw_log_state.journal = journal;
	qw_log_state.level = level;
}

void
qw_log_set_level(int level)
{
	qw_log_state.level = level;
}

int
qw_log_level(void)
{
	return qw_log_state.level;
}

int
qw_log_parse_level(const char *name)
{
	for (int i = LOG_ERR; i <= LOG_DEBUG; i++)
		if (strcasecmp(name, qw_log_names[i]) == 0)
			return i;
	if (strcasecmp(name, "warn") == 0)
		return LOG_WARNING;
	return -1;
}

const char *
qw_log_level_name(int level)
{
	if (level < 0 || level > LOG_DEBUG)
		return "?";
	return qw_log_names[level];
}

void
qw_log(int prio, const char *fmt, ...)
{
	char buf[8192];
	int off;
	int saved = errno;
	va_list ap;

	if (prio > qw_log_state.level)
		return;
	if (qw_log_state.journal) {
		off = snprintf(buf, sizeof(buf), "<%d>", prio);
	} else {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		off = (int)strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
		off += snprintf(buf + off, sizeof(buf) - (size_t)off, ".%03ld %s: ",
		    ts.tv_nsec / 1000000, qw_log_names[prio & 7]);
	}
	va_start(ap, fmt);
	int n = vsnprintf(buf + off, sizeof(buf) - (size_t)off - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	off += n;
	if ((size_t)off > sizeof(buf) - 2)
		off = (int)sizeof(buf) - 2;
	buf[off++] = '\n';
	/* Lossy by design: a full or closed stderr must never stall the daemon. */
	if (write(STDERR_FILENO, buf, (size_t)off) < 0) {
	}
	errno = saved;
}

/* libevent's own warnings (evdns's "nameserver is down", say) go where ours go. */
static void
qw_log_libevent_cb(int severity, const char *msg)
{
	int prio = severity == EVENT_LOG_ERR ? LOG_ERR : severity == EVENT_LOG_WARN ?
	    LOG_WARNING : severity == EVENT_LOG_MSG ? LOG_INFO : LOG_DEBUG;

	qw_log(prio, "libevent: %s", msg);
}

void
qw_log_capture_libevent(void)
{
	event_set_log_callback(qw_log_libevent_cb);
}
