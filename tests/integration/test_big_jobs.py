"""Jobs that must stay whole and separate (SPEC 2, 3, 4): identical jobs stay
two jobs, oversized elements never leave Redis, and JSON too deep to parse
is still classified by its top-level payload member."""
import base64
import json
import os

import redis as redislib

from conftest import inflight, script, stats, wait_until


def dead(r, q):
    return [json.loads(e) for e in r.lrange("qw:{%s}:dead" % q, 0, -1)]


def test_identical_jobs_stay_two_jobs_in_scheduled(r, daemon, tmp):
    """Eight byte-identical envelopes whose handler fails: each retry is its
    own member of the scheduled sorted set, even when two fail in the same
    millisecond with the same error, and all eight run again."""
    ran = os.path.join(tmp, "ran")
    h = script(tmp, "fail.sh", "cat >> %s\necho >> %s\nexit 1\n" % (ran, ran))
    d = daemon()
    # retry_base long enough that no retry is due before all are counted.
    d.conf({"mail": "handler = %s\nmax_attempts = 2\nretry_base = 1h\nretry_max = 1h"
            % h}, workers="concurrency = 8\n")
    d.start()
    job = json.dumps({"payload": "charge card 42", "id": "order-42"})
    r.lpush("qw:{mail}:pending", *([job] * 8))
    wait_until(lambda: stats(r, "mail").get("retried") == 8, 20, what="8 retried")
    st = stats(r, "mail")
    assert st.get("failed") == 8, st
    members = r.zrange("qw:{mail}:scheduled", 0, -1)
    assert len(members) == 8, members
    runs = set()
    for m in members:
        env = json.loads(m)
        assert env["payload"] == "charge card 42" and env["id"] == "order-42", env
        assert env["attempt"] == 1 and env["error"] == "exit status 1", env
        runs.add(env["run"])
    assert len(runs) == 8
    # Promote them all now: all eight run again and end in dead, none lost.
    r.zadd("qw:{mail}:scheduled", {m: 0 for m in members}, xx=True)
    wait_until(lambda: stats(r, "mail").get("dead") == 8, 20, what="8 dead")
    assert len(dead(r, "mail")) == 8
    with open(ran) as f:
        assert f.read().count("charge card 42") == 16
    assert r.zcard("qw:{mail}:scheduled") == 0 and inflight(r, "mail") == 0


def test_json_too_deep_is_classified_by_its_payload_member(r, daemon, tmp):
    """10,000 levels of nesting: without a top-level payload member it is a
    raw job and runs with its bytes as they are (SPEC 3); with one it is an
    envelope that cannot be read, and goes to dead saying why."""
    out = os.path.join(tmp, "out")
    h = script(tmp, "h.sh", "cat > %s\n" % out)
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start()
    raw = '{"a":' + '{"b":' * 10000 + '}' * 10000 + '}'
    env = '{"payload":' + '[' * 10000 + ']' * 10000 + '}'
    r.lpush("qw:{mail}:pending", raw)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, 20, what="the raw job ran")
    with open(out) as f:
        assert f.read() == raw
    r.lpush("qw:{mail}:pending", env)
    wait_until(lambda: stats(r, "mail").get("dead") == 1, 20, what="the envelope is dead")
    (j,) = dead(r, "mail")
    assert j["error"].startswith("JSON that qworkerd cannot read: maximum parsing depth"), j
    assert "failed_at" in j and j["payload"] == env  # kept whole, as text
    assert inflight(r, "mail") == 0


def rss_peak_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for %d" % pid)


def patient(pred):
    """PRED, answering False while Redis is busy running a long script (it
    buries a 200 MiB element inside the fetch script)."""
    def f():
        try:
            return pred()
        except redislib.exceptions.ResponseError as e:
            if str(e).startswith("BUSY"):
                return False
            raise
    return f


