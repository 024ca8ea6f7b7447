/* token.c - owns cancellation: sources, tokens, linked sources, callbacks,
 * the eventfd and the timed wait. See token.h for the rules.
 *
 * State is an atomic int (the reason, 0 while live) so checks are lock-free;
 * everything else sits behind one mutex per source. Callbacks never run with
 * the mutex held, so a callback may itself cancel, register or unregister. */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "token.h"

struct qw_reg {
	struct qw_reg *next;
	uint64_t id;
	qw_token_fn *fn;
	void *arg;
	bool external;		/* storage belongs to a linked child, not to us */
};

struct qw_link {
	struct qw_cts *parent;
	uint64_t id;
};

struct qw_cts {
	atomic_int reason;
	pthread_mutex_t mu;
	pthread_cond_t cv;	/* cancellation and callback completion */
	struct qw_reg *regs;	/* not yet run, in registration order */
	struct qw_reg **regs_tail;
	uint64_t next_id;
	uint64_t running_id;	/* callback being run by the cancelling thread */
	pthread_t runner;
	int efd;
	/* Embedded, like the one link most sources have: a job's source costs
	 * one allocation, not four. */
	struct event timer;
	bool timer_set;
	int timer_reason;
	struct qw_link *links;
	struct qw_link link1;
	struct qw_reg link1_reg;	/* our registration on link1's parent */
	struct qw_reg own_reg;		/* the first registration on us */
	bool own_reg_used;
	unsigned nlinks;
};

/* A registration leaves the list: give its storage back. */
static void
qw_reg_release(struct qw_cts *t, struct qw_reg *r)
{
	if (r == &t->own_reg)
		t->own_reg_used = false;
	else if (!r->external)
		free(r);
}

struct qw_cts *
qw_cts_new(void)
{
	struct qw_cts *s = calloc(1, sizeof(*s));
	pthread_condattr_t ca;

	if (s == NULL)
		return NULL;
	atomic_init(&s->reason, QW_CANCEL_NONE);
	s->regs_tail = &s->regs;
	s->efd = -1;
	s->next_id = 1;
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
	return s;
}

qw_token *
qw_cts_token(struct qw_cts *s)
{
	return s;
}

bool
qw_token_is_cancelled(const qw_token *t)
{
	return atomic_load_explicit(&((qw_token *)t)->reason, memory_order_acquire) != 0;
}

int
qw_token_reason(const qw_token *t)
{
	return atomic_load_explicit(&((qw_token *)t)->reason, memory_order_acquire);
}

bool
qw_cts_cancel(struct qw_cts *s, int reason)
{
	struct qw_reg *r;
	int expected = QW_CANCEL_NONE;

	if (reason <= 0)
		reason = QW_CANCEL_SHUTDOWN;
	pthread_mutex_lock(&s->mu);
	if (!atomic_compare_exchange_strong(&s->reason, &expected, reason)) {
		pthread_mutex_unlock(&s->mu);
		return false;
	}
	if (s->efd >= 0) {
		uint64_t one = 1;
		ssize_t n = write(s->efd, &one, sizeof(one));
		(void)n;
	}
	pthread_cond_broadcast(&s->cv);
	s->runner = pthread_self();
	/* Run in registration order, one at a time, without the lock held. */
	while ((r = s->regs) != NULL) {
		s->regs = r->next;
		if (s->regs == NULL)
			s->regs_tail = &s->regs;
		s->running_id = r->id;
		/* Decide now: a child's storage may be gone once its callback ran. */
		bool mine = r == &s->own_reg, external = r->external;
		pthread_mutex_unlock(&s->mu);
		r->fn(r->arg, reason);
		pthread_mutex_lock(&s->mu);
		if (mine)
			s->own_reg_used = false;
		else if (!external)
			free(r);
		s->running_id = 0;
		pthread_cond_broadcast(&s->cv);
	}
	pthread_mutex_unlock(&s->mu);
	return true;
}

/* Registers FN with storage R, or with storage of our own when R is NULL. */
static uint64_t
qw_token_register_in(qw_token *t, struct qw_reg *r, qw_token_fn *fn, void *arg)
{
	uint64_t id;
	int reason;

	pthread_mutex_lock(&t->mu);
	if (r == NULL && !t->own_reg_used) {
		r = &t->own_reg;
		r->external = false;
		t->own_reg_used = true;
	} else if (r == NULL) {
		if ((r = malloc(sizeof(*r))) == NULL) {
			pthread_mutex_unlock(&t->mu);
			return 0;
		}
		r->external = false;
	}
	id = r->id = t->next_id++;
	reason = atomic_load(&t->reason);
	if (reason != 0) {
		qw_reg_release(t, r);
		pthread_mutex_unlock(&t->mu);
		fn(arg, reason);
		return id;
	}
	r->fn = fn;
	r->arg = arg;
	r->next = NULL;
	*t->regs_tail = r;
	t->regs_tail = &r->next;
	pthread_mutex_unlock(&t->mu);
	return id;
}

uint64_t
qw_token_register(qw_token *t, qw_token_fn *fn, void *arg)
{
	return qw_token_register_in(t, NULL, fn, arg);
}

