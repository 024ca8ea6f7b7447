/* notify.c - owns the sd_notify(3) messages, sent by hand rather than with
 * libsystemd's sd_notify(): that one blocks when the manager's socket is full
 * (a stalled or busy PID 1), and a notification must never stall the event
 * loop. A message the socket cannot take at once is dropped, as a datagram
 * may be; the next status or watchdog ping follows soon. Outside systemd (no
 * NOTIFY_SOCKET) every call is a no-op. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "notify.h"

/* The manager's address, from NOTIFY_SOCKET: a path, or "@name" for an
 * abstract socket. Anything else (vsock) is not ours to reach: no-op. */
static int
qw_notify_address(struct sockaddr_un *sa, socklen_t *salen)
{
	const char *e = getenv("NOTIFY_SOCKET");
	size_t n;

	if (e == NULL || (e[0] != '/' && e[0] != '@'))
		return -1;
	n = strlen(e);
	if (n < 2 || n > sizeof(sa->sun_path))
		return -1;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, e, n);
	if (e[0] == '@')
		sa->sun_path[0] = '\0';
	/* An abstract name is exactly n bytes; a path may be NUL-terminated. */
	*salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'));
	if (*salen > sizeof(*sa))
		*salen = sizeof(*sa);
	return 0;
}

static void
qw_notify_send(const char *msg)
{
	static int fd = -1;
	struct sockaddr_un sa;
	socklen_t salen;

	if (qw_notify_address(&sa, &salen) < 0)
		return;
	if (fd < 0)
		fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		qw_log_debug("sd_notify: socket: %s", strerror(errno));
		return;
	}
	if (sendto(fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL,
	    (struct sockaddr *)&sa, salen) < 0)
		qw_log_debug("sd_notify %.40s: %s; not sent", msg, strerror(errno));
}

static void __attribute__((format(printf, 1, 2)))
qw_notify_sendf(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	qw_notify_send(msg);
}

void
qw_notify_ready(void)
{
	qw_notify_send("READY=1");
}

void
qw_notify_stopping(void)
{
	qw_notify_send("STOPPING=1");
}

void
qw_notify_reloading(void)
{
	qw_notify_sendf("RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)qw_clock_mono_us());
}

void
qw_notify_status(const char *status)
{
	qw_notify_sendf("STATUS=%s", status);
}

void
qw_notify_errno(int err, const char *status)
{
	qw_notify_sendf("STATUS=%s\nERRNO=%d", status, err);
}

void
qw_notify_watchdog(void)
{
	qw_notify_send("WATCHDOG=1");
}

void
qw_notify_extend_timeout(uint64_t usec)
{
	qw_notify_sendf("EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)usec);
}

uint64_t
qw_notify_watchdog_interval_usec(void)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0)
		return 0;
	return usec / 2;
}
