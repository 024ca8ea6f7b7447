"""SPEC 1, 3 and 5: no bad input crashes or stalls the daemon or loses a job.
Every test ends by checking a good job still runs on a second queue."""
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import time

from conftest import inflight, script, stats, wait_until


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.rstrip("\n") for l in f if l.strip()]


def dead(r, q):
    return [json.loads(e) for e in r.lrange("qw:{%s}:dead" % q, 0, -1)]


def marker():
    """A sleep duration no other process on the machine uses, for pgrep."""
    return "%d.%04d" % (random.randint(2000, 9000), random.randint(1, 9999))


def pgrep(pattern):
    p = subprocess.run(["pgrep", "-f", pattern], stdout=subprocess.PIPE)
    return p.stdout.decode().split()


def with_good_queue(tmp, queues):
    """Adds queue 'good' whose handler only succeeds."""
    good = script(tmp, "good.sh", "cat > /dev/null\n")
    queues = dict(queues)
    queues["good"] = "handler = %s" % good
    return queues


def assert_still_works(r, d):
    """The daemon is alive and runs a good job on queue 'good'."""
    assert d.proc.poll() is None, "qworkerd exited with %s:\n%s" % (d.proc.returncode, d.log())
    before = stats(r, "good").get("succeeded", 0)
    r.lpush("qw:{good}:pending", "still alive?")
    wait_until(lambda: stats(r, "good").get("succeeded", 0) == before + 1, 10,
               what="a good job after the bad input")
    assert d.proc.poll() is None


MALFORMED = [
    ("timeout", {"timeout": "x"}),
    ("timeout", {"timeout": -5}),
    ("timeout", {"timeout": 1e12}),
    ("timeout", {"timeout": 0}),
    ("timeout", {"timeout": None}),
    ("max_attempts", {"max_attempts": 0}),
    ("max_attempts", {"max_attempts": 2.5}),
    ("max_attempts", {"max_attempts": "3"}),
    ("id", {"id": 5}),
    ("id", {"id": ""}),
    ("attempt", {"attempt": -1}),
    ("attempt", {"attempt": "1"}),
]


def test_malformed_envelopes_go_to_dead(r, daemon, tmp):
    ran = os.path.join(tmp, "ran")
    h = script(tmp, "h.sh", "cat >> %s\necho >> %s\n" % (ran, ran))
    d = daemon()
    d.conf(with_good_queue(tmp, {"mail": "handler = %s" % h}))
    d.start()
    for i, (member, bad) in enumerate(MALFORMED):
        env = {"payload": "p%d" % i, "case": i}
        env.update(bad)
        r.lpush("qw:{mail}:pending", json.dumps(env))
    n = len(MALFORMED)
    wait_until(lambda: stats(r, "mail").get("dead") == n, what="dead=%d" % n)
    jobs = {j["case"]: j for j in dead(r, "mail")}
    assert sorted(jobs) == list(range(n))
    for i, (member, bad) in enumerate(MALFORMED):
        j = jobs[i]
        assert member in j.get("error", ""), (bad, j)
        assert isinstance(j.get("failed_at"), int), j
        assert j["payload"] == "p%d" % i
        for k, v in bad.items():   # kept as sent, so the error stays true
            assert j[k] == v, (bad, j)
    assert read_lines(ran) == []   # none of them reached the handler
    assert "succeeded" not in stats(r, "mail")
    assert inflight(r, "mail") == 0
    assert_still_works(r, d)
    r.lpush("qw:{mail}:pending", '{"payload":"fine","timeout":2.5,"max_attempts":1}')
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="a good envelope")
    assert read_lines(ran) == ["fine"]


def test_json_that_is_not_an_envelope_runs_raw(r, daemon, tmp):
    h = script(tmp, "h.sh", 'cat > "%s/$QW_JOB_ID.in"\n' % tmp)
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start()
    elems = [b'{"payload": "unterminated', b'{"no_payload": 1}', b'[1, 2, 3]',
             b'"just a string"', b'{}']
    for e in elems:
        r.lpush("qw:{mail}:pending", e)
    wait_until(lambda: stats(r, "mail").get("succeeded") == len(elems), what="all ran")
    got = []
    for n in os.listdir(tmp):
        if n.endswith(".in"):
            with open(os.path.join(tmp, n), "rb") as f:
                got.append(f.read())
    assert sorted(got) == sorted(elems)
    assert "dead" not in stats(r, "mail")


