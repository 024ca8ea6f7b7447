/* run.c - owns one job's run: starting its handler (a process or a plugin
 * on a worker thread), its cancellation token (the job's deadline linked to
 * the shutdown), and turning how it ended into a result for settle.c. */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "decide.h"
#include "exec.h"
#include "log.h"
#include "pool_int.h"
#include "token.h"

/* How many finished runs a queue keeps for its next jobs: enough for every
 * slot at the usual concurrency, few enough to give memory back after a
 * burst at a high one. */
#define QW_RUN_SPARE_MAX 64

/* Gives back what RUN holds for its job; the run itself, its token source
 * and its kill_grace timer stay. */
static void
qw_run_clear(struct qw_run *run)
{
	if (run->grace_ev != NULL)
		event_del(run->grace_ev);
	free(run->work.error);
	free(run->cancel_text);
	qw_exec_free(run->exec);
	if (run->wjob != NULL)
		qw_worker_job_drop(run->wjob);
	qw_job_clear(&run->job);
}

static void
qw_run_destroy(struct qw_run *run)
{
	qw_run_clear(run);
	if (run->grace_ev != NULL)
		event_free(run->grace_ev);
	qw_cts_free(run->cts);
	qw_cts_free(run->spare_cts);
	free(run);
}

/* Frees a run that has no record any more, unless a worker thread still
 * holds its job: then qw_run_plugin_done frees it when the thread is done.
 * Its queue may be gone by then, so such a run is never kept as a spare. */
static void
qw_run_release(struct qw_run *run)
{
	if (!run->in_thread)
		qw_run_destroy(run);
}

/* A run whose job has its result, on a queue that lives on: kept for the
 * queue's next job (no allocation per job), or freed when enough are. */
static void
qw_run_recycle(struct qw_run *run)
{
	struct qw_queue *q = run->q;
	struct qw_cts *cts = run->cts != NULL ? run->cts : run->spare_cts;
	struct event *grace_ev = run->grace_ev;

	if (run->in_thread)
		return;
	if (q->nspare_runs >= QW_RUN_SPARE_MAX || cts == NULL) {
		qw_run_destroy(run);
		return;
	}
	qw_run_clear(run);
	/* Nothing may reach this run through its token any more: the
	 * shutdown's cancel would call qw_run_cancelled on a spare. */
	qw_cts_reset(cts);
	memset(run, 0, sizeof(*run));
	run->spare_cts = cts;
	run->grace_ev = grace_ev;
	run->next_spare = q->spare_runs;
	q->spare_runs = run;
	q->nspare_runs++;
}

void
qw_run_spares_free(struct qw_queue *q)
{
	struct qw_run *run;

	while ((run = q->spare_runs) != NULL) {
		q->spare_runs = run->next_spare;
		qw_run_destroy(run);
	}
	q->nspare_runs = 0;
}

void
qw_run_drop(struct qw_run *run)
{
	run->rec->run = NULL;
	run->rec = NULL;
	qw_run_release(run);
}

/* The element that goes back to Redis: the job re-encoded with its new
 * attempt, interrupted and error, or as it was taken when REENCODE is false
 * (a job given back untouched, or one too large to rewrite). Out of memory,
 * the job goes back on pending as it was taken: it loses no more than this
 * run's count. */
static char *
qw_run_result_elem(struct qw_run *run, enum qw_dest *dest, bool reencode, const char *error,
    size_t *len)
{
	char *elem = NULL;

	if (reencode) {
		/* A retry carries its run's field: unique, so that identical jobs
		 * stay two members of the scheduled set. */
		elem = qw_job_encode(&run->job, error, error ? qw_clock_wall_ms() : 0,
		    *dest == QW_DEST_SCHEDULED ? run->rec->field : NULL, len);
		if (elem != NULL)
			return elem;
		qw_log_err("job %s/%s: out of memory writing its result; back on pending as taken",
		    run->q->qc.name, run->job.id);
		*dest = QW_DEST_PENDING;
	}
	if (*dest == QW_DEST_DONE)
		return NULL;
	elem = run->job.elem;
	*len = run->job.elem_len;
	run->job.elem = NULL;
	return elem;
}

