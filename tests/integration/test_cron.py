"""SPEC 14, [cron NAME] sections: one job per tick however many instances
run (ids unique, ticks consecutive), none while none runs, the job's
envelope, bad schedules through qworkerd -t, and reload."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import QWORKERD, Daemon, RedisServer, read_lines, redis_ms, script, wait_until

EX_CONFIG = 78


def cron_conf(d, handler, crons, instance):
    """A daemon with queue cq (HANDLER) and the [cron] sections CRONS
    ({name: body})."""
    extra = "".join("[cron %s]\n%s\n" % (n, b) for n, b in crons.items())
    d.conf({"cq": "handler = %s\n%s" % (handler, extra)}, instance=instance)


def recorder(tmp):
    out = os.path.join(tmp, "ran")
    return out, script(tmp, "h.sh", 'echo "$QW_JOB_ID $(cat)" >> %s\n' % out)


def ticks(ids, name="beat"):
    """The tick (ms) of each cron:NAME:TICK id."""
    out = []
    for i in ids:
        kind, n, t = i.split(":")
        assert (kind, n) == ("cron", name), i
        out.append(int(t))
    return out


def test_three_daemons_make_one_job_per_tick(r, daemon, tmp):
    out, h = recorder(tmp)
    ds = []
    for i in range(3):
        d = daemon("d%d" % i)
        cron_conf(d, h, {"beat": "schedule = @every 1s\nqueue = cq\npayload = hello"},
                  "inst-%d" % i)
        ds.append(d.start())
    first = redis_ms(r)     # every tick after this, all three ran
    wait_until(lambda: len([t for t in ticks(l.split()[0] for l in read_lines(out))
                            if t > first]) >= 5, 30, what="5 ticks with all three running")
    for d in ds:
        assert d.stop() == 0
    lines = read_lines(out)
    ids = [l.split()[0] for l in lines]
    # What no one ran yet is still pending, as an envelope.
    ids += [json.loads(e)["id"] for e in r.lrange("qw:{cq}:pending", 0, -1)]
    assert len(ids) == len(set(ids)), sorted(ids)
    ts = sorted(ticks(ids))
    assert all(t % 1000 == 0 for t in ts), ts
    assert ts == list(range(ts[0], ts[-1] + 1000, 1000)), ts     # none missed
    assert all(l.split(" ", 1)[1] == "hello" for l in lines), lines
    assert int(r.hget("qw:{cq}:cron", "beat")) == ts[-1]
    # Each daemon saw the ticks the others enqueued.
    logs = [d.log() for d in ds]
    assert sum(l.count("enqueued on queue cq") for l in logs) == len(ts)


def test_no_job_while_no_instance_runs(r, daemon, tmp):
    out, h = recorder(tmp)
    d = daemon()
    cron_conf(d, h, {"beat": "schedule = @every 1s\nqueue = cq"}, "solo")
    d.start()
    wait_until(lambda: r.hget("qw:{cq}:cron", "beat"), 15, what="a first tick")
    assert d.stop() == 0
    last = int(r.hget("qw:{cq}:cron", "beat"))
    wait_until(lambda: redis_ms(r) > last + 3000, 10, what="three ticks without an instance")
    restart = redis_ms(r)
    d.start()
    wait_until(lambda: int(r.hget("qw:{cq}:cron", "beat")) > last, 15, what="a tick after restart")
    assert d.stop() == 0
    ids = [l.split()[0] for l in read_lines(out)]
    ids += [json.loads(e)["id"] for e in r.lrange("qw:{cq}:pending", 0, -1)]
    ts = sorted(ticks(ids))
    assert len(ts) == len(set(ts))
    # Nothing caught up: no tick between the stop and the restart.
    assert [t for t in ts if last < t < restart - 1000] == [], (last, restart, ts)


def test_ticks_while_redis_is_away_are_not_caught_up(tmp):
    """Only the tick current when Redis answers again is sent: no burst."""
    srv = RedisServer(os.path.join(tmp, "r"))
    os.makedirs(srv.dir)
    srv.start()
    out, h = recorder(tmp)
    d = Daemon(os.path.join(tmp, "d"), srv.sock)
    os.makedirs(d.tmp)
    try:
        cron_conf(d, h, {"beat": "schedule = @every 1s\nqueue = cq"}, "solo")
        d.start()
        wait_until(lambda: read_lines(out), 15, what="a first job")
        srv.stop()
        gone = int(time.time() * 1000)
        d.wait_log("ticks are missed while Redis is not up", 15)
        wait_until(lambda: time.time() * 1000 > gone + 2500, 10, what="two more ticks")
        back = int(time.time() * 1000)
        srv.start()         # empty: what was enqueued before went with it
        d.wait_log("cron beat: ticks are enqueued again", 30)
        c = srv.client()
        assert d.stop() == 0
        ids = [json.loads(e)["id"] for e in c.lrange("qw:{cq}:pending", 0, -1)]
        ids += [l.split()[0] for l in read_lines(out)]
        ts = ticks(ids)
        assert len(ts) == len(set(ts))
        assert any(t >= back - 1000 for t in ts), (back, ts)
        # Between the outage and the tick current when Redis came back: none.
        assert [t for t in ts if gone < t < back - 1000] == [], (gone, back, sorted(ts))
        c.close()
    finally:
        d.kill()
        srv.stop()


def test_envelope_of_a_tick(r, daemon, tmp):
    out, h = recorder(tmp)
    d = daemon()
    cron_conf(d, h, {"env": 'schedule = @every 1s\nqueue = cq\npayload = {"to": "ops"} ü'},
              "solo")
    d.start()
    d.signal(signal.SIGUSR1)            # quiet: ticks are enqueued, nothing runs them
    d.wait_log("quiet")
    before = redis_ms(r)
    wait_until(lambda: r.llen("qw:{cq}:pending") >= 1, 15, what="a tick's job")
    e = json.loads(r.lindex("qw:{cq}:pending", -1))
    assert e["payload"] == '{"to": "ops"} ü'
    tick = int(e["id"].split(":")[2])
    assert e["id"] == "cron:env:%d" % tick
    assert tick >= before - 1000 and e["enqueued_at"] >= tick
    d.signal(signal.SIGUSR2)
    wait_until(lambda: any(l.startswith(e["id"] + " ") for l in read_lines(out)), 15,
               what="the job ran")
    assert '%s {"to": "ops"} ü' % e["id"] in read_lines(out)


def test_wrong_type_keys_are_reported_and_lose_nothing(r, daemon, tmp):
    out, h = recorder(tmp)
    r.set("qw:{cq}:cron", "not a hash")
    d = daemon()
    cron_conf(d, h, {"beat": "schedule = @every 1s\nqueue = cq"}, "solo")
    d.start()
    d.wait_log("cron beat: tick")
    d.wait_log("WRONGTYPE key qw:{cq}:cron")
    assert r.get("qw:{cq}:cron") == b"not a hash"
    r.delete("qw:{cq}:cron")
    d.wait_log("cron beat: ticks are enqueued again")
    wait_until(lambda: read_lines(out), 15, what="a job after the key was fixed")


# (schedule lines, the line that is wrong, words the message must name)
BAD = {
    "minute_61": ("schedule = 61 * * * *\nqueue = cq\n", 7, ["schedule", "minute", "'61'"]),
    "three_fields": ("schedule = * * *\nqueue = cq\n", 7, ["schedule", "3 fields"]),
    "six_fields": ("schedule = 0 * * * * *\nqueue = cq\n", 7, ["schedule", "6 fields"]),
    "every_0s": ("schedule = @every 0s\nqueue = cq\n", 7, ["schedule", "@every", "'0s'"]),
    "every_unit": ("schedule = @every 5 parsecs\nqueue = cq\n", 7, ["@every"]),
    "backwards": ("schedule = 0 9-5 * * *\nqueue = cq\n", 7, ["hour", "'9-5'", "backwards"]),
    "bad_month": ("schedule = 0 0 1 JANUARY *\nqueue = cq\n", 7, ["month", "'JANUARY'"]),
    "never": ("schedule = 0 0 30 2 *\nqueue = cq\n", 6, ["[cron beat]", "no day"]),
    "timezone": ("schedule = @daily\nqueue = cq\ntimezone = Europe/Berlin\n", 9,
                 ["timezone", "'Europe/Berlin'", "UTC or local"]),
    "missing_queue": ("schedule = @daily\n", 6, ["[cron beat]", "no queue"]),
    "missing_schedule": ("queue = cq\n", 6, ["[cron beat]", "no schedule"]),
    "unknown_queue": ("schedule = @daily\nqueue = nope\n", 8, ["queue", "'nope'", "[queue nope]"]),
    "bad_queue_name": ("schedule = @daily\nqueue = a b\n", 8, ["queue", "'a b'"]),
    "unknown_key": ("schedule = @daily\nqueue = cq\nhandler = /bin/true\n", 9,
                    ["handler", "[cron]"]),
    "twice": ("schedule = @daily\nqueue = cq\n[cron beat]\n", 9, ["beat", "twice"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sections_are_config_errors(tmp, case):
    body, line, words = BAD[case]
    h = script(tmp, "h.sh", "exit 0\n")
    path = os.path.join(tmp, "bad.conf")
    with open(path, "w") as f:
        f.write("[redis]\n"                                  # 1
                "address = unix:/nonexistent/redis.sock\n"   # 2
                "[queue cq]\n"                               # 3
                "handler = %s\n"                             # 4
                "\n"                                         # 5
                "[cron beat]\n"                              # 6
                "%s" % (h, body))                            # 7...
    p = subprocess.run([QWORKERD, "-t", "-c", path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10, stdin=subprocess.DEVNULL)
    err = p.stderr.decode()
    assert p.returncode == EX_CONFIG, (p.returncode, err)
    assert err.startswith("%s:%d: " % (path, line)), err
    for w in words:
        assert w in err, (w, err)
    assert len(err.strip().splitlines()) == 1, err


def test_good_sections_pass_the_check(tmp):
    h = script(tmp, "h.sh", "exit 0\n")
    path = os.path.join(tmp, "good.conf")
    with open(path, "w") as f:
        f.write("[queue cq]\nhandler = %s\n"
                "[cron a]\nschedule = */5 9-17 * JAN-jun,Oct mon-FRI  # office hours\n"
                "queue = cq\ntimezone = local\n"
                "[cron b]\nschedule = @every 90s\nqueue = cq\npayload =\n"
                "[cron c]\nqueue = cq\ntimezone = UTC\nschedule = @hourly\n" % h)
    p = subprocess.run([QWORKERD, "-t", "-c", path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr.decode()
    assert "3 cron schedules" in p.stdout.decode()


def test_reload_adds_changes_and_removes_sections(r, daemon, tmp):
    out, h = recorder(tmp)
    d = daemon()
    cron_conf(d, h, {"beat": "schedule = @every 1s\nqueue = cq\npayload = one"}, "solo")
    d.start()
    wait_until(lambda: any(l.endswith(" one") for l in read_lines(out)), 15, what="beat")

    # A changed payload and a new section.
    cron_conf(d, h, {"beat": "schedule = @every 1s\nqueue = cq\npayload = two",
                     "other": "schedule = @every 1s\nqueue = cq\npayload = new"}, "solo")
    d.signal(signal.SIGHUP)
    d.wait_log("reloaded")
    wait_until(lambda: any(l.endswith(" two") for l in read_lines(out)), 15, what="new payload")
    wait_until(lambda: any(l.startswith("cron:other:") for l in read_lines(out)), 15,
               what="the new section")

    # A bad schedule is refused and the running ones go on.
    cron_conf(d, h, {"beat": "schedule = 61 * * * *\nqueue = cq"}, "solo")
    d.signal(signal.SIGHUP)
    d.wait_log("reload refused")
    assert "minute '61'" in d.log()
    seen = int(r.hget("qw:{cq}:cron", "other"))
    wait_until(lambda: int(r.hget("qw:{cq}:cron", "other")) > seen, 15, what="other goes on")

    # A removed section stops.
    cron_conf(d, h, {"other": "schedule = @every 1s\nqueue = cq\npayload = new"}, "solo")
    d.signal(signal.SIGHUP)
    d.wait_log("cron beat: removed")
    last = int(r.hget("qw:{cq}:cron", "beat"))
    seen = int(r.hget("qw:{cq}:cron", "other"))
    wait_until(lambda: int(r.hget("qw:{cq}:cron", "other")) >= seen + 2000, 15,
               what="two more ticks of other")
    # A call sent just before the reload may still land; nothing after it.
    assert int(r.hget("qw:{cq}:cron", "beat")) <= last + 1000
    assert d.stop() == 0