def check_buried(entries, elem, kind):
    """The dead entry for ELEM: error, failed_at, and the whole job."""
    n, limit = len(elem), "(1048576 bytes)"
    if kind == "envelope":
        want_error = "job of %d bytes is larger than max_payload allows %s" % (n, limit)
        head = elem.rstrip()[:-1] + b',"error":"' + want_error.encode() + b'","failed_at":'
        got = [e for e in entries if e.startswith(head)]
        assert len(got) == 1, [e[:80] for e in entries]
        j = json.loads(got[0])
        assert j["error"] == want_error and j["failed_at"] > 0
        return
    want_error = "payload of %d bytes is larger than max_payload %s" % (n, limit)
    if kind == "text":
        head = b'{"payload":"' + elem + b'","error":"' + want_error.encode() + b'","failed_at":'
        assert sum(1 for e in entries if e.startswith(head)) == 1
        return
    found = 0
    for e in entries:
        if e.startswith(b'{"payload_encoding":"base64"'):
            j = json.loads(e)
            if base64.b64decode(j["payload"]) == elem:
                assert j["error"] == want_error and j["failed_at"] > 0
                found += 1
    assert found == 1


def test_oversized_elements_never_leave_redis(r, daemon, tmp):
    """20 MiB and 200 MiB raw elements, an envelope and binary bytes over
    max_payload = 1MiB, queued before the start and pushed while the daemon
    idles: the fetch script buries them in dead with error and failed_at and
    the whole job, their bytes never reach the daemon (its peak RSS stays
    under 64 MiB), and the jobs around them run."""
    ran = os.path.join(tmp, "ran")
    h = script(tmp, "h.sh", "p=$(cat)\necho \"$p\" >> %s\n" % ran)    # one write per job
    d = daemon()
    d.conf({"big": "handler = %s\nmax_payload = 1MiB" % h})
    text20 = b"t" * (20 << 20)
    text200 = b"u" * (200 << 20)
    env = (b'  {"payload":"' + b"e" * (20 << 20) + b'","id":"big-env",'
           b'"n":12345678901234567890,"error":"old","failed_at":1} \n')
    binary = os.urandom(3 << 20)
    bigs = [(text20, "text"), (text200, "text"), (env, "envelope"), (binary, "binary")]
    old = r.config_get("busy-reply-threshold")["busy-reply-threshold"]
    r.config_set("busy-reply-threshold", "60000")   # the test's own polls wait instead
    try:
        r.lpush("qw:{big}:pending", "before", *[e for e, _ in bigs])
        r.lpush("qw:{big}:pending", "after")
        d.start()
        wait_until(patient(lambda: stats(r, "big").get("dead") == 4), 120, what="4 buried")
        wait_until(patient(lambda: stats(r, "big").get("succeeded") == 2), 30, what="2 ran")
        # Idle now: pushed onto an empty queue, they are buried the same way.
        for e, _ in bigs:
            r.lpush("qw:{big}:pending", e)
        r.lpush("qw:{big}:pending", "later")
        wait_until(patient(lambda: stats(r, "big").get("dead") == 8), 120, what="8 buried")
        wait_until(patient(lambda: stats(r, "big").get("succeeded") == 3), 30, what="3 ran")
        peak = rss_peak_kib(d.proc.pid)
        assert peak < 64 * 1024, "qworkerd's peak RSS is %d KiB" % peak
        st = stats(r, "big")
        assert st == {"dead": 8, "succeeded": 3}, st
        entries = r.lrange("qw:{big}:dead", 0, -1)
        assert len(entries) == 8
        for e, kind in bigs:
            check_buried(entries[:4], e, kind)      # pushed while idle
            check_buried(entries[4:], e, kind)      # queued at the start
        with open(ran) as f:
            assert sorted(f.read().split()) == ["after", "before", "later"]
        assert inflight(r, "big") == 0 and r.llen("qw:{big}:pending") == 0
        assert "larger than max_payload moved to dead" in d.log()
    finally:
        r.config_set("busy-reply-threshold", old)
