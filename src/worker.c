/* worker.c - owns persistent workers (SPEC 12): one queue's long-lived
 * handler processes (spawned, logged and reaped through exec.c, each in a
 * process group of its own), the frames on their fd 3, the jobs out to each
 * of them, cancellation, and restarting them with a capped backoff.
 *
 * A group has worker_processes slots. A slot holds one process while it
 * starts or takes jobs; when that process dies, the slot waits out a
 * backoff (doubling from QW_WORKER_BACKOFF_MIN_MS up to _MAX_MS, with
 * jitter, reset by the first answer of a later process) and starts another.
 * A process retired on purpose (worker_max_jobs reached, a reload) leaves
 * its slot at once, so that its successor starts while it finishes its
 * last jobs; the drain retires them all and starts none.
 *
 * Frames are read and written without blocking on the event loop. What a
 * worker sends is bounded by QW_WORKER_FRAME_MAX a frame (a larger one is a
 * protocol error), and what we send it by worker_inflight jobs, as a job is
 * sent only to a process that has room for it. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "exec.h"
#include "log.h"
#include "worker.h"

#define QW_WORKER_FRAME_MAX (64 * 1024)
#define QW_WORKER_READY_MS 10000
#define QW_WORKER_BACKOFF_MIN_MS 100
#define QW_WORKER_BACKOFF_MAX_MS 10000
#define QW_WORKER_READ_CHUNK 65536
#define QW_WORKER_ERROR_MAX 500

/* A worker process, from its spawn until it is reaped; moved only by
 * qw_worker_move, which checks where it comes from.
 *   STARTING -> READY     its R frame said protocol 1
 *   STARTING, READY -> STOPPING   it was sent S: retired (worker_max_jobs,
 *                         a reload) or the drain; it finishes its jobs
 *   STARTING, READY, STOPPING -> KILLING   no R within QW_WORKER_READY_MS,
 *                         a cancel not answered within kill_grace, a broken
 *                         protocol, or still alive kill_grace after it had
 *                         nothing left to do: SIGTERM to its group now,
 *                         SIGKILL after kill_grace (exec.c)
 *   any      -> EXITED    reaped: the jobs it still had end as LOST, and it
 *                         is freed
 * Its timer is the deadline of the state it is in: the R frame while
 * STARTING, its exit once it has nothing left to do (STOPPING, or after it
 * closed fd 3). */
enum qw_worker_state {
	QW_WORKER_STARTING,
	QW_WORKER_READY,
	QW_WORKER_STOPPING,
	QW_WORKER_KILLING,
	QW_WORKER_EXITED,
	QW_WORKER_NSTATES
};

struct qw_worker_job {
	TAILQ_ENTRY(qw_worker_job) link;
	struct qw_worker *w;
	uint64_t seq;
	char *id;		/* for log lines */
	struct event *grace_ev;	/* armed by the cancel */
	bool cancel_sent;
	qw_worker_done_fn *done;	/* NULL once dropped */
	void *arg;
};
TAILQ_HEAD(qw_worker_jobs, qw_worker_job);

struct qw_worker_slot {
	struct qw_worker_group *g;
	struct qw_worker *w;		/* NULL while it waits out its backoff */
	unsigned failures;		/* deaths since the last answer */
	struct event *backoff_ev;
};

struct qw_worker {
	TAILQ_ENTRY(qw_worker) link;
	struct qw_worker_group *g;
	struct qw_worker_slot *slot;	/* NULL once retired */
	enum qw_worker_state state;
	bool was_ready;			/* it sent R: it may answer jobs */
	struct qw_exec *x;
	pid_t pid;
	int fd;				/* -1 after EOF or a write error */
	struct event *rd_ev, *wr_ev, *timer_ev;
	struct evbuffer *in, *out;
	struct qw_worker_jobs jobs;
	unsigned njobs;
	unsigned sent;			/* jobs sent in its life (worker_max_jobs) */
	const char *timer_why;		/* what the timer firing means (static) */
	char *why;			/* KILLING: why, for its jobs' error */
};
TAILQ_HEAD(qw_workers_list, qw_worker);

struct qw_worker_group {
	struct event_base *base;
	struct qw_execs *execs;
	char *queue;
	char **argv;
	char **envp;			/* the daemon's strings and our own (envbuf) */
	char envbuf[256];
	unsigned processes, inflight, max_jobs;
	uint64_t kill_grace_ms;
	struct qw_worker_slot *slots;	/* processes of them */
	struct qw_workers_list procs;	/* every live process, retired ones too */
	unsigned nprocs;
	uint64_t seq;
	bool stopping;			/* the drain: no process starts again */
	char *trouble;
	qw_worker_changed_fn *changed;
	void *arg;
	unsigned short rnd[3];
};

