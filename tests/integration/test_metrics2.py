"""The metric families of SPEC 13 against the jobs actually run (exec
handlers, a persistent worker; retried, dead, timed out, recovered,
cancelled): outcomes, histograms, queue gauges against Redis, counters
across a reload, promtool's verdict on the live output, the Grafana
dashboard's expressions against the families qworkerd exports, and
hundreds of connections to the endpoint."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from conftest import free_port, get, redis_ms, script, stats, wait_until

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARD = os.path.join(SRC, "etc", "qworkerd-grafana.json")
OUTCOMES = ("succeeded", "failed", "retried", "timed_out", "requeued", "recovered", "dead",
            "cancelled")
SPEC_FAMILIES = {
    "qworkerd_jobs_total": "counter", "qworkerd_job_duration_seconds": "histogram",
    "qworkerd_job_wait_seconds": "histogram", "qworkerd_queue_pending": "gauge",
    "qworkerd_queue_scheduled": "gauge", "qworkerd_queue_dead": "gauge",
    "qworkerd_queue_running": "gauge", "qworkerd_queue_paused": "gauge",
    "qworkerd_breaker_open": "gauge", "qworkerd_redis_up": "gauge",
    "qworkerd_redis_command_seconds": "histogram",
}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')

# The handler: the payload says what it does.
HANDLER = """\
p=$(cat)
case "$p" in
ok*) exit 0 ;;
fail*) exit 1 ;;
perm*) exit 65 ;;
slow*) sleep 30 ;;
hold*) while [ ! -e "$HOLD" ]; do sleep 0.05; done ;;
esac
"""


class Scrape:
    def __init__(self, text):
        self.text = text
        self.types = {}
        self.samples = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ")
                self.types[name] = kind
            elif line and not line.startswith("#"):
                m = SAMPLE.match(line)
                assert m, line
                labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
                self.samples[(m.group(1), labels)] = float(m.group(3))

    def value(self, name, **labels):
        return self.samples.get((name, frozenset(labels.items())))

    def buckets(self, name, **labels):
        """{le: cumulative count} of a histogram."""
        out = {}
        for (n, ls), v in self.samples.items():
            d = dict(ls)
            le = d.pop("le", None)
            if n == name + "_bucket" and d == labels:
                out[le] = v
        return out


def scrape(port):
    status, body = get("http://127.0.0.1:%d/metrics" % port)
    assert status == 200, body
    return Scrape(body)


def start(daemon, tmp, port, extra_queue=""):
    h = script(tmp, "h.sh", HANDLER)
    d = daemon()
    d.conf({"mail": "handler = %s\nretry_base = 50ms\nretry_max = 100ms\nmax_attempts = 2\n%s"
            % (h, extra_queue), "other": "handler = %s\nconcurrency = 2" % h},
           workers="metrics_listen = 127.0.0.1:%d\nconcurrency = 4\n" % port)
    d.start(env={"HOLD": os.path.join(tmp, "release")})
    return d


def run_the_mix(r, port):
    """Runs one job of every kind on mail; returns how many runs that made."""
    past = redis_ms(r) - 22000
    r.lpush("qw:{mail}:pending", "ok 1", "ok 2",
            json.dumps({"payload": "ok 3", "enqueued_at": past}),
            "fail", "perm",
            json.dumps({"payload": "slow", "timeout": 0.3, "max_attempts": 1}),
            json.dumps({"payload": "bad", "timeout": -1}))
    wait_until(lambda: stats(r, "mail").get("dead") == 4 and
               stats(r, "mail").get("succeeded") == 3, timeout=30, what="every job settled")
    # ok x3, fail twice, perm, slow: the bad envelope never runs.
    return 7


def test_every_family_against_the_jobs_run(r, daemon, tmp):
    port = free_port()
    d = start(daemon, tmp, port)
    runs = run_the_mix(r, port)
    st = stats(r, "mail")
    assert st == {"succeeded": 3, "failed": 4, "retried": 1, "timed_out": 1, "dead": 4}, st

    def settled():
        s = scrape(port)
        # The Redis gauges come from the first poll, a second after start.
        return (s.value("qworkerd_jobs_total", queue="mail", outcome="dead") == 4 and
                s.value("qworkerd_breaker_open", queue="mail") is not None and s)
    s = wait_until(settled, what="dead counted, first poll")
    for name, kind in SPEC_FAMILIES.items():
        assert s.types.get(name) == kind, (name, s.types.get(name))
    for o in OUTCOMES:
        assert s.value("qworkerd_jobs_total", queue="mail", outcome=o) == st.get(o, 0), o
        assert s.value("qworkerd_jobs_total", queue="other", outcome=o) == 0, o
    # One duration and one wait per run; the bad envelope had neither.
    for fam in ("qworkerd_job_duration_seconds", "qworkerd_job_wait_seconds"):
        assert s.value(fam + "_count", queue="mail") == runs, fam
        b = s.buckets(fam, queue="mail")
        assert b["+Inf"] == runs and b["0.001"] <= b["3600"] <= runs, (fam, b)
        assert s.value(fam + "_count", queue="other") == 0
    # The slow job ran its 0.3 s before its timeout; the job enqueued 22 s
    # ago waited at least 20 s (Redis's clock and the loop's cached time
    # differ a little).
    assert s.buckets("qworkerd_job_duration_seconds", queue="mail")["0.25"] < runs
    wait = s.buckets("qworkerd_job_wait_seconds", queue="mail")
    assert wait["10"] <= runs - 1 and wait["30"] == runs, wait
    assert s.value("qworkerd_job_wait_seconds_sum", queue="mail") >= 20
    assert s.value("qworkerd_redis_up") == 1
    assert s.value("qworkerd_redis_command_seconds_count") > 0
    assert s.buckets("qworkerd_redis_command_seconds")["+Inf"] == \
        s.value("qworkerd_redis_command_seconds_count")
    assert s.value("qworkerd_breaker_open", queue="mail") == 0
    assert s.value("qworkerd_queue_paused", queue="mail") == 0
    assert s.value("qworkerd_queue_slots", queue="other") == 2
    assert s.value("qworkerd_queue_slots", queue="mail") == 4

    # Gauges against Redis: a delayed job, a running one, and jobs left
    # pending while the daemon is quiet.
    r.zadd("qw:{mail}:scheduled", {"later": redis_ms(r) + 3600000})
    r.lpush("qw:{other}:pending", "hold")
    wait_until(lambda: scrape(port).value("qworkerd_queue_running", queue="other") == 1,
               what="one job running")
    d.signal(signal.SIGUSR1)
    d.wait_log("SIGUSR1")
    r.lpush("qw:{mail}:pending", "ok a", "ok b", "ok c")
    r.set("qw:{mail}:paused", "1")

    def gauges_match():
        s = scrape(port)
        return (s.value("qworkerd_queue_pending", queue="mail") == r.llen("qw:{mail}:pending") == 3
                and s.value("qworkerd_queue_scheduled", queue="mail") ==
                r.zcard("qw:{mail}:scheduled") == 1
                and s.value("qworkerd_queue_dead", queue="mail") == r.llen("qw:{mail}:dead") == 4
                and s.value("qworkerd_queue_dead", queue="other") == 0
                and s.value("qworkerd_queue_paused", queue="mail") == 1
                and s.value("qworkerd_queue_paused", queue="other") == 0
                and s.value("qworkerd_breaker_open", queue="mail") == 0
                and s.value("qworkerd_queue_running", queue="other") == 1)
    wait_until(gauges_match, what="gauges equal to Redis")
    # (the breaker gauge's moves are test_flow's: it follows the breaker's
    # state as the fetch script reports it, not a key's existence)
    r.delete("qw:{mail}:paused")
    open(os.path.join(tmp, "release"), "w").close()
    wait_until(lambda: stats(r, "other").get("succeeded") == 1, what="held job done")
    s = scrape(port)
    assert s.value("qworkerd_queue_running", queue="other") == 0
    assert s.value("qworkerd_job_duration_seconds_count", queue="other") == 1
    assert d.stop() == 0


def test_counters_survive_a_reload(r, daemon, tmp):
    port = free_port()
    d = start(daemon, tmp, port)
    runs = run_the_mix(r, port)
    wait_until(lambda: scrape(port).value("qworkerd_jobs_total", queue="mail",
                                          outcome="dead") == 4, what="dead counted")
    before = scrape(port)
    redis_before = before.value("qworkerd_redis_command_seconds_count")
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded ")
    after = scrape(port)
    for o in OUTCOMES:
        assert after.value("qworkerd_jobs_total", queue="mail", outcome=o) == \
            before.value("qworkerd_jobs_total", queue="mail", outcome=o), o
    for fam in ("qworkerd_job_duration_seconds", "qworkerd_job_wait_seconds"):
        assert after.buckets(fam, queue="mail") == before.buckets(fam, queue="mail")
        assert after.value(fam + "_count", queue="mail") == runs
    assert after.value("qworkerd_redis_command_seconds_count") >= redis_before
    r.lpush("qw:{mail}:pending", "ok after")
    wait_until(lambda: scrape(port).value("qworkerd_jobs_total", queue="mail",
                                          outcome="succeeded") == 4, what="counted on")
    assert d.stop() == 0


def promtool():
    return shutil.which("promtool")


@pytest.mark.skipif(promtool() is None, reason="promtool not installed (tests/deps.sh installs "
                    "Debian's prometheus)")
def test_promtool_accepts_the_live_output(r, daemon, tmp):
    port = free_port()
    d = start(daemon, tmp, port)
    run_the_mix(r, port)
    body = scrape(port).text
    p = subprocess.run([promtool(), "check", "metrics"], input=body, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "" and p.stderr.strip() == "", p.stdout + p.stderr
    assert d.stop() == 0


def dashboard_queries(node):
    """Every PromQL string of the dashboard: targets' expr and the template
    variables' queries."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                yield v
            elif k == "query" and isinstance(v, str):
                yield v
            elif k == "query" and isinstance(v, dict) and isinstance(v.get("query"), str):
                yield v["query"]
            else:
                yield from dashboard_queries(v)
    elif isinstance(node, list):
        for v in node:
            yield from dashboard_queries(v)


