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

from conftest import (QWORKERD, free_port, get, inflight, read_lines, redis_ms, script, stats,
                      wait_until)

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
    port = free_port()
    a.conf(conf, instance="a", workers="metrics_listen = 127.0.0.1:%d\n" % port)
    b.conf(conf, instance="b")
    a.start()
    b.start()
    assert 'qworkerd_breaker_open{queue="f"} 0' in get("http://127.0.0.1:%d/metrics" % port)[1]
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
    assert 'qworkerd_breaker_open{queue="f"} 1' in get("http://127.0.0.1:%d/metrics" % port)[1]
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
    assert breaker(r) == {}
    if "circuit breaker closed" in a.log():
        assert 'qworkerd_breaker_open{queue="f"} 0' in get("http://127.0.0.1:%d/metrics" % port)[1]
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
    assert breaker(r) == {}
    # A success between failures resets the count; two in a row open it.
    setf(mode, "fail")
    r.lpush("qw:{f}:pending", "x1")
    wait_until(lambda: r.llen("qw:{f}:dead") == 7, what="one failure")
    assert breaker(r) == {"state": "closed", "failures": "1"}
    setf(mode, "ok")
    r.lpush("qw:{f}:pending", "ok1")
    wait_until(lambda: stats(r, "f").get("succeeded", 0) == 1, what="a success")
    assert breaker(r) == {}
    setf(mode, "fail")
    r.lpush("qw:{f}:pending", "x2", "x3")
    wait_until(lambda: breaker(r).get("state") == "open", what="open after two in a row")
    d.wait_message("queue f breaker open")
    assert 'circuit breaker open after 2 failed runs in a row' in d.log()


def test_rate_over_two_daemons(r, daemon, tmp):
    """rate = 10/s, 40 jobs: at most 10 start in each window, and the window
    after one ends starts with the next job, so they need 4 windows and the
    first and last start lie at least 3 periods apart (less the time a
    handler takes to note its start, which only the first one's can add)."""
    marks = os.path.join(tmp, "marks")
    h = script(tmp, "h.sh", 'echo "$(date +%%s%%3N) $(cat)" >> %s\n' % marks)
    conf = {"r": "handler = %s\nconcurrency = 8\nrate = 10/s\n" % h}
    a, b = daemon("a"), daemon("b")
    a.conf(conf, instance="a")
    b.conf(conf, instance="b")
    a.start()
    b.start()
    r.lpush("qw:{r}:pending", *["j%d" % i for i in range(40)])
    wait_until(lambda: stats(r, "r").get("succeeded", 0) == 40, 30, what="40 jobs")
    starts = sorted(int(l.split()[0]) for l in read_lines(marks))
    assert len(starts) == 40
    assert starts[-1] - starts[0] >= 3000 - 500, starts
    # Each daemon waited for the window to end rather than asking again.
    assert "fetch asking -> limited" in a.log() + b.log()
    assert r.pttl("qw:{r}:rate") <= 1000


def counting_handler(tmp, gate):
    """Counts the jobs running at once over every daemon (under a lock) and
    writes each count to 'peaks'; holds while GATE exists."""
    lock, cnt, peaks = (os.path.join(tmp, n) for n in ("lock", "cnt", "peaks"))
    h = script(tmp, "c.sh", """\
        cat >/dev/null
        exec 9>>%(lock)s
        flock 9; n=$(( $(cat %(cnt)s 2>/dev/null || echo 0) + 1 )); echo $n > %(cnt)s
        echo $n >> %(peaks)s; flock -u 9
        while [ -e %(gate)s ]; do sleep 0.02; done
        sleep 0.05
        flock 9; echo $(( $(cat %(cnt)s) - 1 )) > %(cnt)s; flock -u 9
        """ % dict(lock=lock, cnt=cnt, peaks=peaks, gate=gate))
    return h, peaks


def test_global_concurrency_over_two_daemons(r, daemon, tmp):
    gate = os.path.join(tmp, "gate")
    h, peaks = counting_handler(tmp, gate)
    conf = {"g": "handler = %s\nconcurrency = 4\nglobal_concurrency = 3\n" % h}
    a, b = daemon("a"), daemon("b")
    a.conf(conf, instance="a")
    b.conf(conf, instance="b")
    a.start()
    b.start()
    r.lpush("qw:{g}:pending", *["j%d" % i for i in range(30)])
    wait_until(lambda: stats(r, "g").get("succeeded", 0) == 30, 60, what="30 jobs")
    counts = [int(x) for x in read_lines(peaks)]
    assert len(counts) == 30 and max(counts) <= 3, counts


