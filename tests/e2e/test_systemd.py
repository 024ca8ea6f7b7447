"""qworkerd under a real systemd (systemd-box): the units as installed by
the Debian package (dpkg -i), driven with systemctl, journalctl and
redis-cli. One box for the whole module; the tests run in order and each
leaves qworkerd.service running with the base configuration
(conftest.conf()). The test config keeps
the drain short: shutdown_timeout = 4s, kill_grace = 2s."""
import json
import os
import re
import time

import pytest

from conftest import CONF_PATH, PLUGIN_DIR, STAGE, conf, wait_until

UNIT = "qworkerd.service"
SHUTDOWN_TIMEOUT, KILL_GRACE = 4, 2
MAX_SCORE = 2.0


def push(box, queue, jid, payload, **kw):
    box.redis("LPUSH", "qw:{%s}:pending" % queue, json.dumps(dict(id=jid, payload=payload, **kw)))


def pending(box, queue="e2e"):
    out = box.redis("LRANGE", "qw:{%s}:pending" % queue, "0", "-1")
    return [json.loads(x) for x in out.splitlines() if x]


def stat(box, queue, field):
    v = box.redis("HGET", "qw:{%s}:stats" % queue, field)
    return int(v) if v else 0


def main_pid(box, unit=UNIT):
    return int(box.show(unit, "MainPID")["MainPID"])


def ensure_running(box, unit=UNIT):
    if box.run("systemctl", "is-active", unit, check=False).stdout.strip() != "active":
        box.run("systemctl", "start", unit)
    return main_pid(box, unit)


def score(box, unit):
    out = box.run("systemd-analyze", "security", "--no-pager", unit).stdout
    m = re.search(r"Overall exposure level for %s: (\d+\.\d+)" % re.escape(unit), out)
    assert m, out
    return float(m.group(1))


# ---------------------------------------------------------------- installation

def test_package_starts_nothing(box):
    """dpkg -i of the package neither enables nor starts qworkerd.service:
    the shipped config is an example; the administrator starts it."""
    assert box.after_install == {"is-enabled": "disabled", "is-active": "inactive"}
    assert box.run("dpkg-query", "-W", "-f", "${Conffiles}", "qworkerd").stdout.split()[0] \
        == CONF_PATH


def test_package_layout(box):
    want = ["usr/sbin/qworkerd", "etc/qworkerd/qworkerd.conf",
            "lib/systemd/system/qworkerd.service", "lib/systemd/system/qworkerd@.service",
            "usr/share/man/man8/qworkerd.8.gz", "usr/share/man/man5/qworkerd.conf.5.gz",
            "usr/share/man/man7/qworkerd-jobs.7.gz", "usr/include/qworkerd/plugin.h",
            "usr/share/doc/qworkerd/examples/qworkerd.service.d-example.conf"]
    missing = [f for f in want if not os.path.exists(os.path.join(STAGE, f))]
    assert not missing, "the packages do not install %s" % missing
    unit = open(os.path.join(STAGE, "lib/systemd/system/qworkerd.service")).read()
    assert "ExecStart=/usr/sbin/qworkerd -c /etc/qworkerd/qworkerd.conf\n" in unit
    tmpl = open(os.path.join(STAGE, "lib/systemd/system/qworkerd@.service")).read()
    assert "ExecStart=/usr/sbin/qworkerd -c /etc/qworkerd/%i.conf\n" in tmpl
    for text in (unit, tmpl):
        assert not re.search(r"@[a-z]+@", text), "unsubstituted @...@ in a unit"
    # In the box: the shipped config passes the check, the man pages are found.
    out = box.run("qworkerd", "-t", "-c", CONF_PATH + ".dist").stdout
    assert "configuration OK" in out
    for page in ("8 qworkerd", "5 qworkerd.conf", "7 qworkerd-jobs"):
        box.run("man", "-w", *page.split())


def test_units_verify_clean(box):
    """Done-when 8a: systemd-analyze verify prints nothing for both units."""
    for args in (["/lib/systemd/system/qworkerd.service", "/lib/systemd/system/qworkerd@.service"],
                 ["qworkerd.service", "qworkerd@mail.service"]):
        p = box.run("systemd-analyze", "verify", *args, check=False)
        assert p.returncode == 0 and p.stdout == "" and p.stderr == "", \
            "verify %s: exit %d\n%s%s" % (args, p.returncode, p.stdout, p.stderr)