/* The handler of a FENCED record ended (or was given up on): another
 * process owns the job now, so nothing is written; the record goes and its
 * slot is free. False when the record is not FENCED. */
static bool
qw_run_end_fenced(struct qw_run *run)
{
	struct qw_queue *q = run->q;

	if (run->rec == NULL || run->rec->state != QW_REC_FENCED)
		return false;
	qw_log_notice("job %s/%s: its handler ended; no result written, another process owns "
	    "the job", q->qc.name, run->job.id);
	run->rec->run = NULL;
	qw_record_free(&q->recs, run->rec);
	run->rec = NULL;
	qw_run_recycle(run);
	qw_pool_dirty(q->pool);
	return true;
}

void
qw_run_fence(struct qw_rec *rec)
{
	struct qw_run *run = rec->run;

	if (qw_record_move(&rec->q->recs, rec, QW_REC_FENCED) < 0)
		return;
	qw_log_err("job %s/%s: taken over by another process while it ran here; stopping its "
	    "handler, its result will not be written", rec->q->qc.name, run->job.id);
	/* Stopped as at shutdown: SIGTERM, then SIGKILL after kill_grace; a
	 * plugin sees its token. Already cancelled (its deadline), it is
	 * being stopped anyway. */
	qw_cts_cancel(run->cts, QW_CANCEL_SHUTDOWN);
}

/* Ends a run: its record gets the result (FINISHED), and its slot is free. */
static void
qw_run_finish(struct qw_run *run, enum qw_dest dest, bool reencode, const char *error,
    uint64_t delay_ms, const char *counters)
{
	struct qw_queue *q = run->q;
	size_t len = 0;
	char *elem;

	if (qw_run_end_fenced(run))
		return;
	qw_tally_outcomes(&q->tally, counters);
	elem = qw_run_result_elem(run, &dest, reencode, error, &len);

	if (qw_record_finish(&q->recs, run->rec, dest, elem, len, delay_ms, counters) == 0) {
		run->rec->breaker = run->breaker;
		qw_settle_hold(run->rec, &run->job);
	}
	qw_settle_soon(q);
	run->rec = NULL;
	qw_run_recycle(run);
	qw_pool_dirty(q->pool);
}

/* Why the run was cut short: an operator's cancel wins over the token's
 * own reason (a timeout or shutdown that came first is overtaken: the
 * operator wants the job stopped for good). */
static int
qw_run_reason(const struct qw_run *run)
{
	if (run->cancel_text != NULL)
		return QW_CANCEL_CANCELLED;
	return run->cts ? qw_token_reason(qw_cts_token(run->cts)) : QW_CANCEL_NONE;
}

static void
qw_run_cancel_error(const struct qw_run *run, char *buf, size_t len)
{
	qw_cancel_error(buf, len, run->cancel_text);
}

/* "timed out after Ns" with N as the job's timeout was written (2.5, 86400),
 * never in exponent form. */
static void
qw_run_timeout_error(const struct qw_run *run, char *buf, size_t len)
{
	char s[32];

	snprintf(buf, len, "timed out after %ss", qw_fmt_seconds(s, sizeof(s), run->job.timeout_ms));
}

static void
qw_run_log_outcome(const struct qw_run *run, const struct qw_outcome *o, const char *error,
    uint64_t delay)
{
	const char *qn = run->q->qc.name, *id = run->job.id;
	char d[32];

	if (o->dest == QW_DEST_DONE)
		qw_log_debug("job %s/%s: succeeded", qn, id);
	else if (o->dest == QW_DEST_PENDING)
		qw_log_notice("job %s/%s: interrupted by shutdown, back on pending", qn, id);
	else if (o->interruptions_spent)
		qw_log_warn("job %s/%s: %s, moved to dead", qn, id, error);
	else if (o->cancelled)
		qw_log_notice("job %s/%s: %s, moved to dead", qn, id, error);
	else if (o->dest == QW_DEST_SCHEDULED)
		qw_log_warn("job %s/%s: %s (attempt %u of %u), retry in %s", qn, id, error,
		    o->attempt, run->job.max_attempts, qw_fmt_duration(d, sizeof(d), delay));
	else
		qw_log_err("job %s/%s: %s (attempt %u of %u), moved to dead", qn, id, error,
		    o->attempt, run->job.max_attempts);
}

