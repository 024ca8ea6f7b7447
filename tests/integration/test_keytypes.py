"""A queue key of the wrong type (a producer's SET on qw:{Q}:dead, say)
breaks only what needs that key (SPEC 10): successes are still acked,
results that need the key wait in memory, fetching stops at concurrency +
prefetch, and once the key is fixed everything settles, nothing lost or
run twice."""
import collections
import json
import os
import threading

from conftest import read_lines, stats, wait_until

ACTIVE = "qw:{t}:active:test-1"
NOK, NBAD = 10, 6
BOUND = 4            # concurrency 2 + prefetch 2


class ActiveWatch:
    """Samples the size of the active hash until stopped: the largest seen."""

    def __init__(self, r):
        self.r, self.max, self.done = r, 0, threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.done.is_set():
            self.max = max(self.max, self.r.hlen(ACTIVE))
            self.done.wait(0.002)

    def stop(self):
        self.done.set()
        self.t.join(10)
        return self.max


def handler(tmp, fail_exit):
    """Writes each payload to RUNS; 'ok-*' succeeds, others exit FAIL_EXIT."""
    runs = os.path.join(tmp, "runs")
    path = os.path.join(tmp, "h.sh")
    with open(path, "w") as f:
        f.write('#!/bin/sh\np=$(cat)\necho "$p" >> %s\ncase "$p" in ok-*) exit 0;; esac\n'
                'exit %d\n' % (runs, fail_exit))
    os.chmod(path, 0o755)
    return path, runs


def prepare(r, daemon, tmp, key, value, fail_exit, extra=""):
    h, runs = handler(tmp, fail_exit)
    d = daemon()
    d.conf({"t": "handler = %s\nprefetch = 2\nmax_attempts = 3\nretry_base = 100ms\n%s"
            % (h, extra)}, workers="concurrency = 2\nshutdown_timeout = 1s\nkill_grace = 200ms\n")
    r.set(key, value)
    # Taken oldest first: five successes, the failures, then the rest.
    jobs = ["ok-%d" % i for i in range(5)] + ["bad-%d" % i for i in range(NBAD)] + \
        ["ok-%d" % i for i in range(5, NOK)]
    for j in jobs:
        r.lpush("qw:{t}:pending", j)
    return d, runs


def payload(elem):
    """A raw job is its own payload; a retried or recovered one is wrapped."""
    return json.loads(elem)["payload"] if elem.startswith(b"{") else elem.decode()


def ran(runs):
    return collections.Counter(read_lines(runs))


def wait_held(r, d, runs, key, typ, nrun=1):
    """The first successes are acked while the first BOUND failures wait
    (each has run NRUN times), and fetching has stopped at the bound."""
    why = "%s holds a string, not a %s" % (key, typ)
    wait_until(lambda: stats(r, "t").get("succeeded") == 5, 30, what="successes acked")
    wait_until(lambda: all(ran(runs)["bad-%d" % i] == nrun for i in range(BOUND)), 30,
               what="failures ran")
    d.wait_message("t: fetching stopped: %d results cannot be written: %s" % (BOUND, why), 30)
    d.wait_log("queue t: results cannot be written: " + why)
    assert sorted(payload(v) for v in r.hvals(ACTIVE)) == ["bad-%d" % i for i in range(BOUND)]
    assert r.llen("qw:{t}:pending") == NOK + NBAD - 5 - BOUND


def restart(r, d, runs, key, typ):
    """A restart while the key is still wrong runs no succeeded job again:
    the held failures are recovered, run again and held again."""
    d.stop()
    d.messages.clear()
    d.start()
    wait_held(r, d, runs, key, typ, nrun=2)
    assert all(n == 1 for j, n in ran(runs).items() if j.startswith("ok-")), ran(runs)


def finish(r, d, runs, key, watch):
    assert watch.stop() <= BOUND
    r.delete(key)
    wait_until(lambda: r.llen("qw:{t}:dead") == NBAD, 60, what="every failure in dead")
    wait_until(lambda: stats(r, "t").get("succeeded") == NOK, 30, what="every success")
    wait_until(lambda: r.hlen(ACTIVE) == 0, 30, what="nothing in flight")
    assert r.llen("qw:{t}:pending") == 0 and r.zcard("qw:{t}:scheduled") == 0
    assert sorted(payload(x) for x in r.lrange("qw:{t}:dead", 0, -1)) == \
        ["bad-%d" % i for i in range(NBAD)]
    counts = ran(runs)
    assert all(counts["ok-%d" % i] == 1 for i in range(NOK)), counts
    # Logged once per process, not per job or retry.
    assert d.log().count("queue t: results cannot be written:") == 2
    d.wait_log("queue t: results can be written again")
    assert stats(r, "t")["dead"] == NBAD


def test_wrong_dead_key_stops_only_dead_results(r, daemon, tmp):
    key = "qw:{t}:dead"
    d, runs = prepare(r, daemon, tmp, key, "oops", 65)
    watch = ActiveWatch(r)
    d.start()
    wait_held(r, d, runs, key, "list")
    restart(r, d, runs, key, "list")
    finish(r, d, runs, key, watch)
    assert d.stop() == 0


