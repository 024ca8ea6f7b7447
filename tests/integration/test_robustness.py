"""Things that must not lose a job: wrong key types, huge fetches, a script
cache flush, a drain that races a prefetch, a reload under a plugin."""
import json
import os
import signal
import time

from conftest import BUILD, inflight, script, stats, wait_until


def plugin(name):
    return os.path.join(BUILD, name + ".so")


def test_fetch_larger_than_lua_unpack_limit(r, daemon, tmp):
    d = daemon()
    d.conf({"big": "plugin = %s\nprefetch = 1000" % plugin("noop")},
           workers="concurrency = 4500\n")
    p = r.pipeline(transaction=False)
    for i in range(0, 6000, 1000):
        p.lpush("qw:{big}:pending", *["j%d" % j for j in range(i, i + 1000)])
    p.execute()
    d.start()
    wait_until(lambda: stats(r, "big").get("succeeded") == 6000, 30, what="6000 succeeded")
    assert inflight(r, "big") == 0 and r.llen("qw:{big}:pending") == 0
    assert "fetch failed" not in d.log()


def test_wrong_key_type_loses_nothing(r, daemon, tmp):
    d = daemon()
    h = script(tmp, "ok.sh", "cat > /dev/null\n")
    d.conf({"t": "handler = %s" % h})
    d.start()
    r.set("qw:{t}:dead", "oops")
    r.lpush("qw:{t}:pending", '{"payload":"x","timeout":"soon"}')
    d.wait_log("results cannot be written: qw:{t}:dead holds a string, not a list")
    assert r.hlen("qw:{t}:active:test-1") == 1        # kept, not dropped
    r.delete("qw:{t}:dead")
    wait_until(lambda: r.llen("qw:{t}:dead") == 1, 10, what="dead once the key is fixed")
    assert inflight(r, "t") == 0
    # A scheduled job stays scheduled while pending has the wrong type.
    r.set("qw:{t}:pending", "oops")
    r.zadd("qw:{t}:scheduled", {"later": 0})
    d.wait_log("WRONGTYPE key qw:{t}:pending holds a string")
    assert r.zcard("qw:{t}:scheduled") == 1
    r.delete("qw:{t}:pending")
    wait_until(lambda: stats(r, "t").get("succeeded") == 1, 10, what="scheduled job ran")
    assert d.proc.poll() is None


def test_script_flush_is_survived(r, daemon, tmp):
    d = daemon()
    h = script(tmp, "ok.sh", "cat > /dev/null\n")
    d.conf({"t": "handler = %s" % h})
    d.start()
    r.lpush("qw:{t}:pending", "a")
    wait_until(lambda: stats(r, "t").get("succeeded") == 1, what="first job")
    r.script_flush()
    r.lpush("qw:{t}:pending", "b")
    wait_until(lambda: stats(r, "t").get("succeeded") == 2, 15, what="job after SCRIPT FLUSH")
    assert "lost qworkerd's scripts" in d.log()


def test_drain_during_prefetch_gives_everything_back(r, daemon, tmp):
    h = script(tmp, "h.sh", "cat > /dev/null\nsleep 0.05\n")
    d = daemon()
    d.conf({"t": "handler = %s\nprefetch = 50\nmax_attempts = 1" % h},
           workers="concurrency = 4\nshutdown_timeout = 5s\n")
    r.lpush("qw:{t}:pending", *["j%d" % i for i in range(400)])
    d.start()
    wait_until(lambda: stats(r, "t").get("succeeded", 0) >= 20, what="some done")
    assert d.stop() == 0
    assert r.llen("qw:{t}:dead") == 0
    assert inflight(r, "t") == 0
    assert stats(r, "t")["succeeded"] + r.llen("qw:{t}:pending") == 400
    assert r.zcard("qw:{t}:leases") == 0


def test_handler_that_finishes_on_sigterm_succeeds(r, daemon, tmp):
    h = script(tmp, "h.sh", "cat > /dev/null\ntrap 'exit 0' TERM\nsleep 30 &\nwait\n")
    d = daemon()
    d.conf({"t": "handler = %s" % h}, workers="shutdown_timeout = 300ms\n")
    d.start()
    r.lpush("qw:{t}:pending", "x")
    d.wait_log(": started, pid")
    time.sleep(0.2)
    assert d.stop() == 0
    assert stats(r, "t") == {"succeeded": 1}
    assert r.llen("qw:{t}:pending") == 0


def test_reload_while_a_plugin_runs(r, daemon, tmp):
    d = daemon()
    d.conf({"s": "plugin = %s" % plugin("sleep")})
    d.start()
    r.lpush("qw:{s}:pending", json.dumps({"payload": "60000", "timeout": 1, "id": "r1"}))
    wait_until(lambda: inflight(r, "s") == 1, what="running")
    d.conf({"s": "plugin = %s\nretry_base = 1h" % plugin("sleep")})
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded")
    # The plugin logs with the queue name after the old config is freed.
    d.wait_log("job s/r1: cancelled after part of 60000 ms (job timeout)")
    wait_until(lambda: stats(r, "s").get("timed_out") == 1, what="timed out")
    assert d.stop() == 0


def test_blocking_pop_error_does_not_freeze_the_queue(r, daemon, tmp):
    d = daemon()
    h = script(tmp, "ok.sh", "cat > /dev/null\n")
    d.conf({"t": "handler = %s" % h})
    d.start()
    time.sleep(0.3)                  # idle: the queue waits in its blocking pop
    r.set("qw:{t}:pending", "oops")
    d.wait_log("WRONGTYPE")
    r.delete("qw:{t}:pending")
    r.lpush("qw:{t}:pending", "after")
    wait_until(lambda: stats(r, "t").get("succeeded") == 1, 15, what="job after the error")


def test_failed_fetch_during_drain_does_not_stall_the_stop(r, daemon, tmp):
    d = daemon()
    h = script(tmp, "ok.sh", "cat > /dev/null\n")
    d.conf({"t": "handler = %s" % h})
    d.start()
    r.set("qw:{t}:claim:test-1", "oops")     # every fetch fails
    r.lpush("qw:{t}:pending", "x")
    d.wait_log("fetch failed")
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 10
    r.delete("qw:{t}:claim:test-1")
    assert r.llen("qw:{t}:pending") == 1
