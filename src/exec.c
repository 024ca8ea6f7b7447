/* exec.c - owns handler processes: spawning without a shell in a process
 * group of their own, feeding the payload on stdin, logging their output
 * (bounded), cancelling with SIGTERM then SIGKILL, and reaping.
 *
 * SIGCHLD (through the event loop) makes us look at each running leader with
 * waitid(WNOWAIT). An exited leader's group is killed with SIGKILL before the
 * leader is reaped: the zombie still holds the group id, so the kill cannot
 * reach an unrelated process, and no grandchild outlives its job. */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec.h"
#include "log.h"

#define QW_EXEC_LINE_MAX 2048

struct qw_execs {
	struct event_base *base;
	struct event *sigchld;
	TAILQ_HEAD(, qw_exec) running;
};

struct qw_exec {
	TAILQ_ENTRY(qw_exec) link;
	struct qw_execs *set;
	pid_t pid;
	bool exited;
	int in_fd;		/* -1 once the payload is written or refused */
	int out_fd;
	const char *input;
	size_t input_len, input_off;
	struct event *in_ev, *out_ev, *kill_ev;
	char *tag;
	const char *what;
	size_t logged, output_max;
	bool truncated;
	char line[QW_EXEC_LINE_MAX];
	size_t line_len;
	qw_exec_done_fn *done;
	void *arg;
};

pid_t
qw_exec_pid(const struct qw_exec *x)
{
	return x->pid;
}

static void
qw_exec_emit(struct qw_exec *x)
{
	if (x->line_len == 0)
		return;
	if (!x->truncated) {
		/* Control characters are escaped by qw_log, as for every line. */
		qw_log_info("%s %s: %.*s", x->what, x->tag, (int)x->line_len, x->line);
		x->logged += x->line_len + 1;
		if (x->logged >= x->output_max) {
			x->truncated = true;
			qw_log_warn("%s %s: output truncated after %zu bytes", x->what, x->tag,
			    x->logged);
		}
	}
	x->line_len = 0;
}

static void
qw_exec_close_out(struct qw_exec *x)
{
	if (x->out_ev != NULL) {
		event_free(x->out_ev);
		x->out_ev = NULL;
	}
	if (x->out_fd >= 0) {
		close(x->out_fd);
		x->out_fd = -1;
	}
}

/* Reads what the handler wrote; returns false at EOF or error. */
static bool
qw_exec_read(struct qw_exec *x)
{
	char buf[8192];
	ssize_t n;

	for (;;) {
		n = read(x->out_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				qw_exec_emit(x);
				continue;
			}
			x->line[x->line_len++] = buf[i];
			if (x->line_len == sizeof(x->line))
				qw_exec_emit(x);
		}
	}
	qw_exec_emit(x);
	return false;
}

static void
qw_exec_out_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_exec *x = arg;

	if (!qw_exec_read(x))
		qw_exec_close_out(x);
}

static void
qw_exec_close_in(struct qw_exec *x)
{
	if (x->in_ev != NULL) {
		event_free(x->in_ev);
		x->in_ev = NULL;
	}
	if (x->in_fd >= 0) {
		close(x->in_fd);
		x->in_fd = -1;
	}
}

static void qw_exec_in_cb(evutil_socket_t fd, short what, void *arg);

/* Writes as much payload as the pipe takes. A handler that closes stdin
 * early gets EPIPE here (SIGPIPE is ignored), which only ends the writing. */
static void
qw_exec_write(struct qw_exec *x)
{
	while (x->input_off < x->input_len) {
		ssize_t n = write(x->in_fd, x->input + x->input_off, x->input_len - x->input_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (x->in_ev == NULL) {
				x->in_ev = event_new(x->set->base, x->in_fd,
				    EV_WRITE | EV_PERSIST, qw_exec_in_cb, x);
				if (x->in_ev == NULL || event_add(x->in_ev, NULL) < 0)
					break;
			}
			return;
		}
		if (n < 0)
			break;
		x->input_off += (size_t)n;
	}
	qw_exec_close_in(x);
}

