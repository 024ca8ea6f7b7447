"""The log (qworkerd(8) LOGGING): control characters from Redis and from
handlers are escaped, so no line can be forged; a stderr or a notify socket
that nobody reads never stops the daemon from running jobs."""
import os
import re
import socket
import threading

from conftest import redis_ms, script, stats, wait_until

FORGED = "\n<0>forged emergency"


def journal_env(d):
    """Makes the daemon write journald "<N>" prefixes into its log file."""
    os.makedirs(d.tmp, exist_ok=True)
    open(d.log_path, "ab").close()
    st = os.stat(d.log_path)
    return {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)}


def test_no_forged_lines_from_redis_or_handlers(r, daemon, tmp):
    # An expired lease of an instance whose name carries "\n<0>", and a holder
    # of our own instance whose boot id does: the daemon logs both, waiting
    # for the second's lease (another boot id proves nothing, SPEC 10) and
    # recovering the first. The handler writes DEL, C1 (UTF-8 and lone) and ESC.
    r.zadd("qw:{mail}:leases", {"x" + FORGED: 1})
    r.hset("qw:{mail}:holders", "x" + FORGED, "h\tb" + FORGED + "\t1\t1")
    r.zadd("qw:{mail}:leases", {"test-1": redis_ms(r) + 3000})
    r.hset("qw:{mail}:holders", "test-1",
           "%s\tboot%s\t1\t1" % (socket.gethostname(), FORGED))
    h = script(tmp, "h.sh", r"printf 'out a\177b\302\233c\233d\033[31me\n'" + "\n")
    d = daemon()
    # Recovering waits for our own lease_timeout plus a tick (SPEC 10).
    d.conf({"mail": "handler = %s" % h}, workers="lease_timeout = 2s\n")
    d.start(env=journal_env(d))
    wait_until(lambda: r.zscore("qw:{mail}:leases", "x" + FORGED) is None, 15,
               what="expired lease recovered")
    r.lpush("qw:{mail}:pending", "x")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="job ran")
    d.wait_log("out a")
    assert d.stop() == 0
    with open(d.log_path, "rb") as f:
        lines = f.read().split(b"\n")
    assert lines[-1] == b""
    assert not [l for l in lines if l.startswith(b"<0>")]   # no forged emergency
    for line in lines[:-1]:
        # Only what the daemon logs: err .. debug, never <0>.
        assert re.match(rb"<[3-7]>", line), line
        assert not re.search(rb"[\x00-\x1f\x7f]|\xc2[\x80-\x9f]", line), line
    log = b"\n".join(lines)
    assert b"x\\n<0>forged emergency" in log            # the instance name, escaped
    assert b"boot\\n<0>forged emergency" in log         # the holder info, escaped
    assert b"out a\\x7fb\\xc2\\x9bc\\x9bd\\x1b[31me" in log


def test_stderr_nobody_reads_does_not_stop_jobs(r, daemon, tmp):
    # Debug logging into a pipe nobody reads: the pipe fills after a few
    # hundred lines, and a write that waited would stop the loop for good.
    rfd, wfd = os.pipe()
    h = script(tmp, "h.sh", "cat > /dev/null\nprintf '%0500d\\n' 0\n")
    d = daemon()
    d.conf({"mail": "handler = %s" % h}, workers="concurrency = 4")
    try:
        d.start(stderr=wfd)
        os.close(wfd)
        wfd = -1
        r.lpush("qw:{mail}:pending", *["job-%d" % i for i in range(600)])
        wait_until(lambda: stats(r, "mail").get("succeeded") == 600, 120, what="600 succeeded")
        # Read now: the lines left queued come out, then how many were dropped.
        got = bytearray()

        def drain():
            while True:
                b = os.read(rfd, 65536)
                if not b:
                    return
                got.extend(b)
        threading.Thread(target=drain, daemon=True).start()
        wait_until(lambda: b"log lines dropped" in got, 30, what="the dropped count")
        assert d.stop() == 0
    finally:
        if wfd >= 0:
            os.close(wfd)
    m = re.search(rb"(\d+) log lines dropped", bytes(got))
    assert int(m.group(1)) > 0


def test_notify_socket_nobody_reads_does_not_stop_jobs(r, daemon, tmp):
    # An abstract datagram socket, filled up before the daemon starts: every
    # sd_notify() that waited for room would wait for good.
    name = "qw-test-notify-%d" % os.getpid()
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind("\0" + name)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.setblocking(False)
    n = 0
    while True:
        try:
            filler.sendto(b"X", "\0" + name)
            n += 1
        except BlockingIOError:
            break
    assert n > 0
    h = script(tmp, "h.sh", "cat > /dev/null\n")
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    try:
        d.start(wait_ready=False, env={"NOTIFY_SOCKET": "@" + name})
        r.lpush("qw:{mail}:pending", *["job-%d" % i for i in range(50)])
        wait_until(lambda: stats(r, "mail").get("succeeded") == 50, 60, what="50 succeeded")
        # Once there is room, the daemon's messages get through again.
        sink.setblocking(True)
        for _ in range(n):
            sink.recv(16)
        sink.settimeout(30)
        msg = b""
        while not msg.startswith(b"STATUS="):
            msg = sink.recv(4096)
        assert d.stop() == 0
    finally:
        sink.close()
        filler.close()
