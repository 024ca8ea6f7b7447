/* flow.c - owns the circuit breaker's states as this daemon reads them from
 * the scripts' replies, and the log lines of its moves (see flow.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flow.h"
#include "fmt.h"
#include "log.h"

static const char *const qw_flow_names[QW_BREAKER_NSTATES] = {
	[QW_BREAKER_CLOSED] = "closed", [QW_BREAKER_OPEN] = "open",
	[QW_BREAKER_HALF_OPEN] = "half-open",
};

#define B(s) (1u << (s))
static const unsigned qw_flow_moves[QW_BREAKER_NSTATES] = {
	[QW_BREAKER_CLOSED] = B(QW_BREAKER_OPEN),
	[QW_BREAKER_OPEN] = B(QW_BREAKER_HALF_OPEN),
	[QW_BREAKER_HALF_OPEN] = B(QW_BREAKER_CLOSED) | B(QW_BREAKER_OPEN),
};
#undef B

const char *
qw_flow_breaker_name(enum qw_breaker_state s)
{
	return s < QW_BREAKER_NSTATES ? qw_flow_names[s] : "?";
}

int
qw_flow_breaker_parse(const char *s, size_t len, enum qw_breaker_state *out)
{
	for (int i = 0; i < QW_BREAKER_NSTATES; i++)
		if (strlen(qw_flow_names[i]) == len && memcmp(qw_flow_names[i], s, len) == 0) {
			*out = (enum qw_breaker_state)i;
			return 0;
		}
	return -1;
}

bool
qw_flow_breaker_move(enum qw_breaker_state from, enum qw_breaker_state to)
{
	return from < QW_BREAKER_NSTATES && to < QW_BREAKER_NSTATES &&
	    (qw_flow_moves[from] & (1u << to)) != 0;
}

/* The next space-separated word of [*S, END): its start and length. */
static size_t
qw_flow_word(const char **s, const char *end, const char **w)
{
	const char *p = *s;

	while (p < end && *p == ' ')
		p++;
	*w = p;
	while (p < end && *p != ' ')
		p++;
	*s = p;
	return (size_t)(p - *w);
}

/* "flow STATE FROM WAIT": STATE and FROM are breaker states or "-" (no
 * breaker, no move), WAIT a number of milliseconds. */
int
qw_flow_parse(const char *s, size_t len, struct qw_flow_seen *out)
{
	const char *end = s + len, *w;
	size_t n;
	char num[24];

	memset(out, 0, sizeof(*out));
	if (qw_flow_word(&s, end, &w) != 4 || memcmp(w, "flow", 4) != 0)
		return -1;
	n = qw_flow_word(&s, end, &w);
	out->breaker = !(n == 1 && *w == '-');
	if (out->breaker && qw_flow_breaker_parse(w, n, &out->state) < 0)
		return -1;
	n = qw_flow_word(&s, end, &w);
	out->moved = !(n == 1 && *w == '-');
	if (out->moved && qw_flow_breaker_parse(w, n, &out->from) < 0)
		return -1;
	n = qw_flow_word(&s, end, &w);
	if (n == 0 || n >= sizeof(num) || strspn(w, "0123456789") < n)
		return -1;
	memcpy(num, w, n);
	num[n] = '\0';
	out->wait_ms = strtoull(num, NULL, 10);
	return 0;
}

void
qw_flow_say_moved(const char *queue, enum qw_breaker_state from, enum qw_breaker_state to,
    unsigned failures, uint64_t cooldown_ms)
{
	char d[32];

	if (!qw_flow_breaker_move(from, to)) {
		qw_log_err("queue %s: circuit breaker moved from %s to %s, which it cannot (a bug, "
		    "or its hash was edited)", queue, qw_flow_breaker_name(from),
		    qw_flow_breaker_name(to));
		return;
	}
	qw_fmt_duration(d, sizeof(d), cooldown_ms);
	if (to == QW_BREAKER_OPEN && from == QW_BREAKER_CLOSED)
		qw_log_warn("queue %s: circuit breaker open after %u failed runs in a row: no "
		    "instance takes its jobs for %s", queue, failures, d);
	else if (to == QW_BREAKER_OPEN)
		qw_log_warn("queue %s: circuit breaker open again: its trial job failed; no "
		    "instance takes its jobs for %s", queue, d);
	else if (to == QW_BREAKER_HALF_OPEN)
		qw_log_warn("queue %s: circuit breaker half-open: one trial job is let through",
		    queue);
	else
		qw_log_warn("queue %s: circuit breaker closed: its trial job succeeded; taking "
		    "jobs again", queue);
}
