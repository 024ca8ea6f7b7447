"""In-process plugins (SPEC 5): the example plugins end to end, cancellation
reasons, and bad plugins as configuration errors."""
import json
import os
import re
import signal
import subprocess
import time

from conftest import BUILD, QWORKERD, SLOW, TOP, inflight, stats, wait_until


def plugin(name):
    return os.path.join(BUILD, name + ".so")


def build_plugin(tmp, name, body):
    """Compiles a throwaway plugin against the public header."""
    src = os.path.join(tmp, name + ".c")
    out = os.path.join(tmp, name + ".so")
    with open(src, "w") as f:
        f.write("#include <qworkerd/plugin.h>\n" + body)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", out, src, "-I", os.path.join(TOP, "src")],
                   check=True)
    return out


ABI = "int qw_plugin_abi(void) { return %s; }\n"
INIT = ("int qw_plugin_init(const struct qw_plugin_api *a, const char *q, void **s)"
        " { *s = (void *)a; return 0; }\n")
FINI = "void qw_plugin_fini(void *s) { (void)s; }\n"


def test_noop_and_fail(r, daemon, tmp):
    d = daemon()
    d.conf({"noop": "plugin = %s" % plugin("noop"),
            "fail": "plugin = %s\nmax_attempts = 2\nretry_base = 50ms" % plugin("fail")},
           workers="concurrency = 4\n")
    d.start()
    r.lpush("qw:{noop}:pending", *["job%d" % i for i in range(200)])
    r.lpush("qw:{fail}:pending", "again", "permanent")
    wait_until(lambda: stats(r, "noop").get("succeeded") == 200, what="200 noop jobs")
    wait_until(lambda: r.llen("qw:{fail}:dead") == 2, what="2 dead")
    dead = {j["payload"]: j for j in map(json.loads, r.lrange("qw:{fail}:dead", 0, -1))}
    assert dead["permanent"]["attempt"] == 1
    assert dead["permanent"]["error"] == "plugin failed permanently: the fail plugin always fails"
    assert dead["again"]["attempt"] == 2
    assert stats(r, "fail") == {"failed": 3, "retried": 1, "dead": 2}
    assert inflight(r, "noop") == 0 and inflight(r, "fail") == 0
    assert d.stop() == 0


def test_sleep_cancelled_by_job_timeout(r, daemon, tmp):
    d = daemon()
    d.conf({"sleep": "plugin = %s\nretry_base = 1h" % plugin("sleep")})
    d.start()
    r.lpush("qw:{sleep}:pending", json.dumps({"payload": "60000", "timeout": 0.5, "id": "t1"}))
    r.lpush("qw:{sleep}:pending", "50")
    wait_until(lambda: stats(r, "sleep").get("timed_out") == 1, what="timed out")
    assert stats(r, "sleep").get("succeeded") == 1
    (job,) = [json.loads(x) for x in r.zrange("qw:{sleep}:scheduled", 0, -1)]
    assert job["id"] == "t1" and job["attempt"] == 1
    assert job["error"] == "timed out after 0.5s"
    assert "cancelled after part of 60000 ms (job timeout)" in d.log()
    assert d.stop() == 0


def test_sleep_cancelled_by_shutdown(r, daemon, tmp):
    d = daemon()
    d.conf({"sleep": "plugin = %s" % plugin("sleep")},
           workers="shutdown_timeout = 500ms\nkill_grace = 1s\n")
    d.start()
    r.lpush("qw:{sleep}:pending", json.dumps({"payload": "60000", "id": "s1"}))
    d.wait_log("job sleep/s1: started")
    time.sleep(0.2)
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait(15) == 0
    assert time.monotonic() - t0 < 0.5 + 1 + 1.0 * SLOW
    (job,) = [json.loads(x) for x in r.lrange("qw:{sleep}:pending", 0, -1)]
    assert job["id"] == "s1" and job["interrupted"] == 1 and job.get("attempt", 0) == 0
    assert "cancelled after part of 60000 ms (shutdown)" in d.log()
    assert stats(r, "sleep") == {"requeued": 1}


