"""A connection that stops answering without closing (a peer gone with
commands unacknowledged, a network that drops everything): qworkerd gives it
up after lease_timeout plus 5 s (how often a waiting connection subscribes
again to prove it is alive), connects again, and a job whose wake-up went
to the dead connection still runs, once."""
import select
import signal
import socket
import threading
import time

from conftest import inflight, script, stats, wait_until


class FreezingProxy:
    """TCP on 127.0.0.1 to Redis's unix socket. freeze() stops every
    connection open at that moment from passing anything in either
    direction, and keeps it open; later connections pass as usual, unless
    FREEZE_NEW is set."""

    def __init__(self, redis_sock):
        self.redis_sock = redis_sock
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns = []                 # [client, server, frozen flag holder]
        self.closed = False
        self.freeze_new = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.redis_sock)
            conn = {"c": c, "s": s, "frozen": self.freeze_new}
            self.conns.append(conn)
            threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def _pump(self, conn):
        c, s = conn["c"], conn["s"]
        while not self.closed:
            if conn["frozen"]:
                select.select([], [], [], 0.1)
                continue
            ready, _, _ = select.select([c, s], [], [], 0.1)
            for src in ready if not conn["frozen"] else ():
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    c.close()
                    s.close()
                    return
                (s if src is c else c).sendall(data)

    def freeze(self):
        for conn in self.conns:
            conn["frozen"] = True
        return len(self.conns)

    def cut(self):
        """Closes every connection open now, as a restarted Redis would."""
        for conn in self.conns:
            conn["c"].close()
            conn["s"].close()

    def close(self):
        self.closed = True
        self.lsock.close()
        for conn in self.conns:
            conn["c"].close()
            conn["s"].close()


def test_a_connection_that_stops_answering_is_replaced(r, daemon, tmp, redis_server):
    proxy = FreezingProxy(redis_server.sock)
    try:
        h = script(tmp, "ok.sh", "cat > /dev/null\n")
        d = daemon()
        d.conf({"mail": "handler = %s" % h}, workers="lease_timeout = 2s\n")
        text = open(d.conf_path).read()
        d.write_conf(text.replace("address = unix:%s" % redis_server.sock,
                                  "address = 127.0.0.1:%d" % proxy.port))
        d.start()
        wait_until(lambda: any(c.get("name", "").endswith("/blocking") and "P" in c["flags"]
                               and "t" in c["flags"] for c in r.client_list()),
                   what="the wake-up armed")
        assert proxy.freeze() == 2          # the main connection and mail's blocking one
        # Its wake-up goes nowhere; the job waits in pending, and only there.
        r.lpush("qw:{mail}:pending", "through-a-dead-connection")
        d.wait_log("redis main: connection to 127.0.0.1:%d lost: no reply for" % proxy.port, 20)
        d.wait_log("redis mail/blocking: connection to 127.0.0.1:%d lost: no reply for"
                   % proxy.port, 20)
        wait_until(lambda: stats(r, "mail").get("succeeded") == 1, 20,
                   what="the job ran over the new connection")
        assert stats(r, "mail") == {"succeeded": 1}
        assert inflight(r, "mail") == 0 and r.llen("qw:{mail}:pending") == 0
        assert d.stop() == 0
    finally:
        proxy.close()


def test_a_paused_daemon_keeps_its_connections(r, daemon, tmp):
    """Answers that wait unread while the daemon itself was held up (SIGSTOP,
    a busy machine) are not a silent Redis."""
    h = script(tmp, "ok.sh", "cat > /dev/null\n")
    d = daemon()
    d.conf({"mail": "handler = %s" % h}, workers="lease_timeout = 2s\n")
    d.start()
    d.signal(signal.SIGSTOP)
    time.sleep(8)                   # past lease_timeout + 5 s; the blocking pop answered
    d.signal(signal.SIGCONT)
    time.sleep(1.5)
    assert "no reply for" not in d.log()
    r.lpush("qw:{mail}:pending", "after-the-pause")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="job after the pause")
    assert d.stop() == 0


def test_reload_leaves_a_server_that_never_answers_at_once(r, daemon, tmp, redis_server):
    proxy = FreezingProxy(redis_server.sock)
    try:
        h = script(tmp, "ok.sh", "cat > /dev/null\n")
        d = daemon()
        d.conf({"mail": "handler = %s" % h})
        direct = open(d.conf_path).read()
        d.write_conf(direct.replace("address = unix:%s" % redis_server.sock,
                                    "address = 127.0.0.1:%d" % proxy.port))
        d.start()
        proxy.freeze_new = True
        proxy.cut()                 # reconnects reach a server that accepts and says nothing
        d.wait_log("redis main: connection to 127.0.0.1:%d lost" % proxy.port)
        wait_until(lambda: len(proxy.conns) >= 4, what="connecting again")
        d.write_conf(direct)
        d.signal(signal.SIGHUP)
        d.wait_log("redis main: reconnecting to unix:%s" % redis_server.sock)
        # Not after lease_timeout + 5 s of silence: now.
        d.wait_log("redis main: connected to unix:%s" % redis_server.sock, 4)
        r.lpush("qw:{mail}:pending", "after-the-switch")
        wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="job after the switch")
        assert "no reply for" not in d.log()
        assert d.stop() == 0
    finally:
        proxy.close()
