"""Many instances, one queue, everything that can go wrong (issue 8, done-when 2).

Three daemons share queue `mail` on a Redis with an append-only file. Two of
them are instance `alpha` at one point (the second started from the first's
config file while the first is alive), the third is `beta`. The test throws
SIGKILL, SIGSTOP/SIGCONT beyond lease_timeout, CLIENT KILL, a Redis restart
longer than lease_timeout and SIGTERM at them while they run jobs, some of
which are byte-identical, and then accounts for every job.

Each run of the handler writes a start and an end line with the job's payload
and the pid of the daemon that ran it. A job is delivered when a run ends;
it is lost when it was pushed more often than it was delivered; a second
delivery is a duplicate, and SPEC 4 allows one only when an earlier run of
the job was on a daemon that died (SIGKILL) or was frozen beyond
lease_timeout, or overlapped a Redis outage longer than lease_timeout.
Nothing else may run a job twice: not two processes with one instance name,
not a short disconnect, not identical jobs."""
import json
import os
import signal
import time

from conftest import Daemon, RedisServer, inflight, script, stats, wait_until

LEASE_S = 2
# Identical jobs fail their first run at once, so that their retries reach
# `scheduled` together (where identical members used to merge).
HANDLER = """\
p=$(cat)
echo "start $PPID $p" >> %(runs)s
case "$p" in dup|"charge card 42") [ "$QW_ATTEMPT" = 1 ] && exit 1 ;; esac
sleep 0.$(( $$ %% 3 + 1 ))
echo "end $PPID $p" >> %(runs)s
"""


class Runs:
    def __init__(self, path):
        self.path = path

    def lines(self):
        try:
            with open(self.path) as f:
                return [l.split(" ", 2) for l in f.read().splitlines() if l]
        except FileNotFoundError:
            return []

    def count(self, kind, pid=None):
        return sum(1 for k, p, _ in self.lines() if k == kind and (pid is None or int(p) == pid))


class Chaos:
    """What SPEC 4 excuses: pids killed or frozen beyond lease_timeout, and
    Redis outages longer than it (as line counts of the runs file)."""

    def __init__(self):
        self.excused_pids = set()
        self.outages = []


def push(c, jobs):
    for j in jobs:
        c.lpush("qw:{mail}:pending", j)


def payload_of(elem):
    try:
        env = json.loads(elem)
        if isinstance(env, dict) and "payload" in env:
            return env["payload"]
    except ValueError:
        pass
    return elem


def make_daemon(tmp, name, sock, handler, instance):
    d = Daemon(os.path.join(tmp, name), sock)
    os.makedirs(d.tmp, exist_ok=True)
    d.conf({"mail": "handler = %s\nmax_attempts = 1000\nretry_base = 50ms" % handler},
           workers="concurrency = 4\nlease_timeout = %ds\nshutdown_timeout = 5s\n" % LEASE_S,
           instance=instance)
    return d


def start_when_lease_free(d):
    """Starts D; it may wait for its lease (READY=1 comes once it holds it)."""
    d.start(wait_ready=False)
    return d


