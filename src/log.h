/* log.h - one line per event on stderr. */
#ifndef QW_LOG_H
#define QW_LOG_H

#include <stdbool.h>
#include <syslog.h>

/* journal: prefix lines with "<N>" for systemd/journald instead of a timestamp. */
void qw_log_init(bool journal, int level);
void qw_log_set_level(int level);
/* Sends libevent's log messages through qw_log. */
void qw_log_capture_libevent(void);
int qw_log_level(void);
/* Parses "error", "warning", "notice", "info" or "debug"; -1 when unknown. */
int qw_log_parse_level(const char *name);
const char *qw_log_level_name(int level);
void qw_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define qw_log_err(...) qw_log(LOG_ERR, __VA_ARGS__)
#define qw_log_warn(...) qw_log(LOG_WARNING, __VA_ARGS__)
#define qw_log_notice(...) qw_log(LOG_NOTICE, __VA_ARGS__)
#define qw_log_info(...) qw_log(LOG_INFO, __VA_ARGS__)
#define qw_log_debug(...) qw_log(LOG_DEBUG, __VA_ARGS__)

#endif
