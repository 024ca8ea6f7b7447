"""qworkerctl(1), the operator's command (SPEC 11, issue 9): every command
in human and JSON form against jobs in every key, the changes it makes and
the bad input it refuses, a race with a running daemon, and the EXAMPLES of
its man page run as printed."""
import json
import os
import socket
import subprocess
import threading

import pytest

from conftest import BUILD, TOP, free_port, inflight, redis_ms, script, stats, wait_until

QWORKERCTL = os.environ.get("QWORKERCTL", os.path.join(BUILD, "qworkerctl"))

# Records each run's id and payload, byte for byte; waits while $dir/hold exists.
CAPTURE = """\
dir=%s
while [ -e "$dir/hold" ]; do sleep 0.02; done
cat > "$dir/$QW_JOB_ID.in"
echo "$QW_JOB_ID" >> "$dir/ran"
"""


def ctl(conf, *args, stdin=None, check=None):
    """Runs qworkerctl -c CONF ARGS; returns the CompletedProcess (bytes)."""
    p = subprocess.run([QWORKERCTL, "-c", conf] + list(args), input=stdin,
                       capture_output=True, timeout=60)
    if check is not None:
        assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
    return p


def jctl(conf, *args, **kw):
    p = ctl(conf, "--json", *args, check=kw.pop("check", 0), **kw)
    return json.loads(p.stdout)


def handler(tmp, name="h.sh"):
    jobs = os.path.join(tmp, "jobs")
    os.makedirs(jobs, exist_ok=True)
    return script(tmp, name, CAPTURE % jobs), jobs


def ran(jobs):
    path = os.path.join(jobs, "ran")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().split()


def configured(daemon, queues, **kw):
    """A daemon whose config names QUEUES; not started."""
    d = daemon()
    d.conf(queues, **kw)
    return d


def dead_env(payload, jid, error="exit status 1", attempt=5):
    return json.dumps({"payload": payload, "id": jid, "attempt": attempt, "interrupted": 0,
                       "error": error, "failed_at": 1})


# ---- every command against jobs in every key -----------------------------


def fill_idle(r):
    """Jobs of a queue no daemon serves: two pending (a raw one and an
    envelope), one scheduled, two dead."""
    r.lpush("qw:{idle}:pending", b"raw \x1b[31mred")
    r.lpush("qw:{idle}:pending", json.dumps({"payload": "p2", "id": "p2", "enqueued_at": 1}))
    r.zadd("qw:{idle}:scheduled", {json.dumps({"payload": "s1", "id": "s1"}): 4102444800000})
    r.lpush("qw:{idle}:dead", dead_env("d1", "d1"), dead_env("d2", "d2", error="bad\nline"))


