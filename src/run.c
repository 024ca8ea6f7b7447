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

#include "exec.h"
#include "log.h"
#include "pool_int.h"
#include "token.h"

void
qw_run_free(struct qw_run *run)
{
	if (run->in_thread) {
		/* A plugin still holds the job: free it when the thread is done. */
		run->abandoned = true;
		return;
	}
	if (run->grace_ev != NULL)
		event_free(run->grace_ev);
	free(run->work.error);
	qw_exec_free(run->exec);
	qw_cts_free(run->cts);
	qw_job_clear(&run->job);
	free(run->field);
	free(run);
}

/* Ends a run: the slot is free once its result is queued. */
static void
qw_run_finish(struct qw_run *run, char where, bool reencode, const char *error,
    uint64_t delay_ms, const char *counters)
{
	struct qw_queue *q = run->q;
	char *elem = NULL;
	size_t len = 0;

	if (reencode) {
		elem = qw_job_encode(&run->job, error, error ? qw_now_ms() : 0,
		    where == 's' ? run->field : NULL, &len);
		if (elem == NULL) {
			/* Out of memory: leave the job in the active hash, where
			 * recovery finds it, rather than drop it. */
			qw_log_err("job %s/%s: out of memory writing its result; left for recovery",
			    q->qc.name, run->job.id);
			goto done;
		}
	} else if (where == 'p' || where == 'd') {
		/* Back on pending untouched, or to dead as taken (job.verbatim). */
		elem = run->job.elem;
		len = run->job.elem_len;
		run->job.elem = NULL;
	}
	qw_queue_add_op(q, run->field, where, elem, len, delay_ms, counters, NULL);
	run->field = NULL;
done:
	TAILQ_REMOVE(&q->runs, run, link);
	q->running--;
	q->pool->busy--;
	qw_run_free(run);
	qw_pool_fill(q->pool);
	qw_pool_check_drained(q->pool);
}

/* What a finished or failed handler means for the job (SPEC 4). */
static void
qw_run_outcome(struct qw_run *run, bool ok, bool permanent, const char *error)
{
	struct qw_queue *q = run->q;
	struct qw_pool *pool = q->pool;
	int why = run->cts ? qw_token_reason(qw_cts_token(run->cts)) : QW_CANCEL_NONE;
	bool timed_out = why == QW_CANCEL_TIMEOUT;

	pool->processed++;
	/* A handler that finished its job, even after being asked to stop, has
	 * done it: running it again would be a second delivery. */
	if (ok) {
		qw_log_debug("job %s/%s: succeeded", q->qc.name, run->job.id);
		qw_run_finish(run, 0, false, NULL, 0, "succeeded");
		return;
	}
	if (why == QW_CANCEL_SHUTDOWN) {
		run->job.interrupted++;
		if (run->job.interrupted >= q->qc.max_interruptions) {
			char msg[128];
			snprintf(msg, sizeof(msg), "interrupted by shutdown %u times", run->job.interrupted);
			qw_log_warn("job %s/%s: %s, moved to dead", q->qc.name, run->job.id, msg);
			qw_run_finish(run, 'd', true, msg, 0, "dead");
		} else {
			qw_log_notice("job %s/%s: interrupted by shutdown, back on pending",
			    q->qc.name, run->job.id);
			qw_run_finish(run, 'p', true, NULL, 0, "requeued");
		}
		return;
	}
	pool->failed++;
	run->job.attempt++;
	if (!permanent && run->job.attempt < run->job.max_attempts) {
		double r = erand48(pool->rnd);
		uint64_t delay = qw_job_backoff_ms(&q->qc, run->job.attempt, r);
		qw_log_warn("job %s/%s: %s (attempt %u of %u), retry in %llums", q->qc.name,
		    run->job.id, error, run->job.attempt, run->job.max_attempts,
		    (unsigned long long)delay);
		qw_run_finish(run, 's', true, error, delay,
		    timed_out ? "failed retried timed_out" : "failed retried");
		return;
	}
	qw_log_err("job %s/%s: %s (attempt %u of %u), moved to dead", q->qc.name, run->job.id,
	    error, run->job.attempt, run->job.max_attempts);
	qw_run_finish(run, 'd', true, error, 0, timed_out ? "failed dead timed_out" : "failed dead");
}

