/* spawnlat.c - what an exec handler's start costs on this machine without
 * qworkerd, for bench/run's exec pickup row: N times, GAP_MS apart, writes
 * the time (CLOCK_REALTIME, Unix ns) into a pipe and posix_spawns PROGRAM
 * (bench/stamp_exec) with the pipe as its stdin, then waits for it. PROGRAM
 * stamps "its main() minus that time" into $BENCH_STAMP_FILE exactly as it
 * does when qworkerd starts it, so the two distributions compare directly.
 *
 * usage: spawnlat N GAP_MS PROGRAM */
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int
spawn_one(char *prog)
{
	char *cargv[] = { prog, NULL };
	posix_spawn_file_actions_t fa;
	struct timespec ts;
	char buf[32];
	int p[2], rc, st, n;
	pid_t pid;

	if (pipe(p) < 0)
		return errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[0], 0);
	posix_spawn_file_actions_addclose(&fa, p[1]);
	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(buf, sizeof(buf), "%lld", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
	rc = write(p[1], buf, (size_t)n) == n ? 0 : errno;
	close(p[1]);
	if (rc == 0)
		rc = posix_spawn(&pid, prog, &fa, NULL, cargv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[0]);
	if (rc == 0 && waitpid(pid, &st, 0) == pid && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
		rc = ECHILD;
	return rc;
}

int
main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: spawnlat N GAP_MS PROGRAM\n");
		return 2;
	}
	long n = atol(argv[1]), gap_ms = atol(argv[2]);
	struct timespec gap = { gap_ms / 1000, (gap_ms % 1000) * 1000000L };

	if (n <= 0 || gap_ms < 0) {
		fprintf(stderr, "spawnlat: N must be > 0 and GAP_MS >= 0\n");
		return 2;
	}
	for (long i = 0; i < n; i++) {
		int rc = spawn_one(argv[3]);
		if (rc != 0) {
			fprintf(stderr, "spawnlat: %s: %s\n", argv[3], strerror(rc));
			return 1;
		}
		nanosleep(&gap, NULL);
	}
	return 0;
}
