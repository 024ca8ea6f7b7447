"""What a new user reads (issue 9, "What a new user tripped over"): counts
agree with their number ("1 queue", not "1 queues") and durations in the
log are written the way the configuration writes them ("25s", not
"25000ms"); the man pages render as written (no "afterNs", no "BSD" in
the footer); the README says where the man pages are, and promises what
qworkerd-jobs(7) promises; ./test.sh and ./demo.sh say what they are doing."""
import glob
import os
import re
import subprocess

import pytest

from conftest import BUILD, QWORKERD, TOP, script, stats, wait_until

SRC = os.environ.get("QW_SRCDIR", TOP)


def test_one_queue_one_worker_singular(r, daemon):
    d = daemon()
    d.conf({"mail": "handler = /bin/true"}, workers="concurrency = 1")
    d.start()
    d.wait_log("ready: 1 queue, 1 worker, instance test-1")
    p = subprocess.run([QWORKERD, "-t", "-c", d.conf_path], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.endswith(": configuration OK (1 queue)\n"), p.stdout
    assert d.stop() == 0


def test_many_queues_plural(r, daemon):
    d = daemon()
    d.conf({"mail": "handler = /bin/true", "pics": "handler = /bin/true"},
           workers="concurrency = 3")
    d.start()
    d.wait_log("ready: 2 queues, 3 workers, instance test-1")
    assert d.stop() == 0


def test_durations_as_the_config_writes_them(r, daemon, tmp):
    """shutdown_timeout = 25s is logged as 25s; a job's timeout of 1.5s as
    1.5s; a retry's delay in the same units."""
    h = script(tmp, "h.sh", "read x\ncase $x in slow) exec sleep 30 ;; *) exit 1 ;; esac\n")
    d = daemon()
    d.conf({"mail": "handler = %s\ntimeout = 1500ms\nretry_base = 2h\nretry_max = 2h\n"
                    "max_attempts = 3" % h},
           workers="shutdown_timeout = 25s\nkill_grace = 1s")
    d.start()
    r.lpush("qw:{mail}:pending", '{"id":"slow-1","payload":"slow"}')
    d.wait_log("job mail/slow-1: timeout of 1.5s reached, cancelling", 20)
    r.lpush("qw:{mail}:pending", '{"id":"fail-1","payload":"fail"}')
    wait_until(lambda: stats(r, "mail").get("retried", 0) >= 2, 20, what="two retries")
    # 2h with +-20% jitter: whole hours, minutes, seconds or a decimal second.
    log = d.log()
    assert "retry in " in log and "ms\n" not in log.split("fail-1", 1)[1], log
    d.signal(15)
    d.wait_log("SIGTERM: stopping; running jobs get up to 25s\n")
    assert "25000ms" not in d.log()
    assert d.wait() == 0


def render(page, tool):
    """The man page as a reader sees it: groff through man(1), or mandoc."""
    if tool == "man":
        cmd = ["man", "-l", page]
    else:
        cmd = ["mandoc", "-T", "utf8", page]
    p = subprocess.run(cmd, capture_output=True, env=dict(os.environ, MANWIDTH="80",
                                                         MAN_KEEP_FORMATTING="0"))
    assert p.returncode == 0, p.stderr
    # col -b drops the overstrike (bold, underline) that mandoc writes
    return subprocess.run(["col", "-b"], input=p.stdout, capture_output=True,
                          check=True).stdout.decode()


@pytest.mark.parametrize("tool", ["man", "mandoc"])
def test_plugin_page_renders_timed_out_after_n_s(tool):
    text = render(os.path.join(BUILD, "man", "qworkerd-plugin.3"), tool)
    flat = " ".join(text.split())
    i = flat.find("timed out after")
    assert "timed out after Ns" in flat and "afterNs" not in flat, flat[i - 40:i + 60]


@pytest.mark.parametrize("tool", ["man", "mandoc"])
def test_man_footers_name_qworkerd_not_bsd(tool):
    pages = sorted(glob.glob(os.path.join(BUILD, "man", "*.[0-9]")))
    assert len(pages) >= 4, pages
    for page in pages:
        footer = [l for l in render(page, tool).splitlines() if l.strip()][-1]
        assert "BSD" not in footer and "qworkerd" in footer, (page, footer)


def readme():
    return open(os.path.join(SRC, "README.md"), encoding="utf-8").read()


def test_readme_man_command_works():
    """The README's way to read a man page before installing works as printed
    (from the top of the tree, after a build into build/)."""
    text = readme()
    assert "built into `man/`" not in text
    cmds = re.findall(r"`(man -l [^`]+)`", text)
    assert cmds == ["man -l build/man/qworkerd-jobs.7"], cmds
    page = os.path.join(BUILD, "man", "qworkerd-jobs.7")
    p = subprocess.run(["man", "-l", page], capture_output=True, env=dict(os.environ,
                                                                          MANWIDTH="80"))
    assert p.returncode == 0 and b"DELIVERY" in p.stdout, p.stderr


def test_readme_promise_matches_the_losses_in_qworkerd_jobs_7():
    """No unconditional 'no job is ever lost': the README says what is
    promised, and names the losses qworkerd-jobs(7) DELIVERY lists."""
    text = " ".join(readme().split())
    assert "no job is ever lost" not in text.lower()
    assert "at least once" in text
    page = open(os.path.join(SRC, "man", "qworkerd-jobs.7.in")).read()
    delivery = " ".join(page[page.index(".Sh DELIVERY"):page.index(".Sh EXAMPLES")].split())
    for loss, readme_words in (("dead_max", "`dead_max`"), ("evicts keys", "evicted"),
                               ("restart without persistence", "without persistence")):
        assert loss in delivery, loss
        assert readme_words in text, readme_words


@pytest.mark.parametrize("script,phases", [
    ("test.sh", ["sh tests/deps.sh", "sh tests/build.sh build", "make -s -C build check"]),
    ("demo.sh", ["sh tests/deps.sh", "sh tests/build.sh build", "setsid build/qworkerd"]),
])
def test_scripts_announce_each_phase(script, phases):
    """Each slow phase of ./test.sh and ./demo.sh is announced with a
    progress line ('say') before it starts, so neither is silent."""
    lines = [l.strip() for l in open(os.path.join(SRC, script))]
    for cmd in phases:
        i = next(n for n, l in enumerate(lines) if l.startswith(cmd))
        before = [l for l in lines[:i] if l.startswith("say ")]
        assert len(before) >= phases.index(cmd) + 1, (script, cmd)
    if script == "test.sh":
        text = "\n".join(lines)
        assert "229 MB" in text and "tests/summary.py build" in lines[-2], lines[-2:]