def test_every_command_human_and_json(r, daemon, tmp):
    h, jobs = handler(tmp)
    open(os.path.join(jobs, "hold"), "w").close()
    d = configured(daemon, {"mail": "handler = %s\nprefetch = 0" % h},
                   workers="concurrency = 1\n")
    d.start()
    conf = d.conf_path
    fill_idle(r)
    jid = ctl(conf, "enqueue", "mail", "--id", "busy", "working", check=0).stdout.decode().strip()
    assert jid == "busy"
    wait_until(lambda: inflight(r, "mail") == 1 and r.llen("qw:{mail}:pending") == 0,
               what="the job running")

    # status: both queues, counts, then the live instance.
    out = ctl(conf, "status", check=0).stdout.decode()
    lines = out.splitlines()
    assert lines[0].split() == ["QUEUE", "PENDING", "SCHEDULED", "RUNNING", "DEAD", "PAUSED",
                                "BREAKER"]
    assert lines[1].split() == ["idle", "2", "1", "0", "2", "no", "closed"]
    assert lines[2].split() == ["mail", "0", "0", "1", "0", "no", "closed"]
    assert "test-1" in out and str(d.proc.pid) in out
    st = jctl(conf, "status")
    byname = {q["name"]: q for q in st["queues"]}
    assert byname["idle"]["pending"] == 2 and byname["idle"]["dead"] == 2
    assert byname["mail"]["running"] == 1 and byname["mail"]["paused"] is False
    assert [i["name"] for i in st["instances"]] == ["test-1"]

    # ls, each key, human and JSON.
    out = ctl(conf, "ls", "idle", "pending", check=0).stdout.decode()
    rows = out.splitlines()
    assert rows[0].split() == ["ID", "ATTEMPT", "AGE", "PAYLOAD"]
    assert rows[1].startswith("@")          # the tail runs next: the raw job
    assert "\\x1b[31mred" in rows[1] and "\x1b" not in out
    assert rows[2].split()[0] == "p2"
    ls = jctl(conf, "ls", "idle", "pending")
    assert [j["id"] for j in ls["jobs"]][1] == "p2" and ls["where"] == "pending"
    raw_id = ls["jobs"][0]["id"]
    assert len(raw_id) == 17 and raw_id.startswith("@")
    out = ctl(conf, "ls", "idle", "scheduled", check=0).stdout.decode()
    assert "s1" in out and "2100-01-01T00:00:00Z" in out
    assert jctl(conf, "ls", "idle", "scheduled")["jobs"][0]["due"] == 4102444800000
    out = ctl(conf, "ls", "idle", "dead", check=0).stdout.decode()
    assert "bad\\nline" in out and "exit status 1" in out
    dead = jctl(conf, "ls", "idle", "dead")["jobs"]
    assert [(j["id"], j["error"], j["attempt"]) for j in dead] == [
        ("d2", "bad\nline", 5), ("d1", "exit status 1", 5)]
    one = jctl(conf, "ls", "idle", "dead", "-n", "1")
    assert [j["id"] for j in one["jobs"]] == ["d2"] and one["total"] == 2
    for i in range(101):
        r.rpush("qw:{idle}:dead", dead_env("x", "x%d" % i))
    p = ctl(conf, "ls", "idle", "dead", check=0)
    assert len(p.stdout.splitlines()) == 101 and b"100 of 103 jobs shown" in p.stderr
    assert len(jctl(conf, "ls", "idle", "dead", "-n", "0")["jobs"]) == 103
    r.ltrim("qw:{idle}:dead", 0, 1)
    p = ctl(conf, "ls", "idle", "dead", "-n1", check=0)
    assert len(p.stdout.splitlines()) == 2 and b"1 of 2 jobs shown (-n 0 shows all)" in p.stderr
    out = ctl(conf, "ls", "mail", "running", check=0).stdout.decode()
    assert "busy" in out and "running" in out and "test-1" in out
    run = jctl(conf, "ls", "mail", "running")["jobs"]
    assert [(j["id"], j["instance"], j["started"]) for j in run] == [("busy", "test-1", True)]

    # show, wherever the job is.
    for q, i, where in [("idle", "p2", "pending"), ("idle", "s1", "scheduled"),
                        ("idle", "d1", "dead"), ("mail", "busy", "running")]:
        out = ctl(conf, "show", q, i, check=0).stdout.decode()
        assert "where:    %s" % where in out and '"id": "%s"' % i in out, out
        js = jctl(conf, "show", q, i)
        assert js["where"] == where and js["envelope"]["id"] == i
    js = jctl(conf, "show", "idle", raw_id)
    assert js["raw"] == "raw \x1b[31mred" and "envelope" not in js
    assert "raw job (12 bytes)" in ctl(conf, "show", "idle", raw_id, check=0).stdout.decode()

    # instances: name, host, pid, start time, lease left, jobs.
    out = ctl(conf, "instances", check=0).stdout.decode()
    head, row = out.splitlines()[:2]
    assert head.split()[:4] == ["INSTANCE", "HOST", "PID", "STARTED"]
    assert row.split()[0] == "test-1" and row.split()[2] == str(d.proc.pid)
    inst = jctl(conf, "instances")["instances"]
    assert len(inst) == 1 and inst[0]["pid"] == d.proc.pid and inst[0]["jobs"] == 1
    assert 0 < inst[0]["lease_left_ms"] <= 15000
    assert abs(inst[0]["started"] - redis_ms(r)) < 60000
    assert inst[0]["queues"] == ["mail"]

    os.unlink(os.path.join(jobs, "hold"))
    wait_until(lambda: ran(jobs) == ["busy"], what="the job to finish")


def test_no_daemon_no_queues(r, daemon):
    d = configured(daemon, {})
    p = ctl(d.conf_path, "status", check=0)
    assert b"no queues under prefix qw" in p.stdout and b"no live instances" in p.stdout
    assert jctl(d.conf_path, "status") == {"queues": [], "instances": []}
    assert jctl(d.conf_path, "instances") == {"instances": []}


