"""The producers' function qw_enqueue (SPEC 11, issue 9): the function
library qworkerd loads into Redis at start and on every reconnect, each
option of FCALL qw_enqueue, its errors, and unique_for under concurrent
producers and through every way a job leaves."""
import json
import os
import subprocess
import threading

import pytest
import redis as redislib

from conftest import TOP, RedisServer, inflight, redis_ms, script, stats, wait_until

PENDING = "qw:{mail}:pending"
SCHEDULED = "qw:{mail}:scheduled"
UNIQUE = "qw:{mail}:unique"

# Each run records its id, attempt and Unix ms (same clock as Redis here),
# and its payload byte for byte.
CAPTURE = """\
dir=%s
n=$(date +%%s%%N)-$$
cat > "$dir/$n.in"
echo "$QW_JOB_ID $QW_ATTEMPT $QW_MAX_ATTEMPTS $(date +%%s%%3N)" > "$dir/$n.run"
"""


def runs(tmp):
    """[(id, attempt, max_attempts, ms, payload)] of every finished capture."""
    out = []
    for n in sorted(os.listdir(tmp)):
        if n.endswith(".run"):
            with open(os.path.join(tmp, n)) as f:
                parts = f.read().split()
            if len(parts) != 4:
                continue
            with open(os.path.join(tmp, n[:-4] + ".in"), "rb") as f:
                payload = f.read()
            out.append((parts[0], int(parts[1]), int(parts[2]), int(parts[3]), payload))
    return out


def enqueue(r, payload, *opts, key=PENDING):
    v = r.execute_command("FCALL", "qw_enqueue", 1, key, payload, *opts)
    return v.decode()


def library_loaded(r):
    return any(lib[1] == b"qworkerd" for lib in
               r.execute_command("FUNCTION", "LIST", "LIBRARYNAME", "qworkerd"))


def start(r, daemon, body, sub="d"):
    d = daemon(sub)
    d.conf({"mail": body})
    d.start()
    wait_until(lambda: library_loaded(r), what="the library in Redis")
    return d


def capture_daemon(r, daemon, tmp, extra=""):
    h = script(tmp, "h.sh", CAPTURE % tmp)
    return start(r, daemon, "handler = %s\nretry_base = 10ms\n%s" % (h, extra))


@pytest.fixture
def loaded(r, daemon, tmp):
    """The library in Redis, as a qworkerd that ran against it leaves it."""
    if not library_loaded(r):
        d = daemon("loader")
        d.conf({"other": "handler = %s" % script(tmp, "true.sh", "cat > /dev/null\n")})
        d.start()
        wait_until(lambda: library_loaded(r), what="the library in Redis")
        assert d.stop() == 0


# ---- each option -----------------------------------------------------------

def test_generated_id_and_envelope(r, loaded, daemon, tmp):
    before = redis_ms(r)
    a = enqueue(r, "hello world")
    b = enqueue(r, "hello world")
    after = redis_ms(r)
    assert a != b
    env = [json.loads(x) for x in r.lrange(PENDING, 0, -1)]
    assert [e["id"] for e in env] == [b, a]
    for e in env:
        assert e["payload"] == "hello world" and "payload_encoding" not in e
        assert before <= e["enqueued_at"] <= after
        assert "timeout" not in e and "max_attempts" not in e and "unique" not in e
    capture_daemon(r, daemon, tmp)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 2, what="2 succeeded")
    got = runs(tmp)
    assert sorted(x[0] for x in got) == sorted([a, b])
    assert all(x[4] == b"hello world" and x[1] == 1 for x in got)


def test_id_option(r, daemon, tmp):
    capture_daemon(r, daemon, tmp)
    assert enqueue(r, "x", "id", "order-42/\u00e9") == "order-42/\u00e9"
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded")
    ((jid, attempt, _, _, payload),) = runs(tmp)
    assert jid == "order-42/\u00e9" and payload == b"x"