def test_payload_over_max_payload(r, daemon, tmp):
    ran = os.path.join(tmp, "ran")
    h = script(tmp, "h.sh", "wc -c >> %s\n" % ran)
    d = daemon()
    d.conf(with_good_queue(tmp, {"mail": "handler = %s\nmax_payload = 1KiB" % h}))
    d.start()
    r.lpush("qw:{mail}:pending", b"r" * 2000)
    r.lpush("qw:{mail}:pending", json.dumps({"payload": "e" * 1500, "id": "big-env"}))
    wait_until(lambda: stats(r, "mail").get("dead") == 2, what="dead=2")
    jobs = dead(r, "mail")
    errors = sorted(j["error"] for j in jobs)
    assert any("payload of 2000 bytes is larger than max_payload (1024 bytes)" in e
               for e in errors), errors
    assert any("payload of 1500 bytes is larger than max_payload (1024 bytes)" in e
               for e in errors), errors
    env = [j for j in jobs if j.get("id") == "big-env"]
    assert env and env[0]["payload"] == "e" * 1500
    raw = [j for j in jobs if j.get("id") != "big-env"]
    assert raw and raw[0]["payload"] == "r" * 2000
    assert read_lines(ran) == []
    # Exactly at the limit is fine.
    r.lpush("qw:{mail}:pending", b"k" * 1024)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="1024 bytes ran")
    assert [l.strip() for l in read_lines(ran)] == ["1024"]
    assert inflight(r, "mail") == 0
    assert_still_works(r, d)


def test_binary_payload_with_nul_bytes(r, daemon, tmp):
    out = os.path.join(tmp, "out.bin")
    h = script(tmp, "h.sh", "cat > %s\n" % out)
    d = daemon()
    d.conf(with_good_queue(tmp, {"mail": "handler = %s\nmax_payload = 1KiB" % h}))
    d.start()
    blob = b"\x00" + bytes(range(256)) * 3 + b"\x00\x00end\x00"
    assert len(blob) <= 1024
    r.lpush("qw:{mail}:pending", blob)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded")
    with open(out, "rb") as f:
        assert f.read() == blob
    assert_still_works(r, d)


def test_handler_deleted_after_start(r, daemon, tmp):
    h = os.path.join(tmp, "gone.sh")
    shutil.copy(script(tmp, "orig.sh", "exit 0\n"), h)
    os.chmod(h, 0o755)
    d = daemon()
    d.conf(with_good_queue(tmp, {"mail": "handler = %s\nmax_attempts = 2\nretry_base = 100ms"
                                 % h}))
    d.start()
    os.unlink(h)
    r.lpush("qw:{mail}:pending", "job")
    wait_until(lambda: stats(r, "mail").get("dead") == 1, what="dead=1")
    (j,) = dead(r, "mail")
    assert "could not start %s: No such file or directory" % h in j["error"], j
    assert j["attempt"] == 2
    st = stats(r, "mail")
    assert st.get("failed") == 2 and st.get("retried") == 1
    assert inflight(r, "mail") == 0
    assert_still_works(r, d)


def test_handler_crashes(r, daemon, tmp):
    h = script(tmp, "h.sh", "kill -SEGV $$\nsleep 5\n")
    d = daemon()
    d.conf(with_good_queue(tmp, {"mail": "handler = %s\nmax_attempts = 2\nretry_base = 100ms"
                                 % h}))
    d.start()
    r.lpush("qw:{mail}:pending", "crash")
    wait_until(lambda: stats(r, "mail").get("dead") == 1, what="dead=1")
    (j,) = dead(r, "mail")
    assert "killed by signal 11" in j["error"] and "SIGSEGV" in j["error"], j
    st = stats(r, "mail")
    assert st.get("failed") == 2 and st.get("retried") == 1
    assert inflight(r, "mail") == 0
    assert_still_works(r, d)


def test_handler_floods_stdout(r, daemon, tmp):
    h = script(tmp, "h.sh", """\
        head -c 5000000 /dev/zero | tr '\\0' 'x'
        echo
        i=0
        while [ $i -lt 20000 ]; do echo "line $i of noise"; i=$((i+1)); done
        head -c 2000000 /dev/zero | tr '\\0' 'y' >&2
        exit 0
        """)
    d = daemon()
    d.conf(with_good_queue(tmp, {"mail": "handler = %s" % h}))
    d.start()
    size0 = os.path.getsize(d.log_path)
    r.lpush("qw:{mail}:pending", "flood")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, 20, what="succeeded")
    assert "output truncated" in d.log()
    grown = os.path.getsize(d.log_path) - size0
    assert grown < 1_000_000, grown
    assert_still_works(r, d)


def test_handler_does_not_read_stdin(r, daemon, tmp):
    h = script(tmp, "h.sh", "exit 0\n")
    d = daemon()
    d.conf(with_good_queue(tmp, {"mail": "handler = %s\nmax_payload = 2MiB" % h}))
    d.start()
    r.lpush("qw:{mail}:pending", b"z" * (1 << 20))
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded")
    assert "failed" not in stats(r, "mail")
    assert inflight(r, "mail") == 0
    assert_still_works(r, d)


def test_handler_closes_stdin_early(r, daemon, tmp):
    h = script(tmp, "h.sh", "exec 0<&-\nsleep 0.2\nexit 0\n")
    d = daemon()
    d.conf(with_good_queue(tmp, {"mail": "handler = %s\nmax_payload = 2MiB" % h}))
    d.start()
    r.lpush("qw:{mail}:pending", b"z" * (1 << 20))
    r.lpush("qw:{mail}:pending", b"small")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 2, what="succeeded=2")
    assert "failed" not in stats(r, "mail")
    assert inflight(r, "mail") == 0
    assert_still_works(r, d)


