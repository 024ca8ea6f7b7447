"""metrics_listen: GET /metrics (Prometheus text) and GET /health."""
import socket
import urllib.error
import urllib.request

from conftest import script, stats, wait_until


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


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
