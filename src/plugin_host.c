/* plugin_host.c - owns in-process handlers: dlopen and the ABI check, the
 * services a plugin gets (token, errors, log), and the worker threads.
 *
 * Jobs go to the threads through one locked list; results come back through
 * another and an eventfd that wakes the event loop. The eventfd is written
 * only when the result list goes from empty to non-empty, so a burst of
 * short jobs costs one wake-up, not one per job.
 *
 * Threads are started on demand: the first at once, each further one only
 * when jobs have waited for a thread for QW_WORKERS_STARVE_US. Short jobs
 * then run on one or two threads that rarely sleep (many threads fighting
 * over the lists cost more than the jobs), while a plugin that blocks gets
 * a thread per job within a millisecond or so. */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "plugin_host.h"

struct qw_plugin {
	void *dl;
	char *path;
	int version;		/* the ABI it was built for: 1 or QW_PLUGIN_ABI_VERSION */
	int (*abi)(void);
	int (*init)(const struct qw_plugin_api *, const char *, void **);
	int (*handle)(void *, struct qw_plugin_job *);
	void (*fini)(void *);
};

/* ---- the services a plugin gets ----------------------------------------- */

static struct qw_work *
qw_work_of(const struct qw_plugin_job *job)
{
	return job->internal;
}

static bool
qw_api_cancelled(const struct qw_plugin_job *job)
{
	return qw_token_is_cancelled(qw_work_of(job)->token);
}

static enum qw_plugin_cancel
qw_api_reason(const struct qw_plugin_job *job)
{
	return (enum qw_plugin_cancel)qw_token_reason(qw_work_of(job)->token);
}

/* ABI 1 knew no operator's cancel: a plugin built for it sees the one
 * reason it knows that also ends the job. */
static enum qw_plugin_cancel
qw_api_reason_v1(const struct qw_plugin_job *job)
{
	enum qw_plugin_cancel r = qw_api_reason(job);

	return r == QW_PLUGIN_CANCEL_CANCELLED ? QW_PLUGIN_CANCEL_TIMEOUT : r;
}

static bool
qw_api_wait(const struct qw_plugin_job *job, int64_t timeout_ms)
{
	return qw_token_wait(qw_work_of(job)->token, timeout_ms);
}

static int
qw_api_cancel_fd(const struct qw_plugin_job *job)
{
	return qw_token_fd(qw_work_of(job)->token);
}

static void
qw_api_set_error(struct qw_plugin_job *job, const char *message)
{
	struct qw_work *w = qw_work_of(job);
	char *copy = strdup(message ? message : "");

	free(w->error);
	w->error = copy;
}

static void
qw_api_log(const struct qw_plugin_job *job, int priority, const char *message)
{
	qw_log(priority & 7, "job %s/%s: %s", job->queue, job->id, message);
}

/* The services, the same for every ABI but for the version and the
 * reasons a plugin is told. */
#define QW_PLUGIN_API_INIT(version, reason_fn) { \
	.abi_version = (version), \
	.cancelled = qw_api_cancelled, \
	.reason = (reason_fn), \
	.wait = qw_api_wait, \
	.cancel_fd = qw_api_cancel_fd, \
	.set_error = qw_api_set_error, \
	.log = qw_api_log, \
}

static const struct qw_plugin_api qw_plugin_api =
    QW_PLUGIN_API_INIT(QW_PLUGIN_ABI_VERSION, qw_api_reason);
/* What a plugin built for ABI 1 gets: the struct's layout is the same. */
static const struct qw_plugin_api qw_plugin_api_v1 = QW_PLUGIN_API_INIT(1, qw_api_reason_v1);

/* ---- loading ------------------------------------------------------------- */

static int
qw_plugin_sym(struct qw_plugin *p, const char *name, void **out, char **why)
{
	dlerror();
	*out = dlsym(p->dl, name);
	if (*out == NULL) {
		if (asprintf(why, "%s: missing symbol %s", p->path, name) < 0)
			*why = NULL;
		return -1;
	}
	return 0;
}