def family_of(metric, types):
    for suffix in ("_bucket", "_sum", "_count"):
        base = metric[:-len(suffix)]
        if metric.endswith(suffix) and types.get(base) == "histogram":
            return base
    return metric


def test_the_dashboard_names_only_families_qworkerd_exports(r, daemon, tmp):
    port = free_port()
    d = start(daemon, tmp, port)
    exported = scrape(port).types
    assert d.stop() == 0
    with open(DASHBOARD) as f:
        dash = json.load(f)
    queries = list(dashboard_queries(dash))
    assert len(queries) >= 10
    used = set()
    for q in queries:
        names = re.findall(r"\bqworkerd_[a-zA-Z0-9_]+", q)
        assert names, "names no qworkerd metric: %s" % q
        for n in names:
            fam = family_of(n, exported)
            assert fam in exported, "%s: %s is not a family qworkerd exports" % (q, n)
            if exported[fam] == "histogram":
                assert n != fam, "%s: a histogram is read by its _bucket, _sum or _count" % q
            used.add(fam)
    # It draws what issue 11 asks: throughput by outcome, duration and wait
    # percentiles, running against slots, pending and dead, breakers.
    assert {"qworkerd_jobs_total", "qworkerd_job_duration_seconds", "qworkerd_job_wait_seconds",
            "qworkerd_queue_running", "qworkerd_queue_slots", "qworkerd_queue_pending",
            "qworkerd_queue_dead", "qworkerd_breaker_open"} <= used, used
    for p in dash["panels"]:
        for t in p.get("targets", []):
            if "histogram_quantile" in t["expr"]:
                assert "_bucket" in t["expr"] and "le" in t["expr"], t["expr"]