def test_db_and_prefix_from_the_config_or_options(r, redis_server, daemon):
    d = configured(daemon, {"mail": "handler = /bin/true"}, redis_extra="db = 2\nprefix = app")
    ctl(d.conf_path, "enqueue", "mail", "--id", "one", "x", check=0)
    r2 = redis_server.client()
    r2.execute_command("SELECT", 2)
    assert r2.llen("app:{mail}:pending") == 1 and not r.keys("*{mail}*")
    assert [q["name"] for q in jctl(d.conf_path, "status")["queues"]] == ["mail"]
    # --prefix over the config's: nothing there.
    p = ctl(d.conf_path, "--prefix", "other", "ls", "nothere", "pending", check=1)
    assert b"under prefix other" in p.stderr
    # -a alone: db 0, prefix qw.
    r.lpush("qw:{mail}:pending", "zero")
    p = subprocess.run([QWORKERCTL, "-a", "unix:" + redis_server.sock, "--json", "ls", "mail",
                        "pending"], capture_output=True, timeout=30)
    assert p.returncode == 0 and json.loads(p.stdout)["jobs"][0]["id"].startswith("@")


# ---- changes ------------------------------------------------------------


def test_retry_delete_and_cancel_waiting_jobs(r, daemon):
    conf = configured(daemon, {}).conf_path
    fill_idle(r)
    # retry: dead and scheduled jobs to the tail of pending, attempt 0, no error.
    p = ctl(conf, "retry", "idle", "d1", "s1", check=0)
    assert p.stdout.decode().split("\n")[:2] == ["retried d1", "retried s1"]
    tail = [json.loads(e) for e in r.lrange("qw:{idle}:pending", -2, -1)]
    assert [(e["id"], e["attempt"], "error" in e) for e in tail] == [("d1", 0, False),
                                                                    ("s1", 0, False)]
    assert r.zcard("qw:{idle}:scheduled") == 0 and r.llen("qw:{idle}:dead") == 1
    assert jctl(conf, "retry", "idle", "--all") == {"queue": "idle", "action": "retried",
                                                     "done": ["d2"], "missed": []}
    assert r.llen("qw:{idle}:dead") == 0 and r.llen("qw:{idle}:pending") == 5
    # delete by id, and where it is not.
    p = ctl(conf, "delete", "idle", "pending", "p2", check=0)
    assert p.stdout == b"deleted p2\n"
    p = ctl(conf, "delete", "idle", "dead", "d1", check=1)
    assert b"no job d1 (looked in dead)" in p.stderr
    assert r.llen("qw:{idle}:pending") == 4
    # cancel of waiting jobs: to dead at once, counted.
    r.zadd("qw:{idle}:scheduled", {json.dumps({"payload": "later", "id": "later"}): 4102444800000})
    p = ctl(conf, "cancel", "idle", "later", "--reason", "not wanted", check=0)
    assert p.stdout == b"cancelled later\n"
    js = jctl(conf, "cancel", "idle", "d2")
    assert js["done"] == ["d2"] and js["action"] == "cancelled"
    dead = [json.loads(e) for e in r.lrange("qw:{idle}:dead", 0, -1)]
    assert [(e["id"], e["error"]) for e in dead] == [("d2", "cancelled"),
                                                     ("later", "cancelled: not wanted")]
    assert all(e["failed_at"] > 0 for e in dead)
    s = stats(r, "idle")
    assert s["cancelled"] == 2 and s["dead"] == 2 and s["deleted"] == 1
    # A raw job, cancelled by its hash name, is wrapped as the daemon wraps it.
    raw_id = [j["id"] for j in jctl(conf, "ls", "idle", "pending")["jobs"]
              if j["id"].startswith("@")][0]
    ctl(conf, "cancel", "idle", raw_id, check=0)
    e = json.loads(r.lindex("qw:{idle}:dead", 0))
    assert e["payload"] == "raw \x1b[31mred" and e["id"] == raw_id and e["error"] == "cancelled"
    # A job that is dead already cannot be cancelled.
    p = ctl(conf, "cancel", "idle", "later", check=1)
    assert b"looked in pending, scheduled, running" in p.stderr