def test_security_score(box):
    """Done-when 8b: systemd-analyze security scores 2.0 or lower."""
    scores = {u: score(box, u) for u in (UNIT, "qworkerd@mail.service")}
    print("systemd-analyze security: %s" % scores)
    for u, s in scores.items():
        assert s <= MAX_SCORE, "%s scores %.1f" % (u, s)


# ---------------------------------------------------------------- the done-when list

def test_start_returns_after_ready_and_status(box):
    """Done-when 1. Redis is down (masked, so Wants= cannot start it): the
    start job waits in 'activating' and STATUS= says why; once Redis is back,
    READY=1 completes it, and `systemctl start` returned no earlier."""
    box.run("systemctl", "stop", UNIT)
    c = box.cursor()
    box.sh("systemctl mask --runtime redis-server; systemctl stop redis-server")
    try:
        box.run("systemctl", "start", "--no-block", UNIT)
        wait_until(lambda: "waiting for Redis" in box.show(UNIT, "StatusText")["StatusText"],
                   15, what="STATUS= saying it waits for Redis")
        time.sleep(1)
        assert box.run("systemctl", "is-active", UNIT, check=False).stdout.strip() == "activating"
        assert "Status: \"waiting for Redis" in box.run(
            "systemctl", "status", "--no-pager", UNIT, check=False).stdout
    finally:
        box.sh("systemctl unmask --runtime redis-server; systemctl start redis-server")
    box.run("systemctl", "start", UNIT)     # joins the queued start job
    st = box.show(UNIT, "ActiveState", "SubState", "Type", "NotifyAccess",
                  "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    assert (st["ActiveState"], st["SubState"]) == ("active", "running"), st
    assert (st["Type"], st["NotifyAccess"]) == ("notify", "main")
    assert box.run("systemctl", "is-active", UNIT).stdout.strip() == "active"
    # the start stayed pending while Redis was away: READY=1 came seconds later
    waited = (int(st["ActiveEnterTimestampMonotonic"]) -
              int(st["ExecMainStartTimestampMonotonic"])) / 1e6
    assert waited > 2, "active %.1fs after the main process started" % waited
    msgs = box.messages(UNIT, after=c)
    ready = [i for i, m in enumerate(msgs) if m.startswith("ready:")]
    started = [i for i, m in enumerate(msgs) if m.startswith("Started ")]
    assert ready and started and ready[0] < started[0], msgs
    wait_until(lambda: re.search(r'Status: "\d+/4 busy, \d+ processed, \d+ failed; pending e2e=\d+',
                                 box.run("systemctl", "status", "--no-pager", UNIT).stdout),
               10, what="the STATUS= line in systemctl status")


def test_job_runs_and_logs_with_priority(box):
    """Done-when 2: redis-cli LPUSH, the handler runs, its line with the job
    id is in journalctl -u qworkerd at info; a dead job is logged at err."""
    ensure_running(box)
    c = box.cursor()
    ok0 = stat(box, "e2e", "succeeded")
    push(box, "e2e", "hello-1", "hello")
    push(box, "e2e", "fail-1", "fail", max_attempts=1)
    hits = box.wait_journal(UNIT, r"^job e2e/hello-1: done id=hello-1$", c)
    assert hits[0]["PRIORITY"] == "6" and hits[0]["_SYSTEMD_UNIT"] == UNIT
    start = box.wait_journal(UNIT, r"^job e2e/hello-1: start id=hello-1 attempt=1 payload=hello$", c)
    assert start[0]["PRIORITY"] == "6"
    err = box.wait_journal(UNIT, r"^job e2e/fail-1: .*moved to dead", c)
    assert err[0]["PRIORITY"] == "3", err[0]
    out = box.wait_journal(UNIT, r"^job e2e/fail-1: failing on purpose$", c)
    assert out[0]["PRIORITY"] == "6"
    wait_until(lambda: stat(box, "e2e", "succeeded") == ok0 + 1, 10, what="succeeded + 1")
    assert box.redis("LLEN", "qw:{e2e}:dead") == "1"
    box.redis("DEL", "qw:{e2e}:dead")


def test_reload_applies_concurrency_and_refuses_broken_config(box):
    """Done-when 3."""
    pid = ensure_running(box)
    c = box.cursor()
    box.write(CONF_PATH, conf(concurrency=2))
    box.run("systemctl", "reload", UNIT)
    box.wait_journal(UNIT, r"^reloaded %s: 2 workers$" % CONF_PATH, c)
    wait_until(lambda: "/2 busy" in box.show(UNIT, "StatusText")["StatusText"], 10,
               what="STATUS= with 2 workers")
    assert main_pid(box) == pid
    # a broken config: the reload fails, the daemon keeps running the old one
    c = box.cursor()
    box.write(CONF_PATH, conf(concurrency=2).replace("concurrency = 2", "concurrency = lots"))
    p = box.run("systemctl", "reload", UNIT, check=False)
    assert p.returncode != 0, "reload with a broken config succeeded"
    hits = box.wait_journal(UNIT, r"%s:\d+: .*concurrency" % CONF_PATH, c)
    assert box.run("systemctl", "is-active", UNIT).stdout.strip() == "active"
    assert main_pid(box) == pid
    time.sleep(1.5)
    assert "/2 busy" in box.show(UNIT, "StatusText")["StatusText"]
    assert not [m for m in box.messages(UNIT, after=c) if m.startswith("reloaded")]
    # back to the base config
    box.write(CONF_PATH, conf())
    c = box.cursor()
    box.run("systemctl", "reload", UNIT)
    box.wait_journal(UNIT, r"^reloaded %s: 4 workers$" % CONF_PATH, c)


def test_broken_config_fails_start_once(box):
    """A broken configuration fails `systemctl start` with the error in
    STATUS= and the journal, and is not restarted (exit 78)."""
    box.run("systemctl", "stop", UNIT)
    box.write(CONF_PATH, conf().replace("concurrency = 4", "concurrency = lots"))
    c = box.cursor()
    try:
        p = box.run("systemctl", "start", UNIT, check=False)
        assert p.returncode != 0, "start with a broken config succeeded"
        n0 = int(box.show(UNIT, "NRestarts")["NRestarts"])
        time.sleep(3)       # RestartSec=2s: a restart would have happened by now
        st = box.show(UNIT, "ActiveState", "Result", "ExecMainStatus", "NRestarts", "StatusText")
        assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == \
            ("failed", "exit-code", "78"), st
        assert int(st["NRestarts"]) == n0, st
        assert re.search(r"qworkerd.conf:\d+: concurrency", st["StatusText"]), st
        box.wait_journal(UNIT, r"^%s:\d+: concurrency" % CONF_PATH, c)
    finally:
        box.write(CONF_PATH, conf())
        box.run("systemctl", "reset-failed", UNIT, check=False)
        box.run("systemctl", "start", UNIT)


def test_stop_drains_and_requeues(box):
    """Done-when 4: three 60-second jobs in flight; systemctl stop ends
    within shutdown_timeout + kill_grace + 2 s with result success; the
    jobs are back on pending with attempt unchanged."""
    ensure_running(box)
    box.redis("DEL", "qw:{e2e}:pending")
    c = box.cursor()
    jobs = {"long-1": "sleep 60", "long-2": "sleep 60", "stubborn-1": "stubborn 60"}
    for jid, payload in jobs.items():
        push(box, "e2e", jid, payload)
    for jid in jobs:
        box.wait_journal(UNIT, r"^job e2e/%s: start id=%s attempt=1 " % (jid, jid), c)
    c = box.cursor()
    t0 = time.monotonic()
    box.run("systemctl", "stop", UNIT)
    took = time.monotonic() - t0
    limit = SHUTDOWN_TIMEOUT + KILL_GRACE + 2
    print("systemctl stop took %.2fs (limit %ds)" % (took, limit))
    assert took <= limit, "systemctl stop took %.2fs" % took
    st = box.show(UNIT, "Result", "ActiveState", "ExecMainCode", "ExecMainStatus")
    assert st["Result"] == "success", st
    assert st["ActiveState"] == "inactive" and st["ExecMainStatus"] == "0", st
    msgs = box.messages(UNIT, after=c)
    text = "\n".join(msgs)
    assert re.search(r"^SIGTERM: stopping", text, re.M), text
    for jid in jobs:
        assert "job e2e/%s: shutdown deadline reached, cancelling" % jid in text, text
        assert "job e2e/%s: interrupted by shutdown, back on pending" % jid in text, text
    assert "job e2e/stubborn-1: still running after SIGTERM, sending SIGKILL" in text, text
    assert not [m for m in msgs if "timed out" in m or "Killing process" in m], text
    left = {j["id"]: j for j in pending(box)}
    assert set(left) == set(jobs), left
    for j in left.values():
        assert j.get("attempt", 0) == 0, j
        assert j.get("interrupted") == 1, j
    box.redis("DEL", "qw:{e2e}:pending")
    box.run("systemctl", "start", UNIT)


def test_sigkill_restarts_and_jobs_run_again(box):
    """Done-when 5: systemctl kill -s KILL with jobs in flight; systemd
    restarts qworkerd, which sees its predecessor is gone and recovers the
    jobs at once (well before lease_timeout, 15 s), and they run again."""
    pid = ensure_running(box)
    n0 = int(box.show(UNIT, "NRestarts")["NRestarts"])
    c = box.cursor()
    for jid in ("kill-1", "kill-2"):
        push(box, "e2e", jid, "sleep 3")
    for jid in ("kill-1", "kill-2"):
        box.wait_journal(UNIT, r"^job e2e/%s: start id=%s attempt=1 " % (jid, jid), c)
    c = box.cursor()
    t0 = time.monotonic()
    box.run("systemctl", "kill", "-s", "KILL", UNIT)
    wait_until(lambda: int(box.show(UNIT, "NRestarts")["NRestarts"]) == n0 + 1 and
               box.show(UNIT, "ActiveState")["ActiveState"] == "active", 20,
               what="systemd to restart qworkerd")
    assert main_pid(box) != pid
    for jid in ("kill-1", "kill-2"):
        box.wait_journal(UNIT, r"^job e2e/%s: recovered from " % jid, c)
        box.wait_journal(UNIT, r"^job e2e/%s: start id=%s attempt=2 " % (jid, jid), c)
    again = time.monotonic() - t0
    print("jobs running again %.1fs after SIGKILL" % again)
    assert again < 12, "recovery took %.1fs: it waited for the lease" % again
    text = "\n".join(box.messages(UNIT, after=c))
    assert "status=9/KILL" in text and "Scheduled restart job" in text, text
    assert "is gone: recovering its jobs now" in text, text
    for jid in ("kill-1", "kill-2"):
        box.wait_journal(UNIT, r"^job e2e/%s: done id=%s$" % (jid, jid), c, timeout=15)


def test_watchdog_restarts_a_stopped_loop(box):
    """Done-when 6: with the event loop stopped (SIGSTOP), systemd declares a
    watchdog failure and restarts qworkerd. A drop-in shortens WatchdogSec
    (30 s in the unit) to 3 s to keep the test short."""
    dropin = "/etc/systemd/system/qworkerd.service.d/e2e-watchdog.conf"
    box.write(dropin, "[Service]\nWatchdogSec=3s\n")
    try:
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "restart", UNIT)
        assert box.show(UNIT, "WatchdogUSec")["WatchdogUSec"] == "3s"
        pid, n0 = main_pid(box), int(box.show(UNIT, "NRestarts")["NRestarts"])
        time.sleep(4.5)     # a healthy loop pings: no watchdog failure
        assert int(box.show(UNIT, "NRestarts")["NRestarts"]) == n0
        assert main_pid(box) == pid
        c = box.cursor()
        box.run("systemctl", "kill", "-s", "STOP", "--kill-who=main", UNIT)
        wait_until(lambda: int(box.show(UNIT, "NRestarts")["NRestarts"]) == n0 + 1 and
                   box.show(UNIT, "ActiveState")["ActiveState"] == "active", 30,
                   what="a watchdog restart")
        assert main_pid(box) != pid
        text = "\n".join(box.messages(UNIT, after=c))
        assert "Watchdog timeout" in text and "Failed with result 'watchdog'" in text, text
    finally:
        box.run("rm", "-f", dropin)
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "restart", UNIT)


