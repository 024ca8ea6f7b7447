"""Cancelling a running job (qworkerd(8), CANCELLING A JOB): HSET
PREFIX:{Q}:cancel FIELD TEXT, FIELD being the job's field in its instance's
active hash, reaches the instance that runs it; the job's token fires with
the reason `cancelled` (exec handlers: SIGTERM to the process group, then
SIGKILL after kill_grace; plugins: the token), the job goes to dead with
error `cancelled: TEXT`, counters `cancelled` and `dead`, and the request
goes with the result. The daemon keeps running other jobs meanwhile.

Nothing here is timed: each step waits for what Redis and the daemon show."""
import json
import os
import subprocess

import pytest

from conftest import BUILD, TOP, WRAPPER, inflight, read_lines, stats, wait_until

HANDLER = """#!/usr/bin/python3
import os, signal, subprocess, sys, time
marks = %r
payload = sys.stdin.read()
if payload == "quick":
    sys.exit(0)
child = subprocess.Popen(["sleep", "1000"])  # in the handler's process group
if payload == "ignore":
    def term(sig, frame):
        with open(os.path.join(marks, "term"), "a") as f:
            f.write("%%s\\n" %% os.environ["QW_JOB_ID"])
    signal.signal(signal.SIGTERM, term)
with open(os.path.join(marks, os.environ["QW_JOB_ID"] + ".pids"), "w") as f:
    f.write("%%d %%d\\n" %% (os.getpid(), child.pid))
while True:
    time.sleep(1)
"""


def handler(tmp):
    marks = os.path.join(tmp, "marks")
    os.makedirs(marks)
    path = os.path.join(tmp, "h.py")
    with open(path, "w") as f:
        f.write(HANDLER % marks)
    os.chmod(path, 0o755)
    return path, marks


def field_of(r, q, job_id, instance="test-1"):
    """The job's field in the instance's active hash, or None."""
    for f, v in r.hgetall("qw:{%s}:active:%s" % (q, instance)).items():
        try:
            if json.loads(v).get("id") == job_id:
                return f.decode()
        except ValueError:
            pass
    return None


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0): its state says it is gone.
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def dead_jobs(r, q):
    return {j["id"]: j for j in map(json.loads, r.lrange("qw:{%s}:dead" % q, 0, -1))}


def test_cancel_running_exec_jobs(r, daemon, tmp):
    h, marks = handler(tmp)
    d = daemon()
    d.conf({"c": "handler = %s\ntimeout = 5m\nmax_attempts = 5\n" % h,
            "o": "handler = /bin/true\n"},
           workers="concurrency = 4\nkill_grace = 1s\n")
    d.start()
    for job_id, payload in (("ign", "ignore"), ("obey", "obey")):
        r.lpush("qw:{c}:pending", json.dumps({"payload": payload, "id": job_id}))
    pids = {}
    for job_id in ("ign", "obey"):
        path = os.path.join(marks, job_id + ".pids")
        wait_until(lambda: read_lines(path), what="job %s running" % job_id)
        pids[job_id] = [int(x) for x in read_lines(path)[0].split()]

    r.hset("qw:{c}:cancel", field_of(r, "c", "ign"), "operator said so")
    r.hset("qw:{c}:cancel", field_of(r, "c", "obey"), "")
    # Other jobs run meanwhile, of this queue and of another.
    r.lpush("qw:{c}:pending", json.dumps({"payload": "quick", "id": "quick"}))
    r.lpush("qw:{o}:pending", *["o%d" % i for i in range(20)])

    wait_until(lambda: len(dead_jobs(r, "c")) == 2, 30, what="both jobs in dead")
    dead = dead_jobs(r, "c")
    assert dead["ign"]["error"] == "cancelled: operator said so"
    assert dead["obey"]["error"] == "cancelled"
    assert dead["ign"]["attempt"] == 1 and dead["obey"]["attempt"] == 1
    # The one that ignored SIGTERM saw it, then SIGKILL after kill_grace; the
    # process groups are gone, children included.
    assert read_lines(os.path.join(marks, "term")) == ["ign"]
    assert "job c/ign: still running after SIGTERM, sending SIGKILL" in d.log()
    for job_id in ("ign", "obey"):
        for pid in pids[job_id]:
            wait_until(lambda: gone(pid), what="pid %d of job %s gone" % (pid, job_id))
    wait_until(lambda: stats(r, "o").get("succeeded") == 20, what="queue o runs")
    wait_until(lambda: stats(r, "c").get("succeeded") == 1, what="the quick job of c")
    st = stats(r, "c")
    assert st.get("cancelled") == 2 and st.get("dead") == 2 and "retried" not in st
    assert not r.exists("qw:{c}:cancel"), r.hgetall("qw:{c}:cancel")
    assert inflight(r, "c") == 0 and r.llen("qw:{c}:pending") == 0
    assert "job c/ign: cancelled: operator said so; stopping its handler" in d.log()
    assert d.stop() == 0


