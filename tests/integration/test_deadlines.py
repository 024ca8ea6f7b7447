"""Job deadlines with one timer per queue (run.c): jobs of one queue with
different timeouts (the envelope's "timeout") each time out at their own,
whichever order they start and end in; the one whose deadline comes first
ending early leaves the others' deadlines armed; a SIGHUP reload keeps
them; a job being cancelled (CANCELLING) when the timer passes its
deadline changes nothing for the others. For exec, plugin and persistent
worker queues.

Nothing here is timed: each step waits for what Redis and the daemon show;
a timeout that never fired shows as a wait that fails."""
import json
import os
import signal
import sys

from conftest import inflight, stats, wait_until
from test_cancel import dead_jobs, field_of
from test_plugins import plugin
from test_worker import PYLIB, LIB_WORKER, queue_conf, write

EXEC = """#!/bin/sh
p=$(cat)
[ "$p" = quick ] && exit 0
if [ "$p" = ignore ]; then
    trap 'echo "$QW_JOB_ID" >> %s/term' TERM
fi
echo "$QW_JOB_ID" >> %s/started
while :; do sleep 1; done
"""


def env(payload, jid, timeout):
    return json.dumps({"payload": payload, "id": jid, "timeout": timeout})


def started(tmp):
    path = os.path.join(tmp, "started")
    return open(path).read().split() if os.path.exists(path) else []


def timed_out(dead, jid, secs):
    return jid in dead and dead[jid]["error"] == "timed out after %ss" % secs


def reload(d):
    n = d.log().count("reloaded")
    d.signal(signal.SIGHUP)
    wait_until(lambda: d.log().count("reloaded") > n, 15, what="reloaded")


def earlier_deadline_moves_the_timer(r, d, q, payload):
    """A job with a deadline 10 minutes away runs; one started after it
    with a deadline 0.5 s away times out while the first still runs (the
    timer was armed for the far one: it must move), then an operator
    cancels the first."""
    r.lpush("qw:{%s}:pending" % q, env(payload, "far", 600))
    d.wait_log("job %s/far: started" % q, 30)
    r.lpush("qw:{%s}:pending" % q, env(payload, "near", 0.5))
    wait_until(lambda: timed_out(dead_jobs(r, q), "near", "0.5"), 60, what="near timed out")
    assert "far" not in dead_jobs(r, q)
    r.hset("qw:{%s}:cancel" % q, field_of(r, q, "far"), "done")
    wait_until(lambda: "far" in dead_jobs(r, q), 30, what="far cancelled")
    assert dead_jobs(r, q)["far"]["error"] == "cancelled: done"


def test_exec_jobs_of_one_queue_time_out_each_at_its_own(r, daemon, tmp):
    h = os.path.join(tmp, "h.sh")
    with open(h, "w") as f:
        f.write(EXEC % (tmp, tmp))
    os.chmod(h, 0o755)
    d = daemon()
    d.conf({"m": "handler = %s\ntimeout = 1h\nmax_attempts = 1" % h},
           workers="concurrency = 4\nkill_grace = 30s\n")
    d.start()
    # The earliest deadline (0.5 s) ends first, at once; the later ones
    # must still fire, the nearer one first.
    r.lpush("qw:{m}:pending", env("quick", "q", 0.5), env("sleep", "long", 3),
            env("sleep", "short", 1.5))
    wait_until(lambda: timed_out(dead_jobs(r, "m"), "short", "1.5"), 30, what="short timed out")
    wait_until(lambda: timed_out(dead_jobs(r, "m"), "long", "3"), 30, what="long timed out")
    assert stats(r, "m").get("succeeded") == 1
    # A job cancelled by an operator that ignores SIGTERM stays CANCELLING
    # past its own deadline (kill_grace 30 s); a job that started after it
    # with a later deadline still times out.
    r.lpush("qw:{m}:pending", env("ignore", "ign", 1))
    wait_until(lambda: "ign" in started(tmp), 30, what="ign started")
    r.hset("qw:{m}:cancel", field_of(r, "m", "ign"), "stop")
    wait_until(lambda: os.path.exists(os.path.join(tmp, "term")), 30, what="ign got SIGTERM")
    r.lpush("qw:{m}:pending", env("sleep", "after", 2))
    wait_until(lambda: timed_out(dead_jobs(r, "m"), "after", "2"), 30, what="after timed out")
    # After a reload, a job started with a deadline later than the armed
    # one, then one with an earlier one: both fire.
    reload(d)
    earlier_deadline_moves_the_timer(r, d, "m", "sleep")
    assert d.stop() == 0
    assert dead_jobs(r, "m")["ign"]["error"] == "cancelled: stop"
    assert inflight(r, "m") == 0


