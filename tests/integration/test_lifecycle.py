"""The lifecycle issue: drain on SIGTERM with linked deadlines, the second
SIGTERM, quiet/resume, reload, and the systemd notify protocol."""
import json
import os
import signal
import time

from conftest import SLOW, inflight, script, stats, wait_until

SLEEPER = """\
cat > /dev/null
echo start >> %(dir)s/starts.$QW_QUEUE
case "$QW_JOB_ID" in
  stubborn*) trap '' TERM ;;
esac
sleep "${SLEEP_FOR:-30}" &
wait $!
while [ -e %(dir)s/never ]; do sleep 1; done
"""


def envelope(jid, sleep_s, **kw):
    return json.dumps(dict(payload="x", id=jid, **kw))


def starts(tmp, q="mail"):
    try:
        with open(os.path.join(tmp, "starts." + q)) as f:
            return len(f.read().split())
    except FileNotFoundError:
        return 0


def sleeper(tmp):
    # The job id says how long to sleep: "short-1" 0.5 s, anything else 30 s.
    return script(tmp, "sleeper.sh", """\
cat > /dev/null
echo "$QW_JOB_ID" >> %(dir)s/starts
case "$QW_JOB_ID" in
  short*) exec sleep 0.5 ;;
  stubborn*) trap '' TERM; sleep 30; sleep 30 ;;
  *) exec sleep 30 ;;
esac
""" % {"dir": tmp})


def started(tmp, n=1):
    """Waits until N jobs have reached the handler. The active hash is not
    proof: the fetch script claims a job before the daemon has read the
    reply, and a job claimed but not started goes back on quiet or stop."""
    path = os.path.join(tmp, "starts")
    wait_until(lambda: os.path.exists(path) and len(open(path).read().split()) >= n,
               what="%d started" % n)


def pending(r, q="mail"):
    return [json.loads(x) if x.startswith(b"{") else x for x in r.lrange("qw:{%s}:pending" % q, 0, -1)]


def test_sigterm_drain_requeues_long_jobs(r, daemon, tmp):
    h = sleeper(tmp)
    d = daemon()
    d.conf({"mail": "handler = %s" % h},
           workers="concurrency = 4\nshutdown_timeout = 2s\nkill_grace = 1s\n")
    d.start()
    for jid in ("short-1", "short-2", "long-1", "stubborn-1"):
        r.lpush("qw:{mail}:pending", envelope(jid, 0))
    wait_until(lambda: r.hlen("qw:{mail}:active:test-1") == 4, what="4 in flight")
    wait_until(lambda: os.path.exists(os.path.join(tmp, "starts")) and
               len(open(os.path.join(tmp, "starts")).read().split()) == 4, what="4 started")
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0
    took = time.monotonic() - t0
    assert took < (2 + 1 + 1) * SLOW + 1.5, "stop took %.2fs" % took
    st = stats(r, "mail")
    assert st.get("succeeded") == 2
    assert st.get("requeued") == 2
    left = {j["id"]: j for j in pending(r)}
    assert set(left) == {"long-1", "stubborn-1"}
    for j in left.values():
        assert j.get("attempt", 0) == 0
        assert j["interrupted"] == 1
    assert inflight(r, "mail") == 0
    assert "SIGKILL" in d.log()          # the stubborn one needed it
    assert r.zcard("qw:{mail}:leases") == 0   # released at the end of a clean drain


def test_own_timeout_before_shutdown_deadline_is_a_timeout(r, daemon, tmp):
    h = sleeper(tmp)
    d = daemon()
    d.conf({"mail": "handler = %s\nretry_base = 10s" % h},
           workers="shutdown_timeout = 10s\nkill_grace = 1s\n")
    d.start()
    r.lpush("qw:{mail}:pending", json.dumps({"payload": "x", "id": "long-t", "timeout": 1}))
    started(tmp)
    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0
    st = stats(r, "mail")
    assert st.get("timed_out") == 1 and st.get("retried") == 1
    assert "requeued" not in st
    (job,) = [json.loads(m) for m in r.zrange("qw:{mail}:scheduled", 0, -1)]
    assert job["attempt"] == 1 and job["error"] == "timed out after 1s"


