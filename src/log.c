/* log.c - owns the log format and the way lines reach stderr: journald
 * priority prefixes under systemd, timestamps otherwise.
 *
 * Every line is escaped after formatting: instance names, lease holders,
 * job ids and handler output come from Redis or from handlers, and a control
 * character among them could end the line and forge the next one (a "\n<0>"
 * is an emergency in the journal). Callers need not remember.
 *
 * Writing never waits: a stalled journald must not stall the event loop.
 * stderr is written without blocking, one write(2) per line so lines never
 * interleave mid-line. Lines that stderr does not take at once wait in a
 * bounded queue that a write event on the daemon's loop drains; lines beyond
 * the bound are dropped, and how many is logged once the queue has drained.
 * Plugins log from their worker threads, hence the mutex; it is recursive
 * because libevent may log (through us) from inside the event_add() we call
 * with it held, which we do only while the queue is consistent. */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define QW_LOG_LINE_MAX 8192
#define QW_LOG_QUEUE_MAX (256 * 1024)
/* How long the last lines may wait for stderr when the daemon exits. */
#define QW_LOG_EXIT_WAIT_MS 1000

static struct {
	bool journal;
	int level;
	pthread_mutex_t mu;
	int fd;			/* stderr, or a non-blocking opening of the same pipe */
	bool sock;		/* fd is a socket: send(MSG_DONTWAIT), no flag to set */
	char queue[QW_LOG_QUEUE_MAX];	/* whole lines, from head, len bytes */
	size_t head, len;
	uint64_t dropped;
	struct event *write_ev;	/* on the loop: stderr takes bytes again */
	struct event *wake_ev;	/* another thread asks the loop to arm write_ev */
	int wake_fd;
	pthread_t loop;
} qw_log_state = {
	.journal = false, .level = LOG_INFO, .mu = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP,
	.fd = STDERR_FILENO, .wake_fd = -1,
};

static const char *const qw_log_names[] = {
	[LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
	[LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

/* ---- escaping ------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s (2 to 4), or 0 if there is none. */
static size_t
qw_log_utf8_len(const unsigned char *s, size_t len)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	/* The second byte's range excludes overlong forms, surrogates and
	 * code points above U+10FFFF. */
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (len < n || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

static size_t
qw_log_escape_byte(char *dst, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";

	dst[0] = '\\';
	switch (c) {
	case '\n': dst[1] = 'n'; return 2;
	case '\r': dst[1] = 'r'; return 2;
	case '\t': dst[1] = 't'; return 2;
	default:
		dst[1] = 'x';
		dst[2] = hex[c >> 4];
		dst[3] = hex[c & 15];
		return 4;
	}
}

size_t
qw_log_escape(char *dst, size_t size, const char *src, size_t len)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t out = 0, i = 0;
	char esc[8];

	if (size == 0)
		return 0;
	while (i < len) {
		size_t n = 1, elen;

		if (s[i] < 0x20 || s[i] == 0x7f) {
			elen = qw_log_escape_byte(esc, s[i]);
		} else if (s[i] < 0x80) {
			esc[0] = (char)s[i];
			elen = 1;
		} else if ((n = qw_log_utf8_len(s + i, len - i)) == 0) {
			/* Not UTF-8: a lone C1 byte is escaped, other bytes pass. */
			n = 1;
			if (s[i] <= 0x9f) {
				elen = qw_log_escape_byte(esc, s[i]);
			} else {
				esc[0] = (char)s[i];
				elen = 1;
			}
		} else if (s[i] == 0xc2 && s[i + 1] <= 0x9f) {
			/* U+0080..U+009F, the C1 controls (CSI is one). */
			elen = qw_log_escape_byte(esc, s[i]);
			elen += qw_log_escape_byte(esc + elen, s[i + 1]);
		} else {
			memcpy(esc, s + i, n);
			elen = n;
		}
		if (out + elen >= size)
			break;
		memcpy(dst + out, esc, elen);
		out += elen;
		i += n;
	}
	dst[out] = '\0';
	return out;
}

/* ---- levels -------------------------------------------------------------- */

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

/* ---- output -------------------------------------------------------------- */

/* A pipe or terminal gets an opening of its own with O_NONBLOCK, so that the
 * flag does not change the file description other processes share with us
 * (the shell's terminal, say). A socket (journald's stream) needs no flag:
 * send() takes MSG_DONTWAIT. A regular file never makes a write wait. */
static void
qw_log_open_output(void)
{
	struct stat st;
	int fd;

	if (fstat(STDERR_FILENO, &st) < 0)
		return;
	if (S_ISSOCK(st.st_mode)) {
		qw_log_state.sock = true;
		return;
	}
	if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode))
		return;
	fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd >= 0) {
		qw_log_state.fd = fd;
		return;
	}
	/* No /proc: the shared flag is still better than a stalled loop. */
	int fl = fcntl(STDERR_FILENO, F_GETFL);
	if (fl >= 0)
		fcntl(STDERR_FILENO, F_SETFL, fl | O_NONBLOCK);
}

