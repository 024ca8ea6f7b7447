"""prefetch = auto, the default (qworkerd.conf(5)): short jobs are taken
ahead of free workers, long jobs are not, so that another instance gets them.

Nothing here is timed: each test waits for what Redis and the daemon show."""
import os
import socket
import subprocess
import urllib.request

import pytest

from conftest import TOP, free_port, inflight, script, stats, wait_until


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as resp:
        body = resp.read().decode()
    return dict(l.rsplit(" ", 1) for l in body.splitlines() if l and not l.startswith("#"))


def gate_plugin(tmp, gate):
    """A no-op plugin whose jobs wait while the file GATE exists."""
    src = os.path.join(tmp, "gate.c")
    out = os.path.join(tmp, "gate.so")
    with open(src, "w") as f:
        f.write("""#include <unistd.h>
#include <qworkerd/plugin.h>
int qw_plugin_abi(void) { return QW_PLUGIN_ABI_VERSION; }
int qw_plugin_init(const struct qw_plugin_api *a, const char *q, void **s)
{ (void)q; *s = (void *)a; return 0; }
int qw_plugin_handle(void *s, struct qw_plugin_job *job)
{
	const struct qw_plugin_api *a = s;
	while (access("%s", F_OK) == 0)
		if (a->wait(job, 10))
			return QW_PLUGIN_FAIL;
	return QW_PLUGIN_OK;
}
void qw_plugin_fini(void *s) { (void)s; }
""" % gate)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", out, src, "-I", os.path.join(TOP, "src")],
                   check=True)
    return out


@pytest.mark.parametrize("prefetch", [None, "0"])
def test_short_jobs_are_taken_ahead(r, daemon, tmp, prefetch):
    """A drain of no-op jobs: by default qworkerd holds more jobs than it has
    workers. Closing the gate stops every worker on a job that cannot end;
    once no result is left unsaved, the active hash holds exactly the
    running jobs plus those taken ahead."""
    n, conc, port = 30000, 4, free_port()
    gate = os.path.join(tmp, "gate")
    d = daemon()
    d.conf({"t": "plugin = %s\n%s" % (gate_plugin(tmp, gate),
                                      "" if prefetch is None else "prefetch = %s" % prefetch)},
           workers="concurrency = %d\nmetrics_listen = 127.0.0.1:%d\n" % (conc, port))
    p = r.pipeline(transaction=False)
    for i in range(0, n, 1000):
        p.lpush("qw:{t}:pending", *["j%d" % j for j in range(i, i + 1000)])
    p.execute()
    d.start()
    wait_until(lambda: stats(r, "t").get("succeeded", 0) >= 1000, 60, what="1000 jobs done")
    open(gate, "w").close()

    def settled():
        m = metrics(port)
        return m['qworkerd_queue_running{queue="t"}'] == str(conc) and \
            m["qworkerd_results_unsaved"] == "0"
    wait_until(settled, 30, what="every worker waiting at the gate, every result saved")
    held = r.hlen("qw:{t}:active:test-1")
    assert r.llen("qw:{t}:pending") > 0, "the queue ran dry: nothing left to take ahead"
    if prefetch is None:
        assert held > conc, "only %d jobs held with %d workers: none taken ahead" % (held, conc)
    else:
        assert held == conc
    os.unlink(gate)
    wait_until(lambda: stats(r, "t").get("succeeded", 0) == n, 120, what="the drain")
    assert inflight(r, "t") == 0 and r.llen("qw:{t}:pending") == 0
    assert d.stop() == 0


def test_long_jobs_are_left_for_another_instance(r, daemon, tmp):
    """Two instances with 2 workers each, one queue of jobs that run until
    the test lets each go (at least 0.3 s). Neither instance ever holds more
    unfinished jobs than it has workers, so both run jobs from the start."""
    conc, jobs = 2, ["j%d" % i for i in range(12)]
    h = script(tmp, "h.sh", """\
        p=$(cat)
        : > "%(d)s/started-$p"
        sleep 0.3
        while [ ! -e "%(d)s/go-$p" ]; do sleep 0.02; done
        : > "%(d)s/done-$p"
        """ % {"d": tmp})
    r.lpush("qw:{t}:pending", *jobs)
    ds = {}
    for name in ("one", "two"):
        ds[name] = daemon(name)
        ds[name].conf({"t": "handler = %s" % h}, workers="concurrency = %d\n" % conc,
                      instance=name)
        ds[name].start()
    ran = {name: set() for name in ds}

    def mark(what, job):
        return os.path.exists(os.path.join(tmp, "%s-%s" % (what, job)))

    def check():
        """What each instance holds: its active hash, less the jobs whose
        handler has ended (their results may not be written yet). A job
        counted here had not ended when the hash was read."""
        held = {}
        for name in ds:
            held[name] = [v.decode() for v in r.hvals("qw:{t}:active:%s" % name)]
            held[name] = [j for j in held[name] if not mark("done", j)]
            assert len(held[name]) <= conc, \
                "%s holds %d unfinished jobs with %d workers: %s" % (name, len(held[name]), conc,
                                                                     held[name])
            ran[name].update(held[name])
        return held

    wait_until(lambda: all(len(v) == conc and all(mark("started", j) for j in v)
                           for v in check().values()),
               30, what="both instances running %d jobs each" % conc)
    released = set()
    while len(released) < len(jobs):
        go = [j for j in jobs if mark("started", j) and j not in released]
        assert go, "no job started"
        for j in go:
            open(os.path.join(tmp, "go-%s" % j), "w").close()
        released.update(go)

        def next_round():
            check()
            if not all(mark("done", j) for j in released):
                return False
            left = len(jobs) - len(released)
            running = sum(1 for j in jobs if mark("started", j) and j not in released)
            return running == min(left, 2 * conc)
        wait_until(next_round, 30, what="the released jobs done and the next ones running")
    wait_until(lambda: stats(r, "t").get("succeeded") == len(jobs), 30, what="all jobs done")
    check()
    assert ran["one"] and ran["two"] and ran["one"] | ran["two"] == set(jobs)
    assert not ran["one"] & ran["two"]
    for d in ds.values():
        assert d.stop() == 0
