/* noop.so - an example qworkerd plugin that succeeds at once: the cost of
 * qworkerd itself, for benchmarks. */
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
	return QW_PLUGIN_OK;
}

void
qw_plugin_fini(void *state)
{
}
