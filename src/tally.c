/* tally.c - owns the metrics' counts and histograms (see tally.h). */
#include "config.h"

#include <string.h>

#include "tally.h"

static const char *const qw_tally_names[QW_TALLY_NOUTCOMES] = {
	[QW_TALLY_SUCCEEDED] = "succeeded", [QW_TALLY_FAILED] = "failed",
	[QW_TALLY_RETRIED] = "retried", [QW_TALLY_TIMED_OUT] = "timed_out",
	[QW_TALLY_REQUEUED] = "requeued", [QW_TALLY_RECOVERED] = "recovered",
	[QW_TALLY_DEAD] = "dead", [QW_TALLY_CANCELLED] = "cancelled",
};

/* Jobs run from a millisecond to an hour: roughly 1-2.5-5 steps up to 10 s,
 * then the minutes an operator thinks in. */
static const uint64_t qw_tally_job_le[] = {
	1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000, 30000000, 60000000, 120000000,
	300000000, 600000000, 1800000000, 3600000000,
};
/* A Redis command on a healthy network takes tens to hundreds of us; the
 * top buckets catch a server that stalls. */
static const uint64_t qw_tally_redis_le[] = {
	100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
	500000, 1000000, 5000000,
};

const struct qw_tally_bounds qw_tally_job_bounds = {
	qw_tally_job_le, sizeof(qw_tally_job_le) / sizeof(qw_tally_job_le[0]) };
const struct qw_tally_bounds qw_tally_redis_bounds = {
	qw_tally_redis_le, sizeof(qw_tally_redis_le) / sizeof(qw_tally_redis_le[0]) };

const char *
qw_tally_outcome_name(enum qw_tally_outcome o)
{
	return o < QW_TALLY_NOUTCOMES ? qw_tally_names[o] : "?";
}

/* A linear scan from the smallest bound: most observations are short, so
 * it ends within a few compares. */
void
qw_tally_observe(struct qw_tally_hist *h, const struct qw_tally_bounds *b, uint64_t us)
{
	unsigned i = 0;

	while (i < b->n && us > b->le_us[i])
		i++;
	h->bucket[i]++;
	h->count++;
	h->sum_us += us;
}

/* The outcome a word of LEN bytes names, told apart by its first letter and
 * length, checked in full; QW_TALLY_NOUTCOMES when none. */
static enum qw_tally_outcome
qw_tally_word(const char *w, size_t len)
{
	enum qw_tally_outcome o;

	switch (w[0]) {
	case 's': o = QW_TALLY_SUCCEEDED; break;
	case 'f': o = QW_TALLY_FAILED; break;
	case 't': o = QW_TALLY_TIMED_OUT; break;
	case 'd': o = QW_TALLY_DEAD; break;
	case 'c': o = QW_TALLY_CANCELLED; break;
	case 'r':
		o = len == 7 ? QW_TALLY_RETRIED : len == 8 ? QW_TALLY_REQUEUED : QW_TALLY_RECOVERED;
		break;
	default: return QW_TALLY_NOUTCOMES;
	}
	if (strncmp(qw_tally_names[o], w, len) != 0 || qw_tally_names[o][len] != '\0')
		return QW_TALLY_NOUTCOMES;
	return o;
}

void
qw_tally_outcomes(struct qw_tally *t, const char *counters)
{
	const char *p = counters;

	while (*p != '\0') {
		size_t len = 0;
		while (p[len] != ' ' && p[len] != '\0')
			len++;
		enum qw_tally_outcome o = len ? qw_tally_word(p, len) : QW_TALLY_NOUTCOMES;
		if (o != QW_TALLY_NOUTCOMES)
			t->outcome[o]++;
		p += len;
		p += *p == ' ';
	}
}