bool
qw_token_unregister(qw_token *t, uint64_t id)
{
	bool removed = false;

	if (id == 0)
		return false;	/* what a failed register returned: nothing to remove */
	pthread_mutex_lock(&t->mu);
	for (struct qw_reg **p = &t->regs; *p != NULL; p = &(*p)->next) {
		if ((*p)->id == id) {
			struct qw_reg *r = *p;
			*p = r->next;
			if (t->regs_tail == &r->next)
				t->regs_tail = p;
			qw_reg_release(t, r);
			removed = true;
			break;
		}
	}
	/* Like .NET's registration Dispose: do not return while the callback
	 * still runs elsewhere, so its argument may be freed afterwards. */
	while (!removed && t->running_id == id && !pthread_equal(t->runner, pthread_self()))
		pthread_cond_wait(&t->cv, &t->mu);
	pthread_mutex_unlock(&t->mu);
	return removed;
}

int
qw_token_fd(qw_token *t)
{
	int fd;

	pthread_mutex_lock(&t->mu);
	if (t->efd < 0) {
		t->efd = eventfd(atomic_load(&t->reason) != 0 ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK);
	}
	fd = t->efd;
	pthread_mutex_unlock(&t->mu);
	return fd;
}

bool
qw_token_wait(qw_token *t, int64_t timeout_ms)
{
	struct timespec until;

	if (qw_token_is_cancelled(t))
		return true;
	clock_gettime(CLOCK_MONOTONIC, &until);
	if (timeout_ms >= 0) {
		until.tv_sec += (time_t)(timeout_ms / 1000);
		until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
	}
	pthread_mutex_lock(&t->mu);
	while (atomic_load(&t->reason) == 0) {
		int rc = timeout_ms < 0 ? pthread_cond_wait(&t->cv, &t->mu) :
		    pthread_cond_timedwait(&t->cv, &t->mu, &until);
		if (rc == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&t->mu);
	return qw_token_is_cancelled(t);
}

static void
qw_cts_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qw_cts *s = arg;

	qw_cts_cancel(s, s->timer_reason);
}

int
qw_cts_cancel_after(struct qw_cts *s, struct event_base *base, uint64_t delay_ms, int reason)
{
	struct timeval tv = { (time_t)(delay_ms / 1000), (suseconds_t)(delay_ms % 1000) * 1000 };

	if (!s->timer_set) {
		if (evtimer_assign(&s->timer, base, qw_cts_timer_cb, s) < 0)
			return -1;
		s->timer_set = true;
	}
	s->timer_reason = reason;
	return evtimer_add(&s->timer, &tv);
}

/* A parent's callback: the child takes the parent's reason. */
static void
qw_cts_parent_cancelled(void *arg, int reason)
{
	qw_cts_cancel(arg, reason);
}

/* Links S (not linked, not cancelled) to PARENTS, with its own delay. */
static int
qw_cts_link_in(struct qw_cts *s, struct qw_cts *const *parents, unsigned n,
    struct event_base *base, uint64_t delay_ms, int reason)
{
	if (n == 1)
		s->links = &s->link1;
	else if (n > 1 && (s->links = calloc(n, sizeof(*s->links))) == NULL)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		struct qw_reg *storage = NULL;
		if (n == 1) {
			storage = &s->link1_reg;
			storage->external = true;
		}
		uint64_t id = qw_token_register_in(parents[i], storage, qw_cts_parent_cancelled, s);
		if (id == 0)
			return -1;
		s->links[s->nlinks].parent = parents[i];
		s->links[s->nlinks++].id = id;
	}
	if (base != NULL && !qw_token_is_cancelled(s) &&
	    qw_cts_cancel_after(s, base, delay_ms, reason) < 0)
		return -1;
	return 0;
}

struct qw_cts *
qw_cts_new_linked(struct qw_cts *const *parents, unsigned n, struct event_base *base,
    uint64_t delay_ms, int reason)
{
	struct qw_cts *s = qw_cts_new();

	if (s == NULL)
		return NULL;
	if (qw_cts_link_in(s, parents, n, base, delay_ms, reason) < 0) {
		qw_cts_free(s);
		return NULL;
	}
	return s;
}

/* Undoes qw_cts_link and every registration on S: nothing refers to S any
 * more, and nothing of it runs. */
static void
qw_cts_unlink(struct qw_cts *s)
{
	struct qw_reg *r;

	for (unsigned i = 0; i < s->nlinks; i++)
		qw_token_unregister(s->links[i].parent, s->links[i].id);
	if (s->links != &s->link1)
		free(s->links);
	s->links = NULL;
	s->nlinks = 0;
	if (s->timer_set)
		event_del(&s->timer);
	while ((r = s->regs) != NULL) {
		s->regs = r->next;
		qw_reg_release(s, r);
	}
	s->regs_tail = &s->regs;
}

void
qw_cts_reset(struct qw_cts *s)
{
	qw_cts_unlink(s);
	if (s->efd >= 0) {
		close(s->efd);
		s->efd = -1;
	}
	atomic_store(&s->reason, QW_CANCEL_NONE);
}

int
qw_cts_link(struct qw_cts *s, struct qw_cts *const *parents, unsigned n,
    struct event_base *base, uint64_t delay_ms, int reason)
{
	/* Its timer stays assigned: a delay on another base assigns it anew. */
	if (s->timer_set && base != NULL && event_get_base(&s->timer) != base)
		s->timer_set = false;
	if (qw_cts_link_in(s, parents, n, base, delay_ms, reason) < 0) {
		qw_cts_unlink(s);
		atomic_store(&s->reason, reason > 0 ? reason : QW_CANCEL_SHUTDOWN);
		return -1;
	}
	return 0;
}

void
qw_cts_free(struct qw_cts *s)
{
	if (s == NULL)
		return;
	qw_cts_unlink(s);
	if (s->efd >= 0)
		close(s->efd);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
