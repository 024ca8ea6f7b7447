"""One live process per instance name, fencing and the recovery delay (SPEC 10;
issue 8, failures 2, 3 and 4): the lease is taken by compare-and-set, a live
lease is taken over only from a holder proved gone, a process that finds its
lease lapsed stops what others took over, and nothing is recovered after a
Redis outage every instance survived or while Redis is out of memory."""
import os
import signal
import socket
import subprocess
import time

import pytest
import redis as redislib

from conftest import BUILD, RedisServer, inflight, read_lines, redis_ms, script, stats, wait_until

# Each run appends its payload to RUNS, then waits until RELEASE exists (or
# ends at once when it does). The marker names these handlers' sleeps.
HANDLER = """\
payload=$(cat)
echo "$payload" >> %(runs)s
while [ ! -e %(release)s ]; do sleep 0.05; done
"""


def handler(tmp, name, release=None):
    runs = os.path.join(tmp, "runs-" + name)
    release = release or os.path.join(tmp, "release")
    h = script(tmp, "h-%s.sh" % name, HANDLER % {"runs": runs, "release": release})
    return h, runs


def release(tmp):
    open(os.path.join(tmp, "release"), "w").close()


def holder_of(r, q, inst):
    v = r.hget("qw:{%s}:holders" % q, inst)
    return v.decode() if v is not None else None


def holder_pid(info):
    """The pid field of holder info: host, boot id, pid namespace, pid, start."""
    return int(info.split("\t")[3])


def lease_left(r, q, inst):
    s = r.zscore("qw:{%s}:leases" % q, inst)
    return None if s is None else int(s) - redis_ms(r)


# ---- (a) two processes, one name -------------------------------------------

def test_two_processes_one_name_while_redis_is_paused(r, daemon, tmp):
    h, runs = handler(tmp, "twin")
    release(tmp)
    a, b = daemon("a"), daemon("b")
    a.conf({"mail": "handler = %s" % h}, instance="twin")
    b.conf_path = a.conf_path                   # the same config, the same name
    # The handshake calls FCALL qw_version, which a paused Redis holds like
    # a write while the function library is not loaded (a test run alone
    # meets a fresh Redis): a daemon of its own loads it first.
    pre = daemon("pre")
    pre.conf({"other": "handler = %s" % h}, instance="pre")
    pre.start()
    assert pre.stop() == 0
    # Writes (scripts among them) wait while connections and handshakes go
    # through: both processes ask for the lease before either is answered.
    r.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    try:
        a.start(wait_ready=False)
        b.start(wait_ready=False)
        a.wait_log("redis main: connected", 15)
        b.wait_log("redis main: connected", 15)
    finally:
        r.execute_command("CLIENT", "UNPAUSE")

    def one_ready():
        ready = [d for d in (a, b) if any("READY=1" in m for m in d.read_messages())]
        waiting = [d for d in (a, b) if "instance twin is held by a live process" in d.log()]
        return (ready, waiting) if len(ready) + len(waiting) == 2 else None
    ready, waiting = wait_until(one_ready, 15, what="one ready, one waiting")
    assert len(ready) == 1 and len(waiting) == 1, (a.log(), b.log())
    holder, waiter = ready[0], waiting[0]
    assert holder_pid(holder_of(r, "mail", "twin")) == holder.proc.pid
    waiter.wait_message("STATUS=starting: waiting for the lease of instance twin", 15)
    assert "READY=1" not in "".join(waiter.read_messages())

    for i in range(20):
        r.lpush("qw:{mail}:pending", "job%d" % i)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 20, 30, what="20 succeeded")
    assert sorted(read_lines(runs)) == sorted("job%d" % i for i in range(20))  # each once
    assert "recovered" not in stats(r, "mail")
    assert holder_pid(holder_of(r, "mail", "twin")) == holder.proc.pid

    # The holder stops cleanly and gives the lease up: the waiter takes it.
    assert holder.stop() == 0
    waiter.wait_message("READY=1", 15)
    assert holder_pid(holder_of(r, "mail", "twin")) == waiter.proc.pid
    r.lpush("qw:{mail}:pending", "after")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 21, 15, what="21 succeeded")
    assert read_lines(runs).count("after") == 1


# ---- (b) a live lease whose holder cannot be proved gone --------------------

def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def crafted_holder(kind):
    host = socket.gethostname()
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    ns = os.stat("/proc/self/ns/pid").st_ino
    pid = dead_pid()
    if kind == "boot":          # the same host name on another machine, or before a reboot
        return "\t".join([host, "00000000-1111-2222-3333-444444444444", str(ns), str(pid), "1"])
    if kind == "pidns":         # its pid means nothing from here
        return "\t".join([host, boot, str(ns + 1), str(pid), "1"])
    # Holder info of an older qworkerd, without the pid namespace: no proof.
    return "\t".join([host, boot, str(pid), "1"])