void
qw_log_init(bool journal, int level)
{
	qw_log_state.journal = journal;
	qw_log_state.level = level;
	qw_log_open_output();
}

static ssize_t
qw_log_write(const char *p, size_t n)
{
	ssize_t w;

	do {
		if (qw_log_state.sock)
			w = send(qw_log_state.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		else
			w = write(qw_log_state.fd, p, n);
	} while (w < 0 && errno == EINTR);
	return w;
}

/* Asks the loop to call us when stderr takes bytes again; with the lock held. */
static void
qw_log_arm(void)
{
	if (qw_log_state.write_ev == NULL)
		return;
	if (pthread_equal(pthread_self(), qw_log_state.loop)) {
		event_add(qw_log_state.write_ev, NULL);
	} else {
		/* libevent here is not thread-safe: the loop arms it itself. */
		uint64_t one = 1;
		if (write(qw_log_state.wake_fd, &one, sizeof(one)) < 0) {
		}
	}
}

/* Writes queued lines, one write(2) each, until stderr would block. Returns
 * false when some are left. With the lock held. */
static bool
qw_log_flush_queue(void)
{
	while (qw_log_state.len > 0) {
		char *p = qw_log_state.queue + qw_log_state.head;
		char *nl = memchr(p, '\n', qw_log_state.len);
		size_t n = (size_t)(nl - p) + 1;
		ssize_t w = qw_log_write(p, n);

		if (w < 0 && errno == EAGAIN)
			return false;
		if (w < 0)
			w = (ssize_t)n;	/* a closed stderr: nothing will take it */
		qw_log_state.head += (size_t)w;
		qw_log_state.len -= (size_t)w;
		if ((size_t)w < n)
			return false;
	}
	qw_log_state.head = 0;
	return true;
}

static void
qw_log_enqueue(const char *line, size_t n)
{
	if (qw_log_state.len + n > sizeof(qw_log_state.queue)) {
		qw_log_state.dropped++;
		return;
	}
	if (qw_log_state.head + qw_log_state.len + n > sizeof(qw_log_state.queue)) {
		memmove(qw_log_state.queue, qw_log_state.queue + qw_log_state.head,
		    qw_log_state.len);
		qw_log_state.head = 0;
	}
	memcpy(qw_log_state.queue + qw_log_state.head + qw_log_state.len, line, n);
	qw_log_state.len += n;
	if (qw_log_state.len == n)
		qw_log_arm();
}

/* Writes one line, or queues what stderr does not take. With the lock held. */
static void
qw_log_put(const char *line, size_t n)
{
	ssize_t w;

	if (!qw_log_flush_queue()) {
		qw_log_enqueue(line, n);
		return;
	}
	w = qw_log_write(line, n);
	if (w < 0 && errno == EAGAIN)
		w = 0;
	if (w >= 0 && (size_t)w < n)
		qw_log_enqueue(line + w, n - (size_t)w);
}

/* Prefix, escaped message and newline; returns the line's length. */
static size_t
qw_log_format(char *buf, size_t size, int prio, const char *msg, size_t len)
{
	size_t off;

	if (qw_log_state.journal) {
		off = (size_t)snprintf(buf, size, "<%d>", prio);
	} else {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		off = strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
		off += (size_t)snprintf(buf + off, size - off, ".%03ld %s: ",
		    ts.tv_nsec / 1000000, qw_log_names[prio & 7]);
	}
	off += qw_log_escape(buf + off, size - off - 1, msg, len);
	buf[off++] = '\n';
	return off;
}

/* Once the queue has drained, says how many lines it could not hold. */
static void
qw_log_report_dropped(void)
{
	char msg[96], line[160];
	int n;

	if (qw_log_state.dropped == 0 || qw_log_state.len > 0)
		return;
	n = snprintf(msg, sizeof(msg), "%llu log lines dropped: stderr did not take them in time",
	    (unsigned long long)qw_log_state.dropped);
	qw_log_state.dropped = 0;
	qw_log_put(line, qw_log_format(line, sizeof(line), LOG_WARNING, msg, (size_t)n));
}

void
qw_log(int prio, const char *fmt, ...)
{
	char msg[QW_LOG_LINE_MAX], line[QW_LOG_LINE_MAX];
	int saved = errno;
	va_list ap;
	int n;

	if (prio > qw_log_state.level)
		return;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = (int)sizeof(msg) - 1;
	size_t len = qw_log_format(line, sizeof(line), prio, msg, (size_t)n);
	pthread_mutex_lock(&qw_log_state.mu);
	qw_log_put(line, len);
	qw_log_report_dropped();
	pthread_mutex_unlock(&qw_log_state.mu);
	errno = saved;
}

static void
qw_log_write_cb(evutil_socket_t fd, short what, void *arg)
{
	pthread_mutex_lock(&qw_log_state.mu);
	if (!qw_log_flush_queue())
		event_add(qw_log_state.write_ev, NULL);
	qw_log_report_dropped();
	pthread_mutex_unlock(&qw_log_state.mu);
}

static void
qw_log_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0) {
	}
	pthread_mutex_lock(&qw_log_state.mu);
	if (qw_log_state.len > 0)
		event_add(qw_log_state.write_ev, NULL);
	pthread_mutex_unlock(&qw_log_state.mu);
}