/* What a finished or failed handler means for the job (SPEC 4), REASON
 * being why it was cancelled (if it was): decided by qw_decide_outcome,
 * carried out here. */
static void
qw_run_outcome_why(struct qw_run *run, enum qw_result result, const char *error, int reason)
{
	struct qw_queue *q = run->q;
	struct qw_pool *pool = q->pool;
	struct qw_outcome_in in = {
		.result = result, .attempt = run->job.attempt, .reason = reason,
		.max_attempts = run->job.max_attempts, .interrupted = run->job.interrupted,
		.max_interruptions = q->qc.max_interruptions,
	};
	struct qw_outcome o;
	char msg[QW_CANCEL_TEXT_MAX + 32];
	uint64_t delay = 0, ran_us;

	if (qw_run_end_fenced(run))
		return;
	qw_decide_outcome(&in, &o);
	ran_us = qw_clock_mono_us() - run->started_us;
	qw_fetch_job_ran(q, ran_us);
	qw_tally_observe(&q->tally.duration, &qw_tally_job_bounds, ran_us);
	pool->processed++;
	if (o.attempt != run->job.attempt && !o.cancelled)
		pool->failed++;
	run->job.attempt = o.attempt;
	run->job.interrupted = o.interrupted;
	if (o.timed_out) {
		qw_run_timeout_error(run, msg, sizeof(msg));
		error = msg;
	} else if (o.cancelled) {
		qw_run_cancel_error(run, msg, sizeof(msg));
		error = msg;
	} else if (o.interruptions_spent) {
		snprintf(msg, sizeof(msg), "interrupted by shutdown %u times", o.interrupted);
		error = msg;
	}
	if (o.dest == QW_DEST_SCHEDULED)
		delay = qw_job_backoff_ms(&q->qc, o.attempt, erand48(pool->rnd));
	qw_run_log_outcome(run, &o, error, delay);
	run->breaker = o.breaker;
	qw_run_finish(run, o.dest, o.dest != QW_DEST_DONE,
	    o.dest == QW_DEST_PENDING ? NULL : error, delay, o.counters);
}

static void
qw_run_outcome(struct qw_run *run, enum qw_result result, const char *error)
{
	qw_run_outcome_why(run, result, error, qw_run_reason(run));
}

/* A persistent worker's answer, or its death with the job (SPEC 12). A
 * death during the drain gives the job back as a shutdown does. */
static void
qw_run_worker_done(struct qw_worker_job *j, enum qw_worker_result result, const char *error,
    void *arg)
{
	struct qw_run *run = arg;
	int reason = qw_run_reason(run);
	char msg[600];

	run->wjob = NULL;
	switch (result) {
	case QW_WORKER_DONE:
		qw_run_outcome(run, QW_RESULT_OK, NULL);
		break;
	case QW_WORKER_PERMANENT:
		snprintf(msg, sizeof(msg), "%s (permanent failure)", error);
		qw_run_outcome(run, QW_RESULT_PERMANENT, msg);
		break;
	case QW_WORKER_FAILED:
		qw_run_outcome(run, QW_RESULT_FAILED, error);
		break;
	case QW_WORKER_LOST:
		if (reason == QW_CANCEL_NONE && qw_pool_stopping(run->q->pool))
			reason = QW_CANCEL_SHUTDOWN;
		qw_run_outcome_why(run, QW_RESULT_FAILED, error, reason);
		break;
	}
}