def test_template_instances_side_by_side(box):
    """Done-when 7: qworkerd@mail with /etc/qworkerd/mail.conf next to
    qworkerd@thumbs with /etc/qworkerd/thumbs.conf. thumbs names Redis by
    host name: the lookup works inside the unit's sandbox."""
    box.write("/etc/qworkerd/mail.conf", conf(queues=("mail",), concurrency=3))
    box.write("/etc/qworkerd/thumbs.conf", conf(queues=("thumbs",), concurrency=2,
                                                address="localhost:6379"))
    c = box.cursor()
    box.run("systemctl", "start", "qworkerd@mail", "qworkerd@thumbs")
    try:
        for inst, n in (("mail", 3), ("thumbs", 2)):
            u = "qworkerd@%s.service" % inst
            assert box.run("systemctl", "is-active", u).stdout.strip() == "active"
            box.wait_journal(u, r"^ready: 1 queue, %d workers, instance %s:%s$"
                             % (n, box.name, inst), c)
        assert main_pid(box, "qworkerd@mail") != main_pid(box, "qworkerd@thumbs")
        push(box, "mail", "m-1", "hello mail")
        push(box, "thumbs", "t-1", "hello thumbs")
        box.wait_journal("qworkerd@mail.service", r"^job mail/m-1: done id=m-1$", c)
        box.wait_journal("qworkerd@thumbs.service", r"^job thumbs/t-1: done id=t-1$", c)
        assert not [m for m in box.messages("qworkerd@mail.service", after=c) if "thumbs/" in m]
        assert not [m for m in box.messages("qworkerd@thumbs.service", after=c) if "mail/" in m]
        wait_until(lambda: "pending thumbs=" in box.show("qworkerd@thumbs", "StatusText")
                   ["StatusText"], 10, what="STATUS= of qworkerd@thumbs")
        # reload reads the instance's own file
        box.write("/etc/qworkerd/mail.conf", conf(queues=("mail",), concurrency=5))
        c = box.cursor()
        box.run("systemctl", "reload", "qworkerd@mail")
        box.wait_journal("qworkerd@mail.service", r"^reloaded /etc/qworkerd/mail.conf: 5 workers$", c)
    finally:
        box.run("systemctl", "stop", "qworkerd@mail", "qworkerd@thumbs")