struct qw_plugin *
qw_plugin_load(const char *path, char **why)
{
	struct qw_plugin *p = calloc(1, sizeof(*p));
	void *sym[4];
	int abi;

	*why = NULL;
	if (p == NULL || (p->path = strdup(path)) == NULL)
		goto nomem;
	p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (p->dl == NULL) {
		if (asprintf(why, "%s", dlerror()) < 0)
			*why = NULL;
		goto fail;
	}
	if (qw_plugin_sym(p, "qw_plugin_abi", &sym[0], why) < 0 ||
	    qw_plugin_sym(p, "qw_plugin_init", &sym[1], why) < 0 ||
	    qw_plugin_sym(p, "qw_plugin_handle", &sym[2], why) < 0 ||
	    qw_plugin_sym(p, "qw_plugin_fini", &sym[3], why) < 0)
		goto fail;
	/* POSIX lets a data pointer from dlsym be converted to a function. */
	*(void **)&p->abi = sym[0];
	*(void **)&p->init = sym[1];
	*(void **)&p->handle = sym[2];
	*(void **)&p->fini = sym[3];
	abi = p->abi();
	if (abi != 1 && abi != QW_PLUGIN_ABI_VERSION) {
		if (asprintf(why, "%s: plugin ABI version %d, qworkerd needs 1 to %d", path, abi,
		    QW_PLUGIN_ABI_VERSION) < 0)
			*why = NULL;
		goto fail;
	}
	p->version = abi;
	return p;
nomem:
	*why = strdup("out of memory");
fail:
	qw_plugin_unload(p);
	return NULL;
}

void
qw_plugin_unload(struct qw_plugin *p)
{
	if (p == NULL)
		return;
	if (p->dl != NULL)
		dlclose(p->dl);
	free(p->path);
	free(p);
}

const char *
qw_plugin_path(const struct qw_plugin *p)
{
	return p->path;
}

int
qw_plugin_start(struct qw_plugin *p, const char *queue, void **state)
{
	*state = NULL;
	return p->init(p->version == 1 ? &qw_plugin_api_v1 : &qw_plugin_api, queue, state) == 0 ?
	    0 : -1;
}

void
qw_plugin_stop(struct qw_plugin *p, void *state)
{
	p->fini(state);
}

/* ---- worker threads ------------------------------------------------------ */

#define QW_WORKERS_STARVE_US 500
#define QW_WORKERS_SPIN_NS 2000

static void qw_workers_starve_cb(evutil_socket_t fd, short what, void *arg);

struct qw_workers {
	struct event *starve_ev;	/* checks for jobs waiting on a thread */
	unsigned max_threads;
	uint64_t served;		/* jobs taken by threads so far */
	uint64_t served_at_check;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct qw_work *todo, **todo_tail;
	struct qw_work *done;		/* newest first; reversed when taken */
	unsigned threads, idle;
	unsigned sleeping;		/* idle threads waiting on cv (not spinning) */
	unsigned spinning;		/* idle threads watching for work (at most one) */
	unsigned queued;		/* jobs in todo, not yet taken by a thread */
	bool stop;
	int efd;
	struct event *ev;
};

/* A hint to the CPU that this is a spin loop. */
static inline void
qw_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
	__asm__ __volatile__("yield");
#endif
}

/* Whether work is queued, read without the lock: a hint for spinning. */
static bool
qw_workers_has_work(struct qw_workers *ws)
{
	return __atomic_load_n(&ws->queued, __ATOMIC_RELAXED) > 0 ||
	    __atomic_load_n(&ws->stop, __ATOMIC_RELAXED);
}

/* Before sleeping, an idle thread watches for new work for a moment: a job
 * handed over in the same loop turn is taken without a futex sleep and
 * wake-up. Only a moment: 50 us here (long enough to bridge the gap
 * between two fetch replies) kept a thread busy through the gaps of a
 * no-op drain, half of qworkerd's CPU per job, taken from the event loop
 * and Redis on a 2-core machine; 2 us drained twice as fast with 2.5
 * times less CPU per job (bench harness, 200,000 jobs, 3 runs each). */