static void
qw_exec_in_cb(evutil_socket_t fd, short what, void *arg)
{
	qw_exec_write(arg);
}

static void
qw_exec_kill_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_exec *x = arg;

	if (!x->exited) {
		qw_log_warn("%s %s: still running after SIGTERM, sending SIGKILL", x->what, x->tag);
		kill(-x->pid, SIGKILL);
	}
}

void
qw_exec_cancel(struct qw_exec *x, uint64_t grace_ms)
{
	struct timeval tv = { (time_t)(grace_ms / 1000), (suseconds_t)(grace_ms % 1000) * 1000 };

	if (x->exited || evtimer_pending(x->kill_ev, NULL))
		return;
	kill(-x->pid, SIGTERM);
	evtimer_add(x->kill_ev, &tv);
}

static void
qw_exec_reap(struct qw_exec *x, int *wstatus)
{
	/* The leader is a zombie: its group id cannot have been reused. */
	kill(-x->pid, SIGKILL);
	while (waitpid(x->pid, wstatus, 0) < 0 && errno == EINTR)
		;
	x->exited = true;
	TAILQ_REMOVE(&x->set->running, x, link);
	if (x->kill_ev != NULL)
		evtimer_del(x->kill_ev);
}

static bool
qw_exec_has_exited(const struct qw_exec *x)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	return waitid(P_PID, (id_t)x->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	    si.si_pid == x->pid;
}

static void
qw_exec_finish(struct qw_exec *x)
{
	int wstatus = 0;

	qw_exec_reap(x, &wstatus);
	qw_exec_close_in(x);
	if (x->out_fd >= 0) {
		qw_exec_read(x);
		qw_exec_close_out(x);
	}
	x->done(x, wstatus, x->arg);
}

/* SIGCHLD: finish every leader that has exited. Done callbacks may start or
 * free other processes, so the exited ones are collected first. */
static void
qw_execs_sigchld(evutil_socket_t sig, short what, void *arg)
{
	struct qw_execs *set = arg;
	struct qw_exec *x, *next, *exited[64];
	size_t n;

	do {
		n = 0;
		for (x = TAILQ_FIRST(&set->running); x != NULL && n < 64; x = next) {
			next = TAILQ_NEXT(x, link);
			if (qw_exec_has_exited(x))
				exited[n++] = x;
		}
		for (size_t i = 0; i < n; i++)
			qw_exec_finish(exited[i]);
	} while (n == 64);
}

struct qw_execs *
qw_execs_new(struct event_base *base)
{
	struct qw_execs *set = calloc(1, sizeof(*set));

	if (set == NULL)
		return NULL;
	set->base = base;
	TAILQ_INIT(&set->running);
	set->sigchld = evsignal_new(base, SIGCHLD, qw_execs_sigchld, set);
	if (set->sigchld == NULL || event_add(set->sigchld, NULL) < 0) {
		qw_execs_free(set);
		return NULL;
	}
	return set;
}

void
qw_execs_free(struct qw_execs *set)
{
	if (set == NULL)
		return;
	if (set->sigchld != NULL)
		event_free(set->sigchld);
	free(set);
}