static const char *const qw_worker_names[QW_WORKER_NSTATES] = {
	[QW_WORKER_STARTING] = "starting", [QW_WORKER_READY] = "ready",
	[QW_WORKER_STOPPING] = "stopping", [QW_WORKER_KILLING] = "killing",
	[QW_WORKER_EXITED] = "exited",
};

#define B(s) (1u << (s))
static const unsigned qw_worker_moves[QW_WORKER_NSTATES] = {
	[QW_WORKER_STARTING] = B(QW_WORKER_READY) | B(QW_WORKER_STOPPING) | B(QW_WORKER_KILLING) |
	    B(QW_WORKER_EXITED),
	[QW_WORKER_READY] = B(QW_WORKER_STOPPING) | B(QW_WORKER_KILLING) | B(QW_WORKER_EXITED),
	[QW_WORKER_STOPPING] = B(QW_WORKER_KILLING) | B(QW_WORKER_EXITED),
	[QW_WORKER_KILLING] = B(QW_WORKER_EXITED),
};
#undef B

static void qw_worker_spawn(struct qw_worker_slot *slot);
static void qw_worker_kill(struct qw_worker *w, const char *why);
static void qw_worker_flush(struct qw_worker *w);

static int
qw_worker_move(struct qw_worker *w, enum qw_worker_state to)
{
	if (!(qw_worker_moves[w->state] & (1u << to))) {
		qw_log_err("worker %s[%d]: cannot move from %s to %s (a bug)", w->g->queue,
		    (int)w->pid, qw_worker_names[w->state], qw_worker_names[to]);
		return -1;
	}
	qw_log_debug("worker %s[%d]: %s -> %s", w->g->queue, (int)w->pid,
	    qw_worker_names[w->state], qw_worker_names[to]);
	w->state = to;
	if (to == QW_WORKER_READY)
		w->was_ready = true;
	return 0;
}

static void
qw_worker_arm(struct qw_worker *w, uint64_t ms, const char *why)
{
	w->timer_why = why;
	qw_clock_arm(w->timer_ev, ms);
}

/* ---- frames out ---------------------------------------------------------- */

static void
qw_worker_put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void
qw_worker_put_u64(unsigned char *p, uint64_t v)
{
	qw_worker_put_u32(p, (uint32_t)(v >> 32));
	qw_worker_put_u32(p + 4, (uint32_t)v);
}

static uint64_t
qw_worker_get_u64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* Queues a frame: TYPE, HEAD (HLEN bytes), then BODY (BLEN bytes). */
static int
qw_worker_frame(struct qw_worker *w, char type, const void *head, size_t hlen, const void *body,
    size_t blen)
{
	unsigned char hdr[5];

	if (w->fd < 0)
		return 0;	/* it closed fd 3: its death is on its way */
	qw_worker_put_u32(hdr, (uint32_t)(1 + hlen + blen));
	hdr[4] = (unsigned char)type;
	if (evbuffer_add(w->out, hdr, sizeof(hdr)) < 0 ||
	    (hlen > 0 && evbuffer_add(w->out, head, hlen) < 0) ||
	    (blen > 0 && evbuffer_add(w->out, body, blen) < 0))
		return ENOMEM;
	qw_worker_flush(w);
	return 0;
}

/* Our end of fd 3 is gone (EOF or a write error): the process is dying, or
 * will be made to if it does not exit within kill_grace. */
static void
qw_worker_close_fd(struct qw_worker *w)
{
	if (w->fd < 0)
		return;
	event_del(w->rd_ev);
	event_del(w->wr_ev);
	close(w->fd);
	w->fd = -1;
	evbuffer_drain(w->out, evbuffer_get_length(w->out));
	if (w->state != QW_WORKER_KILLING)
		qw_worker_arm(w, w->g->kill_grace_ms, "closed fd 3 but did not exit");
}

static void
qw_worker_flush(struct qw_worker *w)
{
	while (w->fd >= 0 && evbuffer_get_length(w->out) > 0) {
		int n = evbuffer_write(w->out, w->fd);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			event_add(w->wr_ev, NULL);
			return;
		}
		if (n <= 0) {
			qw_log_debug("worker %s[%d]: writing to fd 3: %s", w->g->queue, (int)w->pid,
			    strerror(errno));
			qw_worker_close_fd(w);
			return;
		}
	}
	if (w->fd >= 0)
		event_del(w->wr_ev);
}

static void
qw_worker_write_cb(evutil_socket_t fd, short what, void *arg)
{
	qw_worker_flush(arg);
}