def test_cancel_and_delete_end_a_unique_hold(r, daemon):
    conf = configured(daemon, {}).conf_path
    a = ctl(conf, "enqueue", "u", "--id", "once", "--unique-for", "1h", "x", check=0).stdout
    assert ctl(conf, "enqueue", "u", "--id", "once", "--unique-for", "1h", "y",
               check=0).stdout == a
    assert r.llen("qw:{u}:pending") == 1 and r.hexists("qw:{u}:unique", "once")
    ctl(conf, "cancel", "u", "once", check=0)
    assert not r.hexists("qw:{u}:unique", "once")
    ctl(conf, "enqueue", "u", "--id", "once", "--unique-for", "1h", "z", check=0)
    assert r.llen("qw:{u}:pending") == 1 and r.hexists("qw:{u}:unique", "once")
    ctl(conf, "delete", "u", "pending", "once", check=0)
    assert not r.hexists("qw:{u}:unique", "once") and r.llen("qw:{u}:pending") == 0


def test_cancel_running_job_reaches_its_instance(r, daemon, tmp):
    """qworkerctl cancel of a running job: the instance that runs it stops it
    and puts it in dead as cancelled, while another job of the queue runs
    on (the daemon side: test_cancel.py)."""
    h, jobs = handler(tmp)
    open(os.path.join(jobs, "hold"), "w").close()
    d = configured(daemon, {"mail": "handler = %s\nprefetch = 0" % h},
                   workers="concurrency = 2\n")
    d.start()
    ctl(d.conf_path, "enqueue", "mail", "--id", "long", "x", check=0)
    ctl(d.conf_path, "enqueue", "mail", "--id", "other", "y", check=0)
    wait_until(lambda: inflight(r, "mail") == 2, what="both jobs running")
    d.wait_log("job mail/long: started")
    p = ctl(d.conf_path, "cancel", "mail", "long", "--reason", "stuck", check=0)
    assert p.stdout == b"cancel requested, job long running on test-1\n"
    wait_until(lambda: r.llen("qw:{mail}:dead") == 1, what="the job in dead")
    e = json.loads(r.lindex("qw:{mail}:dead", 0))
    assert e["id"] == "long" and e["error"] == "cancelled: stuck"
    s = stats(r, "mail")
    assert s.get("cancelled") == 1 and s.get("dead") == 1
    assert not r.exists("qw:{mail}:cancel")
    # The other job was left alone; once let go it succeeds.
    assert inflight(r, "mail") == 1
    os.unlink(os.path.join(jobs, "hold"))
    wait_until(lambda: ran(jobs) == ["other"], what="the other job to finish")
    p = ctl(d.conf_path, "cancel", "mail", "long", check=1)
    assert b"no job long (looked in pending, scheduled, running)" in p.stderr


def test_cancel_request_names_the_instance_that_holds_the_job(r, daemon):
    """A job in flight in another instance (no daemon here): the request is
    written under its field, empty without --reason; once it has left, there
    is nothing to cancel and no request is written."""
    conf = configured(daemon, {"mail": "handler = /bin/true"}).conf_path
    r.hset("qw:{mail}:active:gone-1", "0123456789ab-1", json.dumps({"payload": "x",
                                                                    "id": "late"}))
    r.zadd("qw:{mail}:leases", {"gone-1": redis_ms(r) + 60000})
    js = jctl(conf, "cancel", "mail", "late")
    assert js["instance"] == "gone-1" and js["field"] == "0123456789ab-1"
    assert r.hget("qw:{mail}:cancel", "0123456789ab-1") == b""
    r.delete("qw:{mail}:cancel")
    out = ctl(conf, "show", "mail", "late", check=0).stdout
    assert b"instance: gone-1 (running)" in out
    r.delete("qw:{mail}:active:gone-1")
    p = ctl(conf, "cancel", "mail", "late", check=1)
    assert b"no job late" in p.stderr and not r.exists("qw:{mail}:cancel")


def test_pause_through_qworkerctl_holds_a_running_daemon(r, daemon, tmp):
    h, jobs = handler(tmp)
    d = configured(daemon, {"mail": "handler = %s" % h})
    d.start()
    ctl(d.conf_path, "pause", "mail", check=0)
    d.wait_log("queue mail: paused")
    for i in range(3):
        ctl(d.conf_path, "enqueue", "mail", "--id", "p%d" % i, "x", check=0)
    out = ctl(d.conf_path, "status", check=0).stdout.decode()
    assert out.splitlines()[1].split()[:6] == ["mail", "3", "0", "0", "0", "yes"]
    ctl(d.conf_path, "resume", "mail", check=0)
    wait_until(lambda: sorted(ran(jobs)) == ["p0", "p1", "p2"], what="the backlog")
    log = d.log()
    assert log.index("queue mail: resumed") < log.index("job mail/p0: started")