def test_cancel_plugin_jobs(r, daemon, tmp):
    """The sleep plugin sees the reason `cancelled` and returns at once; a
    plugin built for ABI 1 still loads and sees its one ending reason,
    QW_PLUGIN_CANCEL_TIMEOUT, while its job goes to dead as cancelled."""
    src, old = os.path.join(tmp, "abi1.c"), os.path.join(tmp, "abi1.so")
    with open(src, "w") as f:
        f.write("""#include <stdio.h>
#include <qworkerd/plugin.h>
int qw_plugin_abi(void) { return 1; }
int qw_plugin_init(const struct qw_plugin_api *a, const char *q, void **s)
{ (void)q; *s = (void *)a; return a->abi_version == 1 ? 0 : -1; }
int qw_plugin_handle(void *s, struct qw_plugin_job *job)
{
	const struct qw_plugin_api *a = s;
	char msg[64];
	a->wait(job, -1);
	snprintf(msg, sizeof(msg), "abi1 plugin saw reason %d", (int)a->reason(job));
	a->log(job, 5, msg);
	return QW_PLUGIN_FAIL;
}
void qw_plugin_fini(void *s) { (void)s; }
""")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", old, src, "-I", os.path.join(TOP, "src")],
                   check=True)
    d = daemon()
    d.conf({"s": "plugin = %s\ntimeout = 5m\n" % os.path.join(BUILD, "sleep.so"),
            "old": "plugin = %s\ntimeout = 5m\n" % old, "o": "handler = /bin/true\n"},
           workers="kill_grace = 30s\n")
    d.start()
    r.lpush("qw:{s}:pending", json.dumps({"payload": "600000", "id": "long"}))
    r.lpush("qw:{old}:pending", json.dumps({"payload": "x", "id": "legacy"}))
    d.wait_log("job s/long: started")
    d.wait_log("job old/legacy: started")
    r.hset("qw:{s}:cancel", field_of(r, "s", "long"), "no longer needed")
    r.hset("qw:{old}:cancel", field_of(r, "old", "legacy"), "")
    r.lpush("qw:{s}:pending", "1")
    r.lpush("qw:{o}:pending", *["o%d" % i for i in range(10)])
    wait_until(lambda: len(dead_jobs(r, "s")) == 1 and len(dead_jobs(r, "old")) == 1, 30,
               what="both plugin jobs in dead")
    assert dead_jobs(r, "s")["long"]["error"] == "cancelled: no longer needed"
    assert dead_jobs(r, "old")["legacy"]["error"] == "cancelled"
    assert "cancelled after part of 600000 ms (cancelled)" in d.log()
    assert "abi1 plugin saw reason 1" in d.log()
    # Returned of itself, well within kill_grace: not given up on.
    assert "did not return within kill_grace" not in d.log()
    wait_until(lambda: stats(r, "s").get("succeeded") == 1, what="the next job of s")
    wait_until(lambda: stats(r, "o").get("succeeded") == 10, what="queue o runs")
    for q in ("s", "old"):
        st = stats(r, q)
        assert st.get("cancelled") == 1 and st.get("dead") == 1, (q, st)
        assert inflight(r, q) == 0
    assert not r.exists("qw:{s}:cancel") and not r.exists("qw:{old}:cancel")
    assert d.stop() == 0