int
qw_log_attach(struct event_base *base)
{
	int rc = -1;

	pthread_mutex_lock(&qw_log_state.mu);
	qw_log_state.loop = pthread_self();
	qw_log_state.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (qw_log_state.wake_fd < 0)
		goto out;
	qw_log_state.wake_ev = event_new(base, qw_log_state.wake_fd, EV_READ | EV_PERSIST,
	    qw_log_wake_cb, NULL);
	qw_log_state.write_ev = event_new(base, qw_log_state.fd, EV_WRITE, qw_log_write_cb, NULL);
	if (qw_log_state.wake_ev == NULL || qw_log_state.write_ev == NULL ||
	    event_add(qw_log_state.wake_ev, NULL) < 0)
		goto out;
	if (qw_log_state.len > 0)
		event_add(qw_log_state.write_ev, NULL);
	rc = 0;
out:
	pthread_mutex_unlock(&qw_log_state.mu);
	if (rc < 0)
		qw_log_detach();
	return rc;
}

void
qw_log_detach(void)
{
	pthread_mutex_lock(&qw_log_state.mu);
	if (qw_log_state.wake_ev != NULL)
		event_free(qw_log_state.wake_ev);
	if (qw_log_state.write_ev != NULL)
		event_free(qw_log_state.write_ev);
	qw_log_state.wake_ev = qw_log_state.write_ev = NULL;
	if (qw_log_state.wake_fd >= 0)
		close(qw_log_state.wake_fd);
	qw_log_state.wake_fd = -1;
	/* The loop is over: the last lines (why we stopped) may wait a little. */
	for (int waited = 0; !qw_log_flush_queue() && waited < QW_LOG_EXIT_WAIT_MS; waited += 100)
		poll(&(struct pollfd){ .fd = qw_log_state.fd, .events = POLLOUT }, 1, 100);
	qw_log_report_dropped();
	pthread_mutex_unlock(&qw_log_state.mu);
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

/* A problem that repeats (a script that fails every second) is logged when
 * it starts, when it changes and when it ends, not each time: SLOT keeps
 * its text. Returns true when ERR is new, or, with ERR NULL, when a problem
 * just ended. */
bool
qw_log_changed(char **slot, const char *err)
{
	if (err == NULL) {
		bool ended = *slot != NULL;
		free(*slot);
		*slot = NULL;
		return ended;
	}
	if (*slot != NULL && strcmp(*slot, err) == 0)
		return false;
	free(*slot);
	*slot = strdup(err);
	return true;
}
