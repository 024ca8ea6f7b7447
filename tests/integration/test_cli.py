"""SPEC 6 (exit status), 7 (config errors name FILE:LINE and the key) and 8
(command line). These run the binary directly; none needs Redis."""
import os
import re
import shlex
import subprocess

import pytest

from conftest import BUILD, QWORKERD, TOP, script

EX_USAGE, EX_CONFIG = 64, 78
SHIPPED_CONF = os.path.join(TOP, "etc", "qworkerd.conf")


def run(*args, timeout=10):
    return subprocess.run([QWORKERD] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, stdin=subprocess.DEVNULL)


def write(tmp, text, name="bad.conf"):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def good_conf(tmp, handler):
    return ("[redis]\n"                                  # 1
            "address = unix:/nonexistent/redis.sock\n"   # 2
            "[workers]\n"                                # 3
            "concurrency = 2\n"                          # 4
            "[queue mail]\n"                             # 5
            "handler = %s --flag 'two words'\n"          # 6
            "timeout = 30s  # a comment\n" % handler)   # 7


# name -> (config text with {h} for a working handler, line, words the message must name)
CASES = {
    "unknown_key": ("[workers]\nconcurrency = 2\nbogus_key = 1\n[queue mail]\nhandler = {h}\n",
                    3, ["bogus_key"]),
    "unknown_section": ("[workers]\nconcurrency = 2\n\n[frobnicate]\n[queue mail]\n"
                        "handler = {h}\n", 4, ["frobnicate"]),
    "bad_duration": ("[queue mail]\nhandler = {h}\ntimeout = 5 parsecs\n", 3, ["timeout"]),
    "bad_duration_unit": ("[workers]\nkill_grace = 5x\n[queue mail]\nhandler = {h}\n",
                          2, ["kill_grace"]),
    "bad_size": ("[queue mail]\nhandler = {h}\nmax_payload = 1MB\n", 3, ["max_payload"]),
    "number_out_of_range": ("[workers]\nconcurrency = 0\n[queue mail]\nhandler = {h}\n",
                            2, ["concurrency"]),
    "weight_out_of_range": ("[queue mail]\nhandler = {h}\nweight = 999999999999\n",
                            3, ["weight"]),
    "not_a_number": ("[queue mail]\nhandler = {h}\nmax_attempts = three\n", 3,
                     ["max_attempts"]),
    "missing_handler": ("[workers]\nconcurrency = 2\n[queue mail]\ntimeout = 5s\n", 3,
                        ["handler", "mail"]),
    "handler_not_found": ("[queue mail]\nhandler = /nonexistent/dir/handler --x\n", 2,
                          ["handler", "/nonexistent/dir/handler"]),
    "handler_not_executable": ("[queue mail]\nhandler = {noexec}\n", 2,
                               ["handler", "{noexec}"]),
    "duplicate_key": ("[queue mail]\nhandler = {h}\ntimeout = 5s\nmax_attempts = 2\n"
                      "timeout = 6s\n", 5, ["timeout"]),
}


@pytest.fixture
def handlers(tmp):
    h = script(tmp, "h.sh", "exit 0\n")
    noexec = os.path.join(tmp, "noexec.sh")
    with open(noexec, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(noexec, 0o644)
    return {"h": h, "noexec": noexec}


@pytest.mark.parametrize("mode", ["run", "test"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_config_error(tmp, handlers, case, mode):
    text, line, words = CASES[case]
    path = write(tmp, text.format(**handlers))
    p = run("-c", path, *(["-t"] if mode == "test" else []))
    err = p.stderr.decode()
    assert p.returncode == EX_CONFIG, (p.returncode, err)
    assert "%s:%d: " % (path, line) in err, err
    for w in words:
        assert w.format(**handlers) in err, (w, err)
    assert len(err.strip().splitlines()) <= 3, err   # one message, not a log dump


def test_missing_config_file(tmp):
    path = os.path.join(tmp, "nope.conf")
    p = run("-t", "-c", path)
    assert p.returncode == EX_CONFIG
    assert path in p.stderr.decode()


def test_check_good_config(tmp, handlers):
    path = write(tmp, good_conf(tmp, handlers["h"]), "good.conf")
    p = run("-t", "-c", path)
    assert p.returncode == 0, p.stderr.decode()
    # -f and -v are accepted with -t too.
    p = run("-t", "-f", "-v", "-c", path)
    assert p.returncode == 0, p.stderr.decode()
    p = run("--test", "--config", path)
    assert p.returncode == 0, p.stderr.decode()


def test_check_shipped_config():
    if not os.path.exists(SHIPPED_CONF):
        pytest.skip("%s does not exist yet" % SHIPPED_CONF)
    handlers = []
    with open(SHIPPED_CONF) as f:
        for line in f:
            m = re.match(r"\s*handler\s*=\s*(.*)", line)
            if m:
                words = shlex.split(m.group(1), comments=True)
                if words:
                    handlers.append(words[0])
    if not handlers:
        pytest.skip("%s has no handler line" % SHIPPED_CONF)
    for h in handlers:
        if not (os.path.isabs(h) and os.access(h, os.X_OK)):
            pytest.skip("the handler %s of %s is not on this machine" % (h, SHIPPED_CONF))
    p = run("-t", "-c", SHIPPED_CONF)
    assert p.returncode == 0, p.stderr.decode()


def configured_version():
    try:
        with open(os.path.join(BUILD, "config.h")) as f:
            m = re.search(r'#define PACKAGE_VERSION "([^"]+)"', f.read())
            return m.group(1) if m else None
    except OSError:
        return None


def test_version():
    p = run("--version")
    assert p.returncode == 0
    out = p.stdout.decode()
    assert re.match(r"qworkerd \d+\.\d+", out), out
    v = configured_version()
    if v:
        assert v in out


def test_help():
    p = run("--help")
    assert p.returncode == 0
    out = p.stdout.decode()
    for opt in ("-c", "-t", "-f", "-v", "--version", "--help"):
        assert opt in out, (opt, out)


@pytest.mark.parametrize("args", [["--no-such-option"], ["-Z"], ["-c"],
                                  ["-t", "stray-argument"]])
def test_usage_errors(args):
    p = run(*args)
    assert p.returncode == EX_USAGE, (p.returncode, p.stderr.decode())
    assert b"usage" in p.stderr.lower()