/* S: finish what you have, then exit 0. */
static void
qw_worker_retire(struct qw_worker *w)
{
	if (w->state != QW_WORKER_STARTING && w->state != QW_WORKER_READY)
		return;
	/* One still starting reads S after its R, within kill_grace; one that
	 * never says ready is stopped then. */
	if (w->slot != NULL)
		w->slot->w = NULL;
	w->slot = NULL;
	qw_worker_move(w, QW_WORKER_STOPPING);
	qw_worker_frame(w, 'S', NULL, 0, NULL, 0);
	if (w->njobs == 0)
		qw_worker_arm(w, w->g->kill_grace_ms, "did not exit within kill_grace of its S frame");
}

/* ---- jobs ---------------------------------------------------------------- */

static void
qw_worker_job_free(struct qw_worker_job *j)
{
	if (j->grace_ev != NULL)
		event_free(j->grace_ev);
	free(j->id);
	free(j);
}

/* Takes J off its process and runs its callback: the process answered it,
 * or died with it. */
static void
qw_worker_job_end(struct qw_worker_job *j, enum qw_worker_result result, const char *error)
{
	struct qw_worker *w = j->w;
	qw_worker_done_fn *done = j->done;
	void *arg = j->arg;

	TAILQ_REMOVE(&w->jobs, j, link);
	w->njobs--;
	if (done != NULL)
		done(j, result, error, arg);
	qw_worker_job_free(j);
	if (w->njobs == 0 && w->state == QW_WORKER_STOPPING && w->fd >= 0)
		qw_worker_arm(w, w->g->kill_grace_ms, "did not exit within kill_grace of its S frame");
	w->g->changed(w->g->arg);
}

static void
qw_worker_grace_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_worker_job *j = arg;
	char why[300];

	snprintf(why, sizeof(why), "did not answer the cancel of job %s within kill_grace", j->id);
	qw_worker_kill(j->w, why);
}

void
qw_worker_cancel(struct qw_worker_job *j, const char *reason)
{
	struct qw_worker *w = j->w;
	unsigned char seq[8];

	if (j->cancel_sent)
		return;
	j->cancel_sent = true;
	qw_worker_put_u64(seq, j->seq);
	if (w->state == QW_WORKER_KILLING)
		return;		/* its death ends the job soon */
	qw_worker_frame(w, 'C', seq, sizeof(seq), reason, strlen(reason));
	qw_clock_arm(j->grace_ev, w->g->kill_grace_ms);
}

void
qw_worker_job_drop(struct qw_worker_job *j)
{
	j->done = NULL;
}

/* The least busy ready process with room, or NULL. */
static struct qw_worker *
qw_worker_pick(const struct qw_worker_group *g)
{
	struct qw_worker *best = NULL;

	for (unsigned i = 0; i < g->processes; i++) {
		struct qw_worker *w = g->slots[i].w;
		if (w != NULL && w->state == QW_WORKER_READY && w->fd >= 0 && w->njobs < g->inflight &&
		    (best == NULL || w->njobs < best->njobs))
			best = w;
	}
	return best;
}

/* The J frame's JSON: {"id","queue","attempt","max_attempts","deadline"}. */
static char *
qw_worker_job_json(const struct qw_worker_group *g, const struct qw_worker_jobspec *js)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I}", "id", js->id, "queue", g->queue,
	    "attempt", (json_int_t)js->attempt, "max_attempts", (json_int_t)js->max_attempts,
	    "deadline", (json_int_t)js->deadline_ms);
	char *s;

	if (o == NULL)
		return NULL;
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	return s;
}

static int
qw_worker_send_job(struct qw_worker *w, struct qw_worker_job *j,
    const struct qw_worker_jobspec *js)
{
	unsigned char head[12];
	char *meta = qw_worker_job_json(w->g, js);
	size_t mlen;
	int rc;

	if (meta == NULL)
		return EINVAL;
	mlen = strlen(meta);
	if (js->payload_len > UINT32_MAX - 64 - mlen) {
		free(meta);
		return EINVAL;
	}
	qw_worker_put_u64(head, j->seq);
	qw_worker_put_u32(head + 8, (uint32_t)mlen);
	/* The JSON goes after the fixed head, the payload after the JSON. */
	rc = evbuffer_expand(w->out, 5 + sizeof(head) + mlen + js->payload_len) < 0 ? ENOMEM : 0;
	if (rc == 0) {
		unsigned char hdr[5];
		qw_worker_put_u32(hdr, (uint32_t)(1 + sizeof(head) + mlen + js->payload_len));
		hdr[4] = 'J';
		if (w->fd >= 0 && (evbuffer_add(w->out, hdr, 5) < 0 ||
		    evbuffer_add(w->out, head, sizeof(head)) < 0 ||
		    evbuffer_add(w->out, meta, mlen) < 0 ||
		    (js->payload_len > 0 && evbuffer_add(w->out, js->payload, js->payload_len) < 0)))
			rc = ENOMEM;
	}
	free(meta);
	/* Written once the loop is done with this round: the jobs handed out
	 * together go in one write, and the worker wakes once for them. */
	if (rc == 0 && w->fd >= 0)
		event_active(w->wr_ev, EV_WRITE, 0);
	return rc;
}

