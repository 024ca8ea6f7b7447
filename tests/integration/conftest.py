"""Shared fixtures: a real redis-server on a private unix socket, and a
qworkerd started from a config written per test, watched through its own
NOTIFY_SOCKET so tests wait for READY=1 instead of sleeping."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest
import redis as redislib

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("QW_BUILDDIR", os.path.join(TOP, "build"))
QWORKERD = os.environ.get("QWORKERD", os.path.join(BUILD, "qworkerd"))
# QW_WRAPPER="valgrind --error-exitcode=99 ..." runs the daemon under a tool.
WRAPPER = os.environ.get("QW_WRAPPER", "").split()
SLOW = 4 if WRAPPER else 1


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s" % what)


class RedisServer:
    def __init__(self, tmp):
        self.dir = tmp
        self.sock = os.path.join(tmp, "redis.sock")
        self.proc = None

    def start(self, *extra):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.sock,
             "--unixsocketperm", "700", "--dir", self.dir, "--save", "",
             "--appendonly", "no", "--logfile", os.path.join(self.dir, "redis.log")]
            + list(extra))
        wait_until(lambda: os.path.exists(self.sock) and self._ping(), 10, what="redis-server")

    def _ping(self):
        try:
            return self.client().ping()
        except redislib.exceptions.ConnectionError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def client(self):
        return redislib.Redis(unix_socket_path=self.sock)


class TcpRedis(RedisServer):
    """A private redis-server on a unix socket and on a TCP port of
    127.0.0.1, so that another one can replicate from it."""

    def start(self, *extra):
        self.port = free_port()
        super().start("--port", str(self.port), "--bind", "127.0.0.1", *extra)


@pytest.fixture
def servers():
    """Makes private TCP redis-servers (TcpRedis), stopped at the end."""
    made = []

    def make(*extra):
        srv = TcpRedis(tempfile.mkdtemp(prefix="qw-failover-"))
        srv.start(*extra)
        made.append(srv)
        return srv
    yield make
    for srv in made:
        srv.stop()
        shutil.rmtree(srv.dir, ignore_errors=True)


def synced(replica):
    """Whether REPLICA's link to its master is up."""
    info = replica.client().info("replication")
    return info.get("master_link_status") == "up"


@pytest.fixture(scope="session")
def redis_server():
    tmp = tempfile.mkdtemp(prefix="qw-redis-")
    srv = RedisServer(tmp)
    srv.start()
    yield srv
    srv.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def r(redis_server):
    c = redis_server.client()
    c.flushall()
    yield c
    c.close()


class Daemon:
    """One qworkerd process. Its stderr goes to a file that tests read."""

    def __init__(self, tmp, redis_sock):
        self.tmp = tmp
        self.redis_sock = redis_sock
        self.proc = None
        self.log_path = os.path.join(tmp, "qworkerd.log")
        self.conf_path = os.path.join(tmp, "qworkerd.conf")
        self.notify_path = os.path.join(tmp, "notify.sock")
        self.notify = None
        self.messages = []
        self.reader = None

    def write_conf(self, text):
        with open(self.conf_path, "w") as f:
            f.write(textwrap.dedent(text))

    def conf(self, queues, workers="", redis_extra="", instance="test-1"):
        """queues: {name: "key = value lines"}."""
        text = "[redis]\naddress = unix:%s\n%s\n[workers]\ninstance = %s\n" \
               "log_level = debug\n%s\n" % (self.redis_sock, redis_extra, instance,
                                            textwrap.dedent(workers))
        for name, body in queues.items():
            text += "[queue %s]\n%s\n" % (name, textwrap.dedent(body))
        self.write_conf(text)

    def _read_notify(self):
        # Read all the time, as systemd does: a full datagram queue would
        # block the daemon's sd_notify() calls.
        while True:
            try:
                data = self.notify.recv(4096)
            except OSError:
                return
            if not data:
                return
            self.messages.append(data.decode())

    def start(self, wait_ready=True, env=None, args=(), prefix=(), stderr=None):
        """PREFIX runs before the daemon (and its WRAPPER): it must exec it.
        STDERR (a file descriptor) replaces the log file as stdout and stderr."""
        if self.notify is None:
            self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.notify.bind(self.notify_path)
            self.reader = threading.Thread(target=self._read_notify, daemon=True)
            self.reader.start()
        e = dict(os.environ)
        e["NOTIFY_SOCKET"] = self.notify_path
        e.update(env or {})
        if "LD_PRELOAD" in (env or {}):
            # A test's shim comes before an ASan build's runtime, which ASan
            # refuses by default; the tests' shims only wrap a call or two
            # (clock_gettime, pthread_create), so that order is harmless.
            e["ASAN_OPTIONS"] = ":".join(o for o in (e.get("ASAN_OPTIONS", ""),
                                                     "verify_asan_link_order=0") if o)
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(list(prefix) + WRAPPER + [QWORKERD, "-c", self.conf_path] + list(args),
                                     stdout=stderr or self.logf, stderr=stderr or self.logf,
                                     env=e)
        if wait_ready:
            self.wait_message("READY=1", 15)
        return self

    def read_messages(self):
        return list(self.messages)

    def wait_message(self, text, timeout=10):
        def seen():
            if self.proc.poll() is not None:
                raise AssertionError("qworkerd exited with %s:\n%s" % (self.proc.returncode,
                                                                      self.log()))
            return any(text in m for m in self.read_messages())
        wait_until(seen, timeout, what="notify %r" % text)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, text, timeout=10):
        wait_until(lambda: text in self.log(), timeout, what="log line %r" % text)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout * SLOW)
        finally:
            self.logf.close()

    def wait(self, timeout=30):
        rc = self.proc.wait(timeout * SLOW)
        self.logf.close()
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def tmp(tmp_path):
    return str(tmp_path)


@pytest.fixture
def daemon(r, redis_server, tmp):
    made = []

    def make(sub="d"):
        d = Daemon(os.path.join(tmp, sub), redis_server.sock)
        os.makedirs(d.tmp, exist_ok=True)
        made.append(d)
        return d
    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
            if d.proc.poll() is None:
                d.kill()
        if d.proc is not None and WRAPPER and d.proc.returncode == 99:
            raise AssertionError("memory errors under %s:\n%s" % (WRAPPER[0], d.log()))


def script(tmp, name, body):
    """Writes an executable handler script and returns its path."""
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + textwrap.dedent(body))
    os.chmod(path, 0o755)
    return path


def stats(r, q):
    return {k.decode(): int(v) for k, v in r.hgetall("qw:{%s}:stats" % q).items()}


def inflight(r, q):
    """Every job this queue has in flight in any instance (active hashes and claim lists)."""
    n = 0
    for k in r.scan_iter("qw:{%s}:active:*" % q):
        n += r.hlen(k)
    for k in r.scan_iter("qw:{%s}:claim:*" % q):
        n += r.llen(k)
    return n


def read_lines(path):
    """The non-empty lines of PATH, or [] when it does not exist yet."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.rstrip("\n") for l in f if l.strip()]


def redis_ms(r):
    """Redis server time in Unix milliseconds (the clock qworkerd's scripts use)."""
    s, us = r.time()
    return int(s) * 1000 + int(us) // 1000


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url):
    """(status, body) of a GET, error statuses included; (None, why) when
    nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)
