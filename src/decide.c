/* decide.c - owns the pool's pure decisions (see decide.h). */
#include "config.h"

#include <string.h>

#include "decide.h"
#include "token.h"

/* A failed run spends an attempt: retried while attempts remain, unless the
 * handler said the failure is permanent. */
static void
qw_decide_failure(const struct qw_outcome_in *in, bool permanent, struct qw_outcome *out)
{
	bool retry;

	out->attempt = in->attempt + 1;
	/* A permanent failure is the job's fault, not its downstream's. */
	out->breaker = permanent ? 0 : -1;
	retry = !permanent && out->attempt < in->max_attempts;
	out->dest = retry ? QW_DEST_SCHEDULED : QW_DEST_DEAD;
	if (out->timed_out)
		out->counters = retry ? "failed retried timed_out" : "failed dead timed_out";
	else
		out->counters = retry ? "failed retried" : "failed dead";
}

void
qw_decide_outcome(const struct qw_outcome_in *in, struct qw_outcome *out)
{
	memset(out, 0, sizeof(*out));
	out->attempt = in->attempt;
	out->interrupted = in->interrupted;
	/* An operator's cancel is final, whatever the handler made of it: the
	 * run counts as an attempt and the job is not retried. */
	if (in->reason == QW_CANCEL_CANCELLED) {
		out->attempt = in->attempt + 1;
		out->cancelled = true;
		out->dest = QW_DEST_DEAD;
		out->counters = "cancelled dead";
		return;
	}
	/* A handler that finished its job after the shutdown asked it to stop
	 * has done it: running it again would be a second delivery. One that
	 * ran past its own deadline has timed out, whatever it exits with. */
	if (in->reason == QW_CANCEL_TIMEOUT) {
		out->timed_out = true;
		qw_decide_failure(in, false, out);
		return;
	}
	if (in->result == QW_RESULT_OK) {
		out->dest = QW_DEST_DONE;
		out->counters = "succeeded";
		out->breaker = 1;
		return;
	}
	if (in->reason == QW_CANCEL_SHUTDOWN) {
		out->interrupted = in->interrupted + 1;
		out->interruptions_spent = out->interrupted >= in->max_interruptions;
		out->dest = out->interruptions_spent ? QW_DEST_DEAD : QW_DEST_PENDING;
		out->counters = out->interruptions_spent ? "dead" : "requeued";
		return;
	}
	qw_decide_failure(in, in->result == QW_RESULT_PERMANENT, out);
}

void
qw_decide_share(struct qw_share *qs, size_t n, unsigned free_slots, unsigned *want)
{
	memset(want, 0, n * sizeof(*want));
	while (free_slots > 0) {
		struct qw_share *best = NULL;
		int total = 0;
		for (size_t i = 0; i < n; i++) {
			if (want[i] >= qs[i].room)
				continue;
			qs[i].cw += (int)qs[i].weight;
			total += (int)qs[i].weight;
			if (best == NULL || qs[i].cw > best->cw)
				best = &qs[i];
		}
		if (best == NULL)
			break;
		best->cw -= total;
		want[best - qs]++;
		free_slots--;
	}
}

/* How many round trips' worth of jobs the buffer holds. It is refilled once
 * half empty, so the half left covers four round trips: a fetch four times
 * slower than its average still comes back before the workers run out, and
 * a job taken ahead starts within about eight round trips. */
#define QW_PREFETCH_ROUND_TRIPS 8

unsigned
qw_decide_prefetch(const struct qw_prefetch_in *in)
{
	double per;

	if (in->job_us == 0 || in->fetch_us == 0)
		return 0;
	/* Jobs that end while one fetch is on its way (in floating point: no
	 * product of measured times can overflow it). Below one, a fetch per
	 * free slot keeps up, and a job taken ahead would only wait here while
	 * another instance could run it. */
	per = (double)in->slots * (double)in->fetch_us / (double)in->job_us;
	if (per < 1)
		return 0;
	per *= QW_PREFETCH_ROUND_TRIPS;
	return per < in->max ? (unsigned)per : in->max;
}

uint64_t
qw_decide_smooth(uint64_t avg, uint64_t sample, unsigned up, unsigned down)
{
	if (avg == 0)
		avg = sample;
	else if (sample > avg)
		avg += (sample - avg) >> up;
	else
		avg -= (avg - sample) >> down;
	return avg ? avg : 1;
}