int
qw_worker_submit(struct qw_worker_group *g, const struct qw_worker_jobspec *js,
    qw_worker_done_fn *done, void *arg, struct qw_worker_job **out)
{
	struct qw_worker *w = qw_worker_pick(g);
	struct qw_worker_job *j;
	int rc;

	*out = NULL;
	if (w == NULL)
		return EAGAIN;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return ENOMEM;
	j->w = w;
	j->seq = ++g->seq;
	j->done = done;
	j->arg = arg;
	j->id = strdup(js->id);
	j->grace_ev = evtimer_new(g->base, qw_worker_grace_cb, j);
	if (j->id == NULL || j->grace_ev == NULL) {
		qw_worker_job_free(j);
		return ENOMEM;
	}
	if ((rc = qw_worker_send_job(w, j, js)) != 0) {
		qw_worker_job_free(j);
		return rc;
	}
	TAILQ_INSERT_TAIL(&w->jobs, j, link);
	w->njobs++;
	*out = j;
	if (g->max_jobs > 0 && ++w->sent >= g->max_jobs) {
		qw_log_info("worker %s[%d]: took worker_max_jobs (%u) jobs; replacing it", g->queue,
		    (int)w->pid, g->max_jobs);
		struct qw_worker_slot *slot = w->slot;
		qw_worker_retire(w);
		qw_worker_spawn(slot);
	}
	return 0;
}

/* ---- frames in ----------------------------------------------------------- */