/* "timed out after Ns" with N as the job's timeout was written (2.5, 86400),
 * never in exponent form. */
static void
qw_run_timeout_error(const struct qw_run *run, char *buf, size_t len)
{
	snprintf(buf, len, "timed out after %.15gs", (double)run->job.timeout_ms / 1000);
}

static void
qw_run_exec_done(struct qw_exec *x, int ws, void *arg)
{
	struct qw_run *run = arg;
	char error[160];

	if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) {
		qw_run_outcome(run, true, false, NULL);
	} else if (qw_token_reason(qw_cts_token(run->cts)) == QW_CANCEL_TIMEOUT) {
		qw_run_timeout_error(run, error, sizeof(error));
		qw_run_outcome(run, false, false, error);
	} else if (WIFEXITED(ws)) {
		snprintf(error, sizeof(error), "exit status %d%s", WEXITSTATUS(ws),
		    WEXITSTATUS(ws) == 65 ? " (permanent failure)" : "");
		qw_run_outcome(run, false, WEXITSTATUS(ws) == 65, error);
	} else {
		const char *abbrev = sigabbrev_np(WTERMSIG(ws));
		snprintf(error, sizeof(error), "killed by signal %d (SIG%s)", WTERMSIG(ws),
		    abbrev ? abbrev : "?");
		qw_run_outcome(run, false, false, error);
	}
}

static void
qw_run_plugin_done(struct qw_work *w)
{
	struct qw_run *run = (struct qw_run *)((char *)w - offsetof(struct qw_run, work));
	const char *why = w->error && w->error[0] ? w->error : "no reason given";
	char error[600];

	run->in_thread = false;
	if (run->abandoned) {
		run->q->pool->abandoned--;
		qw_run_free(run);
		return;
	}
	if (w->result == QW_PLUGIN_OK) {
		qw_run_outcome(run, true, false, NULL);
	} else if (qw_token_reason(qw_cts_token(run->cts)) == QW_CANCEL_TIMEOUT) {
		qw_run_timeout_error(run, error, sizeof(error));
		qw_run_outcome(run, false, false, error);
	} else {
		snprintf(error, sizeof(error), "plugin %s: %s", w->result == QW_PLUGIN_PERMANENT ?
		    "failed permanently" : "failed", why);
		qw_run_outcome(run, false, w->result == QW_PLUGIN_PERMANENT, error);
	}
}

/* A cancelled plugin that has not returned within kill_grace: settle the job
 * now as its cancellation says, and let the thread finish on its own. */
static void
qw_run_grace_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_run *run = arg;
	char error[160];

	qw_run_timeout_error(run, error, sizeof(error));
	if (run->unstarted) {
		/* Cancelled while it waited for a thread: a shutdown gives it back
		 * untouched, its own deadline counts as a timeout. */
		if (qw_token_reason(qw_cts_token(run->cts)) == QW_CANCEL_SHUTDOWN)
			qw_run_finish(run, 'p', false, NULL, 0, "");
		else
			qw_run_outcome(run, false, false, error);
		return;
	}
	if (!run->in_thread)
		return;
	qw_log_warn("job %s/%s: plugin did not return within kill_grace of its cancellation; "
	    "settling the job without it", run->q->qc.name, run->job.id);
	run->q->pool->abandoned++;
	qw_run_outcome(run, false, false, error);
}

/* The job's token fired: its deadline or the shutdown deadline, whichever
 * came first. An exec handler gets SIGTERM, then SIGKILL after kill_grace;
 * a plugin sees its token and gets kill_grace to return. */
