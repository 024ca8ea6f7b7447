"""Crash recovery and Redis outages (lifecycle issue, done-when 7 and 8)."""
import json
import os
import signal
import subprocess
import time

from conftest import SLOW, RedisServer, inflight, script, stats, wait_until

# First run of a job blocks (as if long); once "release" exists every run
# finishes at once. Each run is recorded.
HANDLER = """\
payload=$(cat)
echo "$payload" >> %(dir)s/runs
[ -e %(dir)s/release ] && exit 0
sleep 1000.25 &
wait $!
"""


def runs(tmp):
    try:
        with open(os.path.join(tmp, "runs")) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def kill_orphans():
    # Handlers of a SIGKILLed daemon live on in their own process groups, as
    # they would until systemd cleans the cgroup: end them.
    subprocess.run(["pkill", "-f", "sleep 1000.25"], check=False)


def start_five(r, d, tmp, **conf):
    h = script(tmp, "h.sh", HANDLER % {"dir": tmp})
    d.conf({"mail": "handler = %s" % h}, workers="concurrency = 5\n" + conf.get("workers", ""),
           instance=conf.get("instance", "test-1"))
    d.start()
    for i in range(5):
        r.lpush("qw:{mail}:pending", "job%d" % i)
    wait_until(lambda: len(runs(tmp)) == 5, what="5 running")


def test_sigkill_same_identity_recovers_at_once(r, daemon, tmp):
    d = daemon("a")
    start_five(r, d, tmp, workers="lease_timeout = 60s\n")
    d.proc.kill()
    d.wait()
    kill_orphans()
    open(os.path.join(tmp, "release"), "w").close()
    d2 = daemon("b")
    d2.conf_path = d.conf_path          # same config, same identity
    t0 = time.monotonic()
    d2.start()
    wait_until(lambda: stats(r, "mail").get("recovered") == 5, 3, what="5 recovered")
    assert time.monotonic() - t0 < 1.0 * SLOW + 1.0   # far below the 60 s lease
    wait_until(lambda: stats(r, "mail").get("succeeded") == 5, what="5 succeeded")
    assert sorted(runs(tmp)[5:]) == ["job%d" % i for i in range(5)]
    assert inflight(r, "mail") == 0
    assert "is gone: recovering its jobs now" in d2.log()


def test_sigkill_other_identity_recovers_after_lease(r, daemon, tmp):
    d = daemon("a")
    start_five(r, d, tmp, workers="lease_timeout = 2s\n", instance="dead-one")
    other_tmp = os.path.join(tmp, "other")
    os.makedirs(other_tmp)
    d2 = daemon("b")
    h = script(other_tmp, "ok.sh", "cat >> %s/runs2\necho >> %s/runs2\n" % (other_tmp, other_tmp))
    # SPEC 10: a live instance recovers others only once its own lease has
    # been renewed for its lease_timeout plus a tick: keep that short too.
    d2.conf({"mail": "handler = %s" % h}, workers="lease_timeout = 2s\n", instance="live-one")
    d2.start()
    d.proc.kill()
    t_kill = time.monotonic()
    d.wait()
    kill_orphans()
    wait_until(lambda: stats(r, "mail").get("recovered") == 5, 15, what="5 recovered")
    assert time.monotonic() - t_kill < (2 + 1) * SLOW + 1.0
    wait_until(lambda: stats(r, "mail").get("succeeded") == 5, what="5 succeeded")
    assert inflight(r, "mail") == 0
    wait_until(lambda: r.zscore("qw:{mail}:leases", "dead-one") is None, what="lease dropped")
    assert r.hget("qw:{mail}:holders", "dead-one") is None
    assert "lease of instance dead-one expired" in d2.log()


def test_job_that_kills_the_daemon_ends_dead(r, daemon, tmp):
    h = script(tmp, "killer.sh", "cat > /dev/null\necho x >> %s/kills\nkill -9 $PPID\nsleep 5\n" % tmp)
    d = daemon()
    d.conf({"mail": "handler = %s\nmax_attempts = 2" % h})
    r.lpush("qw:{mail}:pending", "poison")
    for _ in range(3):
        d.start(wait_ready=False)
        try:
            d.wait(10)
        except subprocess.TimeoutExpired:
            break
    wait_until(lambda: r.llen("qw:{mail}:dead") == 1, what="poison in dead")
    (dead,) = [json.loads(x) for x in r.lrange("qw:{mail}:dead", 0, -1)]
    assert dead["payload"] == "poison" and dead["attempt"] == 2
    assert "stopped while the job ran" in dead["error"]
    assert stats(r, "mail")["recovered"] == 2
    assert r.llen("qw:{mail}:pending") == 0
    assert inflight(r, "mail") == 0
    d.wait_message("READY=1")
    assert d.proc.poll() is None      # the last start found nothing left to run
    assert d.stop() == 0


def test_max_interruptions_parks_a_job(r, daemon, tmp):
    d = daemon()
    h = script(tmp, "h.sh", HANDLER % {"dir": tmp})
    d.conf({"mail": "handler = %s\nmax_interruptions = 2" % h},
           workers="shutdown_timeout = 200ms\nkill_grace = 200ms\n")
    r.lpush("qw:{mail}:pending", "endless")
    for n in (1, 2):
        d.start()
        wait_until(lambda: len(runs(tmp)) == n, what="run %d" % n)
        assert d.stop() == 0
    kill_orphans()
    (dead,) = [json.loads(x) for x in r.lrange("qw:{mail}:dead", 0, -1)]
    assert dead["interrupted"] == 2 and "interrupted" in dead["error"]
    assert r.llen("qw:{mail}:pending") == 0
    assert stats(r, "mail").get("requeued") == 1


