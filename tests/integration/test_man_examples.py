"""Every redis-cli example in qworkerd-jobs(7) runs here, as printed, and
does what the page says it does (issue: ship it, done-when 9)."""
import json
import os
import re
import signal
import subprocess
import time

from conftest import TOP, script, stats, wait_until

PAGE = os.path.join(TOP, "man", "qworkerd-jobs.7.in")


def examples():
    """The shell text of each example in EXAMPLES, in order."""
    text = open(PAGE).read()
    section = text[text.index(".Sh EXAMPLES"):text.index(".Sh SEE ALSO")]
    out, block = [], None
    for line in section.splitlines():
        if line.startswith(".Bd -literal"):
            block = []
        elif line.startswith(".Ed") and block is not None:
            out.append("\n".join(block))
            block = None
        elif block is not None:
            block.append(line)
        elif line.startswith(".Dl "):
            out.append(line[4:])
    return [e.replace("\\e", "\\") for e in out]


def run(sock, shell, cwd, instance="test-1"):
    """Runs an example with redis-cli pointed at the test server."""
    shell = shell.replace("web-1:qworkerd", instance)
    prog = 'redis-cli() { command redis-cli -s "%s" "$@"; }\n%s\n' % (sock, shell)
    p = subprocess.run(["bash", "-e", "-c", prog], cwd=cwd, capture_output=True)
    assert p.returncode == 0, (shell, p.stderr)
    return p.stdout.decode(errors="replace")


CAPTURE = 'cat > "%s/$QW_JOB_ID.in"\n[ -e "%s/fail" ] && exit 65\nexit 0\n'


def payloads(tmp):
    out = []
    for n in sorted(os.listdir(tmp), key=lambda n: os.path.getmtime(os.path.join(tmp, n))):
        if n.endswith(".in"):
            out.append(open(os.path.join(tmp, n), "rb").read())
    return out


def test_every_example_does_what_the_page_says(r, daemon, tmp, redis_server):
    ex = examples()
    assert len(ex) == 9, ex
    enqueue, from_file, schedule, urgent, look, leases, retry_one, retry_all, drop = ex
    sock = redis_server.sock
    jobs = os.path.join(tmp, "jobs")
    os.makedirs(jobs)
    h = script(tmp, "h.sh", CAPTURE % (jobs, tmp))
    d = daemon()
    d.conf({"mail": "handler = %s\nmax_attempts = 1" % h}, workers="concurrency = 1\n")
    d.start()

    # Enqueue a raw job and an envelope: both run, payloads as sent.
    run(sock, enqueue, tmp)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 2, what="2 enqueued jobs")
    assert payloads(jobs) == [b"hello world", b"hello"]

    # A file, byte for byte.
    body = bytes(range(256)) * 4 + b"\r\nend"
    with open(os.path.join(tmp, "message.eml"), "wb") as f:
        f.write(body)
    run(sock, from_file, tmp)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 3, what="file job")
    assert payloads(jobs)[-1] == body

    # Scheduled: one in a minute, one in 2030; neither runs now.
    now = int(r.time()[0]) * 1000
    run(sock, schedule, tmp)
    due = dict(r.zrange("qw:{mail}:scheduled", 0, -1, withscores=True))
    assert due[b"run me later"] == 1893456000000
    (reminder,) = [s for m, s in due.items() if b"reminder-42" in m]
    assert now + 55000 < reminder < now + 65000

    # RPUSH puts a job where it runs before everything already waiting.
    d.signal(signal.SIGUSR1)
    d.wait_log("quiet")
    time.sleep(0.5)
    r.lpush("qw:{mail}:pending", "first-waiting", "second-waiting")
    run(sock, urgent, tmp)
    # The look commands print what the page says they print.
    out = run(sock, look, tmp)
    assert "3" in out.splitlines()[0]
    lines = out.splitlines()
    assert lines[1:4] == ["second-waiting", "first-waiting", "urgent"]   # last printed runs next
    assert "reminder-42" in out and "1893456000000" in out and "succeeded" in out
    d.signal(signal.SIGUSR2)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 6, what="3 more jobs")
    assert payloads(jobs)[-3:] == [b"urgent", b"first-waiting", b"second-waiting"]

    # Leases and in-flight jobs of an instance (test-1 stays quiet meanwhile).
    d.signal(signal.SIGUSR1)
    wait_until(lambda: d.log().count("SIGUSR1: quiet") == 2, what="quiet again")
    time.sleep(0.5)
    slow = script(tmp, "slow.sh", "cat > /dev/null\nsleep 30\n")
    d2 = daemon("d2")
    d2.conf({"mail": "handler = %s" % slow}, instance="web-2",
            workers="shutdown_timeout = 500ms\nkill_grace = 500ms\n")
    d2.start()
    r.lpush("qw:{mail}:pending", "in-flight")
    wait_until(lambda: r.hlen("qw:{mail}:active:web-2") == 1, what="job in flight on web-2")
    out = run(sock, leases, tmp, instance="web-2")
    assert "test-1" in out and "web-2" in out
    assert "qw:{mail}:active:web-2" in out
    assert out.strip().splitlines()[-1] == "in-flight"
    d2.signal(signal.SIGTERM)
    assert d2.wait(20) == 0
    r.delete("qw:{mail}:pending")
    d.signal(signal.SIGUSR2)
    wait_until(lambda: d.log().count("taking jobs again") == 2, what="resumed")

    # Retrying dead jobs: make two die (exit 65), the older first.
    open(os.path.join(tmp, "fail"), "w").close()
    r.lpush("qw:{mail}:pending", "died-first")
    wait_until(lambda: r.llen("qw:{mail}:dead") == 1, what="first dead")
    r.lpush("qw:{mail}:pending", "died-second")
    wait_until(lambda: r.llen("qw:{mail}:dead") == 2, what="second dead")
    os.remove(os.path.join(tmp, "fail"))
    d.signal(signal.SIGUSR1)
    wait_until(lambda: d.log().count("SIGUSR1: quiet") == 3, what="quiet once more")
    time.sleep(0.5)
    r.lpush("qw:{mail}:pending", "waiting")
    run(sock, retry_one, tmp)
    # The newest dead job goes to the head: it runs after "waiting".
    assert json.loads(r.lindex("qw:{mail}:pending", 0))["payload"] == "died-second"
    assert r.lindex("qw:{mail}:pending", -1) == b"waiting"
    run(sock, retry_all, tmp)
    assert r.llen("qw:{mail}:dead") == 0
    order = [json.loads(x)["payload"] if x.startswith(b"{") else x.decode()
             for x in reversed(r.lrange("qw:{mail}:pending", 0, -1))]
    assert order == ["waiting", "died-second", "died-first"]   # run order, tail first

    # Dropping: the keys are gone.
    run(sock, drop, tmp)
    assert not r.exists("qw:{mail}:pending", "qw:{mail}:dead", "qw:{mail}:stats")
    assert d.stop() == 0
