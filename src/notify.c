/* notify.c - owns the sd_notify(3) messages. Outside systemd (no
 * NOTIFY_SOCKET) every call is a cheap no-op inside libsystemd. */
#include "config.h"

#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "log.h"
#include "notify.h"

void
qw_notify_ready(void)
{
	sd_notify(0, "READY=1");
}

void
qw_notify_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

void
qw_notify_reloading(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

void
qw_notify_status(const char *status)
{
	sd_notifyf(0, "STATUS=%s", status);
}

void
qw_notify_errno(int err, const char *status)
{
	sd_notifyf(0, "STATUS=%s\nERRNO=%d", status, err);
}

void
qw_notify_watchdog(void)
{
	sd_notify(0, "WATCHDOG=1");
}

void
qw_notify_extend_timeout(uint64_t usec)
{
	sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)usec);
}

uint64_t
qw_notify_watchdog_interval_usec(void)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0)
		return 0;
	return usec / 2;
}