def test_timeout_and_max_attempts(r, daemon, tmp):
    h = script(tmp, "h.sh", "echo run >> %s/runs\nexec sleep 30\n" % tmp)
    start(r, daemon, "handler = %s\nretry_base = 10ms" % h)
    jid = enqueue(r, "slow", "max_attempts", "2", "timeout", "0.3")
    wait_until(lambda: r.llen("qw:{mail}:dead") == 1, 30, what="dead")
    dead = json.loads(r.lindex("qw:{mail}:dead", 0))
    assert dead["id"] == jid
    assert dead["attempt"] == 2 and dead["max_attempts"] == 2
    assert dead["error"] == "timed out after 0.3s"
    assert stats(r, "mail")["timed_out"] == 2


def test_timeout_and_max_attempts_reach_the_handler(r, daemon, tmp):
    capture_daemon(r, daemon, tmp)
    jid = enqueue(r, "p", "Max_Attempts", "7", "TIMEOUT", "86400")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded")
    ((got, attempt, max_attempts, _, _),) = runs(tmp)
    assert (got, attempt, max_attempts) == (jid, 1, 7)


def test_delay_goes_to_scheduled_and_runs_later(r, daemon, tmp):
    d = capture_daemon(r, daemon, tmp)
    before = redis_ms(r)
    jid = enqueue(r, "later", "delay", "1500", "id", "rem-1")
    after = redis_ms(r)
    assert jid == "rem-1"
    ((member, score),) = r.zrange(SCHEDULED, 0, -1, withscores=True)
    assert before + 1500 <= score <= after + 1500
    env = json.loads(member)
    assert env["id"] == "rem-1" and env["payload"] == "later" and "seq" in env
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, 15, what="succeeded")
    ((got, _, _, ran_ms, payload),) = runs(tmp)
    assert got == "rem-1" and payload == b"later"
    assert ran_ms >= score
    assert d.proc.poll() is None


def test_delay_with_one_id_keeps_identical_jobs_apart(r, loaded):
    for _ in range(2):
        enqueue(r, "same", "id", "same-id", "delay", "600000")
    assert r.zcard(SCHEDULED) == 2
    enqueue(r, "same", "delay", "0")                # 0: pending at once
    assert r.llen(PENDING) == 1


@pytest.mark.parametrize("payload", [
    b"\x00\xff\x00binary\xfe\x80",
    b"\x00",
    bytes(range(256)) * 3,
    "caf\u00e9 \u2603 \U0001F600".encode(),
    b"\x01\x02\x03\x04\x05\x06\x07\x08" * 20,
    b"\xed\xa0\x80",                # a UTF-16 surrogate: not UTF-8 for jansson
    b"\xc0\xaf",                    # an overlong '/'
    b"",
])
def test_payload_reaches_handler_byte_exact(r, daemon, tmp, payload):
    capture_daemon(r, daemon, tmp)
    jid = enqueue(r, payload, "id", "bin")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded")
    ((got, _, _, _, data),) = runs(tmp)
    assert got == jid and data == payload


def test_text_payload_stays_a_json_string_and_binary_goes_base64(r, loaded):
    enqueue(r, "caf\u00e9 \u2603")
    enqueue(r, b"a\x00b\xff")
    text, binary = [json.loads(x) for x in reversed(r.lrange(PENDING, 0, -1))]
    assert text["payload"] == "caf\u00e9 \u2603" and "payload_encoding" not in text
    assert binary["payload_encoding"] == "base64" and binary["payload"] == "YQBi/w=="


def test_plain_lpush_and_zadd_work_as_before(r, daemon, tmp):
    capture_daemon(r, daemon, tmp)
    r.lpush(PENDING, "hello world")
    r.zadd(SCHEDULED, {"run me later": redis_ms(r) - 1})
    r.lpush(PENDING, '{"payload":"hello","timeout":5,"max_attempts":3}')
    wait_until(lambda: stats(r, "mail").get("succeeded") == 3, what="3 succeeded")
    assert sorted(x[4] for x in runs(tmp)) == [b"hello", b"hello world", b"run me later"]
    assert not r.exists(UNIQUE) and not r.exists("qw:{mail}:seq")


# ---- bad input -------------------------------------------------------------

