"""The documentation matches the code: every key of the qw_conf_keys table in
src/conf.c is described in qworkerd.conf(5), in the right section, and no
other key is; the man pages lint clean; the shipped example config loads."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import QWORKERD

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("QW_SRCDIR", os.path.abspath(os.path.join(HERE, "..", "..")))
MAN_PAGES = ["qworkerd.8.in", "qworkerd.conf.5.in", "qworkerd-jobs.7.in", "qworkerd-worker.7.in",
             "qworkerctl.1.in"]

# RK/WK/QK(name, ...) lines of the key table, by section.
TABLE_SECTIONS = {"RK": "redis", "WK": "workers", "QK": "queue", "CK": "cron"}


def read(*parts):
    with open(os.path.join(SRC, *parts), encoding="utf-8") as f:
        return f.read()


def table_keys():
    src = read("src", "conf.c")
    m = re.search(r"qw_conf_keys\[\]\s*=\s*\{(.*?)\n\};", src, re.S)
    assert m, "qw_conf_keys table not found in src/conf.c"
    keys = {s: set() for s in TABLE_SECTIONS.values()}
    for macro, name in re.findall(r'^\s*(RK|WK|QK|CK)\(\s*"([^"]+)"', m.group(1), re.M):
        keys[TABLE_SECTIONS[macro]].add(name)
    assert sum(len(v) for v in keys.values()) > 10, keys
    return keys


def documented_keys():
    """Keys are '.It Cm KEY' items under the '.Ss The [SECTION] section(s)'
    subsections of qworkerd.conf(5)."""
    keys = {s: set() for s in TABLE_SECTIONS.values()}
    section = None
    for line in read("man", "qworkerd.conf.5.in").splitlines():
        if line.startswith(".Sh ") or line.startswith(".Ss "):
            m = re.match(r"\.Ss The \[(redis|workers|queue|cron)\b", line)
            section = m.group(1) if m else None
            continue
        m = re.match(r"\.It Cm (\S+)", line)
        if m:
            assert section is not None, "key item outside a section list: %r" % line
            keys[section].add(m.group(1))
    return keys


def test_every_config_key_is_documented():
    table, doc = table_keys(), documented_keys()
    problems = []
    for section in TABLE_SECTIONS.values():
        missing = table[section] - doc[section]
        extra = doc[section] - table[section]
        if missing:
            problems.append("[%s] keys missing from qworkerd.conf(5): %s" % (
                section, sorted(missing)))
        if extra:
            problems.append("[%s] keys in qworkerd.conf(5) but not in src/conf.c: %s" % (
                section, sorted(extra)))
    assert not problems, "\n".join(problems)


def test_example_config_shows_every_key():
    """Each key appears in its section of etc/qworkerd.conf, set or commented out."""
    shown = {s: set() for s in TABLE_SECTIONS.values()}
    section = None
    for line in read("etc", "qworkerd.conf").splitlines():
        m = re.match(r"#?\[(redis|workers|queue|cron)\b", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"#?([a-z_]+) = ", line)
        if m and section is not None:
            shown[section].add(m.group(1))
    problems = ["etc/qworkerd.conf [%s] lacks %s" % (section, sorted(keys - shown[section]))
                for section, keys in table_keys().items() if keys - shown[section]]
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc is not installed")
@pytest.mark.parametrize("page", MAN_PAGES)
def test_man_page_lints_clean(page):
    path = os.path.join(SRC, "man", page)
    p = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", path],
                       capture_output=True, text=True)
    assert p.stdout + p.stderr == "", p.stdout + p.stderr


def test_example_config_passes_check():
    path = os.path.join(SRC, "etc", "qworkerd.conf")
    p = subprocess.run([QWORKERD, "-t", "-c", path], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "configuration OK" in p.stdout
