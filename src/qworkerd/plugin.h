/*
 * <qworkerd/plugin.h> - the in-process handler ABI of qworkerd(8).
 *
 * A plugin is a shared object named by "plugin = /path/to/handler.so" in a
 * [queue NAME] section of qworkerd.conf(5). It exports four functions:
 *
 *   int  qw_plugin_abi(void);            returns QW_PLUGIN_ABI_VERSION
 *                                        (qworkerd also loads plugins
 *                                        built for ABI 1)
 *   int  qw_plugin_init(const struct qw_plugin_api *api, const char *queue,
 *                       void **state);   0 on success
 *   int  qw_plugin_handle(void *state, struct qw_plugin_job *job);
 *                                        returns a QW_PLUGIN_* result
 *   void qw_plugin_fini(void *state);
 *
 * qworkerd checks the ABI version and the symbols when it loads the
 * configuration; a mismatch is a configuration error. init and fini run on
 * the daemon's main thread, once per queue that names the plugin. handle
 * runs on a worker thread, concurrently with other jobs of the same or other
 * queues, so it must be thread-safe; it must never block without watching
 * the job's cancellation token. See qworkerd-plugin(3).
 */
#ifndef QWORKERD_PLUGIN_H
#define QWORKERD_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 2 added QW_PLUGIN_CANCEL_CANCELLED; nothing else changed. A plugin
 * built against ABI 1 still loads, and its api->reason() says
 * QW_PLUGIN_CANCEL_TIMEOUT for a cancelled job, the only reason it knows
 * that also ends the job. */
#define QW_PLUGIN_ABI_VERSION 2

/* What qw_plugin_handle returns. */
enum qw_plugin_result {
	QW_PLUGIN_OK = 0,		/* done: the job is removed */
	QW_PLUGIN_FAIL = 1,		/* failed: retried with backoff, then dead */
	QW_PLUGIN_PERMANENT = 2,	/* failed for good: dead at once */
};

/* Why a job's token was cancelled. */
enum qw_plugin_cancel {
	QW_PLUGIN_NOT_CANCELLED = 0,
	QW_PLUGIN_CANCEL_TIMEOUT = 1,	/* the job's own deadline passed */
	QW_PLUGIN_CANCEL_SHUTDOWN = 2,	/* qworkerd is stopping: the job will be requeued */
	QW_PLUGIN_CANCEL_CANCELLED = 3,	/* an operator cancelled the job: it goes to dead
					 * (ABI 2; ABI 1 plugins see TIMEOUT) */
};

/* One job, valid only during qw_plugin_handle. */
struct qw_plugin_job {
	const char *id;
	const char *queue;
	const void *payload;	/* binary-safe; not NUL-terminated in general */
	size_t payload_len;
	unsigned attempt;	/* this run's number, 1 for the first */
	unsigned max_attempts;
	int64_t deadline_ms;	/* Unix milliseconds */
	void *internal;		/* qworkerd's; do not touch */
};

/* Services qworkerd offers a plugin; given to qw_plugin_init. Every function
 * is safe to call from the worker thread running the job. */
struct qw_plugin_api {
	unsigned abi_version;
	/* The job's cancellation token: cancelled when its deadline passes,
	 * qworkerd stops, or an operator cancels the job. */
	bool (*cancelled)(const struct qw_plugin_job *job);
	enum qw_plugin_cancel (*reason)(const struct qw_plugin_job *job);
	/* Waits up to TIMEOUT_MS (< 0: no limit); true once cancelled. */
	bool (*wait)(const struct qw_plugin_job *job, int64_t timeout_ms);
	/* A file descriptor that becomes readable once the job is cancelled,
	 * for poll(2) next to the plugin's own descriptors; -1 on error. Owned
	 * by qworkerd: do not close or read it. */
	int (*cancel_fd)(const struct qw_plugin_job *job);
	/* The error recorded with a failure (copied; the last call wins). */
	void (*set_error)(struct qw_plugin_job *job, const char *message);
	/* A log line tagged with the queue and job id; PRIORITY as syslog(3). */
	void (*log)(const struct qw_plugin_job *job, int priority, const char *message);
};

int qw_plugin_abi(void);
int qw_plugin_init(const struct qw_plugin_api *api, const char *queue, void **state);
int qw_plugin_handle(void *state, struct qw_plugin_job *job);
void qw_plugin_fini(void *state);

#ifdef __cplusplus
}
#endif

#endif