def test_redis_restart_loses_nothing(daemon, tmp):
    srv = RedisServer(os.path.join(tmp, "r"))
    os.makedirs(srv.dir)
    srv.start("--appendonly", "yes", "--appendfsync", "always")
    c = srv.client()
    h = script(tmp, "h.sh", "cat >> %s/runs\necho >> %s/runs\nsleep 1\n" % (tmp, tmp))
    d = daemon()
    d.redis_sock = srv.sock
    d.conf({"mail": "handler = %s\nretry_base = 100ms" % h}, workers="concurrency = 3\n")
    d.start()
    for i in range(12):
        c.lpush("qw:{mail}:pending", "job%d" % i)
    wait_until(lambda: len(runs(tmp)) >= 3, what="3 running")
    srv.stop()
    time.sleep(3)
    assert d.proc.poll() is None
    d.wait_message("STATUS=waiting for Redis")
    srv.start("--appendonly", "yes", "--appendfsync", "always")
    c = srv.client()
    wait_until(lambda: c.hget("qw:{mail}:stats", "succeeded") == b"12", 40, what="12 succeeded")
    assert c.llen("qw:{mail}:pending") == 0 and c.llen("qw:{mail}:dead") == 0
    assert inflight(c, "mail") == 0
    assert d.stop() == 0
    srv.stop()


def test_client_kill_loses_nothing(r, daemon, tmp):
    h = script(tmp, "h.sh", "cat >> %s/runs\necho >> %s/runs\nsleep 0.3\n" % (tmp, tmp))
    d = daemon()
    d.conf({"mail": "handler = %s" % h}, workers="concurrency = 4\n")
    d.start()
    for i in range(30):
        r.lpush("qw:{mail}:pending", "job%d" % i)
    names = set()
    for _ in range(3):
        wait_until(lambda: inflight(r, "mail") > 0, what="jobs in flight")
        for cl in r.client_list():
            if cl["name"].startswith("qworkerd/"):
                names.add(cl["name"])
        r.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        time.sleep(0.5)
    assert any(n.endswith("/main") for n in names)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 30, 40, what="30 succeeded")
    assert r.llen("qw:{mail}:pending") == 0 and r.llen("qw:{mail}:dead") == 0
    assert inflight(r, "mail") == 0
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_dead_instances_claim_list_goes_back_untouched(r, daemon, tmp):
    # A blocking pop of a dead instance left a job it never started.
    r.rpush("qw:{mail}:claim:gone-1", "never-started")
    r.zadd("qw:{mail}:leases", {"gone-1": 1})           # expired long ago
    h = script(tmp, "ok.sh", "cat >> %s/runs\necho >> %s/runs\n" % (tmp, tmp))
    d = daemon()
    # Recovering waits for lease_timeout plus a tick after connecting (SPEC 10).
    d.conf({"mail": "handler = %s" % h}, workers="lease_timeout = 2s\n")
    d.start()
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, 10, what="claimed job ran")
    assert runs(tmp) == ["never-started"]               # raw, not rewritten: no attempt counted
    assert "recovered" not in stats(r, "mail")
    wait_until(lambda: r.zscore("qw:{mail}:leases", "gone-1") is None, what="lease dropped")
    assert not r.exists("qw:{mail}:claim:gone-1")


def test_jobs_taken_ahead_come_back_without_a_run(r, daemon, tmp):
    """A daemon killed with jobs taken ahead (prefetch) but never started:
    its successor counts a run for the job that ran and for at most 32 jobs
    after it (said started together, qworkerd-jobs(7)), and gives the rest
    back as they were."""
    log = os.path.join(tmp, "attempts")
    h = script(tmp, "h.sh", "echo \"$QW_ATTEMPT $(cat)\" >> %s\n[ -e %s/release ] && exit 0\n"
               "sleep 1000.25 &\nwait $!\n" % (log, tmp))
    d = daemon("a")
    d.conf({"mail": "handler = %s\nprefetch = 40\nmax_attempts = 3" % h},
           workers="concurrency = 1\nlease_timeout = 60s\n")
    r.lpush("qw:{mail}:pending", *["job%d" % i for i in range(41)])
    d.start()
    wait_until(lambda: r.hlen("qw:{mail}:active:test-1") == 41 and os.path.exists(log),
               what="one running, forty taken ahead")
    d.proc.kill()
    d.wait()
    kill_orphans()
    open(os.path.join(tmp, "release"), "w").close()
    d2 = daemon("b")
    d2.conf_path = d.conf_path
    d2.start()
    wait_until(lambda: stats(r, "mail").get("succeeded") == 41, what="41 succeeded")
    with open(log) as f:
        lines = [l.split() for l in f.read().split("\n") if l]
    assert lines[0] == ["1", "job0"]
    again = {p: int(a) for a, p in lines[1:]}
    assert again["job0"] == 2
    assert all(again["job%d" % i] in (1, 2) for i in range(1, 33)), again
    assert [again["job%d" % i] for i in range(33, 41)] == [1] * 8, again
    assert stats(r, "mail").get("recovered") == 41
    assert inflight(r, "mail") == 0
    assert d2.stop() == 0
    assert r.exists("qw:{mail}:started:test-1") == 0