def test_idle_sigterm_is_quick_and_loses_nothing(r, daemon, tmp):
    h = script(tmp, "ok.sh", "cat > /dev/null\necho ran >> %s/ran\n" % tmp)
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    r.lpush("qw:{mail}:pending", "racing")
    assert d.wait(10) == 0
    assert time.monotonic() - t0 < 2 * SLOW
    ran = os.path.exists(os.path.join(tmp, "ran"))
    assert ran or r.lrange("qw:{mail}:pending", 0, -1) == [b"racing"]
    assert not (ran and r.llen("qw:{mail}:pending"))
    assert inflight(r, "mail") == 0


def test_second_sigterm_cancels_at_once(r, daemon, tmp):
    h = sleeper(tmp)
    d = daemon()
    d.conf({"mail": "handler = %s" % h}, workers="shutdown_timeout = 60s\nkill_grace = 1s\n")
    d.start()
    r.lpush("qw:{mail}:pending", envelope("long-2", 0))
    started(tmp)
    d.signal(signal.SIGTERM)
    d.wait_message("STOPPING=1")
    time.sleep(0.3)
    assert d.proc.poll() is None
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait(15) == 0
    assert time.monotonic() - t0 < 5 * SLOW
    assert [j["id"] for j in pending(r)] == ["long-2"]
    assert stats(r, "mail").get("requeued") == 1


def test_quiet_and_resume(r, daemon, tmp):
    h = script(tmp, "ok.sh", "cat > /dev/null\n")
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start()
    d.signal(signal.SIGUSR1)
    d.wait_log("quiet")
    time.sleep(0.5 * SLOW)      # a fetch sent before the signal may still answer
    r.lpush("qw:{mail}:pending", "a", "b")
    time.sleep(1.0)
    assert r.llen("qw:{mail}:pending") == 2
    assert d.proc.poll() is None
    d.signal(signal.SIGUSR2)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 2, what="2 succeeded")


def test_quiet_lets_running_jobs_finish(r, daemon, tmp):
    h = sleeper(tmp)
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start()
    r.lpush("qw:{mail}:pending", envelope("short-q", 0))
    started(tmp)
    d.signal(signal.SIGUSR1)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="finished while quiet")


def test_reload_applies_concurrency_and_refuses_bad_config(r, daemon, tmp):
    h = sleeper(tmp)
    d = daemon()
    d.conf({"mail": "handler = %s" % h}, workers="concurrency = 1\n")
    d.start()
    for i in range(3):
        r.lpush("qw:{mail}:pending", envelope("long-r%d" % i, 0))
    wait_until(lambda: r.hlen("qw:{mail}:active:test-1") == 1, what="1 running")
    time.sleep(0.5)
    assert r.hlen("qw:{mail}:active:test-1") == 1
    d.conf({"mail": "handler = %s" % h}, workers="concurrency = 3\n")
    d.signal(signal.SIGHUP)
    wait_until(lambda: r.hlen("qw:{mail}:active:test-1") == 3, what="3 running after reload")
    d.wait_message("RELOADING=1")
    assert any("MONOTONIC_USEC=" in m for m in d.messages if "RELOADING=1" in m)
    # A broken config is refused; the daemon stays up with the old one.
    d.write_conf("[workers]\nconcurrency = lots\n")
    n_ready = sum("READY=1" in m for m in d.read_messages())
    d.signal(signal.SIGHUP)
    d.wait_log("reload refused")
    assert "concurrency: 'lots' is not a whole number" in d.log()
    wait_until(lambda: sum("READY=1" in m for m in d.read_messages()) > n_ready, what="READY again")
    assert d.proc.poll() is None
    assert r.hlen("qw:{mail}:active:test-1") == 3
    d.signal(signal.SIGTERM)
    d.wait_message("STOPPING=1")
    d.signal(signal.SIGTERM)
    assert d.wait(15) == 0
    assert len(pending(r)) == 3