static bool
qw_worker_protocol_error(struct qw_worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The process broke the protocol: it is killed, and its jobs fail. */
static bool
qw_worker_protocol_error(struct qw_worker *w, const char *fmt, ...)
{
	char msg[300], why[340];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(why, sizeof(why), "broke the protocol: %s", msg);
	qw_worker_kill(w, why);
	return false;
}

static void
qw_worker_set_trouble(struct qw_worker_group *g, const char *why)
{
	char *t = NULL;

	if (why != NULL && asprintf(&t, "worker %s did not start: %s", g->argv[0], why) < 0)
		t = NULL;
	free(g->trouble);
	g->trouble = t;
}

static bool
qw_worker_on_ready(struct qw_worker *w, const unsigned char *body, size_t len)
{
	json_error_t err;
	json_t *o, *p;
	bool ok;

	if (w->state == QW_WORKER_STOPPING && !w->was_ready) {
		w->was_ready = true;	/* retired before it said ready: S is on its way */
		return true;
	}
	if (w->state != QW_WORKER_STARTING)
		return qw_worker_protocol_error(w, "an R frame after the first");
	o = json_loadb((const char *)body, len, 0, &err);
	p = json_is_object(o) ? json_object_get(o, "protocol") : NULL;
	ok = json_is_integer(p) && json_integer_value(p) == 1;
	json_decref(o);
	if (!ok)
		return qw_worker_protocol_error(w, "its R frame is not a JSON object with "
		    "\"protocol\":1");
	qw_worker_move(w, QW_WORKER_READY);
	event_del(w->timer_ev);
	if (w->g->trouble != NULL)
		qw_log_notice("worker %s[%d]: ready; workers start again", w->g->queue, (int)w->pid);
	else
		qw_log_info("worker %s[%d]: ready", w->g->queue, (int)w->pid);
	qw_worker_set_trouble(w->g, NULL);
	w->g->changed(w->g->arg);
	return true;
}

static struct qw_worker_job *
qw_worker_find(const struct qw_worker *w, uint64_t seq)
{
	struct qw_worker_job *j;

	TAILQ_FOREACH(j, &w->jobs, link)
		if (j->seq == seq)
			return j;
	return NULL;
}

/* D or F: the answer for one job. */
static bool
qw_worker_on_answer(struct qw_worker *w, char type, const unsigned char *body, size_t len)
{
	char error[QW_WORKER_ERROR_MAX + 1];
	struct qw_worker_job *j;
	uint64_t seq;
	size_t n;

	if (!w->was_ready)
		return qw_worker_protocol_error(w, "a %c frame before its R frame", type);
	if (len < (type == 'D' ? 8u : 9u))
		return qw_worker_protocol_error(w, "a %c frame of %zu bytes is too short", type,
		    len + 1);
	seq = qw_worker_get_u64(body);
	if ((j = qw_worker_find(w, seq)) == NULL)
		return qw_worker_protocol_error(w, "a %c frame for job %llu, which it does not have",
		    type, (unsigned long long)seq);
	if (type == 'F' && body[8] > 1)
		return qw_worker_protocol_error(w, "an F frame whose permanent flag is %u, not 0 or 1",
		    body[8]);
	if (w->slot != NULL)
		w->slot->failures = 0;
	if (type == 'D') {
		qw_worker_job_end(j, QW_WORKER_DONE, NULL);
		return true;
	}
	/* Error text stops at a NUL byte; the log escapes the rest. */
	n = strnlen((const char *)body + 9, len - 9 < QW_WORKER_ERROR_MAX ? len - 9 :
	    QW_WORKER_ERROR_MAX);
	memcpy(error, body + 9, n);
	error[n] = '\0';
	qw_worker_job_end(j, body[8] ? QW_WORKER_PERMANENT : QW_WORKER_FAILED,
	    n > 0 ? error : "the worker gave no reason");
	return true;
}

/* One whole frame: TYPE and its body. False when the process must not be
 * read any more. */
static bool
qw_worker_on_frame(struct qw_worker *w, unsigned char type, const unsigned char *body, size_t len)
{
	switch (type) {
	case 'R':
		return qw_worker_on_ready(w, body, len);
	case 'D':
	case 'F':
		return qw_worker_on_answer(w, (char)type, body, len);
	default:
		return qw_worker_protocol_error(w, "unknown frame type 0x%02x", type);
	}
}

/* Handles every whole frame in the input buffer. */
static bool
qw_worker_parse(struct qw_worker *w)
{
	unsigned char hdr[4], *frame;
	uint32_t n;

	while (evbuffer_get_length(w->in) >= 4) {
		evbuffer_copyout(w->in, hdr, 4);
		n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
		if (n == 0)
			return qw_worker_protocol_error(w, "a frame of length 0");
		if (n > QW_WORKER_FRAME_MAX)
			return qw_worker_protocol_error(w, "a frame of %u bytes (at most %d)", n,
			    QW_WORKER_FRAME_MAX);
		if (evbuffer_get_length(w->in) < 4 + (size_t)n)
			return true;
		if ((frame = evbuffer_pullup(w->in, 4 + (ssize_t)n)) == NULL) {
			qw_worker_kill(w, "could not be read: out of memory");
			return false;
		}
		if (!qw_worker_on_frame(w, frame[4], frame + 5, n - 1))
			return false;
		evbuffer_drain(w->in, 4 + (size_t)n);
		if (w->state == QW_WORKER_KILLING || w->fd < 0)
			return false;
	}
	return true;
}

/* Reads what the process sent, until the socket is empty or it is done
 * with. */
static void
qw_worker_read(struct qw_worker *w)
{
	for (;;) {
		int n = evbuffer_read(w->in, w->fd, QW_WORKER_READ_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			qw_worker_close_fd(w);
			return;
		}
		/* A short read emptied the socket: the event says when more comes,
		 * without a read that only answers EAGAIN. */
		if (!qw_worker_parse(w) || n < QW_WORKER_READ_CHUNK)
			return;
	}
}

static void
qw_worker_read_cb(evutil_socket_t fd, short what, void *arg)
{
	qw_worker_read(arg);
}

/* ---- processes ----------------------------------------------------------- */

static void
qw_worker_kill(struct qw_worker *w, const char *why)
{
	if (w->state == QW_WORKER_KILLING || w->state == QW_WORKER_EXITED)
		return;
	qw_log_err("worker %s[%d] %s; SIGTERM to its process group, SIGKILL after kill_grace",
	    w->g->queue, (int)w->pid, why);
	if (w->state == QW_WORKER_STARTING)
		qw_worker_set_trouble(w->g, why);
	free(w->why);
	w->why = strdup(why);
	qw_worker_move(w, QW_WORKER_KILLING);
	event_del(w->timer_ev);
	if (w->fd >= 0)
		event_del(w->rd_ev);
	qw_exec_cancel(w->x, w->g->kill_grace_ms);
}

static void
qw_worker_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_worker *w = arg;

	qw_worker_kill(w, w->timer_why);
}

/* How the process ended: "exited with status 3". */
static void
qw_worker_status_text(int ws, char *buf, size_t len)
{
	const char *abbrev;

	if (WIFEXITED(ws)) {
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(ws));
		return;
	}
	abbrev = sigabbrev_np(WTERMSIG(ws));
	snprintf(buf, len, "was killed by signal %d (SIG%s)", WTERMSIG(ws), abbrev ? abbrev : "?");
}

static uint64_t
qw_worker_backoff_ms(struct qw_worker_slot *slot)
{
	uint64_t ms = QW_WORKER_BACKOFF_MIN_MS;

	for (unsigned i = 1; i < slot->failures && ms < QW_WORKER_BACKOFF_MAX_MS; i++)
		ms *= 2;
	if (ms > QW_WORKER_BACKOFF_MAX_MS)
		ms = QW_WORKER_BACKOFF_MAX_MS;
	/* 0.75 to 1.25 of it: processes that died together start apart. */
	return (uint64_t)((double)ms * (0.75 + erand48(slot->g->rnd) / 2));
}

