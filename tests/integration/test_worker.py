"""SPEC 12: persistent workers (worker = queues) with a real daemon and real
worker processes: the bytes of a job, the outcomes of SPEC 4, cancellation
by timeout and by shutdown, workers that ignore the cancel, crash, write
garbage or never say ready, worker_inflight, worker_max_jobs, reload, the
log, the Python library's example and the worker printed in
qworkerd-worker(7). No job may be lost in any of them."""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap

import pytest

from conftest import TOP, inflight, read_lines, stats, wait_until

PYLIB = os.path.join(TOP, "python")
NODELIB = os.path.join(TOP, "node")
NODE = shutil.which("node")
PAGE = os.path.join(TOP, "man", "qworkerd-worker.7.in")

# A worker on the reference library, driven by the payload (JSON):
# {"do": "ok" | "fail" | "perm" | "wait" | "crash" | "print" | "gate",
#  "once": MARKER}. Each job appends a line {id, pid, attempt, event} to
# $EVENTS; "once" does the thing only while MARKER does not exist yet (and
# creates it), so that the retry succeeds.
LIB_WORKER = r'''
import json, os, sys, time
import qworkerd

EVENTS = os.environ["EVENTS"]

def note(job, event, **kw):
    d = {"id": job.id, "pid": os.getpid(), "attempt": job.attempt, "event": event}
    d.update(kw)
    with open(EVENTS, "a") as f:
        f.write(json.dumps(d) + "\n")

@qworkerd.worker
def handle(job, cancel):
    try:
        cmd = json.loads(job.payload)
    except ValueError:
        cmd = {"do": "save"}
    once = cmd.get("once")
    if once and os.path.exists(once):
        cmd = {"do": "ok"}
    elif once:
        open(once, "w").close()
    note(job, "start", meta={"queue": job.queue, "max_attempts": job.max_attempts,
                             "deadline": job.deadline})
    do = cmd.get("do")
    if do == "save":
        with open(os.path.join(os.environ["SAVE"], job.id), "wb") as f:
            f.write(job.payload)
    elif do == "fail":
        raise RuntimeError("told to fail")
    elif do == "perm":
        raise qworkerd.PermanentError("told to fail for good")
    elif do == "wait":
        cancel.wait()
        note(job, "cancelled", reason=cancel.reason)
        raise RuntimeError("cancelled: " + cancel.reason)
    elif do == "crash":
        os._exit(3)
    elif do == "print":
        print("to stdout: " + cmd["text"])
        print("to stderr: " + cmd["text"], file=sys.stderr)
    elif do == "gate":
        while not os.path.exists(cmd["gate"]):
            if cancel.wait(0.02):
                raise RuntimeError("cancelled: " + cancel.reason)
    note(job, "end")
'''


def frame(kind, body=b""):
    return struct.pack(">I", 1 + len(body)) + kind + body


def events(tmp, event=None):
    out = [json.loads(l) for l in read_lines(os.path.join(tmp, "events"))]
    return [e for e in out if event is None or e["event"] == event]


def dead(r, q):
    return [json.loads(e) for e in r.lrange("qw:{%s}:dead" % q, 0, -1)]


def pending(r, q):
    return [json.loads(e) if e.startswith(b"{") else e
            for e in r.lrange("qw:{%s}:pending" % q, 0, -1)]


def pids_alive(pids):
    return [p for p in pids if os.path.exists("/proc/%d" % p) and
            open("/proc/%d/stat" % p).read().split(")")[-1].split()[0] != "Z"]


def worker_pids(d):
    """Pids of the workers the log says became ready, in order."""
    return [int(p) for p in re.findall(r"worker \S+\[(\d+)\]: ready$", d.log(), re.M)]


def write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def queue_conf(worker, extra):
    """A [queue w] body: WORKER, then EXTRA's keys over quick retries."""
    keys = {"max_attempts": "3", "retry_base": "50ms", "retry_max": "100ms"}
    for line in extra.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            keys[k.strip()] = v.strip()
    return "worker = %s\n" % worker + "".join("%s = %s\n" % kv for kv in keys.items())


def lib_daemon(daemon, tmp, queue_extra="", workers="", start=True):
    path = write(tmp, "lib_worker.py", LIB_WORKER)
    save = os.path.join(tmp, "save")
    os.makedirs(save, exist_ok=True)
    d = daemon()
    d.conf({"w": queue_conf("%s %s" % (sys.executable, path), queue_extra)},
           workers="kill_grace = 1s\n" + workers)
    if start:
        d.start(env={"PYTHONPATH": PYLIB, "EVENTS": os.path.join(tmp, "events"), "SAVE": save})
    return d