def test_notify_messages(r, daemon, tmp):
    h = sleeper(tmp)
    d = daemon()
    d.conf({"mail": "handler = %s" % h}, workers="shutdown_timeout = 3s\nkill_grace = 500ms\n")
    d.start(env={"WATCHDOG_USEC": "400000"})
    r.lpush("qw:{mail}:pending", envelope("long-n", 0))
    d.wait_message("STATUS=1/8 busy", 10)
    assert any("pending mail=" in m for m in d.messages)
    t0 = time.monotonic()
    n0 = sum(m == "WATCHDOG=1" for m in d.read_messages())
    time.sleep(2.0)
    pings = sum(m == "WATCHDOG=1" for m in d.read_messages()) - n0
    # One every 200 ms; a noisy machine may lose a few.
    assert 4 <= pings <= 15, pings
    d.signal(signal.SIGTERM)
    d.wait_message("STOPPING=1")
    d.wait_message("EXTEND_TIMEOUT_USEC=")
    assert d.wait(20) == 0
    msgs = d.read_messages()
    i_ready = next(i for i, m in enumerate(msgs) if "READY=1" in m)
    i_stop = next(i for i, m in enumerate(msgs) if "STOPPING=1" in m)
    assert i_ready < i_stop


def test_ready_waits_for_redis(r, daemon, tmp, redis_server):
    h = script(tmp, "ok.sh", "cat > /dev/null\n")
    d = daemon()
    sock = os.path.join(tmp, "later.sock")
    d.conf({"mail": "handler = %s" % h})
    d.write_conf(open(d.conf_path).read().replace(redis_server.sock, sock))
    d.start(wait_ready=False)
    d.wait_message("STATUS=waiting for Redis", 10)
    assert not any("READY=1" in m for m in d.read_messages())
    from conftest import RedisServer
    other = RedisServer(tmp)
    other.sock = sock
    try:
        other.start()
        d.wait_message("READY=1", 15)
        other.client().lpush("qw:{mail}:pending", "late")
        wait_until(lambda: other.client().hget("qw:{mail}:stats", "succeeded") == b"1",
                   what="job on the late redis")
    finally:
        assert d.stop() == 0
        other.stop()


def test_maxmemory_policy_warning(r, daemon, tmp):
    h = script(tmp, "ok.sh", "cat > /dev/null\n")
    r.config_set("maxmemory-policy", "allkeys-lru")
    try:
        d = daemon()
        d.conf({"mail": "handler = %s" % h})
        d.start()
        d.wait_log("maxmemory-policy is allkeys-lru")
        d.wait_message("WARNING: Redis maxmemory-policy is allkeys-lru")
    finally:
        r.config_set("maxmemory-policy", "noeviction")


def test_reload_matches_queues_by_name(r, daemon, tmp):
    h = script(tmp, "ok.sh", "cat > /dev/null\n")
    d = daemon()
    d.conf({"a": "handler = %s" % h, "b": "handler = %s" % h}, workers="concurrency = 2\n")
    d.start()
    d.conf({"b": "handler = %s\nmax_attempts = 7" % h, "a": "handler = %s" % h},
           workers="concurrency = 3\n")
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded")
    d.conf({"a": "handler = %s" % h, "c": "handler = %s" % h})
    d.signal(signal.SIGHUP)
    d.wait_log("reload refused, old configuration kept: the set of queues")
    r.lpush("qw:{b}:pending", "x")
    wait_until(lambda: stats(r, "b").get("succeeded") == 1, what="b still served")
    assert d.stop() == 0