def test_pause_and_resume(r, daemon):
    conf = configured(daemon, {"mail": "handler = /bin/true"}).conf_path
    p = ctl(conf, "pause", "mail", check=0)
    assert b"queue mail paused" in p.stdout
    v = json.loads(r.get("qw:{mail}:paused"))
    assert "@" in v["by"] and v["at_ms"] > 0 and v["at"].endswith("Z")
    assert b"was paused already" in ctl(conf, "pause", "mail", check=0).stdout
    assert json.loads(r.get("qw:{mail}:paused")) == v
    out = ctl(conf, "status", check=0).stdout.decode()
    assert "yes (by %s at %s)" % (v["by"], v["at"]) in out
    q = jctl(conf, "status")["queues"][0]
    assert q["paused"] is True and q["paused_by"] == v
    assert jctl(conf, "resume", "mail") == {"queue": "mail", "paused": False, "changed": True}
    assert not r.exists("qw:{mail}:paused")
    assert b"was not paused" in ctl(conf, "resume", "mail", check=0).stdout


def test_breaker_state_is_read_when_present(r, daemon):
    conf = configured(daemon, {"mail": "handler = /bin/true"}).conf_path
    r.hset("qw:{mail}:breaker", "state", "open")
    assert jctl(conf, "status")["queues"][0]["breaker"] == "open"
    r.delete("qw:{mail}:breaker")
    r.set("qw:{mail}:breaker", "half-open")
    assert jctl(conf, "status")["queues"][0]["breaker"] == "half-open"
    r.delete("qw:{mail}:breaker")
    r.zadd("qw:{mail}:breaker", {"x": 1})
    assert jctl(conf, "status")["queues"][0]["breaker"] == "open"


def test_status_shows_an_open_breaker(r, daemon):
    d = configured(daemon, {"mail": "handler = /bin/false\nbreaker_failures = 1\n"
                                     "breaker_cooldown = 1h\nmax_attempts = 1"})
    d.start()
    ctl(d.conf_path, "enqueue", "mail", "--id", "f", "x", check=0)
    wait_until(lambda: r.hget("qw:{mail}:breaker", "state") == b"open", what="breaker open")
    out = ctl(d.conf_path, "status", check=0).stdout.decode()
    assert out.splitlines()[1].split()[-1] == "open"
    assert jctl(d.conf_path, "status")["queues"][0]["breaker"] == "open"


def test_enqueue_every_option(r, daemon, tmp):
    h, jobs = handler(tmp)
    d = configured(daemon, {"mail": "handler = %s" % h})
    conf = d.conf_path
    # A payload with NUL bytes and every byte value, from stdin, byte for byte.
    body = bytes(range(256)) * 3 + b"\0end\0"
    jid = ctl(conf, "enqueue", "mail", "--id", "bin", "-", stdin=body, check=0).stdout
    assert jid == b"bin\n"
    # No payload word with stdin not a terminal reads stdin too.
    ctl(conf, "enqueue", "mail", "--id", "piped", stdin=b"from a pipe", check=0)
    # Options, as the envelope shows them.
    ctl(conf, "enqueue", "mail", "--id", "opts", "--timeout", "2500ms", "--max-attempts", "3",
        "--unique-for", "2m", "--", "-dash", check=0)
    e = jctl(conf, "show", "mail", "opts")["envelope"]
    assert e["payload"] == "-dash" and e["timeout"] == 2.5 and e["max_attempts"] == 3
    end = int(e["unique"].split(":")[0])
    assert abs(end - (e["enqueued_at"] + 120000)) < 5
    # --delay: scheduled, due then.
    before = redis_ms(r)
    ctl(conf, "enqueue", "mail", "--id", "later", "--delay", "5m", "soon", check=0)
    due = jctl(conf, "show", "mail", "later")["due"]
    assert before + 300000 <= due <= redis_ms(r) + 300000
    # Without --id a generated id; --json.
    js = jctl(conf, "enqueue", "mail", "plain")
    assert js["queue"] == "mail" and "-" in js["id"]
    # The library is loaded on demand, when no daemon has loaded it.
    r.execute_command("FUNCTION", "FLUSH")
    ctl(conf, "enqueue", "mail", "--id", "reloaded", "again", check=0)
    assert r.llen("qw:{mail}:pending") == 5
    # Then a daemon runs them; the binary one arrives as sent.
    d.start()
    wait_until(lambda: len(ran(jobs)) == 5, what="5 jobs")
    with open(os.path.join(jobs, "bin.in"), "rb") as f:
        assert f.read() == body
    with open(os.path.join(jobs, "piped.in"), "rb") as f:
        assert f.read() == b"from a pipe"