def cmd(**kw):
    return json.dumps(kw)


def test_payload_bytes_and_job_fields(r, daemon, tmp):
    """A 1 MiB payload with NUL bytes arrives byte for byte; the J frame's
    JSON carries id, queue, attempt, max_attempts and deadline."""
    d = lib_daemon(daemon, tmp, "timeout = 30s\nmax_payload = 2MiB")
    body = (bytes(range(256)) * 4096)[:1 << 20]
    assert b"\0" in body and len(body) == 1 << 20
    r.lpush("qw:{w}:pending", body)
    r.lpush("qw:{w}:pending", json.dumps({"payload": "enveloped", "id": "env-1",
                                          "max_attempts": 7}))
    wait_until(lambda: stats(r, "w").get("succeeded") == 2, 30, what="2 jobs")
    saved = {n: open(os.path.join(tmp, "save", n), "rb").read()
             for n in os.listdir(os.path.join(tmp, "save"))}
    assert sorted(len(v) for v in saved.values()) == [len(b"enveloped"), 1 << 20]
    assert body in saved.values()
    assert saved["env-1"] == b"enveloped"
    (start,) = [e for e in events(tmp, "start") if e["id"] == "env-1"]
    assert start["attempt"] == 1
    assert start["meta"]["queue"] == "w" and start["meta"]["max_attempts"] == 7
    now_ms = int(r.time()[0]) * 1000
    assert now_ms < start["meta"]["deadline"] <= now_ms + 31000
    # One process served both: no process per job.
    assert len({e["pid"] for e in events(tmp, "start")}) == 1
    assert inflight(r, "w") == 0
    assert d.stop() == 0


def test_outcomes_success_failure_permanent(r, daemon, tmp):
    d = lib_daemon(daemon, tmp)
    r.lpush("qw:{w}:pending", json.dumps({"payload": cmd(do="ok"), "id": "ok"}))
    r.lpush("qw:{w}:pending", json.dumps({"payload": cmd(do="fail"), "id": "fail"}))
    r.lpush("qw:{w}:pending", json.dumps({"payload": cmd(do="perm"), "id": "perm"}))
    wait_until(lambda: stats(r, "w").get("dead") == 2, 20, what="2 dead")
    st = stats(r, "w")
    assert st["succeeded"] == 1
    assert st["failed"] == 4 and st["retried"] == 2, st
    byid = {j["id"]: j for j in dead(r, "w")}
    assert byid["fail"]["attempt"] == 3
    assert byid["fail"]["error"] == "RuntimeError: told to fail"
    assert byid["perm"]["attempt"] == 1
    assert byid["perm"]["error"] == "told to fail for good (permanent failure)"
    assert len([e for e in events(tmp, "start") if e["id"] == "fail"]) == 3
    assert inflight(r, "w") == 0
    assert d.stop() == 0


def test_timeout_sends_cancel_with_reason(r, daemon, tmp):
    """The deadline sends C timeout; the worker answers and lives on."""
    d = lib_daemon(daemon, tmp, "timeout = 1s\nmax_attempts = 1")
    r.lpush("qw:{w}:pending", json.dumps({"payload": cmd(do="wait"), "id": "slow"}))
    wait_until(lambda: stats(r, "w").get("dead") == 1, 20, what="timed out")
    assert [e["reason"] for e in events(tmp, "cancelled")] == ["timeout"]
    (job,) = dead(r, "w")
    assert job["error"] == "timed out after 1s"
    assert stats(r, "w").get("timed_out") == 1
    # The same process takes the next job: answering C is not a death.
    r.lpush("qw:{w}:pending", cmd(do="ok"))
    wait_until(lambda: stats(r, "w").get("succeeded") == 1, 20, what="next job")
    assert len({e["pid"] for e in events(tmp, "start")}) == 1
    assert "SIGTERM" not in d.log()
    assert d.stop() == 0


