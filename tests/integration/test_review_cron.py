"""Review findings for [cron NAME] sections (SPEC 14) under changes of the
wall clock, tested with a preloaded clock_gettime() that adds an offset,
read from a file, to CLOCK_REALTIME (the monotonic clock, which the loop's
timers and the leases' renewal run on, is left alone)."""
import os
import re
import subprocess

from conftest import read_lines, redis_ms, script, wait_until

FAKECLOCK = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static int (*real)(clockid_t, struct timespec *);
static long long offset_ms, checked_ms;
int clock_gettime(clockid_t c, struct timespec *ts)
{
	const char *path = getenv("FAKE_OFFSET_FILE");
	struct timespec m;
	long long now, ns;
	int rc;

	if (real == NULL)
		real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
	real(CLOCK_MONOTONIC, &m);
	now = m.tv_sec * 1000LL + m.tv_nsec / 1000000;
	if (path != NULL && (checked_ms == 0 || now - checked_ms >= 50)) {
		FILE *f = fopen(path, "r");
		checked_ms = now;
		if (f != NULL) {
			if (fscanf(f, "%lld", &offset_ms) != 1)
				offset_ms = 0;
			fclose(f);
		}
	}
	if ((rc = real(c, ts)) == 0 && (c == CLOCK_REALTIME || c == CLOCK_REALTIME_COARSE)) {
		ns = ts->tv_sec * 1000000000LL + ts->tv_nsec + offset_ms * 1000000LL;
		ts->tv_sec = ns / 1000000000LL;
		ts->tv_nsec = ns % 1000000000LL;
	}
	return rc;
}
"""


def fake_clock(tmp, offset_ms):
    """The environment that runs a daemon OFFSET_MS off the real time, and
    a function that moves its clock to another offset."""
    src, so = os.path.join(tmp, "fakeclock.c"), os.path.join(tmp, "fakeclock.so")
    path = os.path.join(tmp, "clock-offset")
    with open(src, "w") as f:
        f.write(FAKECLOCK)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", so, src, "-ldl"], check=True)

    def move(ms):
        with open(path + ".new", "w") as f:
            f.write("%d\n" % ms)
        os.rename(path + ".new", path)
    move(offset_ms)
    return {"LD_PRELOAD": so, "FAKE_OFFSET_FILE": path}, move


def test_clock_jump_forward_goes_straight_to_the_current_tick(r, daemon, tmp):
    """A host that booted with its clock decades behind (no battery-backed
    clock) and then got the time from NTP: the schedule goes straight to
    the current tick. Walking every missed tick of @every 1s over 56 years
    held the event loop for many seconds, so the lease was not renewed and
    the instance was fenced (its running jobs could run twice)."""
    out = os.path.join(tmp, "ran")
    h = script(tmp, "h.sh", 'echo "$QW_JOB_ID" >> %s\n' % out)
    env, move = fake_clock(tmp, -56 * 365 * 86400 * 1000)
    d = daemon()
    d.conf({"cq": "handler = %s\n[cron beat]\nschedule = @every 1s\nqueue = cq\n" % h},
           workers="lease_timeout = 5s\n")
    d.start(env=env)
    d.wait_log("cron beat: job cron:beat:", 15)
    move(0)
    d.wait_log("ticks from", 60)
    now = redis_ms(r)
    wait_until(lambda: any(int(i.split(":")[2]) > now for i in read_lines(out)), 30,
               what="a job of a tick after the jump")
    assert "fenced" not in d.log(), d.log()
    assert d.stop() == 0


def test_a_problem_is_logged_once_not_at_every_tick(r, daemon, tmp):
    """A cron hash a producer broke, or a host clock too far ahead of
    Redis's, was logged again at every tick (each line named its tick):
    with @every 1s, a line a second for as long as it lasted. Now once,
    like every other problem that repeats, and once more when it ends."""
    r.set("qw:{cq}:cron", "not a hash")
    d = daemon()
    d.conf({"cq": "handler = /bin/true\n[cron beat]\nschedule = @every 1s\nqueue = cq\n",
            "ok": "handler = /bin/true\n[cron good]\nschedule = @every 1s\nqueue = ok\n"})
    d.start()
    d.wait_log("WRONGTYPE key qw:{cq}:cron", 15)
    seen = int(r.hget("qw:{ok}:cron", "good") or 0)
    wait_until(lambda: int(r.hget("qw:{ok}:cron", "good")) >= seen + 3000, 15,
               what="three more ticks")
    assert d.log().count("WRONGTYPE key qw:{cq}:cron") == 1, d.log()
    r.delete("qw:{cq}:cron")
    d.wait_log("cron beat: ticks are enqueued again", 15)
    assert d.stop() == 0

    env, move = fake_clock(tmp, 8000)
    fast = daemon("fast")
    fast.conf({"cq": "handler = /bin/true\n[cron beat]\nschedule = @every 1s\nqueue = cq\n"},
              instance="fast")
    fast.start(env=env)
    fast.wait_log("refused", 15)
    first = redis_ms(r)
    wait_until(lambda: redis_ms(r) > first + 3000, 15, what="three more ticks")
    assert fast.log().count("refused") == 1, fast.log()
    assert re.search(r"tick \d+: (79\d\d|8000)ms ahead", fast.log()), fast.log()
    move(0)
    fast.wait_log("cron beat: ticks are enqueued again", 30)
    assert fast.stop() == 0
