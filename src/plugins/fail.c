/* fail.so - an example qworkerd plugin that always fails: with the payload
 * "permanent" the job goes to dead at once, otherwise it is retried until
 * its attempts are used up. */
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
	int permanent = job->payload_len == 9 && memcmp(job->payload, "permanent", 9) == 0;

	api->set_error(job, "the fail plugin always fails");
	return permanent ? QW_PLUGIN_PERMANENT : QW_PLUGIN_FAIL;
}

void
qw_plugin_fini(void *state)
{
}
