/* fmt.h - number formatting for Redis arguments and log lines, in one
 * place: no printf on the hot path, and durations written the way a
 * configuration file writes them. */
#ifndef QW_FMT_H
#define QW_FMT_H

#include <stddef.h>
#include <stdint.h>

#define QW_FMT_U64_LEN 24	/* room for any uint64_t and its NUL */

/* Writes V in decimal into BUF (QW_FMT_U64_LEN bytes); returns its length. */
size_t qw_fmt_u64(char *buf, uint64_t v);
/* Writes MS as a duration the way qworkerd.conf(5) takes it: "25s", "2h",
 * "1d", "500ms", "2.5s" (never in exponent form): log lines and errors say
 * a duration the way the configuration wrote it. Returns BUF. */
const char *qw_fmt_duration(char *buf, size_t len, uint64_t ms);
/* Writes MS as seconds, "30", "2.5", "0.001": for "timed out after Ns". */
const char *qw_fmt_seconds(char *buf, size_t len, uint64_t ms);

/* Writes "1 queue", "2 queues": N and ONE or MANY. Returns BUF. */
const char *qw_fmt_count(char *buf, size_t len, uint64_t n, const char *one, const char *many);

#endif