BAD = [
    (("timeout", "abc"), "option timeout 'abc' must be a number of seconds > 0"),
    (("timeout", "0"), "option timeout '0' must be"),
    (("timeout", "31536001"), "option timeout '31536001' must be"),
    (("timeout", "1e3"), "option timeout '1e3' must be"),
    (("timeout", "-1"), "option timeout '-1' must be"),
    (("max_attempts", "0"), "option max_attempts '0' must be an integer from 1 to 1000000"),
    (("max_attempts", "1000001"), "option max_attempts '1000001' must be"),
    (("max_attempts", "2.5"), "option max_attempts '2.5' must be"),
    (("delay", "-5"), "option delay '-5' must be an integer of milliseconds"),
    (("delay", "soon"), "option delay 'soon' must be"),
    (("delay", "315360000001"), "option delay '315360000001' must be"),
    (("unique_for", "0", "id", "x"), "option unique_for '0' must be"),
    (("unique_for", "1000"), "option unique_for needs option id"),
    (("id", ""), "option id '' must be a string of 1 to 200 bytes"),
    (("id", "a" * 201), "option id 'aaaa"),
    (("id", "a\nb"), "option id 'a\\x0ab' must be"),
    (("id", b"\xff"), "option id '\\xff' must be"),
    (("id", "a\x7f"), "option id 'a\\x7f' must be"),
    (("colour", "red"), "unknown option 'colour'"),
    (("id",), "option id needs a value"),
    (("id", "a", "ID", "b"), "option id given twice"),
]


@pytest.mark.parametrize("opts,error", BAD, ids=[" ".join(map(str, o)) for o, _ in BAD])
def test_bad_option_is_an_error_that_adds_nothing(r, loaded, opts, error):
    with pytest.raises(redislib.exceptions.ResponseError) as e:
        enqueue(r, "payload", *opts)
    assert error in str(e.value)
    assert str(e.value).startswith("qw_enqueue: ")
    assert r.dbsize() == 0


@pytest.mark.parametrize("key", ["qw:mail:pending", "qw:{mail}:dead", "qw:{}:pending",
                                 "qw:{a b}:pending", "qw:{%s}:pending" % ("q" * 65)])
def test_bad_key_is_an_error(r, loaded, key):
    with pytest.raises(redislib.exceptions.ResponseError) as e:
        enqueue(r, "payload", key=key)
    assert "is not the pending key of a queue" in str(e.value)
    assert r.dbsize() == 0


def test_missing_payload_and_key_count(r, loaded):
    with pytest.raises(redislib.exceptions.ResponseError, match="no payload"):
        r.execute_command("FCALL", "qw_enqueue", 1, PENDING)
    with pytest.raises(redislib.exceptions.ResponseError, match="takes 1 key"):
        r.execute_command("FCALL", "qw_enqueue", 2, PENDING, SCHEDULED, "p")
    assert r.dbsize() == 0


@pytest.mark.parametrize("key,opts", [(PENDING, ()), (SCHEDULED, ("delay", "10")),
                                      (UNIQUE, ("id", "x", "unique_for", "10")),
                                      ("qw:{mail}:seq", ())])
def test_key_of_the_wrong_type_is_an_error_that_adds_nothing(r, loaded, key, opts):
    r.sadd(key, "oops")
    with pytest.raises(redislib.exceptions.ResponseError) as e:
        enqueue(r, "payload", *opts)
    assert "WRONGTYPE key %s holds a set" % key in str(e.value)
    assert r.keys("*") == [key.encode()]


# ---- loading the library ---------------------------------------------------

def client_id(r, suffix):
    (cid,) = [c["id"] for c in r.client_list() if c["name"].endswith(suffix)]
    return cid


def test_library_loaded_again_after_function_flush_and_reconnect(r, daemon, tmp):
    d = capture_daemon(r, daemon, tmp)
    r.execute_command("FUNCTION", "FLUSH")
    with pytest.raises(redislib.exceptions.ResponseError, match="Function not found"):
        enqueue(r, "x")
    line = "loaded the function library qworkerd version 1 for FCALL qw_enqueue " \
        "(Redis held none)"
    loads = d.log().count(line)
    r.execute_command("CLIENT", "KILL", "ID", client_id(r, "/main"))
    wait_until(lambda: library_loaded(r), 15, what="the library loaded again")
    wait_until(lambda: d.log().count(line) > loads, what="the log line")
    jid = enqueue(r, "after")
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded")
    assert runs(tmp)[0][0] == jid