# ---- bad input ------------------------------------------------------------


def test_bad_input(r, daemon, tmp):
    conf = configured(daemon, {"mail": "handler = /bin/true"}).conf_path
    r.lpush("qw:{mail}:dead", dead_env("x", "x"))
    for args, what in [(["frobnicate"], b"unknown command 'frobnicate'"),
                       (["--bogus", "status"], b"unknown option --bogus"),
                       (["ls", "mail", "dead", "--reason", "x"], b"unknown option --reason"),
                       ([], b"no command given"),
                       (["ls", "mail"], b"wrong number of arguments")]:
        p = ctl(conf, *args, check=2)
        assert what in p.stderr and b"usage: qworkerctl" in p.stderr, p.stderr
    for args in (["ls", "bad name!", "dead"], ["enqueue", "x" * 65, "p"],
                 ["pause", "a{b}"]):
        p = ctl(conf, *args, check=2)
        assert b"is not a queue name" in p.stderr and args[1].encode() in p.stderr
    p = ctl(conf, "ls", "mail", "done", check=2)
    assert b"'done' is not one of pending, scheduled, running, dead" in p.stderr
    p = ctl(conf, "enqueue", "mail", "--delay", "soon", "p", check=2)
    assert b"--delay 'soon' is not a duration" in p.stderr
    p = ctl(conf, "enqueue", "mail", "--max-attempts", "0", "p", check=2)
    assert b"--max-attempts '0'" in p.stderr
    p = ctl(conf, "show", "mail", "nope", check=1)
    assert b"no job nope (looked in pending, scheduled, running, dead)" in p.stderr
    p = ctl(conf, "ls", "other", "dead", check=1)
    assert b"no queue other" in p.stderr
    # delete --all without --yes: refused, nothing deleted.
    p = ctl(conf, "delete", "mail", "dead", "--all", check=2)
    assert b"add --yes" in p.stderr and r.llen("qw:{mail}:dead") == 1
    ctl(conf, "retry", "mail", check=2)
    # A key of the wrong type: exit 65, naming the key; nothing changes.
    r.set("qw:{mail}:pending", "oops")
    p = ctl(conf, "ls", "mail", "pending", check=65)
    assert b"LRANGE qw:{mail}:pending" in p.stderr and b"WRONGTYPE" in p.stderr
    p = ctl(conf, "retry", "mail", "x", check=65)
    assert b"WRONGTYPE key qw:{mail}:pending holds a string, not a list" in p.stderr
    assert r.get("qw:{mail}:pending") == b"oops"
    r.delete("qw:{mail}:pending")
    # The configuration file.
    p = ctl(os.path.join(tmp, "missing.conf"), "status", check=78)
    assert b"missing.conf: cannot open" in p.stderr
    assert r.llen("qw:{mail}:dead") == 1


