"""Pause and resume (qworkerd(8), PAUSE AND RESUME): while the key
PREFIX:{Q}:paused exists no instance starts a job of Q, running jobs finish,
jobs taken ahead go back to pending untouched, a restarted daemon stays
paused, and deleting the key runs the backlog.

Nothing here is timed: each step waits for what Redis and the daemons show,
and the daemons' own logs (written in order) show that no job started while
a daemon knew its queue paused."""
import json
import os
import re
import urllib.request

from conftest import free_port, inflight, read_lines, script, stats, wait_until

PAUSED = "queue p: paused"
RESUMED = "queue p: resumed"


def handler(tmp, gate, marks):
    """Writes 'ATTEMPT PAYLOAD' to MARKS as it starts, then waits while GATE exists."""
    return script(tmp, "h.sh", """\
        payload=$(cat)
        echo "$QW_ATTEMPT $payload" >> %s
        while [ -e %s ]; do sleep 0.02; done
        """ % (marks, gate))


def starts_while_paused(log):
    """Jobs of p whose start the daemon logged after it said p was paused
    and before it said p was resumed."""
    bad, paused = [], False
    for line in log.splitlines():
        if PAUSED in line:
            paused = True
        elif RESUMED in line:
            paused = False
        elif paused and re.search(r"job p/\S+: started", line):
            bad.append(line)
    return bad


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as resp:
        return resp.read().decode()


def test_pause_two_daemons(r, daemon, tmp):
    n, port = 30, free_port()
    gate, marks = os.path.join(tmp, "gate"), os.path.join(tmp, "marks")
    h = handler(tmp, gate, marks)
    open(gate, "w").close()
    queues = {"p": "handler = %s\nconcurrency = 2\nprefetch = 4\n" % h,
              "o": "handler = /bin/true\n"}
    a, b = daemon("a"), daemon("b")
    a.conf(queues, instance="a", workers="metrics_listen = 127.0.0.1:%d\n" % port)
    b.conf(queues, instance="b")
    r.lpush("qw:{p}:pending", *[json.dumps({"payload": "j%d" % i, "id": "j%d" % i})
                                for i in range(n)])
    a.start()
    b.start()
    # Each instance runs 2 jobs and holds 4 more taken ahead.
    wait_until(lambda: r.hlen("qw:{p}:active:a") == 6 and r.hlen("qw:{p}:active:b") == 6,
               what="both instances running 2 jobs and holding 4 ahead")
    assert r.llen("qw:{p}:pending") == n - 12

    r.set("qw:{p}:paused", 1)
    a.wait_log(PAUSED)
    b.wait_log(PAUSED)
    # What was taken ahead is back on pending; the running jobs go on.
    wait_until(lambda: r.hlen("qw:{p}:active:a") == 2 and r.hlen("qw:{p}:active:b") == 2,
               what="the jobs taken ahead given back")
    assert r.llen("qw:{p}:pending") == n - 4
    a.wait_message("queue p paused")
    assert 'qworkerd_queue_paused{queue="p"} 1' in metrics(port)
    assert 'qworkerd_queue_paused{queue="o"} 0' in metrics(port)

    # Another queue keeps running meanwhile, on both instances.
    r.lpush("qw:{o}:pending", *["o%d" % i for i in range(20)])
    wait_until(lambda: stats(r, "o").get("succeeded", 0) == 20, what="queue o runs")

    # The running jobs finish; nothing else of p starts.
    os.unlink(gate)
    wait_until(lambda: stats(r, "p").get("succeeded", 0) == 4 and inflight(r, "p") == 0,
               what="the 4 running jobs done")
    assert r.llen("qw:{p}:pending") == n - 4

    # A restarted instance stays paused.
    assert a.stop() == 0
    a.start()
    wait_until(lambda: a.log().count(PAUSED) == 2, what="the restarted daemon saying p is paused")
    r.lpush("qw:{o}:pending", *["o%d" % i for i in range(20, 30)])
    wait_until(lambda: stats(r, "o").get("succeeded", 0) == 30, what="queue o runs")
    assert r.llen("qw:{p}:pending") == n - 4 and inflight(r, "p") == 0
    assert 'qworkerd_queue_paused{queue="p"} 1' in metrics(port)
    assert starts_while_paused(a.log()) == [] and starts_while_paused(b.log()) == []

    # Resume: the backlog runs, every job once, with no attempt spent by
    # being taken ahead and given back.
    r.delete("qw:{p}:paused")
    wait_until(lambda: stats(r, "p").get("succeeded", 0) == n, 30, what="the backlog")
    a.wait_log(RESUMED)
    b.wait_log(RESUMED)
    assert inflight(r, "p") == 0 and r.llen("qw:{p}:pending") == 0
    assert sorted(read_lines(marks)) == sorted("1 j%d" % i for i in range(n))
    assert starts_while_paused(a.log()) == [] and starts_while_paused(b.log()) == []
    assert 'qworkerd_queue_paused{queue="p"} 0' in metrics(port)
    assert a.stop() == 0 and b.stop() == 0


def test_pause_idle_queue_any_value(r, daemon, tmp):
    """A queue that waits idle for new jobs learns of the pause too,
    whatever the key holds (here a JSON text, as an operator's tool may
    set): a job pushed then is not started, and resume runs it."""
    marks = os.path.join(tmp, "marks")
    h = handler(tmp, os.path.join(tmp, "nogate"), marks)
    d = daemon()
    d.conf({"p": "handler = %s\n" % h, "o": "handler = /bin/true\n"})
    d.start()
    r.lpush("qw:{p}:pending", "before")
    wait_until(lambda: stats(r, "p").get("succeeded", 0) == 1, what="a job before the pause")
    r.set("qw:{p}:paused", json.dumps({"by": "ops", "reason": "deploy"}))
    d.wait_log(PAUSED)
    r.lpush("qw:{p}:pending", "x")
    r.lpush("qw:{o}:pending", "y")
    wait_until(lambda: stats(r, "o").get("succeeded", 0) == 1, what="queue o runs")
    assert r.llen("qw:{p}:pending") == 1 and read_lines(marks) == ["1 before"]
    r.delete("qw:{p}:paused")
    wait_until(lambda: stats(r, "p").get("succeeded", 0) == 2, what="the job after resume")
    d.wait_log(RESUMED)
    assert starts_while_paused(d.log()) == []
    assert d.log().count(PAUSED) == 1
    assert d.stop() == 0