@pytest.mark.parametrize("kind", ["boot", "pidns", "old-format"])
def test_live_lease_without_proof_is_not_taken_over(r, daemon, tmp, kind):
    h, runs = handler(tmp, "w")
    release(tmp)
    info = crafted_holder(kind)
    # The holder's lease is live for a while yet, with a job in flight.
    r.zadd("qw:{mail}:leases", {"w-1": redis_ms(r) + 8000})
    r.hset("qw:{mail}:holders", "w-1", info)
    r.hset("qw:{mail}:active:w-1", "0123456789ab-1", "in-flight")
    d = daemon()
    d.conf({"mail": "handler = %s" % h}, workers="lease_timeout = 2s\n", instance="w-1")
    d.start(wait_ready=False)
    d.wait_log("instance w-1 is held by a process that cannot be proved gone", 15)
    d.wait_message("STATUS=starting: waiting for the lease of instance w-1", 15)
    # Not taken over: the crafted holder still holds it, its job untouched.
    assert holder_of(r, "mail", "w-1") == info
    assert r.hget("qw:{mail}:active:w-1", "0123456789ab-1") == b"in-flight"
    assert read_lines(runs) == [] and "recovered" not in stats(r, "mail")
    assert "READY=1" not in "".join(d.read_messages())
    # Once it expires, the lease is taken and the job recovered.
    d.wait_message("READY=1", 30)
    assert lease_left(r, "mail", "w-1") is not None
    assert holder_pid(holder_of(r, "mail", "w-1")) == d.proc.pid
    wait_until(lambda: stats(r, "mail").get("recovered") == 1, 15, what="recovered")
    wait_until(lambda: read_lines(runs) == ["in-flight"], 15, what="the job ran")
    assert d.stop() == 0


# ---- (c) frozen beyond lease_timeout -----------------------------------------

@pytest.mark.parametrize("kind", ["exec", "plugin"])
def test_frozen_process_is_fenced_on_resume(r, daemon, tmp, kind):
    ha, runs_a = handler(tmp, "a", release=os.path.join(tmp, "never"))
    hb, runs_b = handler(tmp, "b")
    release(tmp)                                  # B's runs end at once
    a = daemon("a")
    # The plugin sleeps its payload's milliseconds, or until cancelled.
    job_a = "handler = %s" % ha if kind == "exec" else \
        "plugin = %s" % os.path.join(BUILD, "sleep.so")
    a.conf({"mail": job_a}, workers="lease_timeout = 2s\nkill_grace = 1s\n",
           instance="frozen")
    a.start()
    jobs = ["%d" % (600000 + i) for i in range(3)]
    for j in jobs:
        r.lpush("qw:{mail}:pending", j)
    wait_until(lambda: a.log().count("started, ") == 3 and inflight(r, "mail") == 3,
               what="3 running in A")
    info_a = holder_of(r, "mail", "frozen")
    b = daemon("b")
    b.conf({"mail": "handler = %s" % hb}, workers="lease_timeout = 2s\n", instance="rescuer")
    b.start()
    a.signal(signal.SIGSTOP)
    try:
        # A's lease expires; B recovers A's jobs and runs them.
        wait_until(lambda: stats(r, "mail").get("succeeded") == 3, 30, what="B ran the 3")
        wait_until(lambda: r.zscore("qw:{mail}:leases", "frozen") is None, 15,
                   what="A's lease dropped")
    finally:
        a.signal(signal.SIGCONT)
    a.wait_log("fenced: the lease of instance frozen", 15)
    assert " error: queue mail: fenced" in a.log()   # at err
    a.wait_log("3 running and 0 buffered jobs were taken over", 15)
    assert a.log().count("taken over by another process while it ran here") == 3
    # A takes its lease back and goes on.
    wait_until(lambda: holder_of(r, "mail", "frozen") == info_a and
               (lease_left(r, "mail", "frozen") or 0) > 0, 15, what="A's lease again")
    a.wait_log("no result written, another process owns the job", 15)
    wait_until(lambda: a.log().count("no result written, another process owns") == 3, 15,
               what="A's 3 handlers ended")
    # Each job ended once: B's success; nothing from A.
    st = stats(r, "mail")
    assert st.get("succeeded") == 3 and st.get("recovered") == 3, st
    for k in ("failed", "timed_out", "requeued", "retried", "dead"):
        assert k not in st, st
    assert sorted(read_lines(runs_b)) == jobs
    assert r.llen("qw:{mail}:pending") == 0 and r.llen("qw:{mail}:dead") == 0
    assert r.zcard("qw:{mail}:scheduled") == 0 and inflight(r, "mail") == 0
    # A still works: a new job runs once, in either instance.
    open(os.path.join(tmp, "never"), "w").close()
    r.lpush("qw:{mail}:pending", "1")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 4, 15, what="4 succeeded")
    assert (read_lines(runs_a) + read_lines(runs_b)).count("1") <= 1
    assert a.stop() == 0 and b.stop() == 0


# ---- (d) a Redis restart longer than lease_timeout ---------------------------