def test_wrong_scheduled_key_holds_only_retries(r, daemon, tmp):
    key = "qw:{t}:scheduled"
    d, runs = prepare(r, daemon, tmp, key, "oops", 1)
    watch = ActiveWatch(r)
    d.start()
    wait_held(r, d, runs, key, "zset")
    restart(r, d, runs, key, "zset")
    finish(r, d, runs, key, watch)
    assert d.stop() == 0


def test_wrong_stats_key_keeps_counts_for_later(r, daemon, tmp):
    key = "qw:{t}:stats"
    d, runs = prepare(r, daemon, tmp, key, "oops", 65)
    watch = ActiveWatch(r)
    d.start()
    # Every result is written: only the counts wait.
    wait_until(lambda: r.llen("qw:{t}:dead") == NBAD and r.llen("qw:{t}:pending") == 0 and
               r.hlen(ACTIVE) == 0, 60, what="every job settled")
    d.wait_log("queue t: results cannot be written: %s holds a string, not a hash" % key)
    assert r.get(key) == b"oops"
    assert watch.stop() <= BOUND
    r.delete(key)
    wait_until(lambda: stats(r, "t").get("succeeded") == NOK, 30, what="succeeded counted")
    wait_until(lambda: stats(r, "t") == {"succeeded": NOK, "failed": NBAD, "dead": NBAD},
               30, what="exact counts")
    assert all(n == 1 for n in ran(runs).values()), ran(runs)
    assert d.stop() == 0


def evalsha_calls(r):
    return r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


def test_wrong_pending_key_is_logged_once_and_keeps_the_lease_release(r, daemon, tmp):
    """Promote needs pending only when a job is due, and says so once, not
    five times a second; a drain with nothing claimed releases the lease
    even while pending is wrong (the forget script needs pending only to
    give claimed jobs back)."""
    h, runs = handler(tmp, 1)
    d = daemon()
    d.conf({"t": "handler = %s" % h})
    r.zadd("qw:{t}:scheduled", {"later": 4102444800000})    # not due
    d.start()
    r.set("qw:{t}:pending", "oops")
    calls = evalsha_calls(r)
    wait_until(lambda: evalsha_calls(r) >= calls + 20, 30, what="promote ticks")
    assert "moving due scheduled jobs failed" not in d.log()   # nothing due: pending not needed
    r.zadd("qw:{t}:scheduled", {"due": 0})
    d.wait_log("moving due scheduled jobs failed: WRONGTYPE key qw:{t}:pending holds a string")
    calls = evalsha_calls(r)
    wait_until(lambda: evalsha_calls(r) >= calls + 20, 30, what="more promote ticks")
    assert d.log().count("moving due scheduled jobs failed") == 1
    assert r.zcard("qw:{t}:scheduled") == 2
    assert d.stop() == 0
    assert r.zcard("qw:{t}:leases") == 0
    d.start()
    wait_until(lambda: d.log().count("moving due scheduled jobs failed") == 2, 30,
               what="the error again after the restart")
    r.delete("qw:{t}:pending")
    d.wait_log("moving due scheduled jobs works again")
    wait_until(lambda: stats(r, "t").get("failed") == 1, 30, what="the due job ran")
    assert r.zcard("qw:{t}:scheduled") == 2            # the later one, and the retry


def test_wrong_dead_holds_an_oversized_job_in_place(r, daemon, tmp):
    """The fetch script buries oversized jobs in dead: with dead broken, the
    jobs in front of one are taken, it stays in place with what is behind it,
    the failure is logged once, and after DEL it is buried and the rest runs."""
    h, runs = handler(tmp, 1)
    d = daemon()
    # Concurrency 3: the first fetch reaches the oversized job.
    d.conf({"t": "handler = %s\nmax_payload = 1KiB" % h}, workers="concurrency = 3\n")
    r.set("qw:{t}:dead", "oops")
    big = "x" * 5000
    for j in ["ok-1", "ok-2", big, "ok-3"]:
        r.lpush("qw:{t}:pending", j)
    d.start()
    wait_until(lambda: stats(r, "t").get("succeeded") == 2, what="the jobs in front ran")
    d.wait_log("fetch failed: WRONGTYPE key qw:{t}:dead")
    assert r.lrange("qw:{t}:pending", 0, -1) == [b"ok-3", big.encode()]
    assert sorted(read_lines(runs)) == ["ok-1", "ok-2"]
    # Retried every second, logged once.
    wait_until(lambda: d.log().count("queue t: fetch held -> idle") >= 2, what="two retries")
    r.delete("qw:{t}:dead")
    d.wait_log("fetching works again")
    wait_until(lambda: stats(r, "t").get("succeeded") == 3, what="ok-3 ran")
    assert d.log().count("fetch failed: WRONGTYPE") == 1
    dead = [json.loads(e) for e in r.lrange("qw:{t}:dead", 0, -1)]
    assert len(dead) == 1 and "max_payload" in dead[0]["error"]
    assert stats(r, "t").get("dead") == 1