def test_recovered_jobs_are_counted_by_the_successor(r, daemon, tmp):
    """A SIGKILLed daemon's running job is recovered by its successor (same
    identity, at once): the successor counts it as recovered, then its run."""
    port = free_port()
    d = start(daemon, tmp, port)
    r.lpush("qw:{other}:pending", "hold")
    wait_until(lambda: scrape(port).value("qworkerd_queue_running", queue="other") == 1,
               what="one job running")
    d.proc.kill()
    d.wait()
    d2 = daemon("b")
    d2.conf_path = d.conf_path          # same config, same identity, same port
    d2.start(env={"HOLD": os.path.join(tmp, "release")})
    open(os.path.join(tmp, "release"), "w").close()   # the orphan handler ends too
    wait_until(lambda: stats(r, "other").get("succeeded") == 1, what="recovered job done")
    wait_until(lambda: scrape(port).value("qworkerd_jobs_total", queue="other",
                                          outcome="succeeded") == 1, what="success counted")
    s = scrape(port)
    assert stats(r, "other") == {"recovered": 1, "succeeded": 1}
    for o in OUTCOMES:
        assert s.value("qworkerd_jobs_total", queue="other", outcome=o) == \
            stats(r, "other").get(o, 0), o
    assert s.value("qworkerd_job_duration_seconds_count", queue="other") == 1
    assert s.value("qworkerd_jobs_recovered_total") == 1
    assert d2.stop() == 0