def test_redis_restart_longer_than_lease_recovers_nothing(daemon, tmp):
    srv = RedisServer(os.path.join(tmp, "r"))
    os.makedirs(srv.dir)
    persist = ("--appendonly", "yes", "--appendfsync", "always")
    srv.start(*persist)
    c = srv.client()
    ha, runs_a = handler(tmp, "a")
    hb, runs_b = handler(tmp, "b")
    ds = []
    for name, h in (("a", ha), ("b", hb)):
        d = daemon(name)
        d.redis_sock = srv.sock
        # A lease longer than the reconnect backoff's steps: both instances
        # reconnect within lease_timeout of each other, jitter or not.
        d.conf({"mail": "handler = %s" % h}, workers="concurrency = 2\nlease_timeout = 5s\n",
               instance="inst-" + name)
        d.start()
        ds.append(d)
    for i in range(4):
        c.lpush("qw:{mail}:pending", "job%d" % i)
    wait_until(lambda: len(read_lines(runs_a)) == 2 and len(read_lines(runs_b)) == 2,
               what="2 running in each")
    last = max(int(s) for _, s in c.zrange("qw:{mail}:leases", 0, -1, withscores=True))
    srv.stop()
    # Down until both leases have expired (Redis's clock is the wall clock).
    wait_until(lambda: time.time() * 1000 > last + 300, 20, what="the leases expired")
    srv.start(*persist)
    c = srv.client()
    back = redis_ms(c)
    for d in ds:
        wait_until(lambda: d.log().count("redis main: connected") >= 2, 30, what="reconnected")
    # Both take their leases back; then give a would-be reaper its chance:
    # lease_timeout plus a tick and more.
    wait_until(lambda: all((lease_left(c, "mail", "inst-" + n) or 0) > 0 for n in "ab"),
               15, what="both leases live again")
    wait_until(lambda: redis_ms(c) > back + 7000, 15, what="7s after the restart")
    assert "recovered" not in stats(c, "mail")
    release(tmp)
    wait_until(lambda: stats(c, "mail").get("succeeded") == 4, 30, what="4 succeeded")
    st = stats(c, "mail")
    assert "recovered" not in st and "failed" not in st, st
    assert sorted(read_lines(runs_a) + read_lines(runs_b)) == ["job%d" % i for i in range(4)]
    assert c.llen("qw:{mail}:pending") == 0 and inflight(c, "mail") == 0
    for d in ds:
        assert "recovering its jobs" not in d.log()
        assert d.stop() == 0
    srv.stop()


# ---- (e) renewing the lease while Redis is out of memory ----------------------

def test_lease_renewed_under_oom(daemon, tmp):
    srv = RedisServer(os.path.join(tmp, "r"))
    os.makedirs(srv.dir)
    srv.start()
    c = srv.client()
    h, runs = handler(tmp, "o")
    release(tmp)
    d = daemon()
    d.redis_sock = srv.sock
    d.conf({"mail": "handler = %s" % h}, workers="lease_timeout = 2s\n", instance="oom-1")
    d.start()
    for i in range(50):
        c.set("filler:%d" % i, "x" * 100000)
    c.config_set("maxmemory-policy", "noeviction")
    c.config_set("maxmemory", str(int(c.info("memory")["used_memory"]) // 2))
    try:
        with pytest.raises(redislib.exceptions.ResponseError, match="OOM"):
            c.set("probe", "x")
        t0 = redis_ms(c)
        # The lease outlives its first term: renewed while Redis refuses writes.
        wait_until(lambda: redis_ms(c) > t0 + 3000, 15, what="3s of OOM")
        left = lease_left(c, "mail", "oom-1")
        assert left is not None and left > 0, d.log()
        assert "renewing the lease failed" not in d.log()
        assert "fenced" not in d.log()
    finally:
        c.config_set("maxmemory", "0")
    assert d.stop() == 0
    srv.stop()


# ---- a fenced process that stops leaves the new holder's lease alone ----------

def test_fenced_process_stopping_leaves_the_new_holders_lease(r, daemon, tmp):
    h, runs = handler(tmp, "s")
    release(tmp)
    a, b = daemon("a"), daemon("b")
    a.conf({"mail": "handler = %s" % h}, workers="lease_timeout = 2s\n", instance="twin")
    b.conf_path = a.conf_path
    a.start()
    b.start(wait_ready=False)
    b.wait_log("waiting for its lease", 15)
    a.signal(signal.SIGSTOP)
    try:
        b.wait_message("READY=1", 30)             # A's lease expired: B holds the name
    finally:
        # A resumes with a SIGTERM waiting: it may drain and release before
        # any renewal tells it that it was fenced.
        a.signal(signal.SIGTERM)
        a.signal(signal.SIGCONT)
    assert a.wait() == 0
    assert holder_pid(holder_of(r, "mail", "twin")) == b.proc.pid
    assert (lease_left(r, "mail", "twin") or 0) > 0
    r.lpush("qw:{mail}:pending", "after")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, 15, what="B runs a job")
    assert read_lines(runs) == ["after"]
