"""File descriptors: a flood of connections to the metrics endpoint under a
low open-file limit never makes a job fail (a spawn that runs out of
descriptors gives the job back without spending an attempt), the accept
errors are logged at most once a second, and the daemon's sockets are
close-on-exec."""
import os
import resource
import socket
import time
import urllib.error
import urllib.request

from conftest import free_port, get, script, stats, wait_until

O_CLOEXEC = 0o2000000


def sockets(pid):
    """{fd: flags} of every socket PID has open."""
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if not os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                flags = [l for l in f if l.startswith("flags:")][0]
        except (FileNotFoundError, IndexError):
            continue
        out[int(fd)] = int(flags.split()[1], 8)
    return out


def lower_nofile(n):
    """A prefix that starts the daemon with soft and hard limits of N: the
    daemon raises its soft limit to the hard one, so both must be low."""
    return ["prlimit", "--nofile=%d:%d" % (n, n), "--"]


def test_redis_sockets_are_close_on_exec(r, daemon, tmp):
    h = script(tmp, "h.sh", "cat > /dev/null\n")
    d = daemon()
    d.conf({"mail": "handler = %s" % h, "other": "handler = %s" % h})
    d.start()
    wait_until(lambda: "redis other/blocking: connected" in d.log() or
               len(sockets(d.proc.pid)) >= 3, what="blocking connections")
    socks = sockets(d.proc.pid)
    # main, and one blocking connection per queue
    assert len(socks) >= 3, socks
    leaky = [fd for fd, flags in socks.items() if not flags & O_CLOEXEC]
    assert leaky == [], "sockets without close-on-exec: %s" % leaky
    assert d.stop() == 0


def test_soft_limit_is_raised_to_the_hard_limit(r, daemon, tmp):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    h = script(tmp, "h.sh", "cat > /dev/null\n")
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start(prefix=["prlimit", "--nofile=%d:%d" % (low - 1, low), "--"])
    with open("/proc/%d/limits" % d.proc.pid) as f:
        line = [l for l in f if l.startswith("Max open files")][0]
    assert line.split()[3:5] == [str(low), str(low)], line
    assert d.stop() == 0


def test_a_flood_of_connections_never_fails_a_job(r, daemon, tmp):
    port = free_port()
    n = 20
    h = script(tmp, "h.sh", "cat > /dev/null\n")
    d = daemon()
    d.conf({"mail": "handler = %s\nmax_attempts = 2\nretry_base = 50ms" % h},
           workers="metrics_listen = 127.0.0.1:%d\nconcurrency = 4\n" % port)
    d.start(prefix=lower_nofile(40))
    start = time.monotonic()
    conns = []
    try:
        # More idle connections than the daemon has descriptors left.
        for _ in range(80):
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        # (today "metrics: cannot accept a connection"; libevent's own words
        # were "Error from accept() call")
        d.wait_log("accept", 30)
        r.lpush("qw:{mail}:pending", *["job-%d" % i for i in range(n)])
        wait_until(lambda: stats(r, "mail").get("succeeded") == n, 120, what="all succeeded")
    finally:
        for c in conns:
            c.close()
    elapsed = time.monotonic() - start
    st = stats(r, "mail")
    assert st.get("failed", 0) == 0 and st.get("dead", 0) == 0, st
    assert r.llen("qw:{mail}:dead") == 0
    assert st.get("requeued", 0) >= 1, st
    assert "no attempt spent" in d.log()
    accept_lines = [l for l in d.log().splitlines() if "accept" in l]
    assert 1 <= len(accept_lines) <= elapsed + 2, len(accept_lines)
    assert get("http://127.0.0.1:%d/health" % port) == (200, "ok\n")
    # The jobs given back unstarted are counted as the stats hash counts them.
    _, body = get("http://127.0.0.1:%d/metrics" % port)
    for outcome in ("succeeded", "requeued", "failed", "dead"):
        assert 'qworkerd_jobs_total{queue="mail",outcome="%s"} %d\n' % (
            outcome, st.get(outcome, 0)) in body, (outcome, st)
    assert d.stop() == 0