def test_cancel_job_taken_ahead_and_stale_requests(r, daemon, tmp):
    """A job taken ahead of a free worker and cancelled before it starts goes
    to dead at once, its attempt unchanged and never run. A request for a
    field of this process's run that no job holds is deleted."""
    h, marks = handler(tmp)
    d = daemon()
    d.conf({"c": "handler = %s\nconcurrency = 1\nprefetch = 2\ntimeout = 5m\n" % h})
    r.lpush("qw:{c}:pending", *[json.dumps({"payload": "obey", "id": i})
                                for i in ("first", "second", "third")])
    d.start()
    wait_until(lambda: read_lines(os.path.join(marks, "first.pids")), what="first running")
    wait_until(lambda: r.hlen("qw:{c}:active:test-1") == 3, what="two jobs taken ahead")
    field = field_of(r, "c", "second")
    run = field.rsplit("-", 1)[0]
    stale = run + "-999999"
    r.hset("qw:{c}:cancel", mapping={field: "not this one", stale: "x"})
    wait_until(lambda: "second" in dead_jobs(r, "c"), what="the job taken ahead in dead")
    job = dead_jobs(r, "c")["second"]
    assert job["error"] == "cancelled: not this one" and job.get("attempt", 0) == 0
    assert "job c/second: cancelled: not this one before it started, moved to dead" in d.log()
    wait_until(lambda: not r.hexists("qw:{c}:cancel", stale), what="the stale request deleted")
    # The others run on: cancel the first, the third starts and is cancelled too.
    r.hset("qw:{c}:cancel", field_of(r, "c", "first"), "")
    wait_until(lambda: read_lines(os.path.join(marks, "third.pids")), what="third running")
    r.hset("qw:{c}:cancel", field_of(r, "c", "third"), b"\xff\x00 not text")
    wait_until(lambda: len(dead_jobs(r, "c")) == 3, what="all three in dead")
    assert dead_jobs(r, "c")["third"]["error"] == \
        "cancelled: (the reason given is not UTF-8 text)"
    assert dead_jobs(r, "c")["first"]["error"] == "cancelled"
    assert not os.path.exists(os.path.join(marks, "second.pids"))
    st = stats(r, "c")
    assert st.get("cancelled") == 3 and st.get("dead") == 3
    assert inflight(r, "c") == 0
    assert d.stop() == 0


def stop_pids(pids):
    """Ends handler processes a SIGKILLed daemon left behind, by their ids."""
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def test_cancel_survives_the_death_of_the_instance(r, daemon, tmp):
    """A request for a job whose instance died is carried out by the
    recovery: the job goes to dead as cancelled (one of a running job with
    attempts left, one taken ahead and never started) instead of back on
    pending to run again; the job without a request is recovered as usual.
    Its unique_for hold ends with it."""
    h, marks = handler(tmp)
    d = daemon("a")
    d.conf({"c": "handler = %s\nconcurrency = 2\nprefetch = 1\ntimeout = 5m\n"
                 "max_attempts = 5\n" % h}, workers="lease_timeout = 60s\n")
    d.start()
    r.execute_command("FCALL", "qw_enqueue", 1, "qw:{c}:pending", "obey", "id", "ran",
                      "unique_for", 600000)
    for job_id in ("kept", "ahead"):
        r.lpush("qw:{c}:pending", json.dumps({"payload": "obey", "id": job_id}))
    pids = []
    for job_id in ("ran", "kept"):
        path = os.path.join(marks, job_id + ".pids")
        wait_until(lambda: read_lines(path), what="job %s running" % job_id)
        pids += [int(x) for x in read_lines(path)[0].split()]
    wait_until(lambda: field_of(r, "c", "ahead"), what="a job taken ahead")
    first_kept = read_lines(os.path.join(marks, "kept.pids"))
    d.proc.kill()
    d.wait()
    stop_pids(pids)
    for job_id in ("ran", "ahead"):
        r.hset("qw:{c}:cancel", field_of(r, "c", job_id), "stop " + job_id)
    assert r.hexists("qw:{c}:unique", "ran")
    d2 = daemon("b")
    d2.conf_path = d.conf_path          # same config, same identity: recovers at once
    d2.start()
    wait_until(lambda: len(dead_jobs(r, "c")) == 2, 30, what="both requested jobs in dead")
    dead = dead_jobs(r, "c")
    assert dead["ran"]["error"] == "cancelled: stop ran" and dead["ran"]["attempt"] == 1
    assert dead["ahead"]["error"] == "cancelled: stop ahead"
    kept = os.path.join(marks, "kept.pids")
    wait_until(lambda: read_lines(kept) and read_lines(kept) != first_kept,
               what="the job without a request runs again")
    assert not r.exists("qw:{c}:cancel"), r.hgetall("qw:{c}:cancel")
    assert not r.hexists("qw:{c}:unique", "ran")
    st = stats(r, "c")
    assert st.get("cancelled") == 2 and st.get("dead") == 2, st
    assert r.llen("qw:{c}:pending") == 0
    assert "job c/ran: cancelled: stop ran; moved to dead instead of back on pending" in d2.log()
    # Neither requested job ran again.
    pids = [int(x) for x in read_lines(kept)[0].split()]
    assert not os.path.exists(os.path.join(marks, "ahead.pids"))
    r.hset("qw:{c}:cancel", field_of(r, "c", "kept"), "")
    wait_until(lambda: len(dead_jobs(r, "c")) == 3, what="the third one cancelled")
    assert d2.stop() == 0
    stop_pids(pids)


