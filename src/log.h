/* log.h - one line per event on stderr, control characters escaped; writing
 * never waits (see log.c). */
#ifndef QW_LOG_H
#define QW_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

/* journal: prefix lines with "<N>" for systemd/journald instead of a timestamp. */
void qw_log_init(bool journal, int level);
void qw_log_set_level(int level);
struct event_base;
/* Lines that stderr does not take at once are written later from BASE's
 * loop; call from the thread that runs it. Until then, and after detach,
 * they wait in the bounded queue. */
int qw_log_attach(struct event_base *base);
/* Before BASE is freed: writes what is queued, waiting a second at most. */
void qw_log_detach(void);
/* Copies LEN bytes of SRC to DST with C0 controls, DEL and C1 controls
 * (UTF-8 U+0080..U+009F, and lone bytes 0x80..0x9f outside valid UTF-8)
 * escaped as \n, \r, \t or \xHH; stops before an escape that would not fit
 * with the terminating NUL in SIZE bytes. Returns the length written. */
size_t qw_log_escape(char *dst, size_t size, const char *src, size_t len);
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

/* A problem that repeats (a script that fails every second) is logged when
 * it starts, when it changes and when it ends, not each time: SLOT keeps
 * its text (owned). Returns true when ERR is new, or, with ERR NULL, when a
 * problem just ended. */
bool qw_log_changed(char **slot, const char *err);

#endif