IGNORING = r'''
import json, os, signal, socket, struct
signal.signal(signal.SIGTERM, signal.SIG_IGN)
s = socket.socket(fileno=3)
def send(k, b=b""):
    s.sendall(struct.pack(">I", 1 + len(b)) + k + b)
send(b"R", b'{"protocol":1}')
buf = b""
while True:
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
        c = s.recv(65536)
        if not c:
            raise SystemExit(0)
        buf += c
    n = struct.unpack(">I", buf[:4])[0]
    kind, body, buf = buf[4:5], buf[5:4 + n], buf[4 + n:]
    seq = body[:8]
    if kind == b"J":
        payload = body[12 + struct.unpack(">I", body[8:12])[0]:]
        with open(os.environ["EVENTS"], "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "event": "job",
                                "payload": payload.decode()}) + "\n")
        if payload == b"quick":
            send(b"D", seq)
        elif payload == b"GARBAGE":
            s.sendall(os.environ["GARBAGE"].encode("latin-1").decode("unicode_escape")
                      .encode("latin-1"))
    # C frames are ignored, and so is SIGTERM
'''


def raw_daemon(daemon, tmp, source, queue_extra="", env=None, wait_ready=True):
    path = write(tmp, "raw_worker.py", source)
    d = daemon()
    d.conf({"w": queue_conf("%s %s" % (sys.executable, path), "max_attempts = 2\n" + queue_extra)},
           workers="kill_grace = 500ms\n")
    e = {"EVENTS": os.path.join(tmp, "events")}
    e.update(env or {})
    d.start(env=e, wait_ready=wait_ready)
    return d


def test_worker_ignoring_cancel_gets_sigterm_then_sigkill(r, daemon, tmp):
    d = raw_daemon(daemon, tmp, IGNORING, "timeout = 1s\nmax_attempts = 1")
    wait_until(lambda: worker_pids(d), what="a worker ready")
    first = worker_pids(d)[0]
    r.lpush("qw:{w}:pending", "stuck")
    wait_until(lambda: stats(r, "w").get("dead") == 1, 20, what="stuck job dead")
    (job,) = dead(r, "w")
    assert job["error"] == "timed out after 1s"
    log = d.log()
    assert "did not answer the cancel of job" in log
    assert "still running after SIGTERM, sending SIGKILL" in log
    wait_until(lambda: len(worker_pids(d)) == 2, 20, what="a new worker")
    assert not pids_alive([first])
    r.lpush("qw:{w}:pending", "quick")
    wait_until(lambda: stats(r, "w").get("succeeded") == 1, 20, what="next job")
    assert [e["pid"] for e in events(tmp)] == [first, worker_pids(d)[1]]
    assert inflight(r, "w") == 0
    assert d.stop() == 0


def test_worker_crash_mid_job_retries_the_job(r, daemon, tmp):
    d = lib_daemon(daemon, tmp)
    marker = os.path.join(tmp, "crashed")
    r.lpush("qw:{w}:pending", json.dumps({"payload": cmd(do="crash", once=marker),
                                          "id": "crash"}))
    wait_until(lambda: stats(r, "w").get("succeeded") == 1, 20, what="retried job done")
    st = stats(r, "w")
    assert st["failed"] == 1 and st["retried"] == 1, st
    starts = [e for e in events(tmp, "start") if e["id"] == "crash"]
    assert [e["attempt"] for e in starts] == [1, 2]
    assert starts[0]["pid"] != starts[1]["pid"]
    assert "exited with status 3 with 1 jobs; starting another" in d.log()
    assert inflight(r, "w") == 0
    assert d.stop() == 0


@pytest.mark.parametrize("garbage,why", [
    (r"\x00\x00\x00\x02Zx", "unknown frame type 0x5a"),
    (r"\x00\x00\x00\x00", "a frame of length 0"),
    (r"\x7f\x00\x00\x00", "a frame of 2130706432 bytes"),
    (r"\x00\x00\x00\x09D\x00\x00\x00\x00\x00\x00\x99\x99", "which it does not have"),
    (r"\x00\x00\x00\x05D\x00\x00\x00\x00", "is too short"),
])
def test_protocol_garbage_kills_the_worker_not_the_job(r, daemon, tmp, garbage, why):
    d = raw_daemon(daemon, tmp, IGNORING, env={"GARBAGE": garbage})
    r.lpush("qw:{w}:pending", json.dumps({"payload": "GARBAGE", "id": "g"}))
    wait_until(lambda: stats(r, "w").get("dead") == 1, 20, what="job dead after 2 tries")
    (job,) = dead(r, "w")
    assert job["error"].startswith("the worker broke the protocol: "), job
    assert why in job["error"], job
    assert stats(r, "w")["failed"] == 2
    assert why in d.log()
    # Each bad process was replaced, and the daemon goes on.
    wait_until(lambda: len(worker_pids(d)) >= 3, 20, what="replacement workers")
    r.lpush("qw:{w}:pending", "quick")
    wait_until(lambda: stats(r, "w").get("succeeded") == 1, 20, what="next job")
    assert inflight(r, "w") == 0
    assert d.stop() == 0