static void
qw_worker_spin(struct qw_workers *ws)
{
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (unsigned i = 1;; i++) {
		if (qw_workers_has_work(ws))
			return;
		qw_cpu_relax();
		if ((i & 63) == 0) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			if ((now.tv_sec - start.tv_sec) * 1000000000L + now.tv_nsec - start.tv_nsec >
			    QW_WORKERS_SPIN_NS)
				return;
		}
	}
}

static void *
qw_worker_main(void *arg)
{
	struct qw_workers *ws = arg;
	struct qw_work *w;
	bool wake;

	pthread_mutex_lock(&ws->mu);
	for (;;) {
		/* One watcher is enough to catch the next batch at once; the
		 * others sleep (spinning all of them burned a core's worth of
		 * CPU on the fast path and starved the loop and Redis), and the
		 * loop's kick wakes them when a batch holds more jobs. */
		if (ws->todo == NULL && !ws->stop && ws->spinning == 0) {
			ws->spinning++;
			pthread_mutex_unlock(&ws->mu);
			qw_worker_spin(ws);
			pthread_mutex_lock(&ws->mu);
			ws->spinning--;
		}
		while (ws->todo == NULL && !ws->stop) {
			ws->sleeping++;
			pthread_cond_wait(&ws->cv, &ws->mu);
			ws->sleeping--;
		}
		if (ws->todo == NULL)
			break;
		w = ws->todo;
		__atomic_sub_fetch(&ws->queued, 1, __ATOMIC_RELAXED);
		ws->served++;
		ws->todo = w->next;
		if (ws->todo == NULL)
			ws->todo_tail = &ws->todo;
		ws->idle--;
		pthread_mutex_unlock(&ws->mu);

		w->job.internal = w;
		w->result = w->plugin->handle(w->state, &w->job);

		pthread_mutex_lock(&ws->mu);
		ws->idle++;
		wake = ws->done == NULL;
		w->next = ws->done;
		ws->done = w;
		if (wake) {
			/* Outside the lock: the event loop wants it right away. */
			uint64_t one = 1;
			pthread_mutex_unlock(&ws->mu);
			ssize_t n = write(ws->efd, &one, sizeof(one));
			(void)n;
			pthread_mutex_lock(&ws->mu);
		}
	}
	ws->idle--;
	ws->threads--;
	pthread_cond_broadcast(&ws->cv);
	pthread_mutex_unlock(&ws->mu);
	return NULL;
}

/* On the loop: hand each finished job back, oldest first. */
static void
qw_workers_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_workers *ws = arg;
	struct qw_work *list, *rev = NULL, *w;
	uint64_t n;

	if (read(ws->efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		qw_log_err("worker threads: reading the wake-up fd: %s", strerror(errno));
	pthread_mutex_lock(&ws->mu);
	list = ws->done;
	ws->done = NULL;
	pthread_mutex_unlock(&ws->mu);
	while ((w = list) != NULL) {
		list = w->next;
		w->next = rev;
		rev = w;
	}
	while ((w = rev) != NULL) {
		rev = w->next;
		w->done(w);
	}
}

struct qw_workers *
qw_workers_new(struct event_base *base)
{
	struct qw_workers *ws = calloc(1, sizeof(*ws));

	if (ws == NULL)
		return NULL;
	pthread_mutex_init(&ws->mu, NULL);
	pthread_cond_init(&ws->cv, NULL);
	ws->todo_tail = &ws->todo;
	ws->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ws->efd < 0)
		goto fail;
	ws->ev = event_new(base, ws->efd, EV_READ | EV_PERSIST, qw_workers_done_cb, ws);
	ws->starve_ev = evtimer_new(base, qw_workers_starve_cb, ws);
	if (ws->ev == NULL || ws->starve_ev == NULL || event_add(ws->ev, NULL) < 0)
		goto fail;
	return ws;
fail:
	qw_workers_free(ws);
	return NULL;
}

