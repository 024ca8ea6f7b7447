/* spawnlimit.c - the machine's spawn limit, for bench/run: keeps CONC
 * children of PROGRAM running with posix_spawn(3) (wait for any child, spawn
 * the next) until N have exited, and prints children/s. Nothing else: no
 * pipes, no process groups, no environment of its own, so it is the floor
 * of what any exec handler pool can do on this machine.
 *
 * usage: spawnlimit N CONC [PROGRAM]     (PROGRAM defaults to /bin/true)
 * prints: "N SECONDS RATE" on stdout */
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: spawnlimit N CONC [PROGRAM]\n");
		return 2;
	}
	long n = atol(argv[1]), conc = atol(argv[2]);
	char *prog = argc > 3 ? argv[3] : "/bin/true";
	char *cargv[] = { prog, NULL };
	long started = 0, exited = 0, running = 0;
	double t0 = now();

	if (n <= 0 || conc <= 0) {
		fprintf(stderr, "spawnlimit: N and CONC must be > 0\n");
		return 2;
	}
	while (exited < n) {
		while (running < conc && started < n) {
			pid_t pid;
			int rc = posix_spawn(&pid, prog, NULL, NULL, cargv, environ);
			if (rc != 0) {
				fprintf(stderr, "spawnlimit: posix_spawn %s: %s\n", prog, strerror(rc));
				return 1;
			}
			started++;
			running++;
		}
		int st;
		pid_t pid = waitpid(-1, &st, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			perror("spawnlimit: waitpid");
			return 1;
		}
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "spawnlimit: child %d failed (status %d)\n", (int)pid, st);
			return 1;
		}
		running--;
		exited++;
	}
	double dt = now() - t0;
	printf("%ld %.6f %.1f\n", n, dt, n / dt);
	return 0;
}
