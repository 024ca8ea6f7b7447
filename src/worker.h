/* worker.h - persistent workers (SPEC 12, qworkerd-worker(7)): one queue's
 * long-lived handler processes, each fed jobs as frames on its fd 3. */
#ifndef QW_WORKER_H
#define QW_WORKER_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct qw_execs;
struct qw_worker_group;
struct qw_worker_job;

/* How a job sent to a worker ended. */
enum qw_worker_result {
	QW_WORKER_DONE,		/* it answered D */
	QW_WORKER_FAILED,	/* it answered F with the flag 0 */
	QW_WORKER_PERMANENT,	/* it answered F with the flag 1 */
	QW_WORKER_LOST,		/* its process died or broke the protocol first */
};

/* Called once per job (unless dropped), on the loop. ERROR says why for
 * every result but DONE. */
typedef void qw_worker_done_fn(struct qw_worker_job *j, enum qw_worker_result result,
    const char *error, void *arg);
/* Something that may change what the group can take or whether it is gone:
 * a process became ready, answered, or exited. */
typedef void qw_worker_changed_fn(void *arg);

struct qw_worker_conf {
	const char *queue;
	char *const *argv;	/* copied */
	char *const *env;	/* the daemon's environment, borrowed for the group's life */
	size_t nenv;
	unsigned processes, inflight, max_jobs;
	uint64_t kill_grace_ms;
};

struct qw_worker_jobspec {
	const char *id;
	unsigned attempt, max_attempts;	/* attempt counts this run */
	int64_t deadline_ms;		/* Unix ms */
	const char *payload;
	size_t payload_len;
};

/* Starts the processes at once. NULL when out of memory. */
struct qw_worker_group *qw_worker_group_new(struct event_base *base, struct qw_execs *execs,
    const struct qw_worker_conf *wc, qw_worker_changed_fn *changed, void *arg);
/* A reload: every process gets S and ends on its own; new ones start with
 * WC. Returns -1 (changing nothing) when out of memory. */
int qw_worker_group_reconfigure(struct qw_worker_group *g, const struct qw_worker_conf *wc);
/* The drain: S to every process, and none starts again. */
void qw_worker_group_stop(struct qw_worker_group *g);
/* Kills (SIGKILL) and reaps what still runs; jobs still out end without
 * their callbacks. */
void qw_worker_group_free(struct qw_worker_group *g);
/* Jobs the ready processes could take now. */
unsigned qw_worker_group_room(const struct qw_worker_group *g);
/* The most jobs it ever runs at once: processes times inflight. */
unsigned qw_worker_group_capacity(const struct qw_worker_group *g);
/* Processes not reaped yet. */
unsigned qw_worker_group_live(const struct qw_worker_group *g);
/* Why no process became ready lately (for STATUS=), or NULL. */
const char *qw_worker_group_trouble(const struct qw_worker_group *g);

/* Sends a job to the least busy ready process. EAGAIN when none has room,
 * ENOMEM, or EINVAL when the job cannot be put in a frame. */
int qw_worker_submit(struct qw_worker_group *g, const struct qw_worker_jobspec *js,
    qw_worker_done_fn *done, void *arg, struct qw_worker_job **out);
/* Sends C with REASON (timeout, shutdown or cancelled) once; without an
 * answer within kill_grace the process group gets SIGTERM, then SIGKILL. */
void qw_worker_cancel(struct qw_worker_job *j, const char *reason);
/* Its callback will not run; an answer that still comes is ignored. */
void qw_worker_job_drop(struct qw_worker_job *j);

#endif
