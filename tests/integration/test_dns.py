"""Redis by host name: names are looked up without blocking the event loop,
so a dead nameserver neither freezes running jobs' timers and the watchdog
nor delays a stop, and the daemon connects once the name answers."""
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import RedisServer, SLOW, script, stats, wait_until


class FakeDNS:
    """A nameserver on 127.0.0.1: "redis.qw-test" has the IPv4 ADDRESSES
    while ANSWER is set and gets no reply at all otherwise; other names do
    not exist. It counts the queries it saw."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answer = False
        self.addresses = ["127.0.0.1"]
        self.queries = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            self.queries += 1
            reply = self._reply(data)
            if reply is not None:
                self.sock.sendto(reply, peer)

    def _reply(self, q):
        qid, _, qd = struct.unpack(">HHH", q[:6])
        if qd != 1:
            return None
        labels, i = [], 12
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
            i += 1 + q[i]
        qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        name = ".".join(labels)
        if name != "redis.qw-test":
            return struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question   # NXDOMAIN
        if not self.answer:
            return None
        if qtype != 1:                                  # no AAAA record: NODATA
            return struct.pack(">HHHHHH", qid, 0x8180, 1, 0, 0, 0) + question
        rrs = b"".join(struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(a)
                       for a in self.addresses)
        return struct.pack(">HHHHHH", qid, 0x8180, 1, len(self.addresses), 0, 0) + question + rrs

    def close(self):
        self.sock.close()


def can_unshare():
    if os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


needs_mount_ns = pytest.mark.skipif(not can_unshare(),
                                    reason="needs root and unshare -m to give the daemon "
                                           "its own /etc/resolv.conf")


@pytest.fixture
def tcp_redis(tmp):
    """A redis-server that also listens on TCP 127.0.0.1."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    srv = RedisServer(os.path.join(tmp, "tcp-redis"))
    os.makedirs(srv.dir, exist_ok=True)
    srv.sock = os.path.join(srv.dir, "redis.sock")
    srv.start("--port", str(port), "--bind", "127.0.0.1")
    srv.port = port
    yield srv
    srv.stop()


@pytest.fixture
def dns(tmp):
    """A FakeDNS and a resolv.conf naming it, and the command prefix that
    gives the daemon that file as its /etc/resolv.conf."""
    d = FakeDNS()
    d.resolv = os.path.join(tmp, "resolv.conf")
    with open(d.resolv, "w") as f:
        f.write("nameserver 127.0.0.1:%d\noptions timeout:1 attempts:1\n" % d.port)
    d.prefix = ["unshare", "-m", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && exec "$@"', d.resolv]
    yield d
    d.close()


def configure(d, tmp, address):
    h = script(tmp, "ok.sh", "cat > /dev/null\n")
    d.conf({"mail": "handler = %s" % h})
    text = open(d.conf_path).read()
    d.write_conf(text.replace("address = unix:%s" % d.redis_sock, "address = %s" % address))


def runs_a_job(srv, payload):
    srv.client().lpush("qw:{mail}:pending", payload)
    wait_until(lambda: srv.client().hget("qw:{mail}:stats", "succeeded") == b"1",
               what="job %s run" % payload)


def test_host_name_from_the_hosts_file(daemon, tmp, tcp_redis):
    d = daemon()
    configure(d, tmp, "localhost:%d" % tcp_redis.port)
    d.start()
    runs_a_job(tcp_redis, "by-name")
    assert d.stop() == 0


@needs_mount_ns
def test_dead_nameserver_does_not_stop_the_loop(daemon, tmp, tcp_redis, dns):
    d = daemon()
    configure(d, tmp, "redis.qw-test:%d" % tcp_redis.port)
    d.start(wait_ready=False, env={"WATCHDOG_USEC": "400000"}, prefix=dns.prefix)
    wait_until(lambda: dns.queries > 0, what="a DNS query")
    n0 = sum(m == "WATCHDOG=1" for m in d.read_messages())
    time.sleep(1.5)
    # Pings every 200 ms while the name gets no answer: the loop runs.
    assert sum(m == "WATCHDOG=1" for m in d.read_messages()) - n0 >= 3
    assert not any("READY=1" in m for m in d.read_messages())
    dns.answer = True
    d.wait_message("READY=1", 30)
    runs_a_job(tcp_redis, "by-dns")
    assert "cannot look up the host" in d.log()
    assert d.stop() == 0


@needs_mount_ns
def test_stop_during_a_lookup_is_quick(daemon, tmp, tcp_redis, dns):
    d = daemon()
    configure(d, tmp, "redis.qw-test:%d" % tcp_redis.port)
    d.start(wait_ready=False, prefix=dns.prefix)
    wait_until(lambda: dns.queries > 0, what="a DNS query")
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait(10) == 0
    assert time.monotonic() - t0 < 1.0 * SLOW + 0.5


@needs_mount_ns
def test_unknown_host_is_named_in_the_error(daemon, tmp, tcp_redis, dns):
    d = daemon()
    configure(d, tmp, "nosuch.qw-test:%d" % tcp_redis.port)
    d.start(wait_ready=False, prefix=dns.prefix)
    d.wait_log("redis main: cannot connect to nosuch.qw-test:%d: cannot look up the host"
               % tcp_redis.port)
    assert d.proc.poll() is None
    assert d.stop() == 0


@needs_mount_ns
def test_reload_reads_resolv_conf_again(daemon, tmp, tcp_redis, dns):
    d = daemon()
    with open(dns.resolv, "w") as f:
        f.write("nameserver 127.0.0.1:9\n")         # nothing there
    configure(d, tmp, "localhost:%d" % tcp_redis.port)
    d.start(prefix=dns.prefix)
    dns.answer = True
    with open(dns.resolv, "w") as f:                # the same file: the bind mount sees it
        f.write("nameserver 127.0.0.1:%d\n" % dns.port)
    configure(d, tmp, "redis.qw-test:%d" % tcp_redis.port)
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded")
    d.wait_log("redis main: redis.qw-test:%d is 127.0.0.1" % tcp_redis.port)
    d.wait_log("redis main: connected to redis.qw-test:%d" % tcp_redis.port)
    runs_a_job(tcp_redis, "after-reload")
    assert d.stop() == 0


@needs_mount_ns
def test_a_refused_address_moves_on_to_the_next(daemon, tmp, tcp_redis, dns):
    dns.answer = True
    dns.addresses = ["127.0.0.3", "127.0.0.1"]       # Redis listens on the second only
    d = daemon()
    configure(d, tmp, "redis.qw-test:%d" % tcp_redis.port)
    d.start(prefix=dns.prefix)
    assert "redis main: redis.qw-test:%d is 127.0.0.3" % tcp_redis.port in d.log()
    assert "redis main: redis.qw-test:%d is 127.0.0.1" % tcp_redis.port in d.log()
    assert d.stop() == 0