ASKER = """#!/usr/bin/python3
import json, os, signal, sys, time
import redis
r = redis.Redis(unix_socket_path=%r)
q, me = os.environ["QW_QUEUE"], os.environ["QW_JOB_ID"]
marks = %r


def ask(why):
    # The request comes just before the handler ends: the instance has had
    # no lease tick to read it.
    for f, v in r.hgetall("qw:{%%s}:active:test-1" %% q).items():
        if json.loads(v).get("id") == me:
            r.hset("qw:{%%s}:cancel" %% q, f, why)
    sys.exit(1)


payload = sys.stdin.read()
if payload == "fail":
    ask("asked as it failed")
signal.signal(signal.SIGTERM, lambda s, f: ask("asked as it was interrupted"))
open(os.path.join(marks, me), "w").close()
while True:
    time.sleep(1)
"""


def test_cancel_asked_as_the_job_fails_or_is_interrupted(r, daemon, tmp):
    """A request that comes in the half second before the instance reads it,
    while the job fails (it would be retried) or is interrupted by the
    shutdown (it would go back on pending), wins: the job goes to dead as
    cancelled and the request is deleted in the same step. A job that
    succeeds keeps its success."""
    marks = os.path.join(tmp, "marks")
    os.makedirs(marks)
    h = os.path.join(tmp, "asker.py")
    with open(h, "w") as f:
        f.write(ASKER % (r.connection_pool.connection_kwargs["path"], marks))
    os.chmod(h, 0o755)
    d = daemon()
    d.conf({"c": "handler = %s\nmax_attempts = 5\ntimeout = 5m\n" % h},
           workers="concurrency = 2\nshutdown_timeout = 1s\nkill_grace = 10s\n")
    d.start()
    r.lpush("qw:{c}:pending", json.dumps({"payload": "fail", "id": "failing"}),
            json.dumps({"payload": "wait", "id": "drained"}))
    wait_until(lambda: "failing" in dead_jobs(r, "c"), what="the failing job in dead")
    job = dead_jobs(r, "c")["failing"]
    assert job["error"] == "cancelled: asked as it failed" and job["attempt"] == 1, job
    assert r.zcard("qw:{c}:scheduled") == 0
    assert "job c/failing: cancelled: asked as it failed; moved to dead instead of a retry" \
        in d.log()
    wait_until(lambda: os.path.exists(os.path.join(marks, "drained")), what="a long job running")
    assert d.stop() == 0
    job = dead_jobs(r, "c")["drained"]
    assert job["error"] == "cancelled: asked as it was interrupted", job
    assert r.llen("qw:{c}:pending") == 0
    st = stats(r, "c")
    assert st.get("cancelled") == 2 and st.get("dead") == 2, st
    assert st.get("failed") == 1 and "retried" not in st and "requeued" not in st, st
    assert not r.exists("qw:{c}:cancel"), r.hgetall("qw:{c}:cancel")
    assert inflight(r, "c") == 0


