"""The bash completion of qworkerctl (completion/qworkerctl): sourced in bash
with bash-completion, the COMPREPLY of a few command lines. Queue names come
from `qworkerctl --json status` (a stand-in on PATH here); without it, or
when it fails, nothing is offered and nothing is printed."""
import os
import subprocess

import pytest

from conftest import TOP

SRC = os.environ.get("QW_SRCDIR", TOP)
COMPLETION = os.path.join(SRC, "completion", "qworkerctl")
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"

DRIVER = r"""
source "$BASH_COMPLETION"
source "$COMPLETION"
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
_qworkerctl
printf '%s\n' "${COMPREPLY[@]}"
"""

STATUS_JSON = ('{"queues":[{"name":"mail","pending":3},{"name":"media"},{"name":"pics"}],'
               '"instances":[{"name":"web-1"}]}')


@pytest.fixture
def fake_ctl(tmp_path):
    """A qworkerctl on PATH that prints STATUS_JSON and records its arguments."""
    d = tmp_path / "bin"
    d.mkdir()
    ctl = d / "qworkerctl"
    ctl.write_text("#!/bin/sh\necho \"$@\" > %s/args\necho '%s'\n" % (tmp_path, STATUS_JSON))
    ctl.chmod(0o755)
    return tmp_path


def complete(*words, path=None):
    env = dict(os.environ, BASH_COMPLETION=BASH_COMPLETION, COMPLETION=COMPLETION)
    if path:
        env["PATH"] = path + ":" + env["PATH"]
    p = subprocess.run(["bash", "--norc", "-c", DRIVER, "bash"] + list(words),
                       capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return [w for w in p.stdout.split("\n") if w]


pytestmark = pytest.mark.skipif(not os.path.exists(BASH_COMPLETION),
                                reason="bash-completion is not installed")


def test_commands_and_global_options():
    assert complete("qworkerctl", "") == ["status", "ls", "show", "enqueue", "retry",
                                          "delete", "pause", "resume", "cancel", "instances"]
    assert complete("qworkerctl", "re") == ["retry", "resume"]
    assert complete("qworkerctl", "--") == ["--prefix", "--json", "--help"]
    assert complete("qworkerctl", "-a", "h:1", "in") == ["instances"]


def test_queue_names_from_status_json(fake_ctl):
    got = complete("qworkerctl", "-a", "10.0.0.1:6379", "--prefix", "jobs", "pause", "m",
                   path=str(fake_ctl / "bin"))
    assert got == ["mail", "media"]
    # asked with the same address and prefix as the line being completed
    assert (fake_ctl / "args").read_text().split() == ["-a", "10.0.0.1:6379", "--prefix",
                                                       "jobs", "--json", "status"]


def test_arguments_after_the_queue(fake_ctl):
    path = str(fake_ctl / "bin")
    assert complete("qworkerctl", "ls", "mail", "", path=path) == \
        ["pending", "scheduled", "running", "dead"]
    assert complete("qworkerctl", "delete", "mail", "d", path=path) == ["dead"]
    assert complete("qworkerctl", "delete", "mail", "dead", "--", path=path) == \
        ["--all", "--yes", "--json"]
    assert complete("qworkerctl", "enqueue", "mail", "--u", path=path) == ["--unique-for"]


def test_no_qworkerctl_no_queue_names_quietly(tmp_path):
    # a qworkerctl that fails (no Redis): nothing offered, nothing printed
    d = tmp_path / "bin"
    d.mkdir()
    (d / "qworkerctl").write_text("#!/bin/sh\necho 'Redis at x: refused' >&2\nexit 69\n")
    (d / "qworkerctl").chmod(0o755)
    assert complete("qworkerctl", "pause", "", path=str(d)) == []
