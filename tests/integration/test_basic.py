"""Done-when 1 and 2 of the core issue: raw and envelope jobs reach the
handler byte-exact with the QW_* environment."""
import json
import os

from conftest import inflight, script, stats, wait_until

CAPTURE = """\
dir=%s
cat > "$dir/$QW_JOB_ID.in"
env | grep '^QW_' | sort > "$dir/$QW_JOB_ID.env"
"""


def captured(tmp):
    out = {}
    for n in os.listdir(tmp):
        if n.endswith(".in"):
            jid = n[:-3]
            with open(os.path.join(tmp, n), "rb") as f:
                payload = f.read()
            with open(os.path.join(tmp, jid + ".env")) as f:
                env = dict(line.rstrip("\n").split("=", 1) for line in f)
            out[jid] = (payload, env)
    return out


def test_raw_job_reaches_handler_byte_exact(r, daemon, tmp):
    h = script(tmp, "h.sh", CAPTURE % tmp)
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start()
    r.lpush("qw:{mail}:pending", "hello world")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded=1")
    jobs = captured(tmp)
    assert len(jobs) == 1
    jid, (payload, env) = jobs.popitem()
    assert payload == b"hello world"
    assert env["QW_JOB_ID"] == jid
    assert env["QW_QUEUE"] == "mail"
    assert env["QW_ATTEMPT"] == "1"
    assert env["QW_MAX_ATTEMPTS"] == "5"
    assert int(env["QW_DEADLINE"]) > 1_700_000_000_000
    assert inflight(r, "mail") == 0
    assert r.llen("qw:{mail}:pending") == 0
    assert d.stop() == 0


def test_envelopes(r, daemon, tmp):
    h = script(tmp, "h.sh", CAPTURE % tmp)
    d = daemon()
    d.conf({"mail": "handler = %s" % h})
    d.start()
    r.lpush("qw:{mail}:pending", '{"payload":"hello","timeout":5,"max_attempts":3}')
    r.lpush("qw:{mail}:pending", '{"payload":{"b": [1, 2.5, "x"], "a": null},"id":"j-1"}')
    wait_until(lambda: stats(r, "mail").get("succeeded") == 2, what="2 succeeded")
    jobs = captured(tmp)
    assert jobs["j-1"][0] == b'{"b":[1,2.5,"x"],"a":null}'
    (other,) = [v for k, v in jobs.items() if k != "j-1"]
    assert other[0] == b"hello"
    assert other[1]["QW_MAX_ATTEMPTS"] == "3"
    deadline_in = int(other[1]["QW_DEADLINE"]) - int(r.time()[0]) * 1000
    assert 3000 < deadline_in <= 6000
    assert inflight(r, "mail") == 0


def test_binary_payload_1mib(r, daemon, tmp):
    h = script(tmp, "h.sh", CAPTURE % tmp)
    d = daemon()
    d.conf({"mail": "handler = %s\nmax_payload = 2MiB" % h})
    d.start()
    blob = bytes((i * 7 + 3) % 256 for i in range(1 << 20)).replace(b"\x00\x00", b"\x00\x01")
    assert b"\x00" in blob
    r.lpush("qw:{mail}:pending", blob)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded")
    ((payload, _),) = captured(tmp).values()
    assert payload == blob
