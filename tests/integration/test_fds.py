"""File descriptors: the daemon's sockets are close-on-exec."""
import os

from conftest import script, wait_until

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