def test_library_loaded_again_after_redis_restart(daemon, tmp):
    srv = RedisServer(os.path.join(tmp, "r"))
    os.makedirs(srv.dir)
    srv.start()
    try:
        d = daemon()
        d.redis_sock = srv.sock
        h = script(tmp, "h.sh", CAPTURE % tmp)
        d.conf({"mail": "handler = %s" % h})
        d.start()
        c = srv.client()
        wait_until(lambda: library_loaded(c), what="the library")
        srv.stop()          # no persistence: the restarted Redis has no functions
        srv.start()
        c = srv.client()
        wait_until(lambda: library_loaded(c), 20, what="the library after the restart")
        jid = enqueue(c, "after restart")
        wait_until(lambda: stats(c, "mail").get("succeeded") == 1, 20, what="succeeded")
        assert runs(tmp)[0][0] == jid
        assert d.stop() == 0
    finally:
        srv.stop()


def test_load_failure_is_logged_once_and_jobs_run(daemon, tmp):
    srv = RedisServer(os.path.join(tmp, "r"))
    os.makedirs(srv.dir)
    srv.start("--rename-command", "FUNCTION", "")
    try:
        d = daemon()
        d.redis_sock = srv.sock
        h = script(tmp, "h.sh", CAPTURE % tmp)
        d.conf({"mail": "handler = %s" % h})
        d.start()
        c = srv.client()
        why = "cannot load the function library qworkerd, so producers cannot use FCALL"
        d.wait_log(why)
        c.execute_command("CLIENT", "KILL", "ID", client_id(c, "/main"))
        wait_until(lambda: d.log().count(why) == 2, 15, what="the second attempt")
        lines = [l for l in d.log().splitlines() if why in l]
        assert "unknown command" in lines[0]
        assert "warning" in lines[0] and "debug" in lines[1]
        c.lpush(PENDING, "still runs")
        wait_until(lambda: stats(c, "mail").get("succeeded") == 1, what="succeeded")
        assert d.stop() == 0
    finally:
        srv.stop()


NEWER = """#!lua name=qworkerd
redis.register_function{function_name = 'qw_version', callback = function() return 999 end,
  flags = { 'no-writes' }}
"""


def test_newer_library_is_left_alone(r, daemon, tmp):
    r.execute_command("FUNCTION", "LOAD", "REPLACE", NEWER)
    try:
        h = script(tmp, "h.sh", CAPTURE % tmp)
        d = daemon()
        d.conf({"mail": "handler = %s" % h})
        d.start()
        d.wait_log("Redis holds the function library qworkerd version 999, newer than "
                   "this qworkerd's 1: left as it is")
        assert r.execute_command("FCALL", "qw_version", 0) == 999
    finally:
        r.execute_command("FUNCTION", "DELETE", "qworkerd")


# ---- unique_for ------------------------------------------------------------