def test_worker_that_never_says_ready(r, daemon, tmp):
    """No R: a startup failure in the log and STATUS=; the daemon is up and
    the job waits in pending."""
    silent = "import time\nprint('starting up', flush=True)\ntime.sleep(3600)\n"
    d = raw_daemon(daemon, tmp, silent)
    r.lpush("qw:{w}:pending", "waits")
    d.wait_log("sent no R frame within 10s of its start", 30)
    d.wait_message("did not start: sent no R frame within 10s", 15)
    assert "worker w[" in d.log() and "starting up" in d.log()
    assert r.lrange("qw:{w}:pending", 0, -1) == [b"waits"]
    assert not stats(r, "w")
    assert d.stop() == 0
    assert r.lrange("qw:{w}:pending", 0, -1) == [b"waits"]


def test_worker_that_exits_at_start(r, daemon, tmp):
    d = raw_daemon(daemon, tmp, "raise SystemExit(4)\n")
    d.wait_message("exited with status 4 before it sent R", 15)
    assert "did not start: it exited with status 4 before it sent R" in d.log()
    r.lpush("qw:{w}:pending", "waits")
    # Restarted with a growing backoff: several tries, not a tight loop.
    wait_until(lambda: d.log().count("did not start") >= 3, 20, what="restarts")
    assert r.lrange("qw:{w}:pending", 0, -1) == [b"waits"]
    assert d.stop() == 0


def test_drain_cancels_with_shutdown_and_requeues(r, daemon, tmp):
    d = lib_daemon(daemon, tmp, "timeout = 60s", workers="shutdown_timeout = 1s\n")
    r.lpush("qw:{w}:pending", json.dumps({"payload": cmd(do="wait"), "id": "long"}))
    wait_until(lambda: events(tmp, "start"), what="job started")
    pid = events(tmp, "start")[0]["pid"]
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert [e["reason"] for e in events(tmp, "cancelled")] == ["shutdown"]
    (job,) = pending(r, "w")
    assert job["id"] == "long" and job["interrupted"] == 1 and job["attempt"] == 0
    assert stats(r, "w").get("requeued") == 1
    assert inflight(r, "w") == 0
    assert not pids_alive([pid])


def test_worker_dying_in_drain_requeues(r, daemon, tmp):
    """A worker killed while the drain waits for its job: the job goes back
    to pending, attempt unchanged."""
    d = lib_daemon(daemon, tmp, "timeout = 60s", workers="shutdown_timeout = 30s\n")
    r.lpush("qw:{w}:pending", json.dumps({"payload": cmd(do="wait"), "id": "long"}))
    wait_until(lambda: events(tmp, "start"), what="job started")
    pid = events(tmp, "start")[0]["pid"]
    d.signal(signal.SIGTERM)
    d.wait_log("SIGTERM: stopping")
    os.kill(pid, signal.SIGKILL)
    assert d.wait() == 0
    (job,) = pending(r, "w")
    assert job["id"] == "long" and job["attempt"] == 0 and job["interrupted"] == 1
    assert stats(r, "w").get("requeued") == 1
    assert inflight(r, "w") == 0


def test_max_jobs_replaces_the_process(r, daemon, tmp):
    d = lib_daemon(daemon, tmp, "worker_max_jobs = 2\nconcurrency = 1")
    for i in range(6):
        r.lpush("qw:{w}:pending", json.dumps({"payload": cmd(do="ok"), "id": "j%d" % i}))
    wait_until(lambda: stats(r, "w").get("succeeded") == 6, 30, what="6 jobs")
    pids = [e["pid"] for e in events(tmp, "start")]
    assert len(pids) == 6
    # Two jobs a process, and a new process for every two.
    assert [pids.count(p) for p in dict.fromkeys(pids)] == [2, 2, 2], pids
    assert d.log().count("took worker_max_jobs (2) jobs; replacing it") == 3
    wait_until(lambda: d.log().count(": stopped") >= 3, what="old workers stopped")
    assert inflight(r, "w") == 0
    assert d.stop() == 0