static int
qw_exec_spawn(const struct qw_exec_spec *spec, int in_r, int out_w, pid_t *pid)
{
	static const int sigs[] = { SIGPIPE, SIGHUP, SIGTERM, SIGINT, SIGUSR1, SIGUSR2,
		SIGCHLD, SIGQUIT, SIGALRM };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, def;
	int rc;

	sigemptyset(&none);
	sigemptyset(&def);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&def, sigs[i]);
	if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
		return rc;
	if ((rc = posix_spawnattr_init(&attr)) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		return rc;
	}
	if ((rc = posix_spawn_file_actions_adddup2(&fa, in_r, 0)) == 0 &&
	    (rc = posix_spawn_file_actions_adddup2(&fa, out_w, 1)) == 0 &&
	    (rc = posix_spawn_file_actions_adddup2(&fa, out_w, 2)) == 0 &&
	    (spec->extra_fd <= 3 ||
	    (rc = posix_spawn_file_actions_adddup2(&fa, spec->extra_fd, 3)) == 0) &&
	    (rc = posix_spawn_file_actions_addclosefrom_np(&fa, spec->extra_fd > 3 ? 4 : 3)) == 0 &&
	    (rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
	    POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) == 0 &&
	    (rc = posix_spawnattr_setpgroup(&attr, 0)) == 0 &&
	    (rc = posix_spawnattr_setsigmask(&attr, &none)) == 0 &&
	    (rc = posix_spawnattr_setsigdefault(&attr, &def)) == 0)
		rc = posix_spawn(pid, spec->argv[0], &fa, &attr, spec->argv, spec->envp);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	return rc;
}

static int
qw_exec_setup_events(struct event_base *base, struct qw_exec *x)
{
	x->out_ev = event_new(base, x->out_fd, EV_READ | EV_PERSIST, qw_exec_out_cb, x);
	x->kill_ev = evtimer_new(base, qw_exec_kill_cb, x);
	if (x->out_ev == NULL || x->kill_ev == NULL || event_add(x->out_ev, NULL) < 0)
		return ENOMEM;
	return 0;
}

static int
qw_exec_tag_pid(struct qw_exec *x)
{
	char *tag;

	if (asprintf(&tag, "%s[%d]", x->tag, (int)x->pid) < 0)
		return ENOMEM;
	free(x->tag);
	x->tag = tag;
	return 0;
}

int
qw_exec_start(struct qw_execs *set, const struct qw_exec_spec *spec,
    qw_exec_done_fn *done, void *arg, struct qw_exec **out)
{
	struct qw_exec *x = calloc(1, sizeof(*x));
	int in[2] = { -1, -1 }, outp[2] = { -1, -1 };
	int rc = ENOMEM;

	*out = NULL;
	if (x == NULL)
		return ENOMEM;
	x->in_fd = x->out_fd = -1;
	x->set = set;
	x->done = done;
	x->arg = arg;
	x->input = spec->input;
	x->input_len = spec->input_len;
	x->output_max = spec->output_max;
	x->what = spec->what ? spec->what : "job";
	if ((x->tag = strdup(spec->tag)) == NULL)
		goto fail;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(outp, O_CLOEXEC) < 0) {
		rc = errno;
		goto fail;
	}
	x->in_fd = in[1];
	x->out_fd = outp[0];
	if (fcntl(in[1], F_SETFL, O_NONBLOCK) < 0 || fcntl(outp[0], F_SETFL, O_NONBLOCK) < 0) {
		rc = errno;
		goto fail;
	}
	rc = qw_exec_spawn(spec, in[0], outp[1], &x->pid);
	close(in[0]);
	close(outp[1]);
	in[0] = outp[1] = -1;
	if (rc != 0) {
		x->pid = 0;
		goto fail;
	}
	TAILQ_INSERT_TAIL(&set->running, x, link);
	if (spec->tag_pid && (rc = qw_exec_tag_pid(x)) != 0)
		goto fail;
	if ((rc = qw_exec_setup_events(set->base, x)) != 0)
		goto fail;
	qw_exec_write(x);
	*out = x;
	return 0;
fail:
	if (in[0] >= 0)
		close(in[0]);
	if (outp[1] >= 0)
		close(outp[1]);
	qw_exec_free(x);
	return rc;
}

void
qw_exec_free(struct qw_exec *x)
{
	if (x == NULL)
		return;
	if (x->pid > 0 && !x->exited) {
		int ws;
		qw_exec_reap(x, &ws);
	}
	qw_exec_close_in(x);
	qw_exec_close_out(x);
	if (x->kill_ev != NULL)
		event_free(x->kill_ev);
	free(x->tag);
	free(x);
}