def test_global_concurrency_share_returns_and_other_queue_runs(r, daemon, tmp):
    """A SIGKILLed instance's share comes back once its jobs are recovered;
    while g is held back by its limit, queue o gets every other slot."""
    gate, ogate = os.path.join(tmp, "gate"), os.path.join(tmp, "ogate")
    h = script(tmp, "h.sh", "cat >/dev/null\nwhile [ -e %s ]; do sleep 0.02; done\n" % gate)
    oh = script(tmp, "o.sh", "cat >/dev/null\nwhile [ -e %s ]; do sleep 0.02; done\n" % ogate)
    open(gate, "w").close()
    open(ogate, "w").close()
    queues = {"g": "handler = %s\nglobal_concurrency = 3\n" % h, "o": "handler = %s\n" % oh}
    a, b = daemon("a"), daemon("b")
    a.conf(queues, instance="a", workers="concurrency = 2\nlease_timeout = 2s\n")
    b.conf(queues, instance="b", workers="concurrency = 6\nlease_timeout = 2s\n")
    a.start()
    r.lpush("qw:{g}:pending", *["j%d" % i for i in range(10)])
    wait_until(lambda: r.hlen("qw:{g}:active:a") == 2, what="a runs 2 jobs of g")
    b.start()
    wait_until(lambda: r.hlen("qw:{g}:active:b") == 1, what="b runs the third")
    # b has 5 free slots but g may not use them: o gets them all.
    r.lpush("qw:{o}:pending", *["o%d" % i for i in range(20)])
    wait_until(lambda: r.hlen("qw:{o}:active:b") == 5, what="o takes b's other slots")
    assert r.hlen("qw:{g}:active:b") == 1 and r.hlen("qw:{g}:active:a") == 2
    os.unlink(ogate)
    wait_until(lambda: stats(r, "o").get("succeeded", 0) == 20, 30, what="o's jobs done")
    assert r.hlen("qw:{g}:active:b") == 1
    # a dies; once its jobs are recovered, its share is b's to use.
    a.signal(signal.SIGKILL)
    a.proc.wait(10)
    wait_until(lambda: r.hlen("qw:{g}:active:b") == 3, 30, what="b runs 3 after recovery")
    assert r.hlen("qw:{g}:active:a") == 0
    os.unlink(gate)
    wait_until(lambda: r.llen("qw:{g}:pending") == 0 and inflight(r, "g") == 0, 30,
               what="g drained")