def test_hundreds_of_connections_fail_no_job(r, daemon, tmp):
    """300 connections at once: 64 are kept (then closed when idle), the
    rest closed at once; jobs run meanwhile and none fails."""
    port = free_port()
    d = start(daemon, tmp, port)
    conns = []
    try:
        for _ in range(300):
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        r.lpush("qw:{mail}:pending", *["ok %d" % i for i in range(50)])
        wait_until(lambda: stats(r, "mail").get("succeeded") == 50, 60, what="50 succeeded")
        refused = 0
        for c in conns:
            c.settimeout(0.01)
            try:
                refused += c.recv(1) == b""
            except socket.timeout:
                pass
            except ConnectionResetError:
                refused += 1
        assert refused >= 300 - 64, refused
    finally:
        for c in conns:
            c.close()
    assert stats(r, "mail") == {"succeeded": 50}
    s = scrape(port)
    assert s.value("qworkerd_jobs_total", queue="mail", outcome="succeeded") == 50
    assert s.value("qworkerd_jobs_total", queue="mail", outcome="failed") == 0
    assert d.stop() == 0


def test_a_cancelled_job_is_counted(r, daemon, tmp):
    """An operator's cancel (HSET PREFIX:{Q}:cancel FIELD TEXT) ends the run
    as cancelled and dead: both counted, with the run's duration."""
    port = free_port()
    d = start(daemon, tmp, port)
    r.lpush("qw:{other}:pending", json.dumps({"payload": "hold", "id": "c1"}))

    def field():
        for f, v in r.hgetall("qw:{other}:active:test-1").items():
            if json.loads(v).get("id") == "c1":
                return f.decode()
        return None
    wait_until(lambda: scrape(port).value("qworkerd_queue_running", queue="other") == 1,
               what="one job running")
    r.hset("qw:{other}:cancel", wait_until(field, what="its field"), "enough")
    wait_until(lambda: stats(r, "other").get("cancelled") == 1, what="cancelled")
    wait_until(lambda: scrape(port).value("qworkerd_jobs_total", queue="other",
                                          outcome="cancelled") == 1, what="counted")
    s = scrape(port)
    for o in OUTCOMES:
        assert s.value("qworkerd_jobs_total", queue="other", outcome=o) == \
            stats(r, "other").get(o, 0), o
    assert s.value("qworkerd_job_duration_seconds_count", queue="other") == 1
    assert d.stop() == 0


def test_persistent_worker_jobs_are_counted(r, daemon, tmp):
    """Jobs of a queue served by persistent workers (the Python example as
    shipped) are counted like any other: outcomes, durations, waits."""
    pylib = os.path.join(SRC, "python")
    port = free_port()
    d = daemon()
    d.conf({"w": "worker = %s %s\nworker_inflight = 2\nmax_attempts = 1\ntimeout = 1s"
            % (sys.executable, os.path.join(pylib, "examples", "worker.py"))},
           workers="metrics_listen = 127.0.0.1:%d\n" % port)
    d.start(env={"PYTHONPATH": pylib})
    r.lpush("qw:{w}:pending", "hello", "fail", "bad", "sleep 30")
    wait_until(lambda: stats(r, "w").get("dead") == 3, 20, what="3 dead")
    wait_until(lambda: scrape(port).value("qworkerd_jobs_total", queue="w",
                                          outcome="dead") == 3, what="dead counted")
    s = scrape(port)
    st = stats(r, "w")
    assert st == {"succeeded": 1, "failed": 3, "dead": 3, "timed_out": 1}, st
    for o in OUTCOMES:
        assert s.value("qworkerd_jobs_total", queue="w", outcome=o) == st.get(o, 0), o
    assert s.value("qworkerd_job_duration_seconds_count", queue="w") == 4
    assert s.value("qworkerd_job_wait_seconds_count", queue="w") == 4
    assert d.stop() == 0


@pytest.mark.skipif(promtool() is None, reason="promtool not installed (tests/deps.sh installs "
                    "Debian's prometheus)")
def test_the_dashboard_expressions_are_valid_promql(tmp):
    """Each expression, with Grafana's variables given values, parses as
    PromQL: promtool checks them as recording rules."""
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = [q for q in dashboard_queries(dash) if not q.startswith("label_values(")]
    rules = os.path.join(tmp, "rules.yml")
    with open(rules, "w") as f:
        f.write("groups:\n- name: dashboard\n  rules:\n")
        for i, e in enumerate(exprs):
            e = e.replace("$__rate_interval", "5m").replace("$queue", ".*")
            f.write("  - record: qworkerd_dashboard:%d\n    expr: %s\n" % (i, json.dumps(e)))
    p = subprocess.run([promtool(), "check", "rules", rules], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: %d rules found" % len(exprs) in p.stdout, p.stdout