def test_stale_requests_are_deleted_by_any_instance(r, daemon, tmp):
    """A request whose field is in no live instance's active hash (its run
    ended, or never was) is deleted by the next look of any instance, busy
    or idle; a request for a job of another live instance is left to it,
    and the daemon's own jobs run on."""
    # Another live instance, written by hand so that it never acts: its
    # lease, its run and one job in flight.
    r.zadd("qw:{c}:leases", {"ghost": 4102444800000})
    r.hset("qw:{c}:holders", "ghost", "elsewhere\tboot\t1\t1\t1")
    r.hset("qw:{c}:started:ghost", "feedfacecafe-", 7)
    r.hset("qw:{c}:active:ghost", "feedfacecafe-7", json.dumps({"payload": "x", "id": "g"}))
    stale = {"feedfacecafe-8": "not in its active hash", "0123456789ab-1": "no such run",
             "0123456789ab-2": "", "nonsense": "not a field at all"}
    r.hset("qw:{c}:cancel", mapping=dict(stale, **{"feedfacecafe-7": "the ghost's"}))
    d = daemon()
    d.conf({"c": "handler = /bin/true\n"})
    d.start()
    # Idle, the instance still looks now and then.
    wait_until(lambda: r.hkeys("qw:{c}:cancel") == [b"feedfacecafe-7"], 30,
               what="the stale requests deleted")
    assert "deleted 4 cancel request(s) for jobs no live instance runs" in d.log()
    # Many more: each look takes a bounded share, busy or not.
    r.hset("qw:{c}:cancel", mapping={"0123456789ab-%d" % i: "" for i in range(3, 2003)})
    r.lpush("qw:{c}:pending", *["j%d" % i for i in range(200)])
    wait_until(lambda: r.hkeys("qw:{c}:cancel") == [b"feedfacecafe-7"], 60,
               what="2000 stale requests deleted")
    wait_until(lambda: stats(r, "c").get("succeeded") == 200, what="the jobs run")
    assert r.hget("qw:{c}:cancel", "feedfacecafe-7") == b"the ghost's"
    assert r.hexists("qw:{c}:active:ghost", "feedfacecafe-7")
    assert d.stop() == 0


NO_THREADS = """#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
/* pthread_create fails while the file $QW_TEST_NO_THREADS exists. */
int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*f)(void *), void *arg)
{
	static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
	const char *stop = getenv("QW_TEST_NO_THREADS");

	if (stop != NULL && access(stop, F_OK) == 0)
		return EAGAIN;
	if (real == NULL)
		real = dlsym(RTLD_NEXT, "pthread_create");
	return real(t, a, f, arg);
}
"""


def test_cancel_plugin_job_waiting_for_a_thread(r, daemon, tmp):
    """A plugin job that waits for a worker thread has not started: cancelled
    there it goes to dead with its attempt unchanged, as a job taken ahead
    does."""
    if WRAPPER:
        pytest.skip("the thread shim is preloaded into the daemon, not into %s" % WRAPPER[0])
    src, shim = os.path.join(tmp, "shim.c"), os.path.join(tmp, "shim.so")
    with open(src, "w") as f:
        f.write(NO_THREADS)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", shim, src, "-ldl"], check=True)
    stop = os.path.join(tmp, "no-threads")
    d = daemon()
    d.conf({"s": "plugin = %s\ntimeout = 5m\n" % os.path.join(BUILD, "sleep.so")},
           workers="concurrency = 2\nkill_grace = 30s\n")
    d.start(env={"LD_PRELOAD": shim, "QW_TEST_NO_THREADS": stop})
    r.lpush("qw:{s}:pending", json.dumps({"payload": "600000", "id": "first"}))
    d.wait_log("job s/first: started")
    open(stop, "w").close()     # no second thread: the next job waits
    r.lpush("qw:{s}:pending", json.dumps({"payload": "600000", "id": "waiting"}))
    d.wait_log("job s/waiting: started")
    r.hset("qw:{s}:cancel", field_of(r, "s", "waiting"), "not needed")
    wait_until(lambda: "waiting" in dead_jobs(r, "s"), what="the waiting job in dead")
    job = dead_jobs(r, "s")["waiting"]
    assert job["error"] == "cancelled: not needed", job
    assert job.get("attempt", 0) == 0, job
    assert "job s/waiting: cancelled: not needed before it started, moved to dead" in d.log()
    st = stats(r, "s")
    assert st.get("cancelled") == 1 and st.get("dead") == 1 and "failed" not in st, st
    r.hset("qw:{s}:cancel", field_of(r, "s", "first"), "")
    wait_until(lambda: "first" in dead_jobs(r, "s"), what="the running job in dead")
    assert dead_jobs(r, "s")["first"]["attempt"] == 1
    os.unlink(stop)
    assert d.stop() == 0