def test_unreachable_and_protected_redis(r, tmp):
    # Nothing listens there.
    port = free_port()
    p = subprocess.run([QWORKERCTL, "-a", "127.0.0.1:%d" % port, "status"],
                       capture_output=True, timeout=30)
    assert p.returncode == 69
    assert b"redis 127.0.0.1:%d: cannot connect: Connection refused" % port in p.stderr
    # A Redis that wants a password we do not have, then one we have wrong.
    sdir = os.path.join(tmp, "auth")
    os.makedirs(sdir)
    sock = os.path.join(sdir, "redis.sock")
    srv = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock,
                            "--unixsocketperm", "700", "--dir", sdir, "--save", "",
                            "--requirepass", "s3cret", "--logfile", os.path.join(sdir, "log")])
    try:
        wait_until(lambda: os.path.exists(sock), what="the protected redis-server")
        addr = "unix:" + sock
        p = subprocess.run([QWORKERCTL, "-a", addr, "status"], capture_output=True, timeout=30)
        assert p.returncode == 69 and addr.encode() in p.stderr and b"NOAUTH" in p.stderr
        creds = os.path.join(tmp, "creds")
        os.makedirs(creds)
        with open(os.path.join(creds, "redis.pass"), "w") as f:
            f.write("wrong\n")
        env = dict(os.environ, CREDENTIALS_DIRECTORY=creds)
        p = subprocess.run([QWORKERCTL, "-a", addr, "status"], capture_output=True,
                           timeout=30, env=env)
        assert p.returncode == 69 and b"WRONGPASS" in p.stderr
        with open(os.path.join(creds, "redis.pass"), "w") as f:
            f.write("s3cret\n")
        p = subprocess.run([QWORKERCTL, "-a", addr, "status"], capture_output=True,
                           timeout=30, env=env)
        assert p.returncode == 0, p.stderr
        # And from the daemon's config, password_file.
        conf = os.path.join(tmp, "q.conf")
        with open(conf, "w") as f:
            f.write("[redis]\naddress = %s\npassword_file = %s\n[queue mail]\n"
                    "handler = /no/such/handler\n" % (addr, os.path.join(creds, "redis.pass")))
        ctl(conf, "enqueue", "mail", "hi", check=0)
    finally:
        srv.terminate()
        srv.wait(10)