static void
qw_run_exec_done(struct qw_exec *x, int ws, void *arg)
{
	struct qw_run *run = arg;
	char error[160];

	if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) {
		qw_run_outcome(run, QW_RESULT_OK, NULL);
	} else if (WIFEXITED(ws)) {
		snprintf(error, sizeof(error), "exit status %d%s", WEXITSTATUS(ws),
		    WEXITSTATUS(ws) == 65 ? " (permanent failure)" : "");
		qw_run_outcome(run, WEXITSTATUS(ws) == 65 ? QW_RESULT_PERMANENT : QW_RESULT_FAILED,
		    error);
	} else {
		const char *abbrev = sigabbrev_np(WTERMSIG(ws));
		snprintf(error, sizeof(error), "killed by signal %d (SIG%s)", WTERMSIG(ws),
		    abbrev ? abbrev : "?");
		qw_run_outcome(run, QW_RESULT_FAILED, error);
	}
}

static void
qw_run_plugin_done(struct qw_work *w)
{
	struct qw_run *run = (struct qw_run *)((char *)w - offsetof(struct qw_run, work));
	const char *why = w->error && w->error[0] ? w->error : "no reason given";
	char error[600];

	run->in_thread = false;
	if (run->rec == NULL) {
		/* Settled without waiting for the thread (kill_grace passed). */
		run->q->pool->abandoned--;
		qw_run_release(run);
		return;
	}
	if (w->result == QW_PLUGIN_OK) {
		qw_run_outcome(run, QW_RESULT_OK, NULL);
	} else {
		snprintf(error, sizeof(error), "plugin %s: %s", w->result == QW_PLUGIN_PERMANENT ?
		    "failed permanently" : "failed", why);
		qw_run_outcome(run, w->result == QW_PLUGIN_PERMANENT ? QW_RESULT_PERMANENT :
		    QW_RESULT_FAILED, error);
	}
}

/* An operator cancelled RUN's job before its handler started (taken ahead,
 * or waiting for a plugin thread): to dead, no attempt spent. */
static void
qw_run_dead_unstarted(struct qw_run *run)
{
	char error[QW_CANCEL_TEXT_MAX + 32];

	qw_run_cancel_error(run, error, sizeof(error));
	qw_log_notice("job %s/%s: %s before it started, moved to dead", run->q->qc.name,
	    run->job.id, error);
	qw_run_finish(run, QW_DEST_DEAD, !run->job.verbatim, error, 0, "cancelled dead");
}

/* A cancelled plugin that has not returned within kill_grace: settle the job
 * now as its cancellation says, and let the thread finish on its own. */
static void
qw_run_grace_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_run *run = arg;
	if (run->unstarted) {
		/* Cancelled while it waited for a thread: a shutdown gives it back
		 * untouched, its own deadline counts as a timeout, an operator's
		 * cancel puts it in dead with no attempt spent, as for a job taken
		 * ahead: it never started. */
		int reason = qw_run_reason(run);
		if (reason == QW_CANCEL_SHUTDOWN)
			qw_run_finish(run, QW_DEST_PENDING, false, NULL, 0, "");
		else if (reason == QW_CANCEL_CANCELLED)
			qw_run_dead_unstarted(run);
		else
			qw_run_outcome(run, QW_RESULT_FAILED, NULL);
		return;
	}
	if (!run->in_thread)
		return;
	qw_log_warn("job %s/%s: plugin did not return within kill_grace of its cancellation; "
	    "settling the job without it", run->q->qc.name, run->job.id);
	run->q->pool->abandoned++;
	qw_run_outcome(run, QW_RESULT_FAILED, "the plugin did not return after its cancellation");
}

/* The job's token fired: its deadline, the shutdown deadline or an
 * operator's cancel, whichever came first. An exec handler gets SIGTERM,
 * then SIGKILL after kill_grace; a plugin sees its token and gets
 * kill_grace to return. */
