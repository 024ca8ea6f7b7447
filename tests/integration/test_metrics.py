"""metrics_listen: GET /metrics (Prometheus text) and GET /health."""
import selectors
import socket
import time
import urllib.error
import urllib.request

from conftest import free_port, get, script, stats, wait_until


def test_metrics_and_health(r, daemon, tmp):
    port = free_port()
    h = script(tmp, "h.sh", 'cat > /dev/null\n[ "$QW_ATTEMPT" = 1 ] && exit 1\nexit 0\n')
    d = daemon()
    d.conf({"mail": "handler = %s\nretry_base = 50ms" % h, "other": "handler = %s" % h},
           workers="metrics_listen = 127.0.0.1:%d\nconcurrency = 3\n" % port)
    d.start()
    r.lpush("qw:{mail}:pending", "a", "b")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 2, what="2 succeeded")
    base = "http://127.0.0.1:%d" % port
    status, body = get(base + "/metrics")
    assert status == 200
    lines = dict(l.rsplit(" ", 1) for l in body.splitlines() if l and not l.startswith("#"))
    assert lines["qworkerd_workers"] == "3"
    assert lines["qworkerd_jobs_processed_total"] == "4"
    assert lines["qworkerd_jobs_failed_total"] == "2"
    assert lines["qworkerd_redis_up"] == "1"
    assert 'qworkerd_queue_running{queue="other"}' in lines
    wait_until(lambda: 'qworkerd_queue_pending{queue="mail"} 0' in get(base + "/metrics")[1],
               what="pending gauge")
    assert get(base + "/health") == (200, "ok\n")
    assert get(base + "/nothing-here")[0] == 404
    assert d.stop() == 0


def test_metrics_listen_in_use_is_an_error(r, daemon, tmp):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        h = script(tmp, "h.sh", "cat > /dev/null\n")
        d = daemon()
        d.conf({"mail": "handler = %s" % h}, workers="metrics_listen = 127.0.0.1:%d\n" % port)
        d.start(wait_ready=False)
        assert d.wait(10) == 70
        assert "metrics_listen 127.0.0.1:%d" % port in d.log()
    finally:
        s.close()


def test_metrics_listen_must_be_host_port(tmp):
    import subprocess
    from conftest import QWORKERD
    conf = "%s/m.conf" % tmp
    with open(conf, "w") as f:
        f.write("[workers]\nmetrics_listen = unix:/run/x.sock\n[queue q]\nhandler = /bin/true\n")
    p = subprocess.run([QWORKERD, "-t", "-c", conf], capture_output=True, text=True)
    assert p.returncode == 78
    assert "%s:2: metrics_listen: 'unix:/run/x.sock' is not host:port" % conf in p.stderr


def daemon_with_metrics(daemon, tmp, prefix=(), workers=""):
    port = free_port()
    h = script(tmp, "h.sh", "cat > /dev/null\n")
    d = daemon()
    d.conf({"mail": "handler = %s" % h},
           workers="metrics_listen = 127.0.0.1:%d\n%s" % (port, workers))
    d.start(prefix=prefix)
    return d, port, h


def raw_request(port, data, timeout=10):
    """Sends DATA and returns what the server answered before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_only_get_and_head_without_a_body(r, daemon, tmp):
    d, port, _ = daemon_with_metrics(daemon, tmp)
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        answer = raw_request(port, b"%s /metrics HTTP/1.1\r\nHost: x\r\n\r\n" % method.encode())
        assert answer.startswith(b"HTTP/1.1 405 "), (method, answer)
        assert b"\r\nAllow: GET, HEAD\r\n" in answer
    head = raw_request(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 0\r\n" not in head
    body = raw_request(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
    assert body.startswith(b"HTTP/1.1 200 ") and b"\nqworkerd_workers " in body
    for extra in (b"Content-Length: 5\r\n\r\nhello", b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"):
        answer = raw_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + extra)
        assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert raw_request(port, b"GET /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n") \
        .startswith(b"HTTP/1.1 200 ")
    big = b"GET /health HTTP/1.1\r\n" + b"X-Pad: %s\r\n" % (b"a" * 9000) + b"\r\n"
    assert raw_request(port, big).startswith(b"HTTP/1.1 431 ")
    assert raw_request(port, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # A client that shuts down its sending side after the request still
    # gets the answer.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok\n")
    assert get("http://127.0.0.1:%d/health" % port) == (200, "ok\n")
    assert d.stop() == 0


def test_a_huge_post_is_refused_without_reading_it(r, daemon, tmp):
    """Headers with a 300 MiB Content-Length, then the body streamed: the
    daemon answers 413 and closes instead of reading it into memory."""
    d, port, _ = daemon_with_metrics(daemon, tmp)
    size = 300 << 20
    chunk = b"x" * (1 << 20)
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        try:
            while sent < size:
                s.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = s.recv(4096)
        except ConnectionResetError:
            pass
    assert sent < size, "the daemon read the whole body"
    assert answer == b"" or answer.startswith((b"HTTP/1.1 405 ", b"HTTP/1.1 413 "))
    assert rss_kib(d.proc.pid) < 64 * 1024
    assert get("http://127.0.0.1:%d/health" % port) == (200, "ok\n")
    assert d.stop() == 0


def test_at_most_64_connections_and_idle_ones_are_closed(r, daemon, tmp):
    d, port, _ = daemon_with_metrics(daemon, tmp)
    conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(80)]
    try:
        # The 16 beyond the limit are closed at once, the first 64 after 5 s
        # of silence: every one ends with EOF, none waits forever.
        sel = selectors.DefaultSelector()
        for c in conns:
            sel.register(c, selectors.EVENT_READ)
        closed_at = []
        start = time.monotonic()
        while len(closed_at) < len(conns):
            ready = sel.select(timeout=60)
            assert ready, "connections left open: %d" % (len(conns) - len(closed_at))
            for key, _ in ready:
                try:
                    assert key.fileobj.recv(1) == b""
                except ConnectionResetError:
                    pass
                sel.unregister(key.fileobj)
                closed_at.append((time.monotonic() - start, conns.index(key.fileobj)))
        closed_at.sort()
        # The last 16 accepted are refused before any idle one is closed,
        # and the idle ones only after their 5 s.
        assert sorted(i for _, i in closed_at[:16]) == list(range(64, 80)), closed_at
        assert closed_at[16][0] > 3, closed_at
    finally:
        for c in conns:
            c.close()
    assert get("http://127.0.0.1:%d/health" % port) == (200, "ok\n")
    assert d.stop() == 0