static void
qw_run_cancelled(void *arg, int reason)
{
	struct qw_run *run = arg;

	if (reason == QW_CANCEL_TIMEOUT)
		qw_log_warn("job %s/%s: timeout of %llums reached, cancelling", run->q->qc.name,
		    run->job.id, (unsigned long long)run->job.timeout_ms);
	else
		qw_log_notice("job %s/%s: shutdown deadline reached, cancelling", run->q->qc.name,
		    run->job.id);
	if (run->exec != NULL)
		qw_exec_cancel(run->exec, run->q->pool->conf->kill_grace_ms);
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
		qw_arm(run->grace_ev, grace);
	}
}

static int
qw_run_start_plugin(struct qw_run *run)
{
	struct qw_queue *q = run->q;
	struct qw_work *w = &run->work;

	/* Made now, so that a cancellation never has to allocate. */
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
	w->job.deadline_ms = qw_now_ms() + (int64_t)run->job.timeout_ms;
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
	int64_t deadline = qw_now_ms() + (int64_t)run->job.timeout_ms;
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

/* Takes ownership of FIELD and ELEM: one job fresh out of Redis. */
void
qw_queue_start_job(struct qw_queue *q, char *field, char *elem, size_t len)
{
	struct qw_pool *pool = q->pool;
	struct qw_run *run = calloc(1, sizeof(*run));
	char error[600];
	int rc;

	if (run == NULL || qw_job_parse(&run->job, elem, len, &q->qc, field) < 0) {
		/* Out of memory: the job stays in the active hash for recovery. */
		qw_log_err("queue %s: out of memory taking job %s; left for recovery",
		    q->qc.name, field);
		if (run == NULL)
			free(elem);	/* qw_job_parse frees it when it fails */
		free(run);
		free(field);
		return;
	}
	run->q = q;
	run->field = field;
	TAILQ_INSERT_TAIL(&q->runs, run, link);
	q->running++;
	pool->busy++;
	if (run->job.error != NULL) {
		qw_log_err("job %s/%s: %s; moved to dead%s", q->qc.name, run->job.id, run->job.error,
		    run->job.verbatim ? " exactly as it was pushed" : "");
		qw_run_finish(run, 'd', !run->job.verbatim, run->job.error, 0, "dead");
		return;
	}
	run->cts = qw_cts_new_linked(&pool->shutdown, 1, pool->base, run->job.timeout_ms,
	    QW_CANCEL_TIMEOUT);
	if (run->cts == NULL) {
		qw_log_err("job %s/%s: out of memory; left for recovery", q->qc.name, run->job.id);
		TAILQ_REMOVE(&q->runs, run, link);
		q->running--;
		pool->busy--;
		qw_run_free(run);
		return;
	}
	if (qw_token_is_cancelled(qw_cts_token(run->cts))) {
		/* Taken just as the drain ended: give it back untouched. */
		qw_run_finish(run, 'p', false, NULL, 0, "");
		return;
	}
	rc = q->plugin ? qw_run_start_plugin(run) : qw_run_start_exec(run);
	if (rc != 0) {
		snprintf(error, sizeof(error), "could not start %s: %s",
		    q->plugin ? qw_plugin_path(q->plugin) : q->qc.argv[0], strerror(rc));
		qw_run_outcome(run, false, false, error);
		return;
	}
	if (run->exec != NULL)
		qw_log_debug("job %s/%s: started, pid %d", q->qc.name, run->job.id,
		    (int)qw_exec_pid(run->exec));
	else
		qw_log_debug("job %s/%s: started, plugin %s", q->qc.name, run->job.id,
		    qw_plugin_path(q->plugin));
	if (qw_token_register(qw_cts_token(run->cts), qw_run_cancelled, run) == 0)
		qw_log_err("job %s/%s: out of memory: it cannot be cancelled", q->qc.name, run->job.id);
}

/* ---- fetching ---------------------------------------------------------- */

