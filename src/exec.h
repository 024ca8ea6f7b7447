/* exec.h - exec handlers: one process group per job (SPEC 5). */
#ifndef QW_EXEC_H
#define QW_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct qw_exec;
struct qw_execs;

/* WSTATUS is as from waitpid(2). Called once; the exec may be freed in it. */
typedef void qw_exec_done_fn(struct qw_exec *x, int wstatus, void *arg);

struct qw_exec_spec {
	char *const *argv;
	char *const *envp;
	const char *input;	/* stays valid until the done callback */
	size_t input_len;
	const char *tag;	/* "queue/id" for output lines */
	size_t output_max;	/* bytes of output logged before truncating */
	const char *what;	/* what output lines say it is: "job" when NULL */
	bool tag_pid;		/* the tag gets "[PID]" once it runs */
	int extra_fd;		/* > 3: becomes the program's fd 3 (persistent workers) */
};

/* The running handlers of one event loop; reaps them on SIGCHLD. Free it
 * only when none runs. */
struct qw_execs *qw_execs_new(struct event_base *base);
void qw_execs_free(struct qw_execs *set);

/* Returns 0, or an errno value when the program could not be started. */
int qw_exec_start(struct qw_execs *set, const struct qw_exec_spec *spec,
    qw_exec_done_fn *done, void *arg, struct qw_exec **out);
/* SIGTERM to the process group now, SIGKILL after GRACE_MS. Idempotent. */
void qw_exec_cancel(struct qw_exec *x, uint64_t grace_ms);
/* Kills what still runs (SIGKILL), reaps it and frees X. */
void qw_exec_free(struct qw_exec *x);
pid_t qw_exec_pid(const struct qw_exec *x);

#endif