def test_silent_redis_is_a_temporary_failure(tmp):
    """A server that accepts and never answers: exit 75 after --timeout."""
    path = os.path.join(tmp, "silent.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(5)
    try:
        p = subprocess.run([QWORKERCTL, "-a", "unix:" + path, "--timeout", "300ms", "status"],
                           capture_output=True, timeout=30)
        assert p.returncode == 75 and b"no reply in time" in p.stderr, p.stderr
    finally:
        srv.close()


def test_master_found_through_the_sentinels(servers, tmp):
    """[redis] sentinels: qworkerctl asks them for the master, as qworkerd
    does (SPEC 15); with none answering, exit 69 naming the master."""
    from test_sentinel import NAME, start_ha
    master, replica, s = start_ha(servers, tmp)
    try:
        s.start(1)
        conf = os.path.join(tmp, "sentinel.conf")
        with open(conf, "w") as f:
            f.write("[redis]\nsentinels = %s\nmaster_name = %s\n[queue work]\n"
                    "handler = /bin/true\n" % (s.addresses(), NAME))
        ctl(conf, "enqueue", "work", "--id", "a", "x", check=0)
        assert master.client().llen("qw:{work}:pending") == 1
        assert jctl(conf, "status")["queues"][0]["pending"] == 1
    finally:
        s.stop()
    p = ctl(conf, "status", check=69)
    assert b"redis master %s (via Sentinel): no sentinel named its address" % NAME.encode() \
        in p.stderr, p.stderr


# ---- a race with a running daemon ------------------------------------------


def test_race_retry_delete_and_daemon(r, daemon, tmp):
    """retry --all, delete --all --yes (of dead and of pending) and a daemon
    on the same 200 jobs, three of each command at once, each run four
    times: every job ends in exactly one place or one run, and every
    command's report is true."""
    h, jobs = handler(tmp)
    d = configured(daemon, {"mail": "handler = %s" % h}, workers="concurrency = 4\n")
    ids = ["j%03d" % i for i in range(200)]
    for i in ids:
        r.lpush("qw:{mail}:dead", dead_env("p" + i, i))
    d.start()
    conf = d.conf_path
    cmds = {"retry": ("retry", "mail", "--all"),
            "deldead": ("delete", "mail", "dead", "--all", "--yes"),
            "delpend": ("delete", "mail", "pending", "--all", "--yes")}
    out = {name: [] for name in cmds}
    go = threading.Barrier(3 * len(cmds))

    def run(name):
        go.wait()
        for _ in range(4):
            p = ctl(conf, "--json", *cmds[name])
            assert p.returncode in (0, 1), p.stderr
            out[name].append(json.loads(p.stdout))

    ts = [threading.Thread(target=run, args=(name,)) for name in cmds for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(len(v) == 12 for v in out.values()), out
    wait_until(lambda: r.llen("qw:{mail}:pending") == 0 and inflight(r, "mail") == 0,
               timeout=60, what="pending drained")
    wait_until(lambda: len(ran(jobs)) == stats(r, "mail").get("succeeded", 0),
               what="every run recorded")

    def done(name):
        return [i for o in out[name] for i in o["done"]]

    def missed(name):
        return [i for o in out[name] for i in o["missed"]]

    left = [json.loads(e)["id"] for e in r.lrange("qw:{mail}:dead", 0, -1)]
    every = ran(jobs) + done("deldead") + done("delpend") + left
    assert sorted(every) == ids, (len(ran(jobs)), len(done("deldead")), len(done("delpend")),
                                  len(left))
    # Each retried job ran or was deleted from pending, once.
    assert sorted(done("retry")) == sorted(ran(jobs) + done("delpend"))
    # A job a command missed was taken by another command or the daemon.
    assert not set(missed("retry")) - set(done("deldead") + done("retry"))
    assert not set(missed("deldead")) - set(done("deldead") + done("retry"))
    assert not set(missed("delpend")) - set(done("delpend") + ran(jobs))
    assert stats(r, "mail").get("deleted", 0) == len(done("deldead") + done("delpend"))


def test_race_cancel_and_daemon(r, daemon, tmp):
    """cancel of 200 jobs, one by one from four processes at a time, while a
    daemon runs them: each job ends once, succeeded or dead as cancelled."""
    h = script(tmp, "h.sh", "cat > /dev/null\nsleep 0.05\n")
    d = configured(daemon, {"mail": "handler = %s" % h}, workers="concurrency = 4\n")
    ids = ["c%03d" % i for i in range(200)]
    r.lpush("qw:{mail}:pending", *[json.dumps({"payload": i, "id": i}) for i in ids])
    d.start()
    codes = []

    def run(part):
        for i in part:
            p = ctl(d.conf_path, "cancel", "mail", i, "--reason", "race")
            codes.append(p.returncode)
            assert p.returncode in (0, 1), p.stderr

    ts = [threading.Thread(target=run, args=(ids[k::4],)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wait_until(lambda: r.llen("qw:{mail}:pending") == 0 and inflight(r, "mail") == 0,
               timeout=60, what="every job settled")
    dead = [json.loads(e) for e in r.lrange("qw:{mail}:dead", 0, -1)]
    assert all(e["error"] == "cancelled: race" for e in dead)
    assert len({e["id"] for e in dead}) == len(dead)
    st = stats(r, "mail")
    assert st.get("succeeded", 0) + len(dead) == 200, st
    assert st.get("cancelled", 0) == len(dead) == st.get("dead", 0)
    assert len(codes) == 200


# ---- the man page ------------------------------------------------------------

PAGE = os.path.join(TOP, "man", "qworkerctl.1.in")


def examples():
    text = open(PAGE).read()
    section = text[text.index(".Sh EXAMPLES"):text.index(".Sh SEE ALSO")]
    return [l[4:].replace("\\e", "\\") for l in section.splitlines() if l.startswith(".Dl ")]


def test_man_page_examples_run_as_printed(r, daemon, tmp):
    h, jobs = handler(tmp)
    d = configured(daemon, {"mail": "handler = %s" % h})
    d.start()
    ex = examples()
    assert len(ex) == 12, ex
    outs = []
    for e in ex:
        prog = 'qworkerctl() { command "%s" -c "%s" "$@"; }\nset -e -o pipefail\n%s\n' % (
            QWORKERCTL, d.conf_path, e)
        p = subprocess.run(["bash", "-c", prog], capture_output=True, timeout=60)
        assert p.returncode == 0, (e, p.stdout, p.stderr)
        outs.append(p.stdout.decode())
        if "enqueue mail 'hello world'" in e:
            wait_until(lambda: len(ran(jobs)) == 1, what="hello world run")
    status, _, inv, ls_sched, show, cancel, ls_dead, retry, delete, pause, resume, inst = outs
    assert status.startswith("QUEUE") and "test-1" in status
    assert inv == "invoice-42\n" and "invoice-42" in ls_sched and "YQBi" in show
    assert cancel == "cancelled invoice-42\n" and "cancelled: sent by hand" in ls_dead
    assert retry == "retried invoice-42\n"
    wait_until(lambda: "invoice-42" in ran(jobs), what="the retried job run")
    with open(os.path.join(jobs, "invoice-42.in"), "rb") as f:
        assert f.read() == b"a\0b"
    assert "paused" in pause and "resumed" in resume
    assert json.loads(inst)["instances"][0]["name"] == "test-1"
    assert not r.exists("qw:{mail}:paused")
