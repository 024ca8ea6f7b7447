"""Jobs that must stay whole and separate (SPEC 2, 3, 4): identical jobs stay
two jobs, oversized elements never leave Redis, and JSON too deep to parse
is still classified by its top-level payload member."""
import json
import os

from conftest import inflight, script, stats, wait_until


def dead(r, q):
    return [json.loads(e) for e in r.lrange("qw:{%s}:dead" % q, 0, -1)]


def test_identical_jobs_stay_two_jobs_in_scheduled(r, daemon, tmp):
    """Eight byte-identical envelopes whose handler fails: each retry is its
    own member of the scheduled sorted set, even when two fail in the same
    millisecond with the same error, and all eight run again."""
    ran = os.path.join(tmp, "ran")
    h = script(tmp, "fail.sh", "cat >> %s\necho >> %s\nexit 1\n" % (ran, ran))
    d = daemon()
    # retry_base long enough that no retry is due before all are counted.
    d.conf({"mail": "handler = %s\nmax_attempts = 2\nretry_base = 1h\nretry_max = 1h"
            % h}, workers="concurrency = 8\n")
    d.start()
    job = json.dumps({"payload": "charge card 42", "id": "order-42"})
    r.lpush("qw:{mail}:pending", *([job] * 8))
    wait_until(lambda: stats(r, "mail").get("retried") == 8, 20, what="8 retried")
    st = stats(r, "mail")
    assert st.get("failed") == 8, st
    members = r.zrange("qw:{mail}:scheduled", 0, -1)
    assert len(members) == 8, members
    runs = set()
    for m in members:
        env = json.loads(m)
        assert env["payload"] == "charge card 42" and env["id"] == "order-42", env
        assert env["attempt"] == 1 and env["error"] == "exit status 1", env
        runs.add(env["run"])
    assert len(runs) == 8
    # Promote them all now: all eight run again and end in dead, none lost.
    r.zadd("qw:{mail}:scheduled", {m: 0 for m in members}, xx=True)
    wait_until(lambda: stats(r, "mail").get("dead") == 8, 20, what="8 dead")
    assert len(dead(r, "mail")) == 8
    with open(ran) as f:
        assert f.read().count("charge card 42") == 16
    assert r.zcard("qw:{mail}:scheduled") == 0 and inflight(r, "mail") == 0


def test_json_too_deep_is_classified_by_its_payload_member(r, daemon, tmp):
    """10,000 levels of nesting: without a top-level payload member it is a
    raw job and runs with its bytes as they are (SPEC 3); with one it is an
    envelope that cannot be read, and goes to dead saying why."""
    out = os.path.join(tmp, "out")
    h = script(tmp, "h.sh", "cat > %s\n" % out)
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start()
    raw = '{"a":' + '{"b":' * 10000 + '}' * 10000 + '}'
    env = '{"payload":' + '[' * 10000 + ']' * 10000 + '}'
    r.lpush("qw:{mail}:pending", raw)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, 20, what="the raw job ran")
    with open(out) as f:
        assert f.read() == raw
    r.lpush("qw:{mail}:pending", env)
    wait_until(lambda: stats(r, "mail").get("dead") == 1, 20, what="the envelope is dead")
    (j,) = dead(r, "mail")
    assert j["error"].startswith("JSON that qworkerd cannot read: maximum parsing depth"), j
    assert "failed_at" in j and j["payload"] == env  # kept whole, as text
    assert inflight(r, "mail") == 0