def test_plugin_jobs_of_one_queue_time_out_each_at_its_own(r, daemon, tmp):
    d = daemon()
    d.conf({"s": "plugin = %s\ntimeout = 1h\nmax_attempts = 1" % plugin("sleep")},
           workers="concurrency = 4\n")
    d.start()
    r.lpush("qw:{s}:pending", env("10", "q", 0.3), env("600000", "long", 2),
            env("600000", "short", 1))
    wait_until(lambda: timed_out(dead_jobs(r, "s"), "short", "1"), 30, what="short timed out")
    wait_until(lambda: timed_out(dead_jobs(r, "s"), "long", "2"), 30, what="long timed out")
    assert stats(r, "s").get("succeeded") == 1
    reload(d)
    # Many short jobs on runs kept from the ones before, each arming the
    # timer an hour away (the queue's timeout): the next ones must move it.
    r.lpush("qw:{s}:pending", *[json.dumps({"payload": "1", "id": "n%d" % i})
                                for i in range(50)])
    wait_until(lambda: stats(r, "s").get("succeeded") == 51, 30, what="51 succeeded")
    earlier_deadline_moves_the_timer(r, d, "s", "600000")
    assert d.stop() == 0
    assert inflight(r, "s") == 0


def test_worker_jobs_of_one_queue_time_out_each_at_its_own(r, daemon, tmp):
    path = write(tmp, "lib_worker.py", LIB_WORKER)
    save = os.path.join(tmp, "save")
    os.makedirs(save, exist_ok=True)
    d = daemon()
    d.conf({"w": queue_conf("%s %s" % (sys.executable, path),
                            "timeout = 1h\nmax_attempts = 1\nworker_inflight = 4")},
           workers="concurrency = 4\nkill_grace = 5s\n")
    d.start(env={"PYTHONPATH": PYLIB, "EVENTS": os.path.join(tmp, "events"), "SAVE": save})
    ok, wait = json.dumps({"do": "ok"}), json.dumps({"do": "wait"})
    r.lpush("qw:{w}:pending", env(ok, "q", 0.5), env(wait, "long", 3), env(wait, "short", 1.5))
    wait_until(lambda: timed_out(dead_jobs(r, "w"), "short", "1.5"), 30, what="short timed out")
    wait_until(lambda: timed_out(dead_jobs(r, "w"), "long", "3"), 30, what="long timed out")
    assert stats(r, "w").get("succeeded") == 1
    reload(d)
    earlier_deadline_moves_the_timer(r, d, "w", wait)
    assert d.stop() == 0
    assert inflight(r, "w") == 0


def test_plugin_left_after_kill_grace_while_its_queue_runs_on(r, daemon, tmp):
    """A plugin that ignores its timeout is settled without it after
    kill_grace and returns later; meanwhile the queue's other jobs run on
    the runs it keeps, and time out at their own deadlines."""
    from test_plugins import ABI, INIT, FINI, build_plugin
    stubborn = build_plugin(tmp, "late", ABI % "QW_PLUGIN_ABI_VERSION" + INIT + FINI + """
#include <unistd.h>
int qw_plugin_handle(void *s, struct qw_plugin_job *j)
{
	const struct qw_plugin_api *a = s;

	if (j->payload_len > 0 && ((const char *)j->payload)[0] == 'L')
		usleep(1500000);	/* ignores its token */
	if (j->payload_len > 0 && ((const char *)j->payload)[0] == 'W')
		while (!a->wait(j, 1000))
			;
	return QW_PLUGIN_OK;
}
""")
    d = daemon()
    d.conf({"p": "plugin = %s\ntimeout = 1h\nmax_attempts = 1" % stubborn},
           workers="concurrency = 4\nkill_grace = 200ms\n")
    d.start()
    r.lpush("qw:{p}:pending", *[env("L", "late%d" % i, 0.2) for i in range(3)])
    wait_until(lambda: sum(timed_out(dead_jobs(r, "p"), "late%d" % i, "0.2") for i in range(3))
               == 3, 30, what="3 late ones settled")
    r.lpush("qw:{p}:pending", *[env("x", "n%d" % i, 5) for i in range(100)])
    r.lpush("qw:{p}:pending", env("W", "w1", 0.5))
    wait_until(lambda: stats(r, "p").get("succeeded") == 100, 30, what="100 succeeded")
    wait_until(lambda: timed_out(dead_jobs(r, "p"), "w1", "0.5"), 30, what="w1 timed out")
    wait_until(lambda: d.log().count("did not return within kill_grace") >= 3, 30,
               what="3 left")
    assert d.stop() == 0
    assert inflight(r, "p") == 0
