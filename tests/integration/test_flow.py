"""SPEC 14, flow control shared by all instances through Redis: the circuit
breaker (breaker_failures, breaker_cooldown), rate and global_concurrency,
each with two daemons on one Redis, and their bad values through qworkerd -t.

Nothing here is timed against the machine's speed: each step waits for what
Redis, the logs or STATUS= show. The only clock comparisons are bounds the
limits imply (a job pushed while the breaker is open starts no earlier than
the end of its cooldown; N jobs under rate = K/s span at least the windows
they need), and both sides read the one system clock."""
import json
import os
import signal
import subprocess

import pytest

from conftest import QWORKERD, inflight, read_lines, redis_ms, script, stats, wait_until

EX_CONFIG = 78


def flow_handler(tmp, marks, mode, gate):
    """Writes 'START-MS PAYLOAD' to MARKS, waits while GATE exists, then
    exits as MODE says: ok (0), fail (1) or perm (65, a permanent failure)."""
    return script(tmp, "h.sh", """\
        payload=$(cat)
        echo "$(date +%%s%%3N) $payload" >> %s
        while [ -e %s ]; do sleep 0.02; done
        case $(cat %s) in ok) exit 0;; perm) exit 65;; *) exit 1;; esac
        """ % (marks, gate, mode))


def setf(path, text):
    with open(path, "w") as f:
        f.write(text)


def breaker(r, q="f"):
    return {k.decode(): v.decode() for k, v in r.hgetall("qw:{%s}:breaker" % q).items()}


def both_logs(*ds):
    return "".join(d.log() for d in ds)


def test_breaker_shared_by_two_daemons(r, daemon, tmp):
    marks, mode, gate = (os.path.join(tmp, n) for n in ("marks", "mode", "gate"))
    h = flow_handler(tmp, marks, mode, gate)
    setf(mode, "fail")
    conf = {"f": "handler = %s\nconcurrency = 1\nmax_attempts = 1\nbreaker_failures = 3\n"
                 "breaker_cooldown = 3s\n" % h}
    a, b = daemon("a"), daemon("b")
    a.conf(conf, instance="a")
    b.conf(conf, instance="b")
    a.start()
    b.start()
    r.lpush("qw:{f}:pending", *["bad%d" % i for i in range(3)])
    wait_until(lambda: breaker(r).get("state") == "open", what="the breaker open")
    until = int(breaker(r)["until"])
    wait_until(lambda: len(r.lrange("qw:{f}:dead", 0, -1)) == 3, what="3 failed jobs dead")
    assert breaker(r)["failures"] == "3"

    # Jobs pushed while it is open wait in pending, untouched, on both daemons.
    jobs = [json.dumps({"payload": "good%d" % i, "id": "good%d" % i}) for i in range(5)]
    r.lpush("qw:{f}:pending", *jobs)
    a.wait_message("queue f breaker open")
    b.wait_message("queue f breaker open")
    if redis_ms(r) < until - 100:
        assert r.lrange("qw:{f}:pending", 0, -1) == [j.encode() for j in reversed(jobs)]
        assert inflight(r, "f") == 0

    # After the cooldown exactly one trial job runs, over both daemons.
    open(gate, "w").close()
    wait_until(lambda: len(read_lines(marks)) == 4, what="the trial job started")
    wait_until(lambda: "queue f breaker half-open" in "".join(a.read_messages()) and
               "queue f breaker half-open" in "".join(b.read_messages()),
               what="both daemons see it half-open")
    starts = [int(l.split()[0]) for l in read_lines(marks)]
    assert starts[3] >= until - 1, (starts, until)
    assert len(read_lines(marks)) == 4 and inflight(r, "f") == 1
    # The trial fails: open again; the next trial succeeds: closed, and the
    # rest run.
    os.unlink(gate)
    wait_until(lambda: "circuit breaker open again" in both_logs(a, b), what="reopened")
    setf(mode, "ok")
    wait_until(lambda: "circuit breaker closed" in both_logs(a, b), 20, what="closed")
    wait_until(lambda: stats(r, "f").get("succeeded", 0) == 4, what="the rest succeed")
    assert breaker(r)["state"] == "closed"
    logs = both_logs(a, b)
    assert logs.count("circuit breaker open after 3 failed runs in a row") == 1
    assert logs.count("circuit breaker half-open") == 2
    assert logs.count("circuit breaker open again") == 1
    assert logs.count("circuit breaker closed") == 1
    # Every job ran once: no attempt was spent while it waited.
    dead = [json.loads(e) for e in r.lrange("qw:{f}:dead", 0, -1)]
    assert len(dead) == 4 and sum(1 for e in dead if e["payload"].startswith("good")) == 1
    assert len(read_lines(marks)) == 3 + 1 + 4


def test_permanent_failures_do_not_count(r, daemon, tmp):
    marks, mode, gate = (os.path.join(tmp, n) for n in ("marks", "mode", "gate"))
    h = flow_handler(tmp, marks, mode, gate)
    setf(mode, "perm")
    d = daemon()
    d.conf({"f": "handler = %s\nmax_attempts = 1\nbreaker_failures = 2\n"
                 "breaker_cooldown = 1h\n" % h})
    d.start()
    r.lpush("qw:{f}:pending", *["p%d" % i for i in range(6)])
    wait_until(lambda: r.llen("qw:{f}:dead") == 6, what="6 permanent failures dead")
    assert breaker(r).get("state", "closed") == "closed"
    assert breaker(r).get("failures", "0") == "0"
    # A success between failures resets the count; two in a row open it.
    setf(mode, "fail")
    r.lpush("qw:{f}:pending", "x1")
    wait_until(lambda: r.llen("qw:{f}:dead") == 7, what="one failure")
    setf(mode, "ok")
    r.lpush("qw:{f}:pending", "ok1")
    wait_until(lambda: stats(r, "f").get("succeeded", 0) == 1, what="a success")
    assert breaker(r)["failures"] == "0"
    setf(mode, "fail")
    r.lpush("qw:{f}:pending", "x2", "x3")
    wait_until(lambda: breaker(r).get("state") == "open", what="open after two in a row")
    d.wait_message("queue f breaker open")
    assert 'circuit breaker open after 2 failed runs in a row' in d.log()