def test_chaos_many_instances_lose_nothing(tmp):
    srv = RedisServer(os.path.join(tmp, "r"))
    os.makedirs(srv.dir)
    persist = ("--appendonly", "yes", "--appendfsync", "always")
    srv.start(*persist)
    c = srv.client()
    runs = Runs(os.path.join(tmp, "runs"))
    h = script(tmp, "h.sh", HANDLER % {"runs": runs.path})
    chaos = Chaos()
    daemons = []

    unique = ["job-%d" % i for i in range(240)]
    dups = ["dup"] * 20
    orders = ['{"payload":"charge card 42","id":"order-42"}'] * 8
    first = unique[:120] + dups + orders
    second = unique[120:]
    pushed = first + second
    try:
        a = make_daemon(tmp, "a", srv.sock, h, "alpha")
        b = make_daemon(tmp, "b", srv.sock, h, "beta")
        daemons += [a, b]
        a.start()
        b.start()
        push(c, first)
        wait_until(lambda: runs.count("start", a.proc.pid) >= 4 and
                   runs.count("start", b.proc.pid) >= 4, 30, what="both running jobs")

        # A second process with alpha's config while alpha lives: it must
        # wait for the lease and run nothing as alpha.
        a2 = Daemon(os.path.join(tmp, "a2"), srv.sock)
        os.makedirs(a2.tmp)
        a2.conf_path = a.conf_path
        daemons.append(a2)
        start_when_lease_free(a2)
        a2.wait_log("waiting for its lease", 20)
        assert runs.count("start", a2.proc.pid) == 0

        # SIGKILL alpha mid-job: its successor on this host takes over.
        wait_until(lambda: runs.count("start", a.proc.pid) > runs.count("end", a.proc.pid),
                   20, what="alpha mid-job")
        chaos.excused_pids.add(a.proc.pid)
        a.proc.kill()
        a.proc.wait()
        a2.wait_message("READY=1", 30)

        # Freeze beta beyond lease_timeout while it runs jobs.
        wait_until(lambda: runs.count("start", b.proc.pid) > runs.count("end", b.proc.pid),
                   20, what="beta mid-job")
        chaos.excused_pids.add(b.proc.pid)
        b.signal(signal.SIGSTOP)
        a2.wait_log("the lease of instance beta expired", 30)
        wait_until(lambda: c.hlen("qw:{mail}:active:beta") == 0, 30, what="beta's jobs recovered")
        b.signal(signal.SIGCONT)

        # Every connection of every daemon dropped at once: a short outage.
        c.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

        # Redis away for longer than lease_timeout, with jobs running.
        wait_until(lambda: runs.count("start") > runs.count("end"), 20, what="jobs running")
        srv.stop()
        before = len(runs.lines())
        down = time.monotonic()
        wait_until(lambda: time.monotonic() - down > 2 * LEASE_S, 30, what="outage")
        chaos.outages.append((before, len(runs.lines())))
        srv.start(*persist)
        c = srv.client()
        push(c, second)

        # SIGTERM the new alpha mid-job; beta goes on; a third alpha finishes.
        wait_until(lambda: runs.count("start", a2.proc.pid) > runs.count("end", a2.proc.pid),
                   20, what="alpha2 mid-job")
        assert a2.stop() == 0
        a3 = make_daemon(tmp, "a3", srv.sock, h, "alpha")
        daemons.append(a3)
        a3.start()

        def done():
            left = (c.llen("qw:{mail}:pending") + c.zcard("qw:{mail}:scheduled") +
                    inflight(c, "mail"))
            return left == 0 and runs.count("end") >= len(pushed)
        wait_until(done, 120, what="every job delivered")
        assert a3.stop() == 0
        assert b.stop() == 0
        dead = [payload_of(e.decode()) for e in c.lrange("qw:{mail}:dead", 0, -1)]
        st = stats(c, "mail")
    finally:
        for d in daemons:
            d.kill()
        report = account(runs, pushed, chaos)
        print("chaos: %(pushed)d pushed, %(delivered)d delivered, %(duplicates)d duplicates "
              "(%(excused)d excused by SPEC 4), %(lost)d lost" % report)
        srv.stop()
    assert dead == [] and st.get("dead", 0) == 0, "jobs in dead: %r" % dead
    assert report["lost"] == 0, report
    assert report["unexcused"] == [], report


def account(runs, pushed, chaos):
    """Delivered, duplicates and lost, per payload (identical jobs are counted
    by how often they were pushed)."""
    lines = runs.lines()
    want = {}
    for j in pushed:
        p = payload_of(j)
        want[p] = want.get(p, 0) + 1
    ends, excusable = {}, {}
    for kind, pid, p in lines:
        if kind == "end":
            ends[p] = ends.get(p, 0) + 1
        # A run on a daemon that died or froze may run again (SPEC 4). A
        # handler whose daemon was SIGKILLed between its fork and the
        # shell's start reads its parent as pid 1 (orphaned): only a killed
        # daemon leaves one behind.
        if kind == "start" and (int(pid) in chaos.excused_pids or int(pid) == 1):
            excusable[p] = excusable.get(p, 0) + 1
    for s, e in chaos.outages:
        # So may a run in flight when Redis went away for longer than
        # lease_timeout, or started from a buffer while it was away.
        running = {}
        for kind, _, p in lines[:s]:
            running[p] = running.get(p, 0) + (1 if kind == "start" else -1)
        for kind, _, p in lines[s:e]:
            if kind == "start":
                running[p] = running.get(p, 0) + 1
        for p, n in running.items():
            excusable[p] = excusable.get(p, 0) + max(0, n)
    lost = sum(max(0, n - ends.get(p, 0)) for p, n in want.items())
    strange = sorted(p for p in ends if p not in want)
    assert not strange, "delivered but never pushed: %r" % strange
    dup = {p: ends.get(p, 0) - n for p, n in want.items() if ends.get(p, 0) > n}
    unexcused = sorted(p for p, extra in dup.items() if extra > excusable.get(p, 0))
    return {"pushed": len(pushed), "delivered": sum(ends.values()),
            "duplicates": sum(dup.values()),
            "excused": sum(min(extra, excusable.get(p, 0)) for p, extra in dup.items()),
            "lost": lost, "unexcused": unexcused}