/* A clean stop is routine; a death before R is a startup failure (said in
 * STATUS= too); any other death fails the jobs it had. */
static void
qw_worker_log_exit(const struct qw_worker *w, int ws, const char *status)
{
	const char *q = w->g->queue;

	if (w->state == QW_WORKER_STOPPING && w->why == NULL && WIFEXITED(ws) &&
	    WEXITSTATUS(ws) == 0)
		qw_log_info("worker %s[%d]: stopped", q, (int)w->pid);
	else if (w->why != NULL)
		qw_log_notice("worker %s[%d]: %s", q, (int)w->pid, status);
	else if (w->state == QW_WORKER_STARTING)
		qw_log_err("worker %s[%d]: did not start: it %s before it sent R", q, (int)w->pid,
		    status);
	else
		qw_log_warn("worker %s[%d]: %s with %u jobs%s", q, (int)w->pid, status, w->njobs,
		    w->slot != NULL && !w->g->stopping ? "; starting another" : "");
}

/* The slot of a process that died waits out its backoff; the drain starts
 * nothing. */
static void
qw_worker_slot_vacated(struct qw_worker_slot *slot)
{
	slot->w = NULL;
	if (slot->g->stopping)
		return;
	slot->failures++;
	qw_clock_arm(slot->backoff_ev, qw_worker_backoff_ms(slot));
}

static void
qw_worker_free(struct qw_worker *w)
{
	struct qw_worker_job *j;

	while ((j = TAILQ_FIRST(&w->jobs)) != NULL) {
		TAILQ_REMOVE(&w->jobs, j, link);
		qw_worker_job_free(j);
	}
	qw_exec_free(w->x);
	if (w->fd >= 0)
		close(w->fd);
	if (w->rd_ev != NULL)
		event_free(w->rd_ev);
	if (w->wr_ev != NULL)
		event_free(w->wr_ev);
	if (w->timer_ev != NULL)
		event_free(w->timer_ev);
	if (w->in != NULL)
		evbuffer_free(w->in);
	if (w->out != NULL)
		evbuffer_free(w->out);
	free(w->why);
	free(w);
}

/* Reaped (exec.c): answers it sent before it died still count; the jobs
 * left end as LOST. */
static void
qw_worker_exited(struct qw_exec *x, int ws, void *arg)
{
	struct qw_worker *w = arg;
	struct qw_worker_group *g = w->g;
	struct qw_worker_job *j;
	char status[100], text[400];

	if (w->fd >= 0 && w->state != QW_WORKER_KILLING)
		qw_worker_read(w);
	qw_worker_status_text(ws, status, sizeof(status));
	qw_worker_log_exit(w, ws, status);
	snprintf(text, sizeof(text), "the worker %s", w->why ? w->why : status);
	if (w->state == QW_WORKER_STARTING) {
		char t[140];
		snprintf(t, sizeof(t), "it %s before it sent R", status);
		qw_worker_set_trouble(g, t);
	}
	if (w->slot != NULL)
		qw_worker_slot_vacated(w->slot);
	qw_worker_move(w, QW_WORKER_EXITED);
	while ((j = TAILQ_FIRST(&w->jobs)) != NULL)
		qw_worker_job_end(j, QW_WORKER_LOST, text);
	TAILQ_REMOVE(&g->procs, w, link);
	g->nprocs--;
	qw_worker_free(w);
	g->changed(g->arg);
}

static int
qw_worker_socket(int *ours, int *theirs)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return errno;
	/* Its end becomes fd 3 with dup2, which must not be a no-op. */
	if (sv[1] <= 3) {
		int fd = fcntl(sv[1], F_DUPFD_CLOEXEC, 4);
		if (fd < 0) {
			int rc = errno;
			close(sv[0]);
			close(sv[1]);
			return rc;
		}
		close(sv[1]);
		sv[1] = fd;
	}
	if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
		int rc = errno;
		close(sv[0]);
		close(sv[1]);
		return rc;
	}
	*ours = sv[0];
	*theirs = sv[1];
	return 0;
}

static int
qw_worker_events(struct qw_worker *w)
{
	struct event_base *base = w->g->base;

	w->in = evbuffer_new();
	w->out = evbuffer_new();
	w->rd_ev = event_new(base, w->fd, EV_READ | EV_PERSIST, qw_worker_read_cb, w);
	w->wr_ev = event_new(base, w->fd, EV_WRITE | EV_PERSIST, qw_worker_write_cb, w);
	w->timer_ev = evtimer_new(base, qw_worker_timer_cb, w);
	if (w->in == NULL || w->out == NULL || w->rd_ev == NULL || w->wr_ev == NULL ||
	    w->timer_ev == NULL || event_add(w->rd_ev, NULL) < 0)
		return ENOMEM;
	return 0;
}

