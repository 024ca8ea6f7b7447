"""SPEC 2 and 7: scheduled jobs run when due (not before), pending is FIFO,
queue weights share the pool, and a queue's concurrency cap holds."""
import os

from conftest import inflight, read_lines, redis_ms, script, stats, wait_until


def max_overlap(intervals):
    """The most intervals (start, end) open at one moment."""
    events = sorted([(s, 1) for s, e in intervals] + [(e, -1) for s, e in intervals],
                    key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


def test_scheduled_in_the_past_runs_soon(r, daemon, tmp):
    h = script(tmp, "h.sh", "cat > /dev/null\n")
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start()
    r.zadd("qw:{mail}:scheduled", {"overdue": redis_ms(r) - 60_000})
    # SPEC 2: due jobs move to pending within 1 s; allow 3 s on a busy machine.
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, 3, what="overdue job ran")
    assert r.zcard("qw:{mail}:scheduled") == 0
    assert inflight(r, "mail") == 0


def test_scheduled_in_the_future_waits_until_due(r, daemon, tmp):
    starts = os.path.join(tmp, "starts")
    h = script(tmp, "h.sh", 'echo "$(cat) $(date +%%s%%N)" >> %s\n' % starts)
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start()
    due = redis_ms(r) + 2000
    r.zadd("qw:{mail}:scheduled", {"later": due})
    r.lpush("qw:{mail}:pending", "now")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 2, 15, what="both ran")
    got = dict(l.split(" ") for l in read_lines(starts))
    assert set(got) == {"now", "later"}
    started = int(got["later"]) // 1_000_000
    assert started >= due - 50, "started %d ms before due" % (due - started)
    assert r.zcard("qw:{mail}:scheduled") == 0
    assert inflight(r, "mail") == 0


def test_fifo_with_concurrency_1(r, daemon, tmp):
    out = os.path.join(tmp, "order")
    h = script(tmp, "h.sh", "cat >> %s\necho >> %s\n" % (out, out))
    d = daemon()
    d.conf({"mail": "handler = %s" % h}, workers="concurrency = 1")
    names = ["job-%02d" % i for i in range(20)]
    for n in names[:10]:           # some waiting before start ...
        r.lpush("qw:{mail}:pending", n)
    d.start()
    for n in names[10:]:           # ... and some pushed while it runs
        r.lpush("qw:{mail}:pending", n)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 20, 20, what="20 jobs")
    assert read_lines(out) == names


def test_weights_share_the_pool(r, daemon, tmp):
    starts = os.path.join(tmp, "starts")
    h = script(tmp, "h.sh", """\
        echo "$QW_QUEUE $(date +%%s%%N)" >> %s
        sleep 0.05
        """ % starts)
    d = daemon()
    d.conf({"heavy": "handler = %s\nweight = 3" % h,
            "light": "handler = %s\nweight = 1" % h}, workers="concurrency = 4")
    for q in ("heavy", "light"):
        r.lpush("qw:{%s}:pending" % q, *["%s-%d" % (q, i) for i in range(80)])
    d.start()
    wait_until(lambda: len(read_lines(starts)) >= 40, 20, what="40 starts")
    d.stop()
    lines = sorted(read_lines(starts), key=lambda l: int(l.split()[1]))
    first = [l.split()[0] for l in lines[:40]]
    heavy, light = first.count("heavy"), first.count("light")
    # Both queues had backlog the whole time: 80 jobs each, 40 starts.
    assert heavy + light == 40
    assert light > 0, first
    assert 2.0 <= heavy / light <= 4.5, (heavy, light)


def test_queue_concurrency_cap(r, daemon, tmp):
    runs = os.path.join(tmp, "runs")
    h = script(tmp, "h.sh", """\
        s=$(date +%%s%%N)
        sleep 0.4
        echo "$QW_QUEUE $s $(date +%%s%%N)" >> %s
        """ % runs)
    d = daemon()
    d.conf({"capped": "handler = %s\nconcurrency = 2" % h,
            "free": "handler = %s" % h}, workers="concurrency = 8")
    for q in ("capped", "free"):
        r.lpush("qw:{%s}:pending" % q, *["%s-%d" % (q, i) for i in range(12)])
    d.start()
    wait_until(lambda: stats(r, "capped").get("succeeded") == 12
               and stats(r, "free").get("succeeded") == 12, 20, what="24 jobs")
    per = {"capped": [], "free": []}
    for l in read_lines(runs):
        q, s, e = l.split()
        per[q].append((int(s), int(e)))
    assert len(per["capped"]) == 12 and len(per["free"]) == 12
    assert max_overlap(per["capped"]) <= 2
    assert max_overlap(per["capped"]) == 2      # the cap is used, not just respected
    assert max_overlap(per["free"]) >= 3         # the other queue is not held to it
    assert inflight(r, "capped") == 0 and inflight(r, "free") == 0
