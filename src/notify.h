/* notify.h - talking to the service manager (sd_notify(3)). */
#ifndef QW_NOTIFY_H
#define QW_NOTIFY_H

#include <stdint.h>

void qw_notify_ready(void);
void qw_notify_stopping(void);
void qw_notify_reloading(void);
void qw_notify_status(const char *status);
void qw_notify_errno(int err, const char *status);
void qw_notify_watchdog(void);
void qw_notify_extend_timeout(uint64_t usec);
/* Half of WATCHDOG_USEC, or 0 when the manager wants no pings. */
uint64_t qw_notify_watchdog_interval_usec(void);

#endif