def test_unique_for_50_concurrent_producers_add_one_job(r, loaded, redis_server):
    barrier = threading.Barrier(50)
    got, errors = [], []

    def producer():
        c = redis_server.client()
        try:
            barrier.wait(30)
            got.append(enqueue(c, "once", "id", "u-1", "unique_for", "600000"))
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            c.close()
    threads = [threading.Thread(target=producer) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert got == ["u-1"] * 50
    assert r.llen(PENDING) == 1 and r.zcard(SCHEDULED) == 0
    env = json.loads(r.lindex(PENDING, 0))
    assert r.hget(UNIQUE, "u-1").decode() == env["unique"]


def test_unique_released_when_the_job_succeeds(r, loaded, daemon, tmp):
    for _ in range(3):
        assert enqueue(r, "once", "id", "u-2", "unique_for", "600000") == "u-2"
    assert r.llen(PENDING) == 1
    capture_daemon(r, daemon, tmp)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded")
    wait_until(lambda: not r.hexists(UNIQUE, "u-2"), what="the hold ended")
    assert enqueue(r, "again", "id", "u-2", "unique_for", "600000") == "u-2"
    wait_until(lambda: stats(r, "mail").get("succeeded") == 2, what="the new job ran")
    assert [x[4] for x in runs(tmp)] == [b"once", b"again"]


def test_unique_released_when_the_job_goes_dead(r, daemon, tmp):
    h = script(tmp, "h.sh", "exit 65\n")
    start(r, daemon, "handler = %s" % h)
    enqueue(r, "bad", "id", "u-3", "unique_for", "600000")
    wait_until(lambda: r.llen("qw:{mail}:dead") == 1, what="dead")
    assert not r.hexists(UNIQUE, "u-3")
    enqueue(r, "bad again", "id", "u-3", "unique_for", "600000")
    wait_until(lambda: r.llen("qw:{mail}:dead") == 2, what="the new job dead too")


def test_unique_held_while_retried(r, daemon, tmp):
    # The first run fails and waits in scheduled; an enqueue meanwhile adds
    # nothing; the second run succeeds and ends the hold.
    h = script(tmp, "h.sh", "cat > /dev/null\n[ \"$QW_ATTEMPT\" = 1 ] && exit 1\n"
               "while [ ! -e %s/go ]; do sleep 0.05; done\n" % tmp)
    start(r, daemon, "handler = %s\nretry_base = 300ms" % h)
    enqueue(r, "flaky", "id", "u-4", "unique_for", "600000")
    wait_until(lambda: stats(r, "mail").get("retried") == 1, what="retried")
    assert enqueue(r, "flaky", "id", "u-4", "unique_for", "600000") == "u-4"
    assert r.llen(PENDING) + r.zcard(SCHEDULED) + inflight(r, "mail") == 1
    open(os.path.join(tmp, "go"), "w").close()
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="succeeded")
    wait_until(lambda: not r.hexists(UNIQUE, "u-4"), what="the hold ended")


def test_unique_for_runs_out_while_pending(r, loaded, daemon, tmp):
    # Nobody runs the queue: the hold runs out and a new job is added. Then
    # the old job's success must not end the new job's hold.
    first = enqueue(r, "first", "id", "u-5", "unique_for", "200")
    end = int(r.hget(UNIQUE, "u-5").split(b":")[0])
    wait_until(lambda: redis_ms(r) > end, what="the hold to run out")
    assert enqueue(r, "second", "id", "u-5", "unique_for", "600000") == first
    assert r.llen(PENDING) == 2
    second_hold = r.hget(UNIQUE, "u-5")
    assert int(second_hold.split(b":")[0]) > end
    h = script(tmp, "h.sh", "p=$(cat)\necho $p >> %s/done\n[ \"$p\" = first ] && exit 0\n"
               "while [ ! -e %s/go ]; do sleep 0.05; done\n" % (tmp, tmp))
    start(r, daemon, "handler = %s" % h)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 1, what="the first job")
    assert r.hget(UNIQUE, "u-5") == second_hold
    assert enqueue(r, "third", "id", "u-5", "unique_for", "600000") == "u-5"
    assert r.llen(PENDING) == 0
    open(os.path.join(tmp, "go"), "w").close()
    wait_until(lambda: stats(r, "mail").get("succeeded") == 2, what="the second job")
    wait_until(lambda: not r.hexists(UNIQUE, "u-5"), what="the hold ended")


def test_expired_holds_are_swept(r, loaded):
    for i in range(20):
        enqueue(r, "p", "id", "s-%d" % i, "unique_for", "1")
    wait_until(lambda: redis_ms(r) > 2 + max(int(v.split(b":")[0]) for v in
                                             r.hvals(UNIQUE)), what="the holds to run out")
    for i in range(40):
        enqueue(r, "p", "id", "live-%d" % i, "unique_for", "600000")
    left = [k for k in r.hkeys(UNIQUE) if k.startswith(b"s-")]
    assert len(left) < 20