static void
qw_run_cancelled(void *arg, int reason)
{
	struct qw_run *run = arg;
	char d[32];

	if (run->rec != NULL && run->rec->state == QW_REC_RUNNING)
		qw_record_move(&run->q->recs, run->rec, QW_REC_CANCELLING);
	if (run->rec != NULL && run->rec->state == QW_REC_FENCED)
		;	/* qw_run_fence said why */
	else if (reason == QW_CANCEL_CANCELLED)
		;	/* qw_run_cancel said why */
	else if (reason == QW_CANCEL_TIMEOUT)
		qw_log_warn("job %s/%s: timeout of %s reached, cancelling", run->q->qc.name,
		    run->job.id, qw_fmt_duration(d, sizeof(d), run->job.timeout_ms));
	else
		qw_log_notice("job %s/%s: shutdown deadline reached, cancelling", run->q->qc.name,
		    run->job.id);
	if (run->exec != NULL)
		qw_exec_cancel(run->exec, run->q->pool->conf->kill_grace_ms);
	if (run->wjob != NULL)
		qw_worker_cancel(run->wjob, reason == QW_CANCEL_TIMEOUT ? "timeout" :
		    reason == QW_CANCEL_SHUTDOWN ? "shutdown" : "cancelled");
	if (run->in_thread) {
		uint64_t grace = run->q->pool->conf->kill_grace_ms;
		/* Not taken by a thread yet: take it back. The outcome waits for
		 * the timer either way: we are inside the token's cancel, which
		 * must not free the token under itself. */
		if (qw_workers_cancel(run->q->pool->workers, &run->work)) {
			run->in_thread = false;
			run->unstarted = true;
			grace = 0;
		}
		qw_clock_arm(run->grace_ev, grace);
	}
}

static int
qw_run_start_plugin(struct qw_run *run)
{
	struct qw_queue *q = run->q;
	struct qw_work *w = &run->work;

	/* Made now, so that a cancellation never has to allocate (or kept
	 * from the run's earlier job). */
	if (run->grace_ev == NULL)
		run->grace_ev = evtimer_new(q->pool->base, qw_run_grace_cb, run);
	if (run->grace_ev == NULL)
		return ENOMEM;
	w->plugin = q->plugin;
	w->state = q->plugin_state;
	w->token = qw_cts_token(run->cts);
	w->done = qw_run_plugin_done;
	w->job.id = run->job.id;
	w->job.queue = q->qc.name;
	w->job.payload = run->job.payload;
	w->job.payload_len = run->job.payload_len;
	w->job.attempt = run->job.attempt + 1;
	w->job.max_attempts = run->job.max_attempts;
	w->job.deadline_ms = qw_clock_wall_ms() + (int64_t)run->job.timeout_ms;
	run->in_thread = true;
	/* Threads left inside plugins that ignored their cancellation do not
	 * count: the pool still gets its full concurrency. */
	if (qw_workers_submit(q->pool->workers, w,
	    q->pool->concurrency + q->pool->abandoned) != 0) {
		run->in_thread = false;
		return EAGAIN;
	}
	return 0;
}

/* ---- starting jobs ----------------------------------------------------- */

static char **
qw_run_env(struct qw_run *run, int64_t deadline_ms, char *buf, size_t bufsz)
{
	struct qw_pool *pool = run->q->pool;
	char **envp = malloc((pool->nenv + 6) * sizeof(char *));
	char *vars[5];
	int n;

	if (envp == NULL)
		return NULL;
	memcpy(envp, pool->env, pool->nenv * sizeof(char *));
	n = snprintf(buf, bufsz, "QW_JOB_ID=%s%cQW_QUEUE=%s%cQW_ATTEMPT=%u%cQW_MAX_ATTEMPTS=%u%c"
	    "QW_DEADLINE=%lld", run->job.id, 0, run->q->qc.name, 0, run->job.attempt + 1, 0,
	    run->job.max_attempts, 0, (long long)deadline_ms);
	if (n < 0 || (size_t)n >= bufsz) {
		free(envp);
		return NULL;
	}
	vars[0] = buf;
	for (int i = 1; i < 5; i++)
		vars[i] = vars[i - 1] + strlen(vars[i - 1]) + 1;
	memcpy(envp + pool->nenv, vars, sizeof(vars));
	envp[pool->nenv + 5] = NULL;
	return envp;
}