def test_plugin_that_ignores_cancellation(r, daemon, tmp):
    stubborn = build_plugin(tmp, "stubborn", ABI % "QW_PLUGIN_ABI_VERSION" + INIT + FINI + """
#include <unistd.h>
int qw_plugin_handle(void *s, struct qw_plugin_job *j) { (void)s; (void)j; sleep(3600); return 0; }
""")
    d = daemon()
    d.conf({"mail": "plugin = %s" % stubborn},
           workers="shutdown_timeout = 300ms\nkill_grace = 300ms\n")
    d.start()
    r.lpush("qw:{mail}:pending", json.dumps({"payload": "x", "id": "st"}))
    d.wait_log("job mail/st: started")
    d.signal(signal.SIGTERM)
    assert d.wait(15) == 0
    assert "did not return within kill_grace" in d.log()
    (job,) = [json.loads(x) for x in r.lrange("qw:{mail}:pending", 0, -1)]
    assert job["id"] == "st" and job["interrupted"] == 1
    assert inflight(r, "mail") == 0


def check(conf_path):
    return subprocess.run([QWORKERD, "-t", "-c", conf_path], capture_output=True, text=True)


def test_bad_plugins_are_config_errors(tmp):
    wrong_abi = build_plugin(tmp, "wrongabi", ABI % "999" + INIT + FINI +
                             "int qw_plugin_handle(void *s, struct qw_plugin_job *j)"
                             " { (void)s; (void)j; return 0; }\n")
    no_handle = build_plugin(tmp, "nohandle", ABI % "QW_PLUGIN_ABI_VERSION" + INIT + FINI)
    cases = [
        (wrong_abi, "plugin ABI version 999, qworkerd needs 1 to 2"),
        (no_handle, "missing symbol qw_plugin_handle"),
        (os.path.join(tmp, "absent.so"), "absent.so"),
        ("relative.so", "is not an absolute path"),
    ]
    for path, message in cases:
        conf = os.path.join(tmp, "c.conf")
        with open(conf, "w") as f:
            f.write("[redis]\naddress = unix:/nonexistent\n\n[queue mail]\nplugin = %s\n" % path)
        p = check(conf)
        assert p.returncode == 78, p
        assert p.stderr.startswith("%s:5: plugin: " % conf), p.stderr
        assert message in p.stderr, p.stderr
    with open(conf, "w") as f:
        f.write("[queue mail]\nplugin = %s\nhandler = /bin/true\n" % plugin("noop"))
    p = check(conf)
    assert p.returncode == 78 and "set one of handler, plugin or worker, not more" in p.stderr


def test_plugin_init_failure_says_so(r, daemon, tmp):
    # The startup error names what failed instead of a guessed errno.
    bad_init = build_plugin(tmp, "badinit", ABI % "QW_PLUGIN_ABI_VERSION" + FINI +
                            "int qw_plugin_init(const struct qw_plugin_api *a, const char *q,"
                            " void **s) { (void)a; (void)q; (void)s; return -1; }\n"
                            "int qw_plugin_handle(void *s, struct qw_plugin_job *j)"
                            " { (void)s; (void)j; return 0; }\n")
    d = daemon()
    d.conf({"mail": "plugin = %s" % bad_init})
    d.start(wait_ready=False)
    assert d.wait() == 70
    log = d.log()
    assert "queue mail: plugin %s: qw_plugin_init() returned an error" % bad_init in log, log
    assert re.search(r"startup failed\n", log), log
    assert "Cannot allocate memory" not in log
    # The notify reader is a thread: wait for it to have read the datagram.
    wait_until(lambda: any(m.startswith("STATUS=startup failed") for m in d.read_messages()),
               what="STATUS=startup failed")
    assert not any("ERRNO" in m for m in d.read_messages()), d.read_messages()