def test_inflight_runs_jobs_side_by_side(r, daemon, tmp):
    gate = os.path.join(tmp, "gate")
    d = lib_daemon(daemon, tmp, "worker_inflight = 3")
    for i in range(4):
        r.lpush("qw:{w}:pending", json.dumps({"payload": cmd(do="gate", gate=gate),
                                              "id": "g%d" % i}))
    wait_until(lambda: len(events(tmp, "start")) == 3, 20, what="3 jobs at once")
    assert len({e["pid"] for e in events(tmp, "start")}) == 1
    assert r.llen("qw:{w}:pending") + len(
        [k for k in r.hkeys("qw:{w}:active:test-1")]) == 4
    open(gate, "w").close()
    wait_until(lambda: stats(r, "w").get("succeeded") == 4, 20, what="4 jobs")
    assert inflight(r, "w") == 0
    assert d.stop() == 0


def test_reload_stops_old_workers_and_starts_new(r, daemon, tmp):
    gate = os.path.join(tmp, "gate")
    d = lib_daemon(daemon, tmp)
    r.lpush("qw:{w}:pending", json.dumps({"payload": cmd(do="gate", gate=gate), "id": "old"}))
    wait_until(lambda: events(tmp, "start"), what="job on the old worker")
    old = events(tmp, "start")[0]["pid"]
    d.conf({"w": "worker = %s %s\nmax_attempts = 3\nworker_processes = 2\n"
            % (sys.executable, os.path.join(tmp, "lib_worker.py"))},
           workers="kill_grace = 1s\n")
    d.signal(signal.SIGHUP)
    wait_until(lambda: len(worker_pids(d)) == 3, 20, what="2 new workers")
    new = worker_pids(d)[1:]
    assert old not in new
    for i in range(4):
        r.lpush("qw:{w}:pending", json.dumps({"payload": cmd(do="ok"), "id": "n%d" % i}))
    wait_until(lambda: stats(r, "w").get("succeeded") == 4, 20, what="new jobs")
    assert {e["pid"] for e in events(tmp, "start") if e["id"] != "old"} <= set(new)
    assert pids_alive([old])          # still finishing its job
    open(gate, "w").close()
    wait_until(lambda: stats(r, "w").get("succeeded") == 5, 20, what="the old job")
    (end,) = [e for e in events(tmp, "end") if e["id"] == "old"]
    assert end["pid"] == old
    d.wait_log("worker w[%d]: stopped" % old)
    assert inflight(r, "w") == 0
    assert d.stop() == 0


def test_worker_output_goes_to_the_log(r, daemon, tmp):
    d = lib_daemon(daemon, tmp)
    r.lpush("qw:{w}:pending", cmd(do="print", text="hello \x1b[31mred"))
    wait_until(lambda: stats(r, "w").get("succeeded") == 1, what="job")
    pid = events(tmp, "start")[0]["pid"]
    d.wait_log("worker w[%d]: to stdout: hello \\x1b[31mred" % pid)
    d.wait_log("worker w[%d]: to stderr: hello \\x1b[31mred" % pid)
    assert d.stop() == 0


def test_python_example_as_shipped(r, daemon, tmp):
    d = daemon()
    d.conf({"w": "worker = %s %s\nworker_inflight = 2\nmax_attempts = 1\ntimeout = 1s"
            % (sys.executable, os.path.join(PYLIB, "examples", "worker.py"))})
    d.start(env={"PYTHONPATH": PYLIB})
    r.lpush("qw:{w}:pending", "hello", "fail", "bad", "sleep 30")
    wait_until(lambda: stats(r, "w").get("dead") == 3, 20, what="3 dead")
    assert stats(r, "w")["succeeded"] == 1
    errors = sorted(j["error"] for j in dead(r, "w"))
    assert errors == ["RuntimeError: asked to fail", "asked to fail for good (permanent failure)",
                      "timed out after 1s"]
    assert re.search(r"worker w\[\d+\]: job \S+ attempt 1 of 1: 5 bytes", d.log())
    assert d.stop() == 0


def test_reference_library_unit_tests():
    p = subprocess.run([sys.executable, "-m", "unittest", "discover", "-s",
                        os.path.join(PYLIB, "tests")],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=PYLIB))
    assert p.returncode == 0, p.stdout + p.stderr


def man_worker():
    """The Python worker printed in qworkerd-worker(7)'s EXAMPLES."""
    text = open(PAGE).read()
    section = text[text.index(".Sh EXAMPLES"):text.index(".Sh SEE ALSO")]
    blocks, block = [], None
    for line in section.splitlines():
        if line.startswith(".Bd -literal"):
            block = []
        elif line.startswith(".Ed") and block is not None:
            blocks.append("\n".join(block))
            block = None
        elif block is not None:
            block.append(line)
    (src,) = [b for b in blocks if b.startswith("#!/usr/bin/python3")]
    return src.replace("\\e", "\\").replace("\\&", "")


