/* stamp.c - a qworkerd plugin for bench/run's pickup latency: the payload is
 * the producer's push time in Unix nanoseconds (CLOCK_REALTIME, e.g. Python's
 * time.time_ns()); handle() reads the clock first thing and appends
 * "now_ns - payload_ns" as a line to the file named by $BENCH_STAMP_FILE.
 * Build: gcc -O2 -shared -fPIC -I src -o stamp.so bench/stamp.c */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <qworkerd/plugin.h>

static int out_fd = -1;

int
qw_plugin_abi(void)
{
	return QW_PLUGIN_ABI_VERSION;
}

int
qw_plugin_init(const struct qw_plugin_api *api, const char *queue, void **state)
{
	const char *path = getenv("BENCH_STAMP_FILE");

	(void)queue;
	*state = (void *)api;
	if (path == NULL || out_fd >= 0)
		return 0;
	out_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	return out_fd < 0 ? -1 : 0;
}

int
qw_plugin_handle(void *state, struct qw_plugin_job *job)
{
	struct timespec ts;
	char num[32], line[48];
	size_t len = job->payload_len < sizeof(num) - 1 ? job->payload_len : sizeof(num) - 1;

	clock_gettime(CLOCK_REALTIME, &ts);
	(void)state;
	if (out_fd < 0)
		return QW_PLUGIN_OK;
	memcpy(num, job->payload, len);
	num[len] = '\0';
	long long now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
	int n = snprintf(line, sizeof(line), "%lld\n", now - atoll(num));
	/* one write(2) of a short line to an O_APPEND file: lines never mix */
	if (write(out_fd, line, (size_t)n) != n)
		return QW_PLUGIN_FAIL;
	return QW_PLUGIN_OK;
}

void
qw_plugin_fini(void *state)
{
	(void)state;
}
