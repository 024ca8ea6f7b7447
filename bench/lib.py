#!/usr/bin/python3
"""bench/lib.py - the body of bench/run (run that: it installs what is missing and
builds qworkerd first). Measures qworkerd against a private redis-server, runs the
peers harness (../shared/bench/peers) in the same run when it is there, prints one
table, and writes bench/results/latest.json and bench/results/latest.md.

Every child runs in its own session and is stopped by its pid (or, for the peers'
run-all.sh, by the pids of its process tree) on exit, Ctrl-C and SIGTERM included.
Every wait is bounded. Only the loopback address and a unix socket are used.
"""
import atexit
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
BUILD = os.environ.get("BENCH_BUILD_DIR", os.path.join(ROOT, "build"))
QWORKERD = os.path.join(BUILD, "qworkerd")
NOOP_SO = os.path.join(BUILD, "noop.so")
RESULTS = os.path.join(BENCH, "results")
PEERS_SRC = os.environ.get("BENCH_PEERS_DIR", os.path.join(os.path.dirname(ROOT), "shared", "bench", "peers"))
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def env_int(name, default):
    return int(os.environ.get(name, default))


QUICK = os.environ.get("BENCH_QUICK", "0") == "1"
SCALE = 10 if QUICK else 1
REPS = env_int("BENCH_REPS", 1 if QUICK else 3)
CONC = 10
# Every figure is measured with the shipped defaults: prefetch is left out of
# the config (prefetch = auto) unless BENCH_PREFETCH sets it. The no-op drain
# is measured once more with TUNED_PREFETCH, shown in rows labelled "tuned"
# (BENCH_TUNED=0 skips them).
PREFETCH = os.environ.get("BENCH_PREFETCH") or None
TUNED = os.environ.get("BENCH_TUNED", "1") != "0"
TUNED_PREFETCH = env_int("BENCH_TUNED_PREFETCH", 256)
N_DRAIN = env_int("BENCH_N", 500000 // SCALE)
N_EXEC = env_int("BENCH_EXEC_N", 20000 // SCALE)
N_LAT = env_int("BENCH_LAT_N", 1000 // SCALE)
LAT_GAP = 0.002
N_MEM1 = env_int("BENCH_MEM_N1", 100000 // SCALE)
N_MEM2 = env_int("BENCH_MEM_N2", 1000000 // SCALE)
N_RB = env_int("BENCH_RB_N", 200000 // SCALE)
# Persistent workers (SPEC 12), over TCP as the peers: the Python no-op handler
# (bench/noop_worker.py, python/qworkerd library) as a worker and as an exec
# handler, and the Node one (bench/noop_worker.js, node/qworkerd).
N_PYW = env_int("BENCH_PYW_N", 100000 // SCALE)
N_PYEXEC = env_int("BENCH_PYEXEC_N", 1000 // SCALE)
N_NODEW = env_int("BENCH_NODEW_N", 200000 // SCALE)
# Redis Cluster (section 8): the same no-op drain over CLUSTER_QUEUES queues,
# against one redis-server and against three masters (BENCH_CLUSTER=0 skips it).
CLUSTER = os.environ.get("BENCH_CLUSTER", "1") != "0"
ONLY_CLUSTER = os.environ.get("BENCH_CLUSTER") == "only"   # section 8 alone
CLUSTER_QUEUES = 6
N_CLUSTER = env_int("BENCH_CLUSTER_N", 300000 // SCALE) // CLUSTER_QUEUES * CLUSTER_QUEUES
# The no-op drain of an older qworkerd, built here from git (BENCH_BASELINE=REV,
# e.g. 34986fc, main when issue 10 was filed), in the same run: its tuned
# figure is what qworkerd's own CPU per job is compared with.
BASELINE = os.environ.get("BENCH_BASELINE", "")
PYTHON = "/usr/bin/python3"
NODE = shutil.which("node") or "/usr/bin/node"
# What a user would pick for concurrency 10: ten single-job Python processes
# (the GIL makes threads no faster for a handler that runs Python code, and
# it is what Celery prefork --concurrency 10 does), one Node process with ten
# jobs in flight (what BullMQ's Worker with concurrency 10 does).
PY_WORKER = "worker = %s %s\nworker_processes = %d" % (PYTHON, os.path.join(BENCH, "noop_worker.py"), CONC)
PY_EXEC = "handler = %s %s" % (PYTHON, os.path.join(BENCH, "noop_worker.py"))
NODE_WORKER = "worker = %s %s\nworker_inflight = %d" % (NODE, os.path.join(BENCH, "noop_worker.js"), CONC)
WORKER_ENV = {"PYTHONPATH": os.path.join(ROOT, "python")}
OWN_TIMEOUT = env_int("BENCH_TIMEOUT", 1200)
PEERS_TIMEOUT = env_int("BENCH_PEERS_TIMEOUT", 2400)
PEERS_ONLY = os.environ.get("BENCH_PEERS_ONLY", "bullmq sidekiq sidekiq-quiet celery-prefork rq-10")
QUEUE = "bench"
K_PENDING = "qw:{%s}:pending" % QUEUE
K_STATS = "qw:{%s}:stats" % QUEUE

T_START = time.time()
LOAD0 = os.getloadavg()


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc
def proc_stat(pid):
    """utime+stime (own), cutime+cstime (reaped children) in seconds, and RSS bytes."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return dict(own=(int(rest[11]) + int(rest[12])) / CLK,
                children=(int(rest[13]) + int(rest[14])) / CLK,
                threads=int(rest[17]), rss=int(rest[21]) * PAGE)


def proc_status(pid, key):
    """A kB field of /proc/PID/status (VmRSS, VmHWM, RssAnon, ...) in bytes."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def mib(b):
    return None if b is None else b / 1048576.0


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(xs, p):
    """Nearest-rank percentile of a list."""
    xs = sorted(xs)
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, int(-(-p * len(xs) // 100)) - 1))
    return xs[k]


# --------------------------------------------------------------------------- children
CHILDREN = []   # [Child], stopped in reverse order at exit
TMP = None


class Child:
    """A process in its own session, stopped by its pid (and its tree) at exit."""

    def __init__(self, name, argv, tree=False, term_wait=5.0, **kw):
        self.name, self.tree, self.term_wait = name, tree, term_wait
        self.p = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
        self.pid = self.p.pid
        CHILDREN.append(self)

    def alive(self):
        return self.p.poll() is None

    def wait(self, timeout):
        """Waits for exit (pidfd, no polling); True if it exited."""
        if self.p.returncode is not None:
            return True
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self.p.poll()
            return True
        try:
            r, _, _ = select.select([fd], [], [], max(0.0, timeout))
        finally:
            os.close(fd)
        if r:
            self.p.wait()
            return True
        return False

    def descendants(self):
        kids = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        s = f.read()
                except OSError:
                    continue
                rest = s[s.rindex(")") + 2:].split()
                kids.setdefault(int(rest[1]), []).append(int(d))
        out, stack = [], [self.pid]
        while stack:
            for c in kids.get(stack.pop(), ()):
                out.append(c)
                stack.append(c)
        return out

    def stop(self):
        if not self.alive():
            self.remove()
            return
        pids = [self.pid] + (self.descendants() if self.tree else [])
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if not self.wait(self.term_wait):
            log("%s (pid %d) did not stop on SIGTERM in %.0f s: SIGKILL" % (self.name, self.pid, self.term_wait))
        for pid in ([self.pid] + self.descendants()) if self.tree else [self.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.tree:
            # descendants may outlive the root for a moment (their own sessions)
            for _ in range(3):
                for pid in self.descendants():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)
        self.wait(5.0)
        self.remove()

    def remove(self):
        if self in CHILDREN:
            CHILDREN.remove(self)


def cleanup():
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, signal.SIG_IGN)
    signal.alarm(0)
    for c in reversed(list(CHILDREN)):
        try:
            c.stop()
        except Exception as e:  # keep stopping the others
            log("stopping %s: %s" % (c.name, e))
    if TMP and os.path.isdir(TMP):
        shutil.rmtree(TMP, ignore_errors=True)


class Timeout(Exception):
    pass


def on_signal(signum, _frame):
    if signum == signal.SIGALRM:
        raise Timeout("time limit reached")
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    log("%s: stopping everything" % signal.Signals(signum).name)
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------- redis-server
class Redis:
    def __init__(self, tmp):
        self.sock = os.path.join(tmp, "redis.sock")
        with socket.socket() as s:      # a free loopback port (the peers use 6390)
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = os.path.join(tmp, "redis.log")
        self.child = Child("redis-server", [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
            "--unixsocket", self.sock, "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", tmp, "--logfile", self.log])
        self.pid = self.child.pid
        self.unix = redis.Redis(unix_socket_path=self.sock)
        self.tcp = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.unix.ping() and int(self.tcp.info("server")["process_id"]) == self.pid:
                    break
            except (redis.ConnectionError, OSError):
                pass
            if time.monotonic() > deadline or not self.child.alive():
                raise RuntimeError("redis-server did not start: see %s" % self.log)
            time.sleep(0.05)
        self.version = self.unix.info("server")["redis_version"]

    def client(self, transport):
        return self.unix if transport == "unix" else self.tcp

    def address(self, transport):
        return "unix:" + self.sock if transport == "unix" else "127.0.0.1:%d" % self.port

    def cpu(self):
        return proc_stat(self.pid)["own"]

    def stop(self):
        self.child.stop()


def enqueue(r, n, start=0, batch=1000, per_pipeline=50, key=K_PENDING):
    """LPUSH n raw jobs, 1000 values per LPUSH, 50 LPUSH per pipeline."""
    p = r.pipeline(transaction=False)
    i = cmds = 0
    while i < n:
        k = min(batch, n - i)
        p.lpush(key, *[b"job-%d" % j for j in range(start + i, start + i + k)])
        i += k
        cmds += 1
        if cmds == per_pipeline:
            p.execute()
            cmds = 0
    p.execute()


# --------------------------------------------------------------------------- qworkerd
def write_conf(tmp, rs, transport, handler_line, tag, conc=CONC, prefetch=PREFETCH):
    """PREFETCH None leaves the key out: the shipped default."""
    path = os.path.join(tmp, "qworkerd-%s.conf" % tag)
    with open(path, "w") as f:
        f.write("[redis]\naddress = %s\n\n"
                "[workers]\nconcurrency = %d\nlog_level = warning\nshutdown_timeout = 5s\n"
                "instance = bench\n\n"
                "[queue %s]\n%s\n%s" % (rs.address(transport), conc, QUEUE, handler_line,
                                          "" if prefetch is None else "prefetch = %s\n" % prefetch))
    return path


class Daemon:
    def __init__(self, tmp, conf, tag, env_extra=None, qworkerd=None):
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.update(env_extra or {})
        self.log_path = os.path.join(tmp, "qworkerd-%s.log" % tag)
        self.logf = open(self.log_path, "wb")
        self.t0 = time.monotonic()
        self.child = Child("qworkerd", [qworkerd or QWORKERD, "-c", conf], env=env,
                           stdout=self.logf, stderr=subprocess.STDOUT)
        self.pid = self.child.pid

    def check_alive(self):
        if not self.child.alive():
            raise RuntimeError("qworkerd exited with %s: %s" % (self.child.p.returncode, self.log_tail()))

    def log_tail(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def term(self, timeout=15.0):
        """SIGTERM; seconds until it was reaped (None: SIGKILLed after TIMEOUT)."""
        t = time.monotonic()
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        ok = self.child.wait(timeout)
        dt = time.monotonic() - t
        if not ok:
            self.child.stop()
        self.child.remove()
        self.logf.close()
        return dt if ok else None


def wait_count(r, key, field, n, timeout, daemon, interval=0.01, on_first=None):
    """Polls HGET key field every INTERVAL until >= n; returns (t_end, t_first, c_first)."""
    deadline = time.monotonic() + timeout
    t_first = c_first = None
    while True:
        v = r.hget(key, field)
        now = time.monotonic()
        c = int(v) if v else 0
        if c and t_first is None:
            t_first, c_first = now, c
            if on_first:
                on_first()
        if c >= n:
            return now, t_first, c_first
        if now > deadline:
            raise RuntimeError("timeout: %d of %d %s after %.0f s; stats %s; log: %s" % (
                c, n, field, timeout, r.hgetall(key), daemon.log_tail()))
        daemon.check_alive()
        if int(r.hget(key, "failed") or 0):
            raise RuntimeError("jobs failed: stats %s; log: %s" % (r.hgetall(key), daemon.log_tail()))
        time.sleep(interval)


def drain(tmp, rs, transport, handler_line, n, tag, timeout, prefetch=PREFETCH, env=None, qworkerd=None):
    r = rs.client(transport)
    r.flushall()
    t = time.monotonic()
    enqueue(r, n)
    enq_s = time.monotonic() - t
    if r.llen(K_PENDING) != n:
        raise RuntimeError("pending holds %d, expected %d" % (r.llen(K_PENDING), n))
    conf = write_conf(tmp, rs, transport, handler_line, tag, prefetch=prefetch)
    rc0 = rs.cpu()
    first = {}

    d = Daemon(tmp, conf, tag, env, qworkerd)

    def on_first():
        first["q"], first["r"] = proc_stat(d.pid), rs.cpu()
        first["w"] = tree_cpu(d)

    try:
        t_end, t_first, c_first = wait_count(r, K_STATS, "succeeded", n, timeout, d, on_first=on_first)
        st, rc1, w_cpu = proc_stat(d.pid), rs.cpu(), tree_cpu(d)
        rss, hwm = proc_status(d.pid, "VmRSS"), proc_status(d.pid, "VmHWM")
    finally:
        exit_s = d.term()
    stats = {k.decode(): int(v) for k, v in r.hgetall(K_STATS).items()}
    left = r.llen(K_PENDING)
    if left or stats.get("succeeded") != n or stats.get("failed"):
        raise RuntimeError("after the drain: %d pending, stats %s" % (left, stats))
    dt = t_end - d.t0
    steady = (n - c_first) / (t_end - t_first) if t_end > t_first else None
    # persistent workers are not reaped during the drain: their CPU is read live
    q_cpu = st["own"] + st["children"] + w_cpu
    res = dict(n=n, transport=transport, seconds=dt, jobs_per_s=n / dt,
               steady_jobs_per_s=steady, start_to_first_s=t_first - d.t0,
               qworkerd_cpu_s=q_cpu, qworkerd_own_cpu_s=st["own"], handler_cpu_s=st["children"] + w_cpu,
               redis_cpu_s=rc1 - rc0,
               qworkerd_cpu_s_per_100k=q_cpu * 1e5 / n, redis_cpu_s_per_100k=(rc1 - rc0) * 1e5 / n,
               qworkerd_cpu_util_pct=100 * q_cpu / dt, redis_cpu_util_pct=100 * (rc1 - rc0) / dt,
               steady_qworkerd_cpu_s_per_100k=(q_cpu - first["q"]["own"] - first["q"]["children"] - first["w"])
               * 1e5 / (n - c_first)
               if steady else None,
               steady_redis_cpu_s_per_100k=(rc1 - first["r"]) * 1e5 / (n - c_first) if steady else None,
               rss_end_mib=mib(rss), vmhwm_mib=mib(hwm), threads_end=st["threads"],
               enqueue_s=enq_s, exit_s=exit_s, stats=stats)
    return res


def tree_cpu(d):
    """CPU seconds (own + reaped children) of the daemon's live descendants:
    persistent workers, or exec handlers still running."""
    total = 0.0
    for pid in d.child.descendants():
        st = proc_stat(pid)
        if st:
            total += st["own"] + st["children"]
    return total


# --------------------------------------------------------------------------- helpers built here
def build_helpers(tmp):
    out = {}
    cc = ["gcc", "-O2", "-Wall"]
    for name, args in (("spawnlimit", ["-o", "spawnlimit", os.path.join(BENCH, "spawnlimit.c")]),
                       ("stamp.so", ["-shared", "-fPIC", "-I", os.path.join(ROOT, "src"), "-o", "stamp.so",
                                     os.path.join(BENCH, "stamp.c")]),
                       ("stamp_exec", ["-o", "stamp_exec", os.path.join(BENCH, "stamp_exec.c")]),
                       ("spawnlat", ["-o", "spawnlat", os.path.join(BENCH, "spawnlat.c")])):
        subprocess.run(cc + args, cwd=tmp, check=True, timeout=120)
        out[name] = os.path.join(tmp, name)
    return out


# --------------------------------------------------------------------------- the measurements
def m_noop(tmp, rs, rep):
    """The no-op drain with the config's prefetch (the default), then, when TUNED,
    with prefetch = TUNED_PREFETCH (keys "tuned_unix", "tuned_tcp")."""
    out = {}
    kinds = [("", PREFETCH)] + ([("tuned_", TUNED_PREFETCH)] if TUNED else [])
    for kind, prefetch in kinds:
        for transport in ("unix", "tcp"):
            log("no-op drain, %d jobs, %s, prefetch %s, run %d/%d" % (
                N_DRAIN, transport, "unset (default)" if prefetch is None else prefetch, rep + 1, REPS))
            x = out[kind + transport] = drain(tmp, rs, transport, "plugin = %s" % NOOP_SO, N_DRAIN,
                                              "noop-%s%s-%d" % (kind, transport, rep),
                                              timeout=max(60, N_DRAIN / 2000), prefetch=prefetch)
            log("  %.0f jobs/s (steady %.0f), qworkerd %.3f / redis %.3f CPU s per 100k" % (
                x["jobs_per_s"], x["steady_jobs_per_s"] or 0, x["qworkerd_cpu_s_per_100k"],
                x["redis_cpu_s_per_100k"]))
    return out


def build_baseline(tmp, rev):
    """REV's source (git archive) built in TMP with its own tests/build.sh:
    the directory holding its qworkerd and noop.so."""
    src = os.path.join(tmp, "baseline-src")
    os.makedirs(src)
    log("baseline: building qworkerd %s in %s" % (rev, src))
    arch = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", rev], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120)
    if arch.returncode != 0:
        raise RuntimeError("BENCH_BASELINE=%s: git archive failed: %s" % (rev, arch.stderr.decode(errors="replace")))
    subprocess.run(["tar", "-x", "-C", src], input=arch.stdout, check=True, timeout=120)
    b = subprocess.run(["sh", os.path.join(src, "tests", "build.sh"), os.path.join(src, "build")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1200)
    if b.returncode != 0:
        raise RuntimeError("BENCH_BASELINE=%s: build failed: %s" % (rev, b.stdout.decode(errors="replace")[-2000:]))
    return os.path.join(src, "build")


def m_baseline(tmp, rs, build, rep):
    """The baseline's no-op drain over TCP, with its default and with the tuned prefetch."""
    out = {}
    for kind, prefetch in (("", None), ("tuned_", TUNED_PREFETCH)):
        log("baseline %s: no-op drain, %d jobs, tcp, prefetch %s, run %d/%d" % (
            BASELINE, N_DRAIN, "unset (its default)" if prefetch is None else prefetch, rep + 1, REPS))
        x = out[kind + "tcp"] = drain(tmp, rs, "tcp", "plugin = %s" % os.path.join(build, "noop.so"), N_DRAIN,
                                      "base-%stcp-%d" % (kind, rep), timeout=max(60, N_DRAIN / 2000),
                                      prefetch=prefetch, qworkerd=os.path.join(build, "qworkerd"))
        log("  %.0f jobs/s, qworkerd %.3f / redis %.3f CPU s per 100k" % (
            x["jobs_per_s"], x["qworkerd_cpu_s_per_100k"], x["redis_cpu_s_per_100k"]))
    return out


def m_exec(tmp, rs, helpers, rep):
    log("exec /bin/true drain, %d jobs, run %d/%d" % (N_EXEC, rep + 1, REPS))
    x = drain(tmp, rs, "unix", "handler = /bin/true", N_EXEC, "exec-%d" % rep, timeout=max(60, N_EXEC / 200))
    log("  %.0f jobs/s" % x["jobs_per_s"])
    log("spawn limit, %d x /bin/true, %d at a time, run %d/%d" % (N_EXEC, CONC, rep + 1, REPS))
    p = subprocess.run([helpers["spawnlimit"], str(N_EXEC), str(CONC), "/bin/true"], capture_output=True,
                       text=True, timeout=max(60, N_EXEC / 200), start_new_session=True)
    if p.returncode != 0:
        raise RuntimeError("spawnlimit failed: %s" % p.stderr)
    n, secs, rate = p.stdout.split()
    log("  %.0f children/s" % float(rate))
    return dict(exec=x, spawn=dict(n=int(n), seconds=float(secs), per_s=float(rate)))


def m_workers(tmp, rs, rep):
    """Persistent workers against the same handler as an exec handler (Python)
    and against BullMQ (Node, compared after the peers ran), over TCP."""
    out = {}
    for key, line, n in (("py_worker", PY_WORKER, N_PYW), ("py_exec", PY_EXEC, N_PYEXEC),
                         ("node_worker", NODE_WORKER, N_NODEW)):
        if key == "node_worker" and not os.path.exists(NODE):
            continue
        log("%s drain, %d jobs, tcp, run %d/%d" % (key, n, rep + 1, REPS))
        x = out[key] = drain(tmp, rs, "tcp", line, n, "%s-%d" % (key, rep),
                             timeout=max(60, n / (20 if key == "py_exec" else 1000)), env=WORKER_ENV)
        log("  %.0f jobs/s (steady %.0f), qworkerd %.3f + workers %.3f / redis %.3f CPU s per 100k" % (
            x["jobs_per_s"], x["steady_jobs_per_s"] or 0, x["qworkerd_own_cpu_s"] * 1e5 / n,
            x["handler_cpu_s"] * 1e5 / n, x["redis_cpu_s_per_100k"]))
    return out


LAT_HANDLERS = {"py_worker": PY_WORKER, "node_worker": NODE_WORKER}


def exec_gap(runs):
    """The exec pickup's pace: LAT_GAP, or slower on a machine whose spawn limit
    (measured in this run) is low, so that pushes stay at a quarter of it at
    most and the row measures pickup, not a backlog."""
    rate = median([r["spawn"]["per_s"] for r in runs["exec"]])
    return max(LAT_GAP, 4.0 / rate) if rate else LAT_GAP


def m_spawnlat(tmp, helpers, gap, rep):
    """The same exec handler started directly (posix_spawn, stdin a pipe), GAP apart:
    what the exec itself costs, beside which qworkerd's exec pickup is read."""
    stamp_file = os.path.join(tmp, "stamps-spawn-%d" % rep)
    log("exec handler started directly, %d times %.1f ms apart, run %d/%d" % (N_LAT, gap * 1000, rep + 1, REPS))
    subprocess.run([helpers["spawnlat"], str(N_LAT), str(int(round(gap * 1000))), helpers["stamp_exec"]],
                   env=dict(os.environ, BENCH_STAMP_FILE=stamp_file), check=True, timeout=N_LAT * (gap + 0.1) + 60)
    with open(stamp_file) as f:
        lat = [int(x) / 1e6 for x in f.read().split()]
    res = dict(n=len(lat), p50_ms=pct(lat, 50), p99_ms=pct(lat, 99))
    log("  p50 %.3f ms, p99 %.3f ms" % (res["p50_ms"], res["p99_ms"]))
    return res


def m_latency(tmp, rs, helpers, kind, rep, gap=LAT_GAP):
    """Push-to-handler-start with an idle daemon: N_LAT jobs pushed one at a time, GAP apart."""
    r = rs.unix
    r.flushall()
    stamp_file = os.path.join(tmp, "stamps-%s-%d" % (kind, rep))
    handler = LAT_HANDLERS.get(kind) or (("plugin = %s" % helpers["stamp.so"]) if kind == "plugin"
                                         else "handler = %s" % helpers["stamp_exec"])
    conf = write_conf(tmp, rs, "unix", handler, "lat-%s-%d" % (kind, rep))
    d = Daemon(tmp, conf, "lat-%s-%d" % (kind, rep), dict(WORKER_ENV, BENCH_STAMP_FILE=stamp_file))
    log("pickup latency, %s handler, %d jobs %.1f ms apart, run %d/%d" % (kind, N_LAT, gap * 1000, rep + 1, REPS))
    try:
        wait_ready_by_lease(r, d)
        # idle: waiting for a wake-up (and persistent workers started and said R)
        time.sleep(3.0 if kind in LAT_HANDLERS else 1.0)
        d.check_alive()
        nxt = time.monotonic()
        for _ in range(N_LAT):
            nxt += gap
            r.lpush(K_PENDING, str(time.time_ns()))
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        wait_count(r, K_STATS, "succeeded", N_LAT, 30, d)
    finally:
        d.term()
    with open(stamp_file) as f:
        lat = [int(x) / 1e6 for x in f.read().split()]
    if len(lat) != N_LAT:
        raise RuntimeError("%d stamps for %d jobs" % (len(lat), N_LAT))
    res = dict(kind=kind, n=N_LAT, p50_ms=pct(lat, 50), p90_ms=pct(lat, 90), p99_ms=pct(lat, 99),
               max_ms=max(lat), min_ms=min(lat), mean_ms=sum(lat) / len(lat))
    log("  p50 %.3f ms, p99 %.3f ms, max %.3f ms" % (res["p50_ms"], res["p99_ms"], res["max_ms"]))
    return res


def wait_ready_by_lease(r, d, timeout=10.0):
    """Without NOTIFY_SOCKET: ready once qworkerd's wake-up connection is subscribed (flag P:
    an idle queue waits for Redis to say its pending list changed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d.check_alive()
        if any("P" in c.get("flags", "") for c in r.client_list()):
            return
        time.sleep(0.01)
    raise RuntimeError("qworkerd did not wait for jobs within %.0f s: %s" % (timeout, d.log_tail()))


def m_idle(tmp, rs, rep):
    """exec -> READY=1 (own NOTIFY_SOCKET), VmRSS after 1 s idle, SIGTERM -> reaped."""
    r = rs.unix
    r.flushall()
    nsock_path = os.path.join(tmp, "notify-%d.sock" % rep)
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(nsock_path)
    try:
        conf = write_conf(tmp, rs, "unix", "plugin = %s" % NOOP_SO, "idle-%d" % rep)
        d = Daemon(tmp, conf, "idle-%d" % rep, {"NOTIFY_SOCKET": nsock_path})
        try:
            ready = None
            deadline = d.t0 + 10
            while ready is None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([ns], [], [], left)[0]:
                    raise RuntimeError("no READY=1 within 10 s: %s" % d.log_tail())
                msg = ns.recv(65536)
                if b"READY=1" in msg.split(b"\n"):
                    ready = time.monotonic() - d.t0
            time.sleep(1.0)
            d.check_alive()
            st0 = proc_stat(d.pid)
            t = time.monotonic()
            time.sleep(1.0)
            st1 = proc_stat(d.pid)
            idle_cpu = 100 * (st1["own"] - st0["own"]) / (time.monotonic() - t)
            rss, anon = proc_status(d.pid, "VmRSS"), proc_status(d.pid, "RssAnon")
            threads = st1["threads"]
        finally:
            exit_s = d.term()
    finally:
        ns.close()
    if exit_s is None or d.child.p.returncode != 0:
        raise RuntimeError("idle qworkerd did not exit 0 on SIGTERM (%s)" % d.child.p.returncode)
    res = dict(ready_ms=ready * 1000, rss_mib=mib(rss), rss_anon_mib=mib(anon), threads=threads,
               idle_cpu_pct=idle_cpu, sigterm_exit_ms=exit_s * 1000)
    log("idle run %d/%d: READY=1 after %.1f ms, VmRSS %.2f MiB, SIGTERM->exit %.1f ms" % (
        rep + 1, REPS, res["ready_ms"], res["rss_mib"], res["sigterm_exit_ms"]))
    return res


def m_memory(tmp, rs, rep):
    """RSS after N_MEM1 no-op jobs and after N_MEM2 in one process (the rest enqueued while it runs)."""
    r = rs.unix
    r.flushall()
    log("memory: RSS after %d and after %d no-op jobs, run %d/%d" % (N_MEM1, N_MEM2, rep + 1, REPS))
    enqueue(r, N_MEM1)
    conf = write_conf(tmp, rs, "unix", "plugin = %s" % NOOP_SO, "mem-%d" % rep)
    d = Daemon(tmp, conf, "mem-%d" % rep)
    try:
        wait_count(r, K_STATS, "succeeded", N_MEM1, max(60, N_MEM1 / 2000), d)
        time.sleep(0.5)
        rss1 = proc_status(d.pid, "VmRSS")
        done = N_MEM1
        while done < N_MEM2:
            k = min(100000, N_MEM2 - done)
            enqueue(r, k, start=done)
            done += k
            d.check_alive()
        wait_count(r, K_STATS, "succeeded", N_MEM2, max(60, N_MEM2 / 2000), d)
        time.sleep(0.5)
        rss2, hwm = proc_status(d.pid, "VmRSS"), proc_status(d.pid, "VmHWM")
    finally:
        d.term()
    res = dict(rss_after_1_mib=mib(rss1), rss_after_2_mib=mib(rss2), diff_mib=mib(rss2 - rss1),
               vmhwm_mib=mib(hwm), n1=N_MEM1, n2=N_MEM2)
    log("  %.2f MiB -> %.2f MiB (%+.2f MiB)" % (res["rss_after_1_mib"], res["rss_after_2_mib"], res["diff_mib"]))
    return res


RB_RE = re.compile(r"([A-Z]+): ([\d.]+) requests per second")


def m_redisbench(rs, rep):
    out = []
    for transport in ("unix", "tcp"):
        where = ["-s", rs.sock] if transport == "unix" else ["-h", "127.0.0.1", "-p", str(rs.port)]
        for P in (1, 16):
            rs.unix.flushall()
            for test in ("lpush", "rpop"):    # in that order, as -t lpush,rpop runs them
                c0 = rs.cpu()
                p = subprocess.run(["redis-benchmark"] + where + ["-t", test, "-n", str(N_RB), "-c", str(CONC),
                                                                  "-P", str(P), "-q"],
                                   capture_output=True, text=True, timeout=120, start_new_session=True)
                c1 = rs.cpu()
                m = RB_RE.findall(p.stdout.replace("\r", "\n"))
                if p.returncode != 0 or not m:
                    raise RuntimeError("redis-benchmark failed: %s %s" % (p.stdout[-500:], p.stderr[-500:]))
                out.append(dict(transport=transport, pipeline=P, test=test.upper(), rps=float(m[-1][1]),
                                redis_cpu_us_per_req=(c1 - c0) * 1e6 / N_RB))
    log("redis-benchmark run %d/%d: %s" % (rep + 1, REPS, ", ".join(
        "%s %s P%d %.0f/s" % (x["test"], x["transport"], x["pipeline"], x["rps"]) for x in out)))
    return out


# --------------------------------------------------------------------------- Redis Cluster
def free_node_port(taken):
    """A loopback port below 55536 free along with its cluster bus port (+10000),
    not in TAKEN (nodes started but maybe not listening yet)."""
    for port in range(21000 + os.getpid() % 20000, 55000, 7):
        if port in taken:
            continue
        socks = []
        try:
            for p in (port, port + 10000):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port pair for a cluster node")


class Cluster:
    """Three redis-server masters, cluster-enabled, each in its own directory,
    joined by redis-cli --cluster create; same flags as the single one."""

    def __init__(self, tmp):
        self.children, self.ports, self.clients = [], [], {}
        for i in range(3):
            port = free_node_port(self.ports)
            d = os.path.join(tmp, "cluster-%d" % port)
            os.makedirs(d)
            self.children.append(Child("redis-server cluster node %d" % port, [
                "redis-server", "--bind", "127.0.0.1", "--port", str(port),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000", "--cluster-require-full-coverage", "no",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", d, "--logfile", os.path.join(d, "redis.log")]))
            self.ports.append(port)
            self.clients[port] = redis.Redis(host="127.0.0.1", port=port)
        for port, c in zip(self.ports, self.children):
            self._wait(lambda: self._ping(port), "cluster node %d to start" % port, c)
        p = subprocess.run(["redis-cli", "--cluster", "create"] + ["127.0.0.1:%d" % x for x in self.ports]
                           + ["--cluster-replicas", "0", "--cluster-yes"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed: %s" % p.stdout.decode(errors="replace")[-1000:])
        self._wait(self._ok, "the cluster to agree on its slots")

    def _wait(self, cond, what, child=None, timeout=30):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline or (child and not child.alive()):
                raise RuntimeError("timeout waiting for %s" % what)
            time.sleep(0.05)

    def _ping(self, port):
        try:
            return self.clients[port].ping()
        except (redis.ConnectionError, OSError):
            return False

    def _ok(self):
        maps = []
        for c in self.clients.values():
            if b"cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                return False
            maps.append(sorted((r[0], r[1], r[2][1]) for r in c.execute_command("CLUSTER", "SLOTS")))
        return all(m == maps[0] for m in maps)

    def master_of(self, name):
        c = self.clients[self.ports[0]]
        slot = c.execute_command("CLUSTER", "KEYSLOT", name)
        for start, end, node in c.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return node[1]
        raise RuntimeError("slot %d of %s is served by nobody" % (slot, name))

    def cpu(self):
        return sum(proc_stat(c.pid)["own"] for c in self.children)

    def address(self):
        return ",".join("127.0.0.1:%d" % p for p in self.ports)

    def stop(self):
        for c in self.children:
            c.stop()


def cluster_queues(cl, spread=True):
    """CLUSTER_QUEUES queue names, as many on each master (2 of 6 on each of 3),
    or with SPREAD false all on the first master."""
    per = CLUSTER_QUEUES // len(cl.ports) if spread else CLUSTER_QUEUES
    got = {p: [] for p in (cl.ports if spread else cl.ports[:1])}
    for i in range(10000):
        name = "bench%d" % i
        owner = got.get(cl.master_of(name))
        if owner is not None and len(owner) < per:
            owner.append(name)
        if all(len(v) == per for v in got.values()):
            return [q for p in cl.ports for q in got.get(p, [])]
    raise RuntimeError("could not put %d queues on the masters" % CLUSTER_QUEUES)


# The queues' scripts and functions: their INFO commandstats usec includes the
# commands they call (which commandstats counts again under their own names).
SCRIPT_CMDS = ("evalsha", "evalsha_ro", "eval", "eval_ro", "fcall", "fcall_ro")
# Seconds an idle qworkerd stays connected after a drain, to measure what
# Redis spends per second without jobs (cron, cluster bus, qworkerd's polls).
CLUSTER_IDLE_S = 2.0


class Nodes:
    """The redis-servers of one drain, read through INFO: CPU (getrusage, in
    microseconds, where /proc counts 10 ms ticks), commandstats, and read
    system calls from /proc (one per socket read, so per round of commands)."""

    def __init__(self, pids_clients):
        self.nodes = pids_clients

    def cpu(self):
        t = 0.0
        for _, c in self.nodes:
            i = c.info("cpu")
            t += float(i["used_cpu_user"]) + float(i["used_cpu_sys"])
        return t

    def reads(self):
        n = 0
        for pid, _ in self.nodes:
            try:
                with open("/proc/%d/io" % pid) as f:
                    n += int(next(x for x in f if x.startswith("syscr:")).split()[1])
            except (OSError, StopIteration, ValueError):
                return None
        return n

    def reset(self):
        for _, c in self.nodes:
            c.config_resetstat()

    def scripts(self):
        """(calls, usec) of the scripts and functions since reset()."""
        calls = usec = 0
        for _, c in self.nodes:
            for k, v in c.info("commandstats").items():
                if k.split("_", 1)[-1] in SCRIPT_CMDS:
                    calls += v["calls"]
                    usec += v["usec"]
        return calls, usec


def drain_queues(tmp, address, cluster_line, clients, nodes, n, tag):
    """The no-op drain of n jobs spread evenly over the queues of CLIENTS (queue ->
    client of the node serving it); NODES are the redis-servers to count."""
    queues = list(clients)
    per = n // len(queues)
    for _, c in nodes.nodes:
        c.flushall()
    for q in queues:
        enqueue(clients[q], per, key="qw:{%s}:pending" % q)
    conf = os.path.join(tmp, "qworkerd-%s.conf" % tag)
    with open(conf, "w") as f:
        f.write("[redis]\n%saddress = %s\n\n[workers]\nconcurrency = %d\nlog_level = warning\n"
                "shutdown_timeout = 5s\ninstance = bench\n\n" % (cluster_line, address, CONC))
        for q in queues:
            f.write("[queue %s]\nplugin = %s\n\n" % (q, NOOP_SO))
    nodes.reset()
    rc0, rd0 = nodes.cpu(), nodes.reads()
    d = Daemon(tmp, conf, tag)
    try:
        deadline = time.monotonic() + max(60, n / 2000)
        while True:
            done = failed = 0
            for q in queues:
                st = clients[q].hmget("qw:{%s}:stats" % q, "succeeded", "failed")
                done += int(st[0] or 0)
                failed += int(st[1] or 0)
            t_end = time.monotonic()
            if done >= n:
                break
            if failed:
                raise RuntimeError("%s: %d jobs failed; log: %s" % (tag, failed, d.log_tail()))
            if t_end > deadline:
                raise RuntimeError("%s: timeout, %d of %d done; log: %s" % (tag, done, n, d.log_tail()))
            d.check_alive()
            time.sleep(0.01)
        rc1, rd1, st = nodes.cpu(), nodes.reads(), proc_stat(d.pid)
        calls, usec = nodes.scripts()
        time.sleep(CLUSTER_IDLE_S)
        idle_per_s = (nodes.cpu() - rc1) / (time.monotonic() - t_end)
    finally:
        d.term()
    left = sum(clients[q].llen("qw:{%s}:pending" % q) for q in queues)
    if left:
        raise RuntimeError("%s: %d jobs still pending after the drain" % (tag, left))
    dt = t_end - d.t0
    return dict(n=n, queues=len(queues), seconds=dt, jobs_per_s=n / dt, redis_cpu_s=rc1 - rc0,
                redis_cpu_s_per_100k=(rc1 - rc0) * 1e5 / n, qworkerd_cpu_s_per_100k=st["own"] * 1e5 / n,
                script_calls_per_1000=calls * 1000.0 / n, script_calls_per_s=calls / dt, script_us_per_job=usec / n,
                outside_scripts_us_per_job=((rc1 - rc0) * 1e6 - usec) / n,
                redis_reads_per_1000=(rd1 - rd0) * 1000.0 / n if rd0 is not None and rd1 is not None else None,
                idle_redis_cpu_per_s=idle_per_s, idle_share=idle_per_s * dt / (rc1 - rc0) if rc1 > rc0 else None)


CLUSTER_KINDS = (("single", "one redis-server"), ("cluster", "three-master cluster"),
                 ("one_master", "three-master cluster, all queues on one master"))


def m_cluster(tmp, rs):
    """REPS rounds of drains over 6 queues: one redis-server (TCP); a three-master
    cluster built here, the queues spread over its masters; the same cluster with
    every queue on one master (the cost of cluster mode alone, without the spread)."""
    cl = Cluster(tmp)
    out = []
    try:
        spread, one = cluster_queues(cl), cluster_queues(cl, spread=False)
        log("cluster: masters %s; queues %s; all on one master: %s" % (cl.address(), ", ".join(
            "%s on %d" % (q, cl.master_of(q)) for q in spread), ", ".join(one)))
        cl_nodes = Nodes([(c.pid, cl.clients[p]) for c, p in zip(cl.children, cl.ports)])
        runs = dict(single=(rs.address("tcp"), "", {q: rs.tcp for q in spread}, Nodes([(rs.pid, rs.tcp)])),
                    cluster=(cl.address(), "cluster = yes\n", {q: cl.clients[cl.master_of(q)] for q in spread}, cl_nodes),
                    one_master=(cl.address(), "cluster = yes\n", {q: cl.clients[cl.master_of(q)] for q in one}, cl_nodes))
        for rep in range(REPS):
            x = {}
            for kind, label in CLUSTER_KINDS:
                log("no-op drain, %d jobs over %d queues, %s, run %d/%d" % (N_CLUSTER, CLUSTER_QUEUES, label, rep + 1, REPS))
                address, line, clients, nodes = runs[kind]
                x[kind] = r = drain_queues(tmp, address, line, clients, nodes, N_CLUSTER, "cl-%s-%d" % (kind, rep))
                log("  %.0f jobs/s, qworkerd %.3f / redis %.3f CPU s per 100k; scripts %.1f calls per 1000 jobs,"
                    " %.2f us per job; %s redis reads per 1000 jobs; idle redis %.4f CPU s per s" % (
                        r["jobs_per_s"], r["qworkerd_cpu_s_per_100k"], r["redis_cpu_s_per_100k"],
                        r["script_calls_per_1000"], r["script_us_per_job"],
                        "%.1f" % r["redis_reads_per_1000"] if r["redis_reads_per_1000"] is not None else "?",
                        r["idle_redis_cpu_per_s"]))
            out.append(x)
    finally:
        cl.stop()
    return out


# --------------------------------------------------------------------------- peers
def peers_wanted():
    v = os.environ.get("BENCH_PEERS", "")
    if v == "0" or (QUICK and v != "1"):
        return False, "skipped (BENCH_PEERS=0)" if v == "0" else "skipped (BENCH_QUICK=1)"
    if not os.path.isfile(os.path.join(PEERS_SRC, "run-all.sh")):
        if v == "1":
            raise RuntimeError("BENCH_PEERS=1 but %s/run-all.sh is not there" % PEERS_SRC)
        return False, "skipped (%s not found)" % PEERS_SRC
    return True, ""


def free_port(start):
    for port in range(start, start + 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port near %d" % start)


def run_peers(tmp):
    """Runs the peers' run-all.sh (throughput step only) on a private copy of the peers
    directory, so ../shared stays untouched, and returns its results."""
    copy = os.path.join(tmp, "peers")
    shutil.copytree(PEERS_SRC, copy, symlinks=True,
                    ignore=shutil.ignore_patterns("node_modules", "logs", "raw", "results.json", "failures.txt"))
    for dirpath, dirnames, filenames in os.walk(copy):
        for x in dirnames + filenames:
            p = os.path.join(dirpath, x)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o200)
    os.chmod(copy, 0o755)
    nm = os.path.join(PEERS_SRC, "bullmq", "node_modules")
    if os.path.isdir(os.path.join(nm, "bullmq")):
        os.symlink(nm, os.path.join(copy, "bullmq", "node_modules"))
    port = free_port(6390)
    env = dict(os.environ, REDIS_PORT=str(port), STEPS="throughput", ONLY=PEERS_ONLY, REPS=str(REPS))
    env.pop("REDIS_PID", None)
    logpath = os.path.join(RESULTS, "peers.log")
    log("peers: %s/run-all.sh with STEPS=throughput ONLY=\"%s\" REPS=%d on 127.0.0.1:%d (log: %s; limit %d s)"
        % (PEERS_SRC, PEERS_ONLY, REPS, port, os.path.relpath(logpath, ROOT), PEERS_TIMEOUT))
    t = time.monotonic()
    with open(logpath, "wb") as lf:
        c = Child("peers run-all.sh", ["bash", os.path.join(copy, "run-all.sh")], tree=True, term_wait=20.0,
                  cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = t + PEERS_TIMEOUT
        buf = b""
        fd = c.p.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                c.stop()
                raise RuntimeError("peers step did not finish within %d s" % PEERS_TIMEOUT)
            if select.select([fd], [], [], min(left, 5.0))[0]:
                data = os.read(fd, 65536)
                if not data:
                    break
                lf.write(data)
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    s = line.decode(errors="replace")
                    if s.startswith("===") or "FAILED" in s or "skipped" in s or "refusing" in s:
                        log("peers: " + s.lstrip("= "))
        c.wait(30)
        c.stop()
    rc = c.p.returncode
    res_dir = os.path.join(copy, "results")
    failures = ""
    if os.path.exists(os.path.join(res_dir, "failures.txt")):
        with open(os.path.join(res_dir, "failures.txt")) as f:
            failures = f.read().strip()
    summary, raw = [], []
    try:
        with open(os.path.join(res_dir, "results.json")) as f:
            summary = [s for s in json.load(f)["summary"] if s.get("reps")]
    except (OSError, ValueError, KeyError):
        pass
    for name in sorted(os.listdir(os.path.join(res_dir, "raw"))) if os.path.isdir(os.path.join(res_dir, "raw")) else []:
        if name.startswith(("throughput-", "versions")):
            with open(os.path.join(res_dir, "raw", name)) as f:
                d = json.load(f)
            d.pop("timeline", None)
            raw.append(d)
    log("peers: done in %.0f s (exit %s)%s" % (time.monotonic() - t, rc, "; failures: " + failures if failures else ""))
    return dict(exit=rc, failures=failures, summary=summary, raw=raw, seconds=time.monotonic() - t,
                port=port, only=PEERS_ONLY)


# --------------------------------------------------------------------------- machine
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return ""


def machine(rs_version):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    cflags = ""
    try:
        with open(os.path.join(BUILD, "Makefile")) as f:
            for line in f:
                if line.startswith("CFLAGS ="):
                    cflags = line.split("=", 1)[1].strip()
                    break
    except OSError:
        pass
    virt = sh("systemd-detect-virt 2>/dev/null")
    return dict(nproc=os.cpu_count(), loadavg_at_start=LOAD0, cpu=cpu, mem_gib=round(mem / 2 ** 30), kernel=os.uname().release,
                os=sh(". /etc/os-release && echo \"$PRETTY_NAME\"") + (" (debian_version %s)" % sh("cat /etc/debian_version")),
                virt=virt if virt and virt != "none" else "", redis=rs_version,
                gcc=sh("gcc -dumpfullversion"), python=sys.version.split()[0],
                qworkerd=sh("cd %s && git describe --always --dirty 2>/dev/null" % ROOT),
                qworkerd_version=sh("%s --version" % QWORKERD), cflags=cflags)


# --------------------------------------------------------------------------- table
def fnum(x, nd=0):
    if x is None:
        return "-"
    return "{:,.{}f}".format(x, nd)


def verdict(ok):
    return "-" if ok is None else ("PASS" if ok else "MISS")


def build_rows(res):
    """Rows (section, measure, value, target, result) of the one table."""
    rows = []
    R = res["medians"]
    nd, nt = R["noop_unix"], R["noop_tcp"]
    bull = res.get("peers_bullmq")
    rows.append(("1", "no-op plugin drain, %s jobs, unix socket" % fnum(N_DRAIN), "%s jobs/s" % fnum(nd["jobs_per_s"]), "", ""))
    rows.append(("", "  qworkerd / redis-server CPU s per 100k jobs",
                 "%.3f / %.3f" % (nd["qworkerd_cpu_s_per_100k"], nd["redis_cpu_s_per_100k"]), "", ""))
    rows.append(("", "no-op plugin drain, same, TCP 127.0.0.1", "%s jobs/s" % fnum(nt["jobs_per_s"]), "", ""))
    rows.append(("", "  qworkerd / redis-server CPU s per 100k jobs",
                 "%.3f / %.3f" % (nt["qworkerd_cpu_s_per_100k"], nt["redis_cpu_s_per_100k"]), "", ""))
    rows.append(("", "  steady state, TCP (first to last success, as the peers count)",
                 "%s jobs/s" % fnum(nt["steady_jobs_per_s"]), "", ""))
    for transport, label in (("unix", "unix socket"), ("tcp", "TCP 127.0.0.1")):
        x = R.get("noop_tuned_" + transport)
        if x:
            rows.append(("", "  tuned, not the default: prefetch = %d, %s" % (TUNED_PREFETCH, label),
                         "%s jobs/s" % fnum(x["jobs_per_s"]), "", ""))
            rows.append(("", "    qworkerd / redis-server CPU s per 100k jobs",
                         "%.3f / %.3f" % (x["qworkerd_cpu_s_per_100k"], x["redis_cpu_s_per_100k"]), "", ""))
    if bull:
        ratio = nt["jobs_per_s"] / bull["jobs_per_s"]
        rows.append(("", "  vs BullMQ in this run (%s jobs/s, TCP)" % fnum(bull["jobs_per_s"]),
                     "%.1fx" % ratio, ">= 30x", verdict(ratio >= 30)))
        bull_r = bull["redis_cpu_s_per_1000"] * 100
        rr = nt["redis_cpu_s_per_100k"] / bull_r if bull_r else None
        rows.append(("", "  redis CPU per job vs BullMQ's (%.3f s/100k)" % bull_r,
                     "%.3fx" % rr if rr is not None else "-", "<= 0.033x (1/30)",
                     verdict(rr is not None and rr <= 1 / 30)))
    else:
        best = max(nd["jobs_per_s"], nt["jobs_per_s"])
        rows.append(("", "  (no BullMQ figure in this run: the issue's absolute target)", "%s jobs/s" % fnum(best),
                     ">= 220,000 jobs/s", verdict(best >= 220000)))
    rows += baseline_rows(res)
    e = R["exec"]
    rows.append(("2", "exec /bin/true drain, %s jobs" % fnum(N_EXEC), "%s jobs/s" % fnum(e["jobs_per_s"]), "", ""))
    rows.append(("", "  qworkerd CPU s per 100k jobs (own + handlers')",
                 "%.1f + %.1f" % (e["qworkerd_own_cpu_s"] * 1e5 / N_EXEC, e["handler_cpu_s"] * 1e5 / N_EXEC), "", ""))
    rows.append(("", "spawn limit: posix_spawn loop, %d at a time" % CONC, "%s /s" % fnum(R["spawn_per_s"]), "", ""))
    ratio = R["exec_ratio"]
    rows.append(("", "  exec drain / spawn limit", "%.0f%%" % (100 * ratio), ">= 90%", verdict(ratio >= 0.9)))
    lp = R["lat_plugin"]
    rows.append(("3", "pickup latency, idle daemon, plugin: p50", "%.3f ms" % lp["p50_ms"], "< 1 ms", verdict(lp["p50_ms"] < 1)))
    rows.append(("", "  p99", "%.3f ms" % lp["p99_ms"], "< 5 ms", verdict(lp["p99_ms"] < 5)))
    le = R.get("lat_exec")
    if le:
        rows.append(("", "pickup latency, exec handler (to its main()): p50 / p99",
                     "%.3f / %.3f ms" % (le["p50_ms"], le["p99_ms"]), "", ""))
        sl = R.get("spawn_lat")
        if sl:
            rows.append(("", "  the same program started directly (posix_spawn): p50 / p99",
                         "%.3f / %.3f ms" % (sl["p50_ms"], sl["p99_ms"]), "", ""))
            above = le["p50_ms"] - sl["p50_ms"]
            rows.append(("", "  exec pickup p50 above starting it directly", "%.3f ms" % above, "< 1 ms",
                         verdict(above < 1)))
    i = R["idle"]
    rows.append(("4", "idle RSS (VmRSS, 1 s after READY=1)", "%.2f MiB" % i["rss_mib"], "< 4 MiB", verdict(i["rss_mib"] < 4)))
    rows.append(("", "start (exec) to READY=1", "%.1f ms" % i["ready_ms"], "<= 50 ms", verdict(i["ready_ms"] <= 50)))
    rows.append(("", "idle SIGTERM to exit (reaped)", "%.1f ms" % i["sigterm_exit_ms"], "< 50 ms",
                 verdict(i["sigterm_exit_ms"] < 50)))
    m = R["memory"]
    rows.append(("", "RSS after %s / %s no-op jobs" % (fnum(N_MEM1), fnum(N_MEM2)),
                 "%.2f / %.2f MiB" % (m["rss_after_1_mib"], m["rss_after_2_mib"]), "", ""))
    rows.append(("", "  difference", "%+.2f MiB" % m["diff_mib"], "within 1 MiB", verdict(abs(m["diff_mib"]) <= 1)))
    first = True
    for x in R["redisbench"]:
        rows.append(("5" if first else "", "redis-benchmark %s, %s, -P %d, -c %d" % (
            x["test"], "unix" if x["transport"] == "unix" else "TCP", x["pipeline"], CONC),
            "%s req/s (%.2f us CPU)" % (fnum(x["rps"]), x["redis_cpu_us_per_req"]), "", ""))
        first = False
    p = res.get("peers")
    if p and p.get("summary"):
        first = True
        for s in p["summary"]:
            rows.append(("6" if first else "", "%s (N %s, TCP)" % (s["label"], fnum(s["n"])),
                         "%s jobs/s" % fnum(s["jobs_per_s"]), "", ""))
            rows.append(("", "  worker / redis-server CPU s per 100k jobs", "%.2f / %.2f" % (
                s["worker_cpu_s_per_1000"] * 100, s["redis_cpu_s_per_1000"] * 100), "", ""))
            rr = nt["redis_cpu_s_per_100k"] / (s["redis_cpu_s_per_1000"] * 100) if s["redis_cpu_s_per_1000"] else None
            rows.append(("", "  qworkerd no-op (TCP): jobs/s ratio, redis CPU per job ratio",
                         "%.1fx, %s" % (nt["jobs_per_s"] / s["jobs_per_s"], "%.3fx" % rr if rr is not None else "-"),
                         "", ""))
            first = False
    else:
        rows.append(("6", "peers (Sidekiq, BullMQ, Celery, RQ)", (p or {}).get("note", "not run"), "", ""))
    rows += worker_rows(res)
    rows += cluster_rows(res)
    return rows


def own_per_100k(x):
    return x["qworkerd_own_cpu_s"] * 1e5 / x["n"]


def baseline_rows(res):
    """Section 1, with BENCH_BASELINE: an older qworkerd's no-op drain in the same run."""
    R = res["medians"]
    b, bt, nt = R.get("baseline_tcp"), R.get("baseline_tuned_tcp"), R["noop_tcp"]
    if not b or not bt:
        return []
    ratio = own_per_100k(nt) / own_per_100k(bt) if own_per_100k(bt) else None
    return [("", "  qworkerd %s (BENCH_BASELINE), same drain, TCP, its default" % BASELINE,
             "%s jobs/s" % fnum(b["jobs_per_s"]), "", ""),
            ("", "    qworkerd own / redis-server CPU s per 100k jobs",
             "%.3f / %.3f" % (own_per_100k(b), b["redis_cpu_s_per_100k"]), "", ""),
            ("", "  qworkerd %s, tuned: prefetch = %d, TCP" % (BASELINE, TUNED_PREFETCH),
             "%s jobs/s" % fnum(bt["jobs_per_s"]), "", ""),
            ("", "    qworkerd own / redis-server CPU s per 100k jobs",
             "%.3f / %.3f" % (own_per_100k(bt), bt["redis_cpu_s_per_100k"]), "", ""),
            ("", "  qworkerd own CPU per job, this build's default / %s tuned (TCP)" % BASELINE,
             "%.2fx" % ratio if ratio is not None else "-", "<= 0.5x",
             verdict(ratio <= 0.5 if ratio is not None else None))]


def cluster_rows(res):
    """Section 8: the same drain over one redis-server and over a three-master
    cluster, and where the difference in Redis CPU per job goes."""
    R = res["medians"]
    s, c, o = R.get("cluster_single"), R.get("cluster_cluster"), R.get("cluster_one_master")
    if not (s and c):
        return [("8", "Redis Cluster", res.get("cluster_note", "not run"), "", "")]
    per = CLUSTER_QUEUES // 3

    def two(key, fmt, floor=None):
        # FLOOR: a difference below it is no figure (INFO commandstats' usec
        # is wall time: on a busy machine the time inside the scripts can
        # exceed the CPU the server was given, and CPU minus it goes < 0).
        return "%s / %s" % tuple(fmt % x[key] if x.get(key) is not None and (floor is None or x[key] >= floor)
                                 else "- (busy)" if x.get(key) is not None else "-" for x in (s, c))

    rows = [("8", "no-op drain, %s jobs over %d queues, one redis-server (TCP)" % (fnum(N_CLUSTER), CLUSTER_QUEUES),
             "%s jobs/s" % fnum(s["jobs_per_s"]), "", ""),
            ("", "  qworkerd / redis-server CPU s per 100k jobs",
             "%.3f / %.3f" % (s["qworkerd_cpu_s_per_100k"], s["redis_cpu_s_per_100k"]), "", ""),
            ("", "same, three-master cluster (%d queues per master)" % per, "%s jobs/s" % fnum(c["jobs_per_s"]), "", ""),
            ("", "  qworkerd / redis CPU s per 100k jobs (sum of the 3 masters)",
             "%.3f / %.3f" % (c["qworkerd_cpu_s_per_100k"], c["redis_cpu_s_per_100k"]), "", "")]
    ratio = R.get("cluster_ratio")
    # Not judged: three busy redis-servers and qworkerd share this machine's
    # cores, and the spread's price (smaller rounds per server, taking turns
    # on a core) depends on the machine; the one-master control below is
    # what cluster mode itself costs a job.
    rows.append(("", "  redis CPU per job, cluster / one redis-server (%d masters on %d cores)" % (
        3, os.cpu_count() or 0), "%.2fx" % ratio if ratio is not None else "-", "", ""))
    rows.append(("", "  where it goes, one redis-server / cluster:", "", "", ""))
    rows.append(("", "    script calls (EVALSHA, FCALL) per 1000 jobs", two("script_calls_per_1000", "%.1f"), "", ""))
    rows.append(("", "    the same per second", two("script_calls_per_s", "%.0f"), "", ""))
    rows.append(("", "    time inside them per job (INFO commandstats)", two("script_us_per_job", "%.2f us"), "", ""))
    rows.append(("", "    redis CPU per job outside them (reads, parsing, replies, event loop)",
                 two("outside_scripts_us_per_job", "%.2f us", floor=0), "", ""))
    rows.append(("", "    redis-server read calls per 1000 jobs (one per round of commands)",
                 two("redis_reads_per_1000", "%.1f"), "", ""))
    rows.append(("", "    idle redis CPU s per s, qworkerd connected (cron, cluster bus, polls)",
                 two("idle_redis_cpu_per_s", "%.4f"), "", ""))
    rows.append(("", "    the same over the drain's span, share of its redis CPU", "%s / %s" % tuple(
        "%.1f%%" % (100 * x["idle_share"]) if x.get("idle_share") is not None else "-" for x in (s, c)), "", ""))
    if o:
        r1 = R.get("one_master_ratio")
        rows.append(("", "same cluster, all %d queues on one master" % CLUSTER_QUEUES, "%s jobs/s" % fnum(o["jobs_per_s"]),
                     "", ""))
        rows.append(("", "  redis CPU s per 100k jobs", "%.3f" % o["redis_cpu_s_per_100k"], "", ""))
        rows.append(("", "  redis CPU per job, cluster mode / one redis-server (same queues, one server busy)",
                     "%.2fx" % r1 if r1 is not None else "-", "<= 1.2x", verdict(r1 <= 1.2 if r1 is not None else None)))
    return rows


def worker_rows(res):
    """Section 7: persistent workers, their targets against the exec handler and the peers."""
    R, rows = res["medians"], []
    pw, pe, nw = R.get("py_worker"), R.get("py_exec"), R.get("node_worker")

    def drain_rows(sec, label, x):
        n = x["n"]
        rows.append((sec, "%s (N %s, TCP)" % (label, fnum(n)),
                     "%s jobs/s (steady %s)" % (fnum(x["jobs_per_s"]), fnum(x["steady_jobs_per_s"])), "", ""))
        rows.append(("", "  qworkerd + workers / redis-server CPU s per 100k jobs", "%.2f + %.2f / %.2f" % (
            x["qworkerd_own_cpu_s"] * 1e5 / n, x["handler_cpu_s"] * 1e5 / n, x["redis_cpu_s_per_100k"]), "", ""))

    def vs(label, x, peer, target):
        if not peer:
            rows.append(("", "  vs %s: not in this run" % label, "-", ">= %gx" % target, "-"))
            return
        ratio = x["jobs_per_s"] / peer["jobs_per_s"]
        rows.append(("", "  vs %s in this run (%s jobs/s, TCP)" % (label, fnum(peer["jobs_per_s"])),
                     "%.1fx" % ratio, ">= %gx" % target, verdict(ratio >= target)))

    if pw:
        drain_rows("7", "Python no-op, persistent worker (python/qworkerd), worker_processes %d" % CONC, pw)
        if pe:
            drain_rows("", "  same handler as an exec handler (python3 per job)", pe)
            ratio = pw["jobs_per_s"] / pe["jobs_per_s"]
            rows.append(("", "  persistent worker / exec handler", "%.1fx" % ratio, ">= 20x", verdict(ratio >= 20)))
        vs("Celery prefork, concurrency 10", pw, res.get("peers_celery"), 10)
    if nw:
        drain_rows("" if pw else "7", "Node no-op, persistent worker (node/qworkerd), worker_inflight %d" % CONC, nw)
        vs("BullMQ, concurrency 10", nw, res.get("peers_bullmq"), 2)
    for kind, label in (("py_worker", "Python"), ("node_worker", "Node")):
        lw = R.get("lat_" + kind)
        if lw:
            rows.append(("", "pickup latency, idle daemon, %s persistent worker: p50" % label,
                         "%.3f ms" % lw["p50_ms"], "< 0.5 ms", verdict(lw["p50_ms"] < 0.5)))
            rows.append(("", "  p99", "%.3f ms" % lw["p99_ms"], "", ""))
    return rows


def header_lines(res):
    """(label, text) pairs above the table."""
    m = res["machine"]
    return [
        ("machine", "%d cores (nproc), %s%s, %d GiB RAM, kernel %s, %s; load average at start %.2f %.2f %.2f" % (
            m["nproc"], m["cpu"], (", %s guest" % m["virt"]) if m["virt"] else "", m["mem_gib"], m["kernel"],
            m["os"], *m["loadavg_at_start"])),
        ("software", "qworkerd %s (CFLAGS %s), redis-server %s, gcc %s, Python %s" % (
            m["qworkerd"], m["cflags"] or "?", m["redis"], m["gcc"], m["python"])),
        ("setup", "private redis-server (--save '' --appendonly no) on a unix socket and on 127.0.0.1;"
         " qworkerd concurrency %d, %s, log_level warning; %s" % (
             CONC, "prefetch unset (the default, auto)" if PREFETCH is None else "prefetch %s (BENCH_PREFETCH)" % PREFETCH,
             "each figure is the median of %d runs" % REPS if REPS > 1 else "one run per figure")),
    ]


def title(res):
    return "qworkerd benchmark, started %s, took %.0f s (bench/run)" % (res["date"], res["seconds"])


def render_text(res):
    rows = [("#", "measure", "value", "target", "result")] + res["rows"]
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    out = [title(res)] + ["%-9s %s" % (k + ":", v) for k, v in header_lines(res)] + [""]
    for k, r in enumerate(rows):
        out.append("  ".join([r[0].ljust(w[0]), r[1].ljust(w[1]), r[2].rjust(w[2]), r[3].ljust(w[3]), r[4]]).rstrip())
        if k == 0:
            out.append("  ".join("-" * x for x in w))
    out += [""] + res["notes"]
    return "\n".join(out) + "\n"


def render_md(res):
    out = [title(res), ""] + ["- %s: %s" % kv for kv in header_lines(res)] + [""]
    out.append("| # | measure | value | target | result |")
    out.append("|---|---|---:|---|---|")
    for r in res["rows"]:
        out.append("| %s | %s | %s | %s | %s |" % (r[0], r[1].replace("  ", "&nbsp;&nbsp;", 1) if r[1].startswith("  ") else r[1],
                                                    r[2], r[3], r[4]))
    for x in res["notes"]:
        out += ["", x]
    return "\n".join(out) + "\n"


def note_cluster(res):
    """The note under section 8."""
    return ("Redis Cluster (section 8): %s raw jobs LPUSHed evenly over %d queues before qworkerd starts with"
            " the no-op plugin on every queue: against the redis-server above over TCP; against three"
            " cluster-enabled masters (no replicas) made with redis-cli --cluster create on 127.0.0.1, with"
            " cluster = yes, the queues' hash tags putting %d on each master; and against the same cluster with"
            " %d other queues that all hash to one master (cluster mode without the spread). Redis CPU is"
            " used_cpu_user + used_cpu_sys of INFO cpu (microseconds; /proc counts 10 ms ticks), summed over"
            " the masters, from the exec of qworkerd to the poll that saw every queue's stats succeeded add up"
            " to N (cluster bus, cron and the polls included); the ratio is the median of each round's, whose"
            " drains ran back to back. Script calls and the time inside them are INFO commandstats (reset"
            " before each drain) of EVALSHA and FCALL, whose usec includes the commands they call and is wall"
            " time, so it grows when the machine is busy; read calls are syscr of /proc/PID/io. Idle: Redis"
            " CPU per second over %.0f s after the drain with qworkerd still connected, and that rate times"
            " the drain's duration over the drain's Redis CPU." % (
                fnum(N_CLUSTER), CLUSTER_QUEUES, CLUSTER_QUEUES // 3, CLUSTER_QUEUES, CLUSTER_IDLE_S))


def notes(res):
    n = [
        "Drain: N raw jobs are LPUSHed (1000 per LPUSH, pipelined) before qworkerd starts; jobs/s = N / (exec of"
        " qworkerd to the 10 ms poll that saw HGET stats succeeded = N), so it includes start-up, connecting,"
        " lease and the last ack. CPU: utime+stime (+ reaped children for exec) of qworkerd from its start, and"
        " of redis-server over the same span (that includes the 10 ms HGET polls); nothing subtracted."
        " The peers' jobs/s is their steady-state rate (first to last completion) and each of their jobs"
        " also does one INCR (~6.5 us of redis CPU).",
        "Pickup latency: payload = time.time_ns() taken just before LPUSH (redis-py, unix socket);"
        " the handler reads CLOCK_REALTIME first thing (bench/stamp.c plugin; bench/stamp_exec.c as exec handler).",
    ]
    n.append("Persistent workers (section 7): the Python no-op handler bench/noop_worker.py through the"
             " python/qworkerd library with worker_processes = %d (worker_inflight 1), and the same file as an exec"
             " handler (a python3 per job, payload on stdin); the Node one bench/noop_worker.js through node/qworkerd,"
             " one process with worker_inflight = %d. Drains over TCP like the peers; jobs/s includes starting the"
             " workers; worker CPU is read live from /proc. Ratios use jobs/s (with start-up) against the peers'"
             " steady-state rate, whose jobs also do one INCR." % (CONC, CONC))
    if res["medians"].get("cluster_cluster"):
        n.append(note_cluster(res))
    if PREFETCH is None:
        n.append("Prefetch: every figure is measured with the shipped default (no prefetch key: prefetch = auto);"
                 " only the rows marked \"tuned\" set prefetch = %d, which a user has to choose." % TUNED_PREFETCH
                 if TUNED else "Prefetch: every figure is measured with the shipped default (no prefetch key:"
                 " prefetch = auto).")
    if (res.get("peers") or {}).get("summary"):
        n.append("Peers: ../shared/bench/peers/run-all.sh STEPS=throughput ONLY=\"%s\" REPS=%d, run on a copy"
                 " in a temp dir, with its own redis-server (same flags) on 127.0.0.1:%s." % (
                     res["peers"].get("only", PEERS_ONLY), REPS, res["peers"].get("port", "?")))
    return n


def medians(runs):
    def med_dict(ds):
        keys = [k for k, v in ds[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return {k: median([d.get(k) for d in ds]) for k in keys}
    out = {}
    if not runs["noop"]:    # BENCH_CLUSTER=only
        return medians_cluster(runs, med_dict, out)
    out["noop_unix"] = med_dict([r["unix"] for r in runs["noop"]])
    out["noop_tcp"] = med_dict([r["tcp"] for r in runs["noop"]])
    for transport in ("unix", "tcp"):
        if "tuned_" + transport in runs["noop"][0]:
            out["noop_tuned_" + transport] = med_dict([r["tuned_" + transport] for r in runs["noop"]])
    if runs.get("baseline"):
        out["baseline_tcp"] = med_dict([r["tcp"] for r in runs["baseline"]])
        out["baseline_tuned_tcp"] = med_dict([r["tuned_tcp"] for r in runs["baseline"]])
    out["exec"] = med_dict([r["exec"] for r in runs["exec"]])
    out["spawn_per_s"] = median([r["spawn"]["per_s"] for r in runs["exec"]])
    out["exec_ratio"] = median([r["exec"]["jobs_per_s"] / r["spawn"]["per_s"] for r in runs["exec"]])
    out["lat_plugin"] = med_dict(runs["lat_plugin"])
    if runs.get("lat_exec"):
        out["lat_exec"] = med_dict(runs["lat_exec"])
    if runs.get("spawn_lat"):
        out["spawn_lat"] = med_dict(runs["spawn_lat"])
    out["idle"] = med_dict(runs["idle"])
    for kind in ("py_worker", "node_worker"):
        if runs.get("lat_" + kind):
            out["lat_" + kind] = med_dict(runs["lat_" + kind])
    for key in ("py_worker", "py_exec", "node_worker"):
        xs = [w[key] for w in runs.get("workers", []) if key in w]
        if xs:
            out[key] = med_dict(xs)
    out["memory"] = med_dict(runs["memory"])
    medians_cluster(runs, med_dict, out)
    rb = {}
    for rep in runs["redisbench"]:
        for x in rep:
            rb.setdefault((x["transport"], x["pipeline"], x["test"]), []).append(x)
    out["redisbench"] = [dict(transport=k[0], pipeline=k[1], test=k[2], rps=median([x["rps"] for x in v]),
                              redis_cpu_us_per_req=median([x["redis_cpu_us_per_req"] for x in v]))
                         for k, v in rb.items()]
    return out


def medians_cluster(runs, med_dict, out):
    """Section 8's medians into OUT."""
    if runs.get("cluster"):
        for kind, _ in CLUSTER_KINDS:
            out["cluster_" + kind] = med_dict([r[kind] for r in runs["cluster"]])
        # the median of each round's ratio: the drains of a round ran back to back
        for kind in ("cluster", "one_master"):
            out[kind + "_ratio"] = median([r[kind]["redis_cpu_s"] / r["single"]["redis_cpu_s"]
                                           for r in runs["cluster"] if r["single"]["redis_cpu_s"] > 0])
    return out


# --------------------------------------------------------------------------- main
def m_sections_1_to_5(tmp, rs, helpers, runs):
    """Sections 1 to 5 and 7: everything but the peers and the cluster."""
    for rep in range(REPS):
        runs["idle"].append(m_idle(tmp, rs, rep))
    base_build = build_baseline(tmp, BASELINE) if BASELINE else None
    for rep in range(REPS):
        runs["noop"].append(m_noop(tmp, rs, rep))
        if base_build:
            runs.setdefault("baseline", []).append(m_baseline(tmp, rs, base_build, rep))
    for rep in range(REPS):
        runs["exec"].append(m_exec(tmp, rs, helpers, rep))
    gap = exec_gap(runs)
    for rep in range(REPS):
        runs["lat_plugin"].append(m_latency(tmp, rs, helpers, "plugin", rep))
        runs["lat_exec"].append(m_latency(tmp, rs, helpers, "exec", rep, gap))
        runs.setdefault("spawn_lat", []).append(m_spawnlat(tmp, helpers, gap, rep))
    for rep in range(REPS):
        runs["workers"].append(m_workers(tmp, rs, rep))
    for rep in range(REPS):
        runs["lat_py_worker"].append(m_latency(tmp, rs, helpers, "py_worker", rep))
        if os.path.exists(NODE):
            runs["lat_node_worker"].append(m_latency(tmp, rs, helpers, "node_worker", rep))
    for rep in range(REPS):
        runs["memory"].append(m_memory(tmp, rs, rep))
    for rep in range(REPS):
        runs["redisbench"].append(m_redisbench(rs, rep))


def main():
    global TMP
    # SIGINT too: a shell starts background jobs with SIGINT ignored
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, on_signal)
    atexit.register(cleanup)
    for f in (QWORKERD, NOOP_SO):
        if not os.path.exists(f):
            sys.exit("bench: %s is missing: build first (sh tests/build.sh build) or run bench/run" % f)
    os.makedirs(RESULTS, exist_ok=True)
    want_peers, peers_note = peers_wanted() if not ONLY_CLUSTER else (False, "skipped (BENCH_CLUSTER=only)")
    TMP = tempfile.mkdtemp(prefix="qw-bench.")
    log("temp dir %s; %d runs per figure; own measurements limited to %d s" % (TMP, REPS, OWN_TIMEOUT))
    helpers = build_helpers(TMP) if not ONLY_CLUSTER else None

    signal.alarm(OWN_TIMEOUT)
    rs = Redis(TMP)
    log("redis-server %s pid %d on %s and 127.0.0.1:%d" % (rs.version, rs.pid, rs.sock, rs.port))
    runs = dict(noop=[], exec=[], lat_plugin=[], lat_exec=[], idle=[], memory=[], redisbench=[], workers=[],
                lat_py_worker=[], lat_node_worker=[])
    if not ONLY_CLUSTER:
        m_sections_1_to_5(TMP, rs, helpers, runs)
    cluster_note = ""
    if not CLUSTER:
        cluster_note = "skipped (BENCH_CLUSTER=0)"
    elif not shutil.which("redis-cli"):
        cluster_note = "skipped (no redis-cli to create the cluster)"
    else:
        runs["cluster"] = m_cluster(TMP, rs)
    mach = machine(rs.version)
    rs.stop()
    signal.alarm(0)

    res = dict(date=time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(T_START)), machine=mach, reps=REPS,
               config=dict(concurrency=CONC, prefetch=PREFETCH or "default",
                           tuned_prefetch=TUNED_PREFETCH if TUNED else None, n_drain=N_DRAIN, n_exec=N_EXEC, n_latency=N_LAT,
                           latency_gap_ms=LAT_GAP * 1000, n_mem=[N_MEM1, N_MEM2], n_redisbench=N_RB,
                           n_cluster=N_CLUSTER if CLUSTER else None, cluster_queues=CLUSTER_QUEUES,
                           baseline=BASELINE or None),
               runs=runs, cluster_note=cluster_note)
    if want_peers:
        signal.alarm(PEERS_TIMEOUT + 120)
        try:
            res["peers"] = run_peers(TMP)
        except (RuntimeError, OSError) as e:
            log("peers: %s" % e)
            res["peers"] = dict(note="failed: %s" % e)
        signal.alarm(0)
        if not res["peers"].get("summary"):
            res["peers"].setdefault("note", "failed: no results (see bench/results/peers.log)")
        for s in res["peers"].get("summary", []):
            if s["config"] == "bullmq" and s.get("jobs_per_s"):
                res["peers_bullmq"] = s
            if s["config"] == "celery-prefork" and s.get("jobs_per_s"):
                res["peers_celery"] = s
    else:
        res["peers"] = dict(note=peers_note)
    res["medians"] = medians(runs)
    res["seconds"] = time.time() - T_START
    res["rows"] = build_rows(res) if not ONLY_CLUSTER else cluster_rows(res)
    res["notes"] = notes(res) if not ONLY_CLUSTER else [note_cluster(res)] if res["medians"].get("cluster_cluster") else []
    text = render_text(res)
    base = "quick" if QUICK else "latest"   # a smoke run does not replace the real results
    if ONLY_CLUSTER:
        base += "-cluster"
    with open(os.path.join(RESULTS, base + ".json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True, default=str)
    with open(os.path.join(RESULTS, base + ".md"), "w") as f:
        f.write(render_md(res))
    log("wrote bench/results/%s.json and bench/results/%s.md" % (base, base))
    sys.stdout.write(text)
    sys.stdout.flush()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        cleanup()
        sys.exit(130)
    except Timeout as e:
        log("%s: stopping everything" % e)
        cleanup()
        sys.exit(124)
    except RuntimeError as e:
        log("error: %s" % e)
        cleanup()
        sys.exit(1)