def test_grandchild_does_not_outlive_its_job(r, daemon, tmp):
    m = marker()
    h = script(tmp, "h.sh", "sleep %s &\nexit 0\n" % m)
    d = daemon()
    d.conf(with_good_queue(tmp, {"mail": "handler = %s" % h}))
    d.start()
    try:
        r.lpush("qw:{mail}:pending", "fork")
        wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded")
        wait_until(lambda: not pgrep("sleep " + m), 5, what="grandchild gone")
        assert_still_works(r, d)
    finally:
        for pid in pgrep("sleep " + m):
            os.kill(int(pid), signal.SIGKILL)


def test_unreachable_redis_at_start(r, daemon, tmp):
    h = script(tmp, "h.sh", "exit 0\n")
    d = daemon()
    d.redis_sock = "/nonexistent/x.sock"
    d.conf({"mail": "handler = %s" % h})
    d.start(wait_ready=False)
    d.wait_log("cannot connect", 10)
    wait_until(lambda: d.log().count("cannot connect") >= 2, 10, what="a second attempt")
    time.sleep(1.5)
    msgs = d.read_messages()
    assert d.proc.poll() is None, d.log()
    assert not any("READY=1" in m for m in msgs), msgs
    assert any("STATUS=" in m and "Redis" in m for m in msgs), msgs
    assert d.stop(15) == 0


def test_jobs_too_big_to_rewrite_reach_dead_whole(r, daemon, tmp):
    """Rewriting a job must never make it larger than Redis accepts in one
    command: with proto-max-bulk-len lowered to 1 MB, a 300 KB job of control
    bytes escapes to 1.8 MB. Too long to run: buried inside Redis by the
    fetch script, the raw one as base64, the envelope's text kept byte for
    byte; a failing one of 200 KB is retried as base64."""
    h = script(tmp, "fail.sh", "cat > /dev/null\nexit 1\n")
    d = daemon()
    d.conf(with_good_queue(tmp, {
        "small": "handler = %s\nmax_payload = 100" % h,
        "mail": "handler = %s\nmax_attempts = 2\nretry_base = 50ms" % h}))
    old = r.config_get("proto-max-bulk-len")["proto-max-bulk-len"]
    r.config_set("proto-max-bulk-len", "1mb")
    try:
        d.start()
        ctl = b"\x01" * 300000
        env = json.dumps({"payload": "y" * 70000, "id": "myid"}).encode()
        r.lpush("qw:{small}:pending", ctl, env)
        wait_until(lambda: stats(r, "small").get("dead") == 2, what="both dead")
        entries = r.lrange("qw:{small}:dead", 0, -1)
        (e_env,) = [e for e in entries if e.startswith(env[:-1] + b",")]
        assert json.loads(e_env)["error"] == ("job of %d bytes is larger than max_payload "
                                              "allows (100 bytes)" % len(env))
        (e_ctl,) = [json.loads(e) for e in entries if e != e_env]
        assert e_ctl["payload_encoding"] == "base64"
        assert base64.b64decode(e_ctl["payload"]) == ctl
        assert e_ctl["error"] == "payload of 300000 bytes is larger than max_payload (100 bytes)"
        d.wait_log("larger than max_payload moved to dead")
        binary = b"\x02" * 200000
        r.lpush("qw:{mail}:pending", binary)
        wait_until(lambda: stats(r, "mail").get("dead") == 1, what="failed twice, dead")
        (job,) = dead(r, "mail")
        assert job["payload_encoding"] == "base64" and job["attempt"] == 2
        assert base64.b64decode(job["payload"]) == binary
        assert "Protocol error" not in d.log() and "lost" not in d.log()
        assert inflight(r, "small") == 0 and inflight(r, "mail") == 0
        assert_still_works(r, d)
    finally:
        r.config_set("proto-max-bulk-len", old)


def test_json_past_the_parsers_limits_is_not_run_raw(r, daemon, tmp):
    ran = os.path.join(tmp, "ran")
    h = script(tmp, "h.sh", "cat >> %s\n" % ran)
    d = daemon()
    d.conf(with_good_queue(tmp, {"mail": "handler = %s" % h}))
    d.start()
    r.lpush("qw:{mail}:pending", '{"payload":"hello","max_attempts":99999999999999999999}',
            '{"payload":"hello","timeout":1e999}',
            '{"payload":' + "[" * 3000 + "]" * 3000 + "}")
    wait_until(lambda: stats(r, "mail").get("dead") == 3, what="3 dead")
    for j in dead(r, "mail"):
        assert j["error"].startswith("JSON that qworkerd cannot read: "), j
    assert not os.path.exists(ran)
    assert_still_works(r, d)