def test_man_page_worker_as_printed(r, daemon, tmp):
    src = man_worker()
    assert len(src.splitlines()) <= 30
    path = write(tmp, "minimal.py", src)
    d = daemon()
    d.conf({"w": "worker = %s %s\nmax_attempts = 1" % (sys.executable, path)})
    d.start()
    r.lpush("qw:{w}:pending", "hello", "")
    wait_until(lambda: stats(r, "w").get("succeeded") == 1 and stats(r, "w").get("dead") == 1,
               20, what="both jobs")
    (job,) = dead(r, "w")
    assert job["payload"] == "" and "empty payload" in job["error"]
    assert re.search(r"worker w\[\d+\]: job \S+: 5 bytes", d.log())
    assert d.stop() == 0


@pytest.mark.skipif(NODE is None, reason="node is not installed (tests/deps.sh installs it)")
def test_node_library_unit_tests():
    p = subprocess.run([NODE, "--test", os.path.join(NODELIB, "test")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.skipif(NODE is None, reason="node is not installed (tests/deps.sh installs it)")
def test_node_example_as_shipped(r, daemon, tmp):
    d = daemon()
    d.conf({"w": "worker = %s %s\nworker_inflight = 4\nmax_attempts = 1\ntimeout = 1s"
            % (NODE, os.path.join(NODELIB, "examples", "worker.js"))})
    d.start(env={"NODE_PATH": NODELIB})
    body = bytes(range(256)) * 64
    r.lpush("qw:{w}:pending", "hello", "fail", "bad", "sleep 30", body)
    wait_until(lambda: stats(r, "w").get("dead") == 3 and stats(r, "w").get("succeeded") == 2,
               20, what="5 jobs")
    errors = sorted(j["error"] for j in dead(r, "w"))
    assert errors == ["asked to fail", "asked to fail for good (permanent failure)",
                      "timed out after 1s"]
    assert re.search(r"worker w\[\d+\]: job \S+ attempt 1 of 1: 16384 bytes", d.log())
    assert len(worker_pids(d)) == 1
    assert d.stop() == 0


DUMPER = r'''
import os, socket, struct
s = socket.socket(fileno=3)
s.sendall(struct.pack(">I", 15) + b'R{"protocol":1}')
buf = b""
while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
    buf += s.recv(65536)
n = struct.unpack(">I", buf[:4])[0]
with open(os.environ["DUMP"], "wb") as f:
    f.write(buf[:4 + n])
s.sendall(struct.pack(">I", 9) + b"D" + buf[5:13])
s.recv(65536)   # S: stop
'''


def man_hex_blocks():
    """Each literal block of the page's EXAMPLES as the bytes its hex lines
    spell."""
    text = open(PAGE).read()
    section = text[text.index(".Sh EXAMPLES"):text.index(".Sh SEE ALSO")]
    blocks = re.findall(r"^\.Bd -literal[^\n]*\n(.*?)^\.Ed$", section, re.S | re.M)
    out = []
    for b in blocks:
        data = b""
        for line in b.splitlines():
            tokens = line.split()
            if tokens and all(re.fullmatch(r"[0-9a-f]{2}", t) for t in tokens):
                data += bytes(int(t, 16) for t in tokens)
        out.append(data)
    return out


def test_man_page_hex_is_what_the_daemon_sends(r, daemon, tmp):
    """The J frame of the worked example is byte for byte what a daemon
    sends for that job (its deadline aside), and the page's R and D frames
    are what a worker may send."""
    ready, job, done = man_hex_blocks()[:3]
    assert ready == frame(b"R", b'{"protocol":1}')
    assert done == frame(b"D", struct.pack(">Q", 1))
    dump = os.path.join(tmp, "dump")
    path = write(tmp, "dumper.py", DUMPER)
    d = daemon()
    d.conf({"mail": "worker = %s %s" % (sys.executable, path)})
    d.start(env={"DUMP": dump})
    r.lpush("qw:{mail}:pending", json.dumps({"payload": "hello", "id": "a1", "max_attempts": 5}))
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="the job")
    sent = open(dump, "rb").read()
    deadline = re.search(rb'"deadline":(\d+)', sent).group(1)
    assert len(deadline) == len(b"1893456000000")
    assert sent.replace(deadline, b"1893456000000") == job
    assert d.stop() == 0