static int
qw_workers_spawn(struct qw_workers *ws)
{
	pthread_attr_t attr;
	pthread_t t;
	sigset_t all, old;
	int rc;

	/* Signals belong to the event loop's thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, qw_worker_main, ws);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc == 0) {
		ws->threads++;
		ws->idle++;
	}
	return rc;
}

/* Starts a thread when jobs still wait and no thread took a job since the
 * last check: every thread is busy with something slow. */
static void
qw_workers_starve_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_workers *ws = arg;
	bool again;

	pthread_mutex_lock(&ws->mu);
	if (ws->queued > 0 && ws->idle == 0 && ws->served == ws->served_at_check &&
	    ws->threads < ws->max_threads)
		qw_workers_spawn(ws);
	ws->served_at_check = ws->served;
	again = ws->queued > 0 && ws->threads < ws->max_threads;
	pthread_mutex_unlock(&ws->mu);
	if (again)
		event_add(ws->starve_ev, &(struct timeval){ 0, QW_WORKERS_STARVE_US });
}

int
qw_workers_submit(struct qw_workers *ws, struct qw_work *w, unsigned max_threads)
{
	int rc = 0;
	bool watch;

	w->next = NULL;
	pthread_mutex_lock(&ws->mu);
	ws->max_threads = max_threads;
	if (ws->threads == 0)
		rc = qw_workers_spawn(ws);
	if (rc == 0) {
		*ws->todo_tail = w;
		ws->todo_tail = &w->next;
		__atomic_add_fetch(&ws->queued, 1, __ATOMIC_RELAXED);
	}
	watch = rc == 0 && ws->idle < ws->queued && ws->threads < max_threads &&
	    !evtimer_pending(ws->starve_ev, NULL);
	if (watch)
		ws->served_at_check = ws->served;
	pthread_mutex_unlock(&ws->mu);
	if (watch)
		event_add(ws->starve_ev, &(struct timeval){ 0, QW_WORKERS_STARVE_US });
	return rc;
}

void
qw_workers_kick(struct qw_workers *ws)
{
	pthread_mutex_lock(&ws->mu);
	/* One thread per queued job at most: waking more finds nothing. */
	for (unsigned n = 0; n < ws->sleeping && n < ws->queued; n++)
		pthread_cond_signal(&ws->cv);
	pthread_mutex_unlock(&ws->mu);
}

bool
qw_workers_cancel(struct qw_workers *ws, struct qw_work *w)
{
	bool found = false;

	pthread_mutex_lock(&ws->mu);
	for (struct qw_work **p = &ws->todo; *p != NULL; p = &(*p)->next) {
		if (*p == w) {
			*p = w->next;
			if (ws->todo_tail == &w->next)
				ws->todo_tail = p;
			__atomic_sub_fetch(&ws->queued, 1, __ATOMIC_RELAXED);
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&ws->mu);
	return found;
}

int
qw_workers_free(struct qw_workers *ws)
{
	bool stuck;

	if (ws == NULL)
		return 0;
	pthread_mutex_lock(&ws->mu);
	__atomic_store_n(&ws->stop, true, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&ws->cv);
	/* Wait for idle threads to leave; busy ones are inside a plugin that
	 * ignored its cancellation and are left to the process's exit. */
	while (ws->idle > 0)
		pthread_cond_wait(&ws->cv, &ws->mu);
	stuck = ws->threads > 0;
	pthread_mutex_unlock(&ws->mu);
	if (stuck) {
		qw_log_warn("%u worker threads are still inside a plugin; leaving them", ws->threads);
		/* Their state must outlive them: leak it on purpose. But nothing
		 * may reach the freed pool through it if the loop turns again. */
		if (ws->ev != NULL)
			event_del(ws->ev);
		if (ws->starve_ev != NULL)
			event_del(ws->starve_ev);
		return -1;
	}
	if (ws->ev != NULL)
		event_free(ws->ev);
	if (ws->starve_ev != NULL)
		event_free(ws->starve_ev);
	if (ws->efd >= 0)
		close(ws->efd);
	pthread_cond_destroy(&ws->cv);
	pthread_mutex_destroy(&ws->mu);
	free(ws);
	return 0;
}
