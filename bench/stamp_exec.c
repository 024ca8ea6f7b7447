/* stamp_exec.c - an exec handler for bench/run's pickup latency through the
 * exec path: reads the clock (CLOCK_REALTIME) first thing in main(), reads
 * the payload (the producer's push time in Unix ns) from stdin, and appends
 * "now_ns - payload_ns" to the file named by $BENCH_STAMP_FILE (qworkerd
 * passes its own environment to handlers). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int
main(void)
{
	struct timespec ts;
	char buf[64], line[48];
	size_t len = 0;
	ssize_t r;

	clock_gettime(CLOCK_REALTIME, &ts);
	while (len < sizeof(buf) - 1 && (r = read(0, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)r;
	buf[len] = '\0';
	const char *path = getenv("BENCH_STAMP_FILE");
	if (path == NULL)
		return 1;
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return 1;
	long long now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
	int n = snprintf(line, sizeof(line), "%lld\n", now - atoll(buf));
	return write(fd, line, (size_t)n) == n ? 0 : 1;
}