/* Starts a process in SLOT. One that cannot start is a startup failure,
 * and the slot waits out its backoff. */
static int
qw_worker_start(struct qw_worker_slot *slot, struct qw_worker *w)
{
	struct qw_worker_group *g = slot->g;
	int theirs = -1, rc;
	struct qw_exec_spec spec = {
		.argv = g->argv, .envp = g->envp, .tag = g->queue, .what = "worker",
		.tag_pid = true, .output_max = SIZE_MAX,
	};

	w->g = g;
	w->fd = -1;
	TAILQ_INIT(&w->jobs);
	if ((rc = qw_worker_socket(&w->fd, &theirs)) != 0)
		return rc;
	spec.extra_fd = theirs;
	rc = qw_worker_events(w);
	if (rc == 0)
		rc = qw_exec_start(g->execs, &spec, qw_worker_exited, w, &w->x);
	close(theirs);
	if (rc != 0)
		return rc;
	w->pid = qw_exec_pid(w->x);
	w->slot = slot;
	slot->w = w;
	TAILQ_INSERT_TAIL(&g->procs, w, link);
	g->nprocs++;
	qw_worker_arm(w, QW_WORKER_READY_MS, "sent no R frame within 10s of its start");
	qw_log_debug("worker %s[%d]: started %s", g->queue, (int)w->pid, g->argv[0]);
	return 0;
}

static void
qw_worker_spawn(struct qw_worker_slot *slot)
{
	struct qw_worker_group *g = slot->g;
	struct qw_worker *w;
	int rc;

	if (g->stopping || slot->w != NULL)
		return;
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		rc = ENOMEM;
	} else if ((rc = qw_worker_start(slot, w)) == 0) {
		return;
	} else {
		w->x = NULL;	/* qw_exec_start freed it */
		qw_worker_free(w);
	}
	qw_log_err("worker %s: cannot start %s: %s", g->queue, g->argv[0], strerror(rc));
	qw_worker_set_trouble(g, strerror(rc));
	slot->failures++;
	qw_clock_arm(slot->backoff_ev, qw_worker_backoff_ms(slot));
}

static void
qw_worker_backoff_cb(evutil_socket_t fd, short what, void *arg)
{
	qw_worker_spawn(arg);
}

/* ---- the group ----------------------------------------------------------- */

static char **
qw_worker_copy_argv(char *const *argv)
{
	size_t n = 0;
	char **copy;

	while (argv[n] != NULL)
		n++;
	if ((copy = calloc(n + 1, sizeof(char *))) == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if ((copy[i] = strdup(argv[i])) == NULL) {
			while (i > 0)
				free(copy[--i]);
			free(copy);
			return NULL;
		}
	}
	return copy;
}

static void
qw_worker_free_argv(char **argv)
{
	for (size_t i = 0; argv != NULL && argv[i] != NULL; i++)
		free(argv[i]);
	free(argv);
}

/* The environment: the daemon's, then QW_QUEUE, QW_WORKER_FD and
 * QW_WORKER_INFLIGHT (in envbuf). */
static char **
qw_worker_env(struct qw_worker_group *g, const struct qw_worker_conf *wc)
{
	char **envp = calloc(wc->nenv + 4, sizeof(char *));
	int n = snprintf(g->envbuf, sizeof(g->envbuf), "QW_QUEUE=%s%cQW_WORKER_FD=3%c"
	    "QW_WORKER_INFLIGHT=%u", g->queue, 0, 0, wc->inflight);

	if (envp == NULL || n < 0 || (size_t)n >= sizeof(g->envbuf)) {
		free(envp);
		return NULL;
	}
	memcpy(envp, wc->env, wc->nenv * sizeof(char *));
	envp[wc->nenv] = g->envbuf;
	envp[wc->nenv + 1] = envp[wc->nenv] + strlen(envp[wc->nenv]) + 1;
	envp[wc->nenv + 2] = envp[wc->nenv + 1] + strlen(envp[wc->nenv + 1]) + 1;
	return envp;
}

static struct qw_worker_slot *
qw_worker_slots_new(struct qw_worker_group *g, unsigned n)
{
	struct qw_worker_slot *slots = calloc(n, sizeof(*slots));

	for (unsigned i = 0; slots != NULL && i < n; i++) {
		slots[i].g = g;
		if ((slots[i].backoff_ev = evtimer_new(g->base, qw_worker_backoff_cb,
		    &slots[i])) == NULL) {
			while (i > 0)
				event_free(slots[--i].backoff_ev);
			free(slots);
			return NULL;
		}
	}
	return slots;
}