@pytest.mark.parametrize("size", [1000, 70000])
def test_unique_released_when_too_large(r, daemon, tmp, size):
    # 1000 bytes: the daemon reads it and puts it in dead; 70000 (beyond six
    # times max_payload plus 64 KiB): the fetch script buries it in Redis.
    h = script(tmp, "h.sh", "cat > /dev/null\n")
    start(r, daemon, "handler = %s\nmax_payload = 100" % h)
    enqueue(r, "x" * size, "id", "big", "unique_for", "600000")
    wait_until(lambda: r.llen("qw:{mail}:dead") == 1, what="dead")
    dead = json.loads(r.lindex("qw:{mail}:dead", 0))
    assert "larger than max_payload" in dead["error"]
    assert not r.hexists(UNIQUE, "big")


def test_unique_released_when_recovered_to_dead(r, daemon, tmp):
    h = script(tmp, "h.sh", "cat > /dev/null\necho started >> %s/started\n"
               "while [ ! -e %s/go ]; do sleep 0.05; done\n" % (tmp, tmp))
    d = start(r, daemon, "handler = %s" % h)
    enqueue(r, "crash", "id", "u-6", "unique_for", "600000", "max_attempts", "1")
    wait_until(lambda: os.path.exists(os.path.join(tmp, "started")), what="started")
    d.kill()
    open(os.path.join(tmp, "go"), "w").close()     # its orphaned handler ends
    assert r.hexists(UNIQUE, "u-6")
    d2 = daemon("b")
    d2.conf_path = d.conf_path                      # same identity: recovers at once
    d2.start()
    wait_until(lambda: r.llen("qw:{mail}:dead") == 1, what="recovered to dead")
    assert "qworkerd stopped while the job ran" in json.loads(r.lindex("qw:{mail}:dead", 0))["error"]
    assert not r.hexists(UNIQUE, "u-6")


# ---- the man page's examples -----------------------------------------------

PAGE = os.path.join(TOP, "man", "qworkerd-jobs.7.in")


def man_examples():
    """The shell text of each example under ENQUEUE FUNCTION, in order."""
    text = open(PAGE).read()
    start_at = text.index(".Ss Examples", text.index(".Sh ENQUEUE FUNCTION"))
    section = text[start_at:text.index(".Sh", start_at)]
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


def run_example(sock, shell, cwd):
    prog = 'redis-cli() { command redis-cli -s "%s" "$@"; }\n%s\n' % (sock, shell)
    p = subprocess.run(["bash", "-e", "-c", prog], cwd=cwd, capture_output=True)
    assert p.returncode == 0 and b"ERR" not in p.stdout, (shell, p.stdout, p.stderr)
    return p.stdout.decode().split("\n")[:-1]


def test_man_page_examples_run_as_printed(r, loaded, daemon, tmp, redis_server):
    two, delayed, digest, from_file, look = man_examples()
    sock = redis_server.sock
    with open(os.path.join(tmp, "message.eml"), "wb") as f:
        f.write(b"Subject: hi\r\n\r\n\x00\xff binary\n")
    gen, welcome = run_example(sock, two, tmp)
    assert welcome == "welcome-42" and gen != welcome
    (reminder,) = run_example(sock, delayed, tmp)
    env = json.loads(r.zrange(SCHEDULED, 0, -1)[0])
    assert (env["id"], env["timeout"], env["max_attempts"]) == (reminder, 2.5, 3)
    assert run_example(sock, digest, tmp) == ["digest-7", "digest-7"]
    (eml,) = run_example(sock, from_file, tmp)
    assert r.llen(PENDING) == 4
    out = run_example(sock, look, tmp)
    assert out == ["digest-7", r.hget(UNIQUE, "digest-7").decode(), "1"]
    capture_daemon(r, daemon, tmp)
    wait_until(lambda: stats(r, "mail").get("succeeded") == 4, what="4 succeeded")
    got = {x[0]: x[4] for x in runs(tmp)}
    assert got == {gen: b"hello world", "welcome-42": b"welcome", "digest-7": b"digest",
                   eml: b"Subject: hi\r\n\r\n\x00\xff binary\n"}