def test_handler_sandbox_and_dropin_example(box):
    """The sandbox holds for handlers (no write access outside it), and the
    shipped drop-in example relaxes it: with it, a handler writes to
    $STATE_DIRECTORY; the score stays within bounds."""
    ensure_running(box)
    c = box.cursor()
    push(box, "e2e", "write-1", "write", max_attempts=1)
    box.wait_journal(UNIT, r"^job e2e/write-1: .*moved to dead", c)
    box.redis("DEL", "qw:{e2e}:dead")
    dropin = "/etc/systemd/system/qworkerd.service.d/handlers.conf"
    box.run("sh", "-c", "mkdir -p %s && cp /usr/share/doc/qworkerd/examples/"
            "qworkerd.service.d-example.conf %s" % (os.path.dirname(dropin), dropin))
    try:
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "restart", UNIT)
        c = box.cursor()
        push(box, "e2e", "write-2", "write", max_attempts=1)
        box.wait_journal(UNIT, r"^job e2e/write-2: done id=write-2$", c)
        assert box.run("cat", "/var/lib/qworkerd/write-2").stdout.strip() == "write-2"
        assert score(box, UNIT) <= MAX_SCORE
        # every commented-out setting of the example is valid as written
        example = box.run("cat", dropin).stdout
        box.write(dropin, re.sub(r"(?m)^#([A-Z][A-Za-z]+=)", r"\1", example))
        p = box.run("systemd-analyze", "verify", UNIT, check=False)
        assert p.returncode == 0 and p.stdout == "" and p.stderr == "", \
            "the example drop-in, uncommented: %s%s" % (p.stdout, p.stderr)
    finally:
        box.run("rm", "-f", dropin)
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "restart", UNIT)


def test_plugin_handler_in_sandbox(box):
    """An installed example plugin loads and runs under the unit's sandbox."""
    ensure_running(box)
    plugin = PLUGIN_DIR + "/noop.so"
    box.run("test", "-f", plugin)
    box.write(CONF_PATH, conf() + "[queue plug]\nplugin = %s\n" % plugin)
    try:
        box.run("systemctl", "restart", UNIT)
        ok0 = stat(box, "plug", "succeeded")
        push(box, "plug", "p-1", "x")
        wait_until(lambda: stat(box, "plug", "succeeded") == ok0 + 1, 10,
                   what="the noop plugin to succeed")
    finally:
        box.write(CONF_PATH, conf())
        box.run("systemctl", "restart", UNIT)