static int
qw_run_start_exec(struct qw_run *run)
{
	struct qw_queue *q = run->q;
	int64_t deadline = qw_clock_wall_ms() + (int64_t)run->job.timeout_ms;
	char envbuf[512], tag[300];
	char **envp = qw_run_env(run, deadline, envbuf, sizeof(envbuf));
	struct qw_exec_spec spec = {
		.argv = q->qc.argv, .envp = envp, .input = run->job.payload,
		.input_len = run->job.payload_len, .tag = tag, .output_max = QW_OUTPUT_MAX,
	};
	int rc;

	if (envp == NULL)
		return ENOMEM;
	snprintf(tag, sizeof(tag), "%s/%s", q->qc.name, run->job.id);
	rc = qw_exec_start(q->pool->execs, &spec, qw_run_exec_done, run, &run->exec);
	free(envp);
	return rc;
}

static int
qw_run_start_worker(struct qw_run *run)
{
	struct qw_queue *q = run->q;
	struct qw_worker_jobspec js = {
		.id = run->job.id, .attempt = run->job.attempt + 1,
		.max_attempts = run->job.max_attempts,
		.deadline_ms = qw_clock_wall_ms() + (int64_t)run->job.timeout_ms,
		.payload = run->job.payload, .payload_len = run->job.payload_len,
	};

	return qw_worker_submit(q->worker, &js, qw_run_worker_done, run, &run->wjob);
}

/* Out of descriptors or processes for a moment (a flood of connections, a
 * busy machine): the handler never ran, so it is not the job's failure. */
static bool
qw_run_start_is_transient(int rc)
{
	return rc == EMFILE || rc == ENFILE || rc == EAGAIN;
}

/* Gives a job whose handler could not start for a transient reason back to
 * pending untouched, without spending an attempt, and holds the queue's
 * fetching for a second so that it does not spin on the same failure (jobs
 * already buffered still try, and come back the same way). */
static void
qw_run_requeue_unstarted(struct qw_run *run, int rc)
{
	struct qw_queue *q = run->q;

	qw_log_warn("job %s/%s: could not start %s: %s; back on pending, no attempt spent",
	    q->qc.name, run->job.id, qw_pool_handler_name(q), strerror(rc));
	if (q->fetch == QW_FETCH_IDLE || q->fetch == QW_FETCH_WAITING) {
		qw_fetch_move(q, QW_FETCH_HELD);
		qw_clock_arm(q->fetch_retry_ev, 1000);
	}
	qw_run_finish(run, QW_DEST_PENDING, false, NULL, 0, "requeued");
}

/* Out of memory taking a job: it is left in the active hash, and read
 * again from there once the queue reconciles. */
static void
qw_run_forget(struct qw_rec *rec)
{
	struct qw_queue *q = rec->q;

	qw_log_err("queue %s: out of memory starting job %s; left in Redis to read again",
	    q->qc.name, rec->field);
	qw_record_free(&q->recs, rec);
	if (q->fetch == QW_FETCH_IDLE || q->fetch == QW_FETCH_WAITING || q->fetch == QW_FETCH_HELD)
		qw_fetch_move(q, QW_FETCH_OFF);
}

/* Makes the run of a BUFFERED record and moves it to RUNNING. */
static struct qw_run *
qw_run_new(struct qw_rec *rec)
{
	struct qw_queue *q = rec->q;
	struct qw_run *run = q->spare_runs;
	char *elem = rec->elem;

	if (run != NULL) {
		q->spare_runs = run->next_spare;
		q->nspare_runs--;
		run->next_spare = NULL;
	} else if ((run = calloc(1, sizeof(*run))) == NULL) {
		return NULL;
	}
	rec->elem = NULL;	/* the job owns it now, and frees it if parsing fails */
	if (qw_job_parse(&run->job, elem, rec->len, &q->qc, rec->field) < 0) {
		qw_run_destroy(run);
		return NULL;
	}
	run->q = q;
	run->rec = rec;
	rec->run = run;
	qw_record_move(&q->recs, rec, QW_REC_RUNNING);
	return run;
}