static void
qw_worker_slots_free(struct qw_worker_slot *slots, unsigned n)
{
	for (unsigned i = 0; slots != NULL && i < n; i++) {
		if (slots[i].w != NULL)
			slots[i].w->slot = NULL;
		event_free(slots[i].backoff_ev);
	}
	free(slots);
}

/* Takes WC's settings; on failure changes nothing. */
static int
qw_worker_apply(struct qw_worker_group *g, const struct qw_worker_conf *wc)
{
	char **argv = qw_worker_copy_argv(wc->argv), **envp;
	struct qw_worker_slot *slots = qw_worker_slots_new(g, wc->processes);
	char oldbuf[sizeof(g->envbuf)];

	memcpy(oldbuf, g->envbuf, sizeof(oldbuf));
	if (argv == NULL || slots == NULL || (envp = qw_worker_env(g, wc)) == NULL) {
		memcpy(g->envbuf, oldbuf, sizeof(oldbuf));
		qw_worker_free_argv(argv);
		qw_worker_slots_free(slots, wc->processes);
		return -1;
	}
	qw_worker_free_argv(g->argv);
	free(g->envp);
	qw_worker_slots_free(g->slots, g->processes);
	g->argv = argv;
	g->envp = envp;
	g->slots = slots;
	g->processes = wc->processes;
	g->inflight = wc->inflight;
	g->max_jobs = wc->max_jobs;
	g->kill_grace_ms = wc->kill_grace_ms;
	return 0;
}

static void
qw_worker_spawn_all(struct qw_worker_group *g)
{
	for (unsigned i = 0; i < g->processes; i++)
		qw_worker_spawn(&g->slots[i]);
}

struct qw_worker_group *
qw_worker_group_new(struct event_base *base, struct qw_execs *execs,
    const struct qw_worker_conf *wc, qw_worker_changed_fn *changed, void *arg)
{
	struct qw_worker_group *g = calloc(1, sizeof(*g));

	if (g == NULL)
		return NULL;
	g->base = base;
	g->execs = execs;
	g->changed = changed;
	g->arg = arg;
	TAILQ_INIT(&g->procs);
	if (getrandom(g->rnd, sizeof(g->rnd), 0) != (ssize_t)sizeof(g->rnd))
		g->rnd[0] = (unsigned short)getpid();
	if ((g->queue = strdup(wc->queue)) == NULL || qw_worker_apply(g, wc) < 0) {
		qw_worker_group_free(g);
		return NULL;
	}
	qw_worker_spawn_all(g);
	return g;
}

int
qw_worker_group_reconfigure(struct qw_worker_group *g, const struct qw_worker_conf *wc)
{
	struct qw_worker *w, *next;

	/* Retired first: the new slots start empty. */
	for (w = TAILQ_FIRST(&g->procs); w != NULL; w = next) {
		next = TAILQ_NEXT(w, link);
		qw_worker_retire(w);
	}
	if (qw_worker_apply(g, wc) < 0) {
		qw_log_err("worker %s: out of memory applying the reload; its workers start again "
		    "with the old settings", g->queue);
		for (unsigned i = 0; i < g->processes; i++)
			event_del(g->slots[i].backoff_ev);
	}
	qw_worker_spawn_all(g);
	return 0;
}

void
qw_worker_group_stop(struct qw_worker_group *g)
{
	struct qw_worker *w, *next;

	g->stopping = true;
	for (unsigned i = 0; i < g->processes; i++)
		event_del(g->slots[i].backoff_ev);
	for (w = TAILQ_FIRST(&g->procs); w != NULL; w = next) {
		next = TAILQ_NEXT(w, link);
		qw_worker_retire(w);
	}
	g->changed(g->arg);
}

void
qw_worker_group_free(struct qw_worker_group *g)
{
	struct qw_worker *w;

	if (g == NULL)
		return;
	qw_worker_slots_free(g->slots, g->processes);
	while ((w = TAILQ_FIRST(&g->procs)) != NULL) {
		TAILQ_REMOVE(&g->procs, w, link);
		qw_worker_free(w);
	}
	qw_worker_free_argv(g->argv);
	free(g->envp);
	free(g->queue);
	free(g->trouble);
	free(g);
}

unsigned
qw_worker_group_room(const struct qw_worker_group *g)
{
	unsigned room = 0;

	for (unsigned i = 0; i < g->processes; i++) {
		const struct qw_worker *w = g->slots[i].w;
		if (w != NULL && w->state == QW_WORKER_READY && w->fd >= 0 && w->njobs < g->inflight)
			room += g->inflight - w->njobs;
	}
	return room;
}

unsigned
qw_worker_group_capacity(const struct qw_worker_group *g)
{
	return g->processes * g->inflight;
}

unsigned
qw_worker_group_live(const struct qw_worker_group *g)
{
	return g->nprocs;
}

const char *
qw_worker_group_trouble(const struct qw_worker_group *g)
{
	return g->trouble;
}
