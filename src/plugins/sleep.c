/* sleep.so - an example qworkerd plugin that sleeps the number of
 * milliseconds in its payload and returns early, cleanly, when the job is
 * cancelled: by its own timeout (the job fails and is retried), by
 * qworkerd stopping (the job is requeued) or by an operator (the job goes
 * to dead). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qworkerd/plugin.h>

int
qw_plugin_abi(void)
{
	return QW_PLUGIN_ABI_VERSION;
}

int
qw_plugin_init(const struct qw_plugin_api *api, const char *queue, void **state)
{
	*state = (void *)api;
	return 0;
}

int
qw_plugin_handle(void *state, struct qw_plugin_job *job)
{
	const struct qw_plugin_api *api = state;
	char buf[32], *end, msg[96];
	size_t n = job->payload_len < sizeof(buf) - 1 ? job->payload_len : sizeof(buf) - 1;
	long long ms;

	memcpy(buf, job->payload, n);
	buf[n] = '\0';
	ms = strtoll(buf, &end, 10);
	if (end == buf || *end != '\0' || ms < 0) {
		api->set_error(job, "payload is not a number of milliseconds");
		return QW_PLUGIN_PERMANENT;
	}
	if (!api->wait(job, ms))
		return QW_PLUGIN_OK;
	snprintf(msg, sizeof(msg), "cancelled after part of %lld ms (%s)", ms,
	    api->reason(job) == QW_PLUGIN_CANCEL_TIMEOUT ? "job timeout" :
	    api->reason(job) == QW_PLUGIN_CANCEL_CANCELLED ? "cancelled" : "shutdown");
	api->log(job, 5, msg);
	api->set_error(job, msg);
	return QW_PLUGIN_FAIL;
}

void
qw_plugin_fini(void *state)
{
}