/* ---- job deadlines -----------------------------------------------------
 * One timer per queue, armed for the earliest deadline of its running jobs,
 * instead of a timer per job (an event_add and event_del for every job cost
 * more than the rest of its token): a job that starts only moves the timer
 * when its deadline comes before the armed one, and a job that ends leaves
 * it be (the timer then finds nothing due and is armed for the next). */

static void
qw_run_deadline_set(struct qw_queue *q, uint64_t at_us, uint64_t now_us)
{
	q->deadline_at_us = at_us;
	qw_clock_arm(q->deadline_ev, at_us > now_us ? (at_us - now_us + 999) / 1000 : 0);
}

static void
qw_run_deadline_arm(struct qw_run *run)
{
	struct qw_queue *q = run->q;

	run->deadline_us = run->started_us + run->job.timeout_ms * 1000;
	if (q->deadline_at_us == 0 || run->deadline_us < q->deadline_at_us)
		qw_run_deadline_set(q, run->deadline_us, qw_clock_mono_us());
}

/* A running job of Q whose deadline has passed by NOW_US and whose token
 * has not fired yet, or NULL; *NEXT_US gets the earliest deadline still to
 * come (0: none). */
static struct qw_run *
qw_run_deadline_due(struct qw_queue *q, uint64_t now_us, uint64_t *next_us)
{
	struct qw_rec *rec;

	*next_us = 0;
	TAILQ_FOREACH(rec, &q->recs.list[QW_REC_RUNNING], link) {
		struct qw_run *run = rec->run;
		if (run == NULL || run->cts == NULL || run->deadline_us == 0 ||
		    qw_token_is_cancelled(qw_cts_token(run->cts)))
			continue;
		if (run->deadline_us <= now_us)
			return run;
		if (*next_us == 0 || run->deadline_us < *next_us)
			*next_us = run->deadline_us;
	}
	return NULL;
}

void
qw_run_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_queue *q = arg;
	uint64_t now_us = qw_clock_mono_us(), next_us;
	struct qw_run *run;

	/* A cancel can end other runs at once (a worker's broken pipe fails
	 * its jobs): look again from the start after each. Each pass fires a
	 * token that had not fired, so this ends. */
	while ((run = qw_run_deadline_due(q, now_us, &next_us)) != NULL)
		qw_cts_cancel(run->cts, QW_CANCEL_TIMEOUT);
	q->deadline_at_us = 0;
	if (next_us != 0)
		qw_run_deadline_set(q, next_us, now_us);
}

/* From the job's enqueued_at, or when a fetch brought it here (a raw job,
 * or an envelope without one), to now: its handler starts. Now is the
 * loop turn's cached time, which costs no system call; a clock that went
 * back counts as no wait. */
static void
qw_run_tally_wait(struct qw_run *run, int64_t seen_ms)
{
	int64_t from = run->job.enqueued_at_ms >= 0 ? run->job.enqueued_at_ms : seen_ms;
	struct timeval now;
	int64_t waited;

	event_base_gettimeofday_cached(run->q->pool->base, &now);
	waited = (int64_t)now.tv_sec * 1000 + now.tv_usec / 1000 - from;

	qw_tally_observe(&run->q->tally.wait, &qw_tally_job_bounds,
	    waited > 0 ? (uint64_t)waited * 1000 : 0);
}

