/* plugin_host.h - in-process handlers: loading plugins and running their
 * jobs on worker threads (SPEC 5, qworkerd-plugin(3)). */
#ifndef QW_PLUGIN_HOST_H
#define QW_PLUGIN_HOST_H

#include "qworkerd/plugin.h"
#include "token.h"

struct event_base;
struct qw_plugin;
struct qw_workers;

/* Loads PATH and checks its ABI version and symbols. On error returns NULL
 * and sets *why (malloc'd; the caller frees it). */
struct qw_plugin *qw_plugin_load(const char *path, char **why);
void qw_plugin_unload(struct qw_plugin *p);
const char *qw_plugin_path(const struct qw_plugin *p);
/* Per-queue state from the plugin's init; -1 when init failed. */
int qw_plugin_start(struct qw_plugin *p, const char *queue, void **state);
void qw_plugin_stop(struct qw_plugin *p, void *state);

/* One job for a worker thread. The caller owns it and keeps it alive until
 * DONE has run (on the event loop's thread). */
struct qw_work {
	struct qw_work *next;
	struct qw_plugin *plugin;
	void *state;
	struct qw_plugin_job job;
	qw_token *token;
	int result;
	char *error;		/* from set_error; the caller frees it */
	void (*done)(struct qw_work *w);
};

struct qw_workers *qw_workers_new(struct event_base *base);
void qw_workers_kick(struct qw_workers *ws);
/* Takes W back if no thread has taken it yet; true when it did. */
bool qw_workers_cancel(struct qw_workers *ws, struct qw_work *w);
/* Stops the threads. Returns -1 when some are still inside a plugin (they
 * are left to the process's exit, and so is their state), else 0. */
int qw_workers_free(struct qw_workers *ws);
/* Queues W for a worker thread, starting threads up to MAX_THREADS. Idle
 * threads are woken by qw_workers_kick, once for a whole batch: waking a
 * thread per job costs more than the short jobs themselves. */
int qw_workers_submit(struct qw_workers *ws, struct qw_work *w, unsigned max_threads);

#endif
