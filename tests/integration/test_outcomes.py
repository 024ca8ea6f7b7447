"""SPEC 4: what happens to a job after its handler ran: retries with growing
backoff, permanent failures, timeouts, signals, the dead list and its cap,
and SIGKILL after kill_grace for a handler that ignores SIGTERM."""
import json
import os
import random
import subprocess
import time

from conftest import inflight, read_lines, redis_ms, script, stats, wait_until


def marker():
    """A sleep duration no other process on the machine uses, for pgrep."""
    return "%d.%04d" % (random.randint(2000, 9000), random.randint(1, 9999))


def pgrep(pattern):
    p = subprocess.run(["pgrep", "-f", pattern], stdout=subprocess.PIPE)
    return p.stdout.decode().split()


def dead(r, q):
    return [json.loads(e) for e in r.lrange("qw:{%s}:dead" % q, 0, -1)]


def scheduled(r, q):
    return [(json.loads(m), int(s))
            for m, s in r.zrange("qw:{%s}:scheduled" % q, 0, -1, withscores=True)]


def test_exit_1_retries_with_growing_backoff_then_dead(r, daemon, tmp):
    starts = os.path.join(tmp, "starts")
    # retry_base 1s: jitter is 0.8..1.2 and promotion polls every 200 ms, so
    # the first delay is at most ~1.4 s and the second at least 1.6 s.
    h = script(tmp, "h.sh", "date +%%s%%N >> %s\nexit 1\n" % starts)
    d = daemon()
    d.conf({"mail": "handler = %s\nmax_attempts = 3\nretry_base = 1s\nretry_max = 1h" % h})
    d.start()
    t0 = redis_ms(r)
    r.lpush("qw:{mail}:pending", "p1")
    wait_until(lambda: stats(r, "mail").get("dead") == 1, 20, what="dead=1")
    runs = [int(x) // 1_000_000 for x in read_lines(starts)]
    assert len(runs) == 3, runs
    delay1, delay2 = runs[1] - runs[0], runs[2] - runs[1]
    assert delay1 >= 500, (delay1, delay2)       # not retried at once
    assert delay2 > delay1, (delay1, delay2)      # exponential backoff
    (job,) = dead(r, "mail")
    assert job["payload"] == "p1"
    assert "exit status 1" in job["error"]
    assert job["attempt"] == 3
    assert isinstance(job["id"], str) and job["id"]
    assert t0 <= job["failed_at"] <= redis_ms(r) + 1000
    assert job["failed_at"] >= runs[2] - 1000
    st = stats(r, "mail")
    assert st.get("failed") == 3
    assert st.get("retried") == 2
    assert st.get("dead") == 1
    assert not st.get("succeeded")
    assert inflight(r, "mail") == 0
    assert r.llen("qw:{mail}:pending") == 0
    assert r.zcard("qw:{mail}:scheduled") == 0
    # Nothing runs a fourth time.
    time.sleep(1.0)
    assert len(read_lines(starts)) == 3
    assert d.stop() == 0


def test_exit_65_is_permanent(r, daemon, tmp):
    runs = os.path.join(tmp, "runs")
    h = script(tmp, "h.sh", "echo run >> %s\nexit 65\n" % runs)
    d = daemon()
    d.conf({"mail": "handler = %s\nmax_attempts = 5\nretry_base = 100ms" % h})
    d.start()
    r.lpush("qw:{mail}:pending", '{"payload":"bad data","id":"perm-1","extra":[1,2]}')
    wait_until(lambda: stats(r, "mail").get("dead") == 1, what="dead=1")
    time.sleep(0.7)  # a retry would have been promoted and run by now
    assert len(read_lines(runs)) == 1
    (job,) = dead(r, "mail")
    assert job["id"] == "perm-1"
    assert job["payload"] == "bad data"
    assert job["extra"] == [1, 2]          # unknown members are preserved
    assert "exit status 65" in job["error"]
    assert "permanent" in job["error"]
    assert job["attempt"] == 1
    assert isinstance(job["failed_at"], int)
    st = stats(r, "mail")
    assert st.get("failed") == 1
    assert st.get("dead") == 1
    assert "retried" not in st
    assert r.zcard("qw:{mail}:scheduled") == 0
    assert inflight(r, "mail") == 0


def test_raw_job_retried_is_wrapped_as_envelope(r, daemon, tmp):
    seen = os.path.join(tmp, "seen")
    h = script(tmp, "h.sh", """\
        p=$(cat)
        echo "$QW_JOB_ID $QW_ATTEMPT $p" >> %s
        exit 1
        """ % seen)
    d = daemon()
    d.conf({"mail": "handler = %s\nmax_attempts = 3\nretry_base = 1h\nretry_max = 2h" % h})
    d.start()
    raw = "hello raw world"
    t0 = redis_ms(r)
    r.lpush("qw:{mail}:pending", raw)
    wait_until(lambda: stats(r, "mail").get("retried") == 1, what="retried=1")
    ((env, score),) = scheduled(r, "mail")
    (line,) = read_lines(seen)
    jid, attempt, payload = line.split(" ", 2)
    assert attempt == "1" and payload == raw
    assert env["payload"] == raw
    assert env["id"] == jid
    assert env["attempt"] == 1
    assert "exit status 1" in env["error"]
    # due at now + retry_base with jitter (0.8..1.2 of an hour)
    assert t0 + 0.75 * 3600_000 <= score <= redis_ms(r) + 1.25 * 3600_000
    # Make it due now: the second run sees the same id and payload.
    (member,) = r.zrange("qw:{mail}:scheduled", 0, -1)
    assert r.zadd("qw:{mail}:scheduled", {member: 0}, xx=True, ch=True) == 1
    wait_until(lambda: len(read_lines(seen)) == 2, what="second run")
    jid2, attempt2, payload2 = read_lines(seen)[1].split(" ", 2)
    assert (jid2, attempt2, payload2) == (jid, "2", raw)
    wait_until(lambda: stats(r, "mail").get("retried") == 2, what="retried=2")
    ((env2, _),) = scheduled(r, "mail")
    assert env2["id"] == jid and env2["attempt"] == 2 and env2["payload"] == raw


def test_binary_raw_job_retried_keeps_its_bytes(r, daemon, tmp):
    h = script(tmp, "h.sh", """\
        cat > "%s/$QW_ATTEMPT.in"
        [ "$QW_ATTEMPT" = 2 ] && exit 0
        exit 1
        """ % tmp)
    d = daemon()
    d.conf({"mail": "handler = %s\nmax_attempts = 3\nretry_base = 100ms" % h})
    d.start()
    blob = b"\x00\xff\xfe binary \x00\x80 not utf-8 \xc3"
    r.lpush("qw:{mail}:pending", blob)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded")
    for n in ("1", "2"):
        with open(os.path.join(tmp, n + ".in"), "rb") as f:
            assert f.read() == blob
    st = stats(r, "mail")
    assert st.get("failed") == 1 and st.get("retried") == 1
    assert inflight(r, "mail") == 0


def test_job_timeout(r, daemon, tmp):
    m = marker()
    h = script(tmp, "h.sh", "sleep %s\n" % m)
    d = daemon()
    d.conf({"mail": "handler = %s\ntimeout = 1h\nretry_base = 1h\nretry_max = 2h" % h})
    d.start()
    r.lpush("qw:{mail}:pending", '{"payload":"slow","timeout":1,"max_attempts":2}')
    wait_until(lambda: stats(r, "mail").get("timed_out") == 1, 15, what="timed_out=1")
    st = stats(r, "mail")
    assert st.get("failed") == 1
    assert st.get("retried") == 1
    assert "dead" not in st and "succeeded" not in st
    ((env, _),) = scheduled(r, "mail")
    assert "timed out after 1s" in env["error"]
    assert env["attempt"] == 1
    assert env["timeout"] == 1 and env["max_attempts"] == 2
    assert inflight(r, "mail") == 0
    wait_until(lambda: not pgrep("sleep " + m), 5, what="handler gone")
    # sh dies on SIGTERM: no SIGKILL was needed.
    assert "sending SIGKILL" not in d.log()


def test_killed_by_signal(r, daemon, tmp):
    h = script(tmp, "h.sh", "kill -9 $$\nsleep 5\n")
    d = daemon()
    d.conf({"mail": "handler = %s\nmax_attempts = 1" % h})
    d.start()
    r.lpush("qw:{mail}:pending", "x")
    wait_until(lambda: stats(r, "mail").get("dead") == 1, what="dead=1")
    (job,) = dead(r, "mail")
    assert "killed by signal 9" in job["error"]
    assert "SIGKILL" in job["error"]
    st = stats(r, "mail")
    assert st.get("failed") == 1 and st.get("dead") == 1
    assert inflight(r, "mail") == 0


def test_dead_max_caps_dead_list(r, daemon, tmp):
    h = script(tmp, "h.sh", "exit 65\n")
    d = daemon()
    d.conf({"mail": "handler = %s\ndead_max = 2" % h}, workers="concurrency = 1")
    d.start()
    for i in range(1, 5):
        r.lpush("qw:{mail}:pending", "j%d" % i)
    wait_until(lambda: stats(r, "mail").get("dead") == 4, what="dead=4")
    jobs = dead(r, "mail")
    assert [j["payload"] for j in jobs] == ["j4", "j3"]   # newest first
    assert inflight(r, "mail") == 0


def test_sigterm_ignored_gets_sigkill_after_kill_grace(r, daemon, tmp):
    m = marker()
    start = os.path.join(tmp, "start")
    h = script(tmp, "h.sh", """\
        date +%%s%%N > %s
        trap '' TERM
        sleep %s
        """ % (start, m))
    d = daemon()
    d.conf({"mail": "handler = %s" % h}, workers="kill_grace = 500ms")
    d.start()
    r.lpush("qw:{mail}:pending", '{"payload":"x","timeout":1,"max_attempts":1}')
    wait_until(lambda: stats(r, "mail").get("dead") == 1, 15, what="dead=1")
    (job,) = dead(r, "mail")
    assert "timed out after 1s" in job["error"]
    st = stats(r, "mail")
    assert st.get("timed_out") == 1 and st.get("failed") == 1
    assert "sending SIGKILL" in d.log()
    started = int(read_lines(start)[0]) // 1_000_000
    # timeout (1 s) plus kill_grace (0.5 s) before the job could end; the
    # margin covers the time between arming the timer and the handler's date.
    assert job["failed_at"] - started >= 1200, job["failed_at"] - started
    wait_until(lambda: not pgrep("sleep " + m), 5, what="handler gone")
    assert inflight(r, "mail") == 0
    assert d.stop() == 0


def test_exit_0_after_timeout_sigterm_is_timed_out(r, daemon, tmp):
    # The handler catches its timeout's SIGTERM and exits 0: the deadline
    # passed all the same, so the job timed out (SPEC 4), it did not succeed.
    m = marker()
    h = script(tmp, "h.sh", """\
        cat > /dev/null
        trap 'exit 0' TERM
        sleep %s &
        wait $!
        """ % m)
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start()
    r.lpush("qw:{mail}:pending", '{"payload":"x","timeout":1,"max_attempts":1}')
    wait_until(lambda: stats(r, "mail").get("dead") == 1, 15, what="dead=1")
    (job,) = dead(r, "mail")
    assert "timed out after 1s" in job["error"]
    st = stats(r, "mail")
    assert st.get("timed_out") == 1 and st.get("failed") == 1
    assert "succeeded" not in st
    assert "sending SIGKILL" not in d.log()     # it did exit on SIGTERM
    assert inflight(r, "mail") == 0
    subprocess.run(["pkill", "-f", "sleep " + m])
    assert d.stop() == 0


def test_exit_0_after_shutdown_sigterm_is_success(r, daemon, tmp):
    # The same handler stopped by the shutdown: it finished its job.
    started = os.path.join(tmp, "started")
    m = marker()
    h = script(tmp, "h.sh", """\
        cat > /dev/null
        trap 'exit 0' TERM
        echo up > %s
        sleep %s &
        wait $!
        """ % (started, m))
    d = daemon()
    d.conf({"mail": "handler = %s" % h}, workers="shutdown_timeout = 0\nkill_grace = 10s")
    d.start()
    r.lpush("qw:{mail}:pending", '{"payload":"x","timeout":60}')
    wait_until(lambda: read_lines(started), what="handler started")
    assert d.stop() == 0
    st = stats(r, "mail")
    assert st.get("succeeded") == 1 and "timed_out" not in st and "failed" not in st
    assert r.llen("qw:{mail}:pending") == 0 and inflight(r, "mail") == 0
    subprocess.run(["pkill", "-f", "sleep " + m])