@pytest.mark.parametrize("body,line,words", [
    ("rate = 0/s\n", 3, ["rate: '0/s' is not a rate"]),
    ("rate = 5/d\n", 3, ["rate: '5/d' is not a rate", "N/s, N/m or N/h"]),
    ("rate = 5\n", 3, ["rate: '5' is not a rate"]),
    ("global_concurrency = 0\n", 3, ["global_concurrency: 0 is out of range (1 to 100000)"]),
    ("global_concurrency = 100001\n", 3, ["global_concurrency: 100001 is out of range"]),
    ("breaker_cooldown = 10s\n", 3, ["breaker_cooldown: [queue f] sets no breaker_failures"]),
    ("breaker_failures = 0\nbreaker_cooldown = 10s\n", 4,
     ["breaker_cooldown: [queue f] sets no breaker_failures"]),
    ("breaker_failures = 3\nbreaker_cooldown = 0\n", 4, ["breaker_cooldown: 0 is out of range"]),
    ("breaker_failures = many\n", 3, ["breaker_failures: 'many' is not a whole number"]),
])
def test_bad_flow_keys(tmp, body, line, words):
    h = script(tmp, "h.sh", "exit 0\n")
    path = os.path.join(tmp, "bad.conf")
    setf(path, "[queue f]\nhandler = %s\n%s" % (h, body))
    p = subprocess.run([QWORKERD, "-t", "-c", path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10, stdin=subprocess.DEVNULL)
    err = p.stderr.decode()
    assert p.returncode == EX_CONFIG, (p.returncode, err)
    assert err.startswith("%s:%d: " % (path, line)), err
    for w in words:
        assert w in err, (w, err)


def test_good_flow_keys_pass_the_check(tmp):
    h = script(tmp, "h.sh", "exit 0\n")
    path = os.path.join(tmp, "good.conf")
    setf(path, "[queue f]\nhandler = %s\nbreaker_failures = 5\nrate = 100/m\n"
         "global_concurrency = 20\n[queue g]\nhandler = %s\nbreaker_failures = 1\n"
         "breaker_cooldown = 2m\nrate = 1/h\n" % (h, h))
    p = subprocess.run([QWORKERD, "-t", "-c", path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr.decode()


def test_trial_of_a_dead_instance_is_released_by_recovery(r, daemon, tmp):
    marks, mode, gate = (os.path.join(tmp, n) for n in ("marks", "mode", "gate"))
    h = flow_handler(tmp, marks, mode, gate)
    setf(mode, "fail")
    conf = {"f": "handler = %s\nconcurrency = 1\nmax_attempts = 5\nretry_base = 1h\n"
                 "retry_max = 1h\nbreaker_failures = 1\nbreaker_cooldown = 500ms\n" % h}
    a, b = daemon("a"), daemon("b")
    a.conf(conf, instance="a", workers="lease_timeout = 2s\n")
    b.conf(conf, instance="b", workers="lease_timeout = 2s\n")
    a.start()
    b.start()
    r.lpush("qw:{f}:pending", "x")
    wait_until(lambda: breaker(r).get("state") == "open", what="the breaker open")
    open(gate, "w").close()
    r.lpush("qw:{f}:pending", "trial")
    wait_until(lambda: "trial_key" in breaker(r), what="a trial taken")
    holder = breaker(r)["trial_key"].rsplit(":", 1)[1]
    dead, live = (a, b) if holder == "a" else (b, a)
    dead.signal(signal.SIGKILL)
    dead.proc.wait(10)
    # The survivor recovers the trial job and takes it as its own trial.
    wait_until(lambda: breaker(r).get("trial_key") == "qw:{f}:active:%s" % (
        "b" if holder == "a" else "a"), 30, what="the survivor's trial")
    assert breaker(r)["state"] == "half-open"
    setf(mode, "ok")
    os.unlink(gate)
    wait_until(lambda: breaker(r) == {}, 20, what="closed by the survivor")
    assert "circuit breaker closed" in live.log()
    wait_until(lambda: stats(r, "f").get("succeeded", 0) == 1, what="the trial job succeeded")


def test_deleting_the_breaker_closes_it(r, daemon, tmp):
    """An operator's DEL of an open breaker (cool-down 1h) lets the jobs run:
    the held instance asks again within 5 seconds whatever it was told."""
    marks, mode, gate = (os.path.join(tmp, n) for n in ("marks", "mode", "gate"))
    h = flow_handler(tmp, marks, mode, gate)
    setf(mode, "fail")
    d = daemon()
    d.conf({"f": "handler = %s\nmax_attempts = 1\nbreaker_failures = 1\n"
                 "breaker_cooldown = 1h\n" % h})
    d.start()
    r.lpush("qw:{f}:pending", "x")
    wait_until(lambda: breaker(r).get("state") == "open", what="the breaker open")
    setf(mode, "ok")
    r.lpush("qw:{f}:pending", *["j%d" % i for i in range(3)])
    d.wait_message("queue f breaker open")
    assert r.llen("qw:{f}:pending") == 3
    r.delete("qw:{f}:breaker")
    wait_until(lambda: stats(r, "f").get("succeeded", 0) == 3, 20, what="the jobs run")


def test_reload_applies_flow_keys(r, daemon, tmp):
    """A reload that turns the breaker off lets the jobs of an open breaker
    run; one that sets global_concurrency holds the queue to it."""
    marks, mode, gate = (os.path.join(tmp, n) for n in ("marks", "mode", "gate"))
    h = flow_handler(tmp, marks, mode, gate)
    setf(mode, "fail")
    d = daemon()
    d.conf({"f": "handler = %s\nmax_attempts = 1\nbreaker_failures = 1\n"
                 "breaker_cooldown = 1h\n" % h})
    d.start()
    r.lpush("qw:{f}:pending", "x")
    wait_until(lambda: breaker(r).get("state") == "open", what="the breaker open")
    setf(mode, "ok")
    open(gate, "w").close()
    d.conf({"f": "handler = %s\nmax_attempts = 1\nglobal_concurrency = 2\n" % h})
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded")
    r.lpush("qw:{f}:pending", *["j%d" % i for i in range(6)])
    wait_until(lambda: len(read_lines(marks)) == 1 + 2, what="2 jobs run")
    wait_until(lambda: "fetch asking -> limited" in d.log(), what="held by its limit")
    assert r.hlen("qw:{f}:active:test-1") == 2 and len(read_lines(marks)) == 1 + 2
    os.unlink(gate)
    wait_until(lambda: stats(r, "f").get("succeeded", 0) == 6, 20, what="the jobs run")