void
qw_run_start(struct qw_rec *rec)
{
	struct qw_queue *q = rec->q;
	struct qw_pool *pool = q->pool;
	struct qw_run *run = qw_run_new(rec);
	char error[600];
	int rc;

	if (run == NULL) {
		qw_run_forget(rec);
		return;
	}
	run->started_us = qw_clock_mono_us();
	if (run->job.error != NULL) {
		qw_log_err("job %s/%s: %s; moved to dead%s", q->qc.name, run->job.id, run->job.error,
		    run->job.verbatim ? " exactly as it was pushed" : "");
		qw_run_finish(run, QW_DEST_DEAD, !run->job.verbatim, run->job.error, 0, "dead");
		return;
	}
	/* Linked to the shutdown; its own deadline is the queue's timer's. */
	if (run->spare_cts == NULL) {
		run->cts = qw_cts_new_linked(&pool->shutdown, 1, NULL, 0, 0);
	} else {
		/* Out of memory it is cancelled: handled as below. */
		(void)qw_cts_link(run->spare_cts, &pool->shutdown, 1, NULL, 0, 0);
		run->cts = run->spare_cts;
		run->spare_cts = NULL;
	}
	if (run->cts == NULL || qw_token_is_cancelled(qw_cts_token(run->cts))) {
		/* Out of memory, or taken just as the drain ended: give it back
		 * untouched. */
		qw_run_finish(run, QW_DEST_PENDING, false, NULL, 0, "");
		return;
	}
	rc = q->plugin ? qw_run_start_plugin(run) : q->worker ? qw_run_start_worker(run) :
	    qw_run_start_exec(run);
	if (qw_run_start_is_transient(rc)) {
		qw_run_requeue_unstarted(run, rc);
		return;
	}
	qw_run_tally_wait(run, rec->seen_ms);
	if (rc != 0) {
		snprintf(error, sizeof(error), "could not start %s: %s", qw_pool_handler_name(q),
		    strerror(rc));
		qw_run_outcome(run, QW_RESULT_FAILED, error);
		return;
	}
	if (run->exec != NULL)
		qw_log_debug("job %s/%s: started, pid %d", q->qc.name, run->job.id,
		    (int)qw_exec_pid(run->exec));
	else
		qw_log_debug("job %s/%s: started, %s %s", q->qc.name, run->job.id,
		    q->plugin ? "plugin" : "worker", qw_pool_handler_name(q));
	if (qw_token_register(qw_cts_token(run->cts), qw_run_cancelled, run) == 0)
		qw_log_err("job %s/%s: out of memory: it cannot be cancelled", q->qc.name, run->job.id);
	qw_run_deadline_arm(run);
}

/* ---- an operator's cancel ---------------------------------------------- */

/* A job cancelled before it started: to dead as it was, no attempt spent. */
static void
qw_run_cancel_unstarted(struct qw_rec *rec, char *text)
{
	struct qw_run *run = qw_run_new(rec);

	if (run == NULL) {
		free(text);
		qw_run_forget(rec);
		return;
	}
	run->cancel_text = text;
	qw_run_dead_unstarted(run);
}

void
qw_run_cancel(struct qw_rec *rec, const char *text, size_t len)
{
	struct qw_run *run = rec->run;
	char *kept;

	if (rec->state != QW_REC_BUFFERED && rec->state != QW_REC_RUNNING &&
	    rec->state != QW_REC_CANCELLING)
		return;
	if (run != NULL && run->cancel_text != NULL)
		return;		/* seen on an earlier tick: being stopped */
	if ((kept = qw_cancel_text(text, len)) == NULL) {
		qw_log_err("queue %s: out of memory cancelling job field %s; trying again",
		    rec->q->qc.name, rec->field);
		return;
	}
	if (rec->state == QW_REC_BUFFERED) {
		qw_run_cancel_unstarted(rec, kept);
		return;
	}
	run->cancel_text = kept;
	qw_log_notice("job %s/%s: cancelled%s%s; stopping its handler", rec->q->qc.name,
	    run->job.id, kept[0] ? ": " : "", kept);
	/* Already cancelled (its deadline, the shutdown): being stopped; its
	 * outcome is the operator's all the same (qw_run_reason). */
	if (run->cts != NULL)
		qw_cts_cancel(run->cts, QW_CANCEL_CANCELLED);
}
