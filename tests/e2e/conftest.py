"""The end-to-end fixture: one systemd-box (a real systemd 252 in a container,
with redis-server) for the whole run. The Debian packages (tests/package.sh:
dpkg-buildpackage -us -uc -b, lintian) are installed in it with dpkg -i;
they are built into BUILD/tests/deb unless the ones there (left by
test_package.py) are newer than every source file. Their contents are also
unpacked into BUILD/tests/e2e-root for the tests to read.

A box that cannot be built or booted fails every test with the reason; the
box is always powered off at the end. A failing test gets the box's journal
and `systemctl status` appended to its report, and the whole journal is
written to BUILD/tests/e2e-journal.txt."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("QW_SRCDIR", os.path.abspath(os.path.join(HERE, "..", "..")))
BUILD = os.environ.get("QW_BUILDDIR", os.path.join(SRC, "build"))
TOOL = os.environ.get("QW_SYSTEMD_BOX") or os.path.abspath(
    os.path.join(SRC, "..", "shared", "tools", "systemd-box"))
REQUIRED = os.environ.get("QW_E2E") == "required"
DEB_DIR = os.path.join(BUILD, "tests", "deb")
STAGE = os.path.join(BUILD, "tests", "e2e-root")
DEB_PACKAGES = ("qworkerd", "libqworkerd-plugin-dev")
JOURNAL_DUMP = os.path.join(BUILD, "tests", "e2e-journal.txt")
# Packages the box needs besides its base set (systemd, redis-server, ...):
# the shared libraries of what the packages install (found with ldd and
# dpkg -S on this machine), and man-db, because systemd-analyze verify runs
# man(1) to check Documentation=man:... against the installed man pages.
# Libraries that systemd itself needs are in every box; leaving them out
# keeps the package list, and so the cached rootfs, the same for longer.
ALWAYS_PACKAGES = ["man-db"]
IN_EVERY_BOX = {"libc6", "libcap2", "libgcrypt20", "libgpg-error0", "liblzma5", "libzstd1",
                "liblz4-1", "libsystemd0"}

# configure --prefix=/usr puts plugins under Debian's multiarch libdir.
MULTIARCH = subprocess.run(["gcc", "-print-multiarch"], capture_output=True,
                           text=True).stdout.strip()
PLUGIN_DIR = "/usr/lib/%s/qworkerd/plugins" % MULTIARCH
PASSWORD = "e2e-secret"
HANDLER = "/usr/local/libexec/qw-e2e-handler"
CONF_PATH = "/etc/qworkerd/qworkerd.conf"

# The handler does what the payload says: "sleep N", "stubborn N" (ignores
# SIGTERM), "fail", "write" (a file named after the job in $STATE_DIRECTORY),
# anything else succeeds at once. It reports start and end on stdout.
HANDLER_TEXT = r"""#!/bin/sh
payload=$(cat)
echo "start id=$QW_JOB_ID attempt=$QW_ATTEMPT payload=$payload"
set -- $payload
case ${1:-} in
sleep) sleep "$2" ;;
stubborn) trap '' TERM; sleep "$2" ;;
fail) echo "failing on purpose" >&2; exit 1 ;;
write) echo "$QW_JOB_ID" > "${STATE_DIRECTORY:-/var/lib/qworkerd}/$QW_JOB_ID" || exit 65 ;;
esac
echo "done id=$QW_JOB_ID"
"""


def conf(queues=("e2e",), concurrency=4, extra="", address="127.0.0.1:6379"):
    out = ["[redis]", "address = %s" % address, "",
           "[workers]", "concurrency = %d" % concurrency, "shutdown_timeout = 4s",
           "kill_grace = 2s", extra, ""]
    for q in queues:
        out += ["[queue %s]" % q, "handler = %s" % HANDLER, "timeout = 120s",
                "max_attempts = 3", "retry_base = 1s", ""]
    return "\n".join(out)


def wait_until(pred, timeout=15.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.0fs waiting for %s (last: %r)" % (timeout, what, last))


def _message(entry):
    m = entry.get("MESSAGE", "")
    if isinstance(m, list):     # journalctl -o json gives non-UTF-8 text as bytes
        m = bytes(m).decode("utf-8", "replace")
    return m or ""


class Box:
    def __init__(self, name, packages):
        self.name = name
        self.env = dict(os.environ, SYSTEMD_BOX_NAME=name,
                        SYSTEMD_BOX_PACKAGES=" ".join(packages))
        self.up = False

    def tool(self, *args, timeout=600, check=True, input=None):
        p = subprocess.run([TOOL] + list(args), env=self.env, input=input, text=True,
                           capture_output=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("systemd-box %s: exit %d\n--- stdout:\n%s--- stderr:\n%s"
                                 % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def run(self, *args, timeout=120, check=True, input=None):
        """Runs a command inside the box; returns the CompletedProcess."""
        return self.tool("exec", *args, timeout=timeout, check=check, input=input)

    def sh(self, script, **kw):
        return self.run("sh", "-ec", script, **kw)

    def write(self, path, text, mode="644"):
        self.run("sh", "-c", 'mkdir -p "$(dirname "$1")" && cat >"$1" && chmod "$2" "$1"',
                 "sh", path, mode, input=text)

    def redis(self, *args):
        return self.run("redis-cli", "--no-auth-warning", "-a", PASSWORD,
                        *args).stdout.rstrip("\n")

    def show(self, unit, *props):
        out = self.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def cursor(self):
        out = self.run("journalctl", "-n", "1", "-o", "json", "--no-pager").stdout
        return json.loads(out.splitlines()[-1])["__CURSOR"]

    def journal(self, *units, after=None):
        args = ["journalctl", "--no-pager", "-o", "json"]
        for u in units:
            args += ["-u", u]
        if after:
            args += ["--after-cursor", after]
        out = self.run(*args).stdout
        entries = []
        for line in out.splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            e["MESSAGE"] = _message(e)
            entries.append(e)
        return entries

    def messages(self, *units, after=None):
        return [e["MESSAGE"] for e in self.journal(*units, after=after)]

    def wait_journal(self, unit, pattern, after, timeout=15.0, count=1):
        """Waits until COUNT journal entries of UNIT after the cursor match
        the regular expression PATTERN; returns those entries."""
        rx = re.compile(pattern)

        def found():
            hits = [e for e in self.journal(unit, after=after) if rx.search(e["MESSAGE"])]
            return hits if len(hits) >= count else None
        return wait_until(found, timeout, 0.2, "%d journal line(s) of %s matching %r"
                          % (count, unit, pattern))

    def diagnostics(self, lines=300):
        if not self.up:
            return "(the box is not up)"
        parts = []
        for args in (["systemctl", "status", "--no-pager", "--full", "qworkerd*", "redis-server"],
                     ["journalctl", "-b", "--no-pager", "-o", "short-monotonic", "-n", str(lines)]):
            try:
                p = self.run(*args, check=False, timeout=60)
                parts.append("$ %s\n%s%s" % (" ".join(args), p.stdout, p.stderr))
            except Exception as e:      # the box may be the problem
                parts.append("$ %s: %s" % (" ".join(args), e))
        return "\n".join(parts)


BOX = None


def debs():
    """{package: path} of the .debs in DEB_DIR."""
    out = {}
    for name in os.listdir(DEB_DIR) if os.path.isdir(DEB_DIR) else ():
        m = re.match(r"([a-z0-9-]+)_[^_]+_[a-z0-9]+\.deb$", name)
        if m and m.group(1) in DEB_PACKAGES:
            out[m.group(1)] = os.path.join(DEB_DIR, name)
    return out


def debs_current():
    """The .debs are there and newer than every file of the source tree."""
    have = debs()
    if set(have) != set(DEB_PACKAGES):
        return False
    built = min(os.path.getmtime(p) for p in have.values())
    skip = {".git", "__pycache__", ".pytest_cache", "autom4te.cache"}
    for d, dirs, files in os.walk(SRC):
        dirs[:] = [x for x in dirs if x not in skip and not (d == SRC and x.startswith("build"))
                   and os.path.join(d, x) != os.path.join(SRC, "debian", "build")]
        if any(os.path.getmtime(os.path.join(d, f)) > built for f in files
               if os.path.isfile(os.path.join(d, f))):
            return False
    return True


def build_stage():
    """Builds the packages if needed, and unpacks them into STAGE."""
    if not debs_current():
        p = subprocess.run(["sh", os.path.join(SRC, "tests", "package.sh"), DEB_DIR],
                           capture_output=True, text=True, timeout=1800)
        if p.returncode != 0:
            pytest.fail("e2e: tests/package.sh (exit %d):\n%s%s"
                        % (p.returncode, p.stdout[-4000:], p.stderr[-4000:]), pytrace=False)
    shutil.rmtree(STAGE, ignore_errors=True)
    for deb in debs().values():
        subprocess.run(["dpkg-deb", "-x", deb, STAGE], check=True)


def runtime_packages():
    """Debian packages of the shared libraries the staged binaries load."""
    pkgs = set(ALWAYS_PACKAGES)
    for d, _, files in os.walk(STAGE):
        for f in files:
            path = os.path.join(d, f)
            if os.path.islink(path) or not (f.endswith(".so") or os.access(path, os.X_OK)):
                continue
            with open(path, "rb") as fh:
                if fh.read(4) != b"\x7fELF":
                    continue
            out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
            for lib in re.findall(r"=> (/\S+)", out):
                q = subprocess.run(["dpkg", "-S", os.path.realpath(lib)],
                                   capture_output=True, text=True)
                if q.returncode == 0:
                    pkgs.add(q.stdout.split(":")[0].strip())
    return sorted(pkgs - IN_EVERY_BOX)


@pytest.fixture(scope="session")
def box(request):
    global BOX
    if os.geteuid() != 0:
        why = "e2e: needs root (systemd-box boots a container with systemd-nspawn)"
        if REQUIRED:
            pytest.fail(why + " and QW_E2E=required", pytrace=False)
        pytest.skip(why)
    if not os.access(TOOL, os.X_OK):
        pytest.fail("e2e: systemd-box not found at %s (configure --with-systemd-box=PATH "
                    "or set QW_SYSTEMD_BOX)" % TOOL, pytrace=False)
    t0 = time.monotonic()
    build_stage()
    b = Box("qw-e2e-%d" % os.getpid(), runtime_packages())
    BOX = b

    def finish():
        global BOX
        if b.up and request.session.testsfailed:
            try:
                p = b.run("journalctl", "-b", "--no-pager", "-o", "short-monotonic",
                          check=False, timeout=120)
                with open(JOURNAL_DUMP, "w") as f:
                    f.write(p.stdout)
            except Exception as e:
                print("e2e: could not dump the journal: %s" % e, file=sys.stderr)
        p = b.tool("down", check=False, timeout=300)
        if p.returncode != 0:
            print("e2e: systemd-box down failed (exit %d): %s" % (p.returncode, p.stderr),
                  file=sys.stderr)
        elif b.up:
            # each run has its own box name: drop its state directory (the
            # console log is kept when the box failed to boot)
            shutil.rmtree(os.path.join(os.environ.get("SYSTEMD_BOX_DIR", "/var/tmp/systemd-box"),
                                       "run", b.name), ignore_errors=True)
        BOX = None
    request.addfinalizer(finish)

    p = b.tool("up", check=False, timeout=1800)
    if p.returncode != 0:
        pytest.fail("e2e: the box did not come up: systemd-box up exited %d:\n%s%s"
                    % (p.returncode, p.stdout, p.stderr), pytrace=False)
    b.up = True
    b.boot_log = p.stderr
    # The packages, installed as an administrator would.
    # (the daemon and the plugin header: the worker libraries' packages need
    # python3 and nodejs, which the box leaves out)
    debs_here = {k: v for k, v in debs().items() if k in ("qworkerd", "libqworkerd-plugin-dev")}
    b.tool("install", *sorted(debs_here.values()), "--to", "/root/debs")
    b.run("sh", "-c", "dpkg -i /root/debs/*.deb")
    # What installing left behind, before anything here changes it.
    b.after_install = {q: b.run("systemctl", q, "qworkerd.service", check=False).stdout.strip()
                       for q in ("is-enabled", "is-active")}
    missing = b.sh("ldd /usr/sbin/qworkerd %s/*.so | grep 'not found' "
                   "|| true" % PLUGIN_DIR).stdout
    if missing:
        pytest.fail("e2e: libraries missing in the box (add their packages to "
                    "ALWAYS_PACKAGES in tests/e2e/conftest.py):\n" + missing, pytrace=False)
    b.write(HANDLER, HANDLER_TEXT, "755")
    b.sh("cp %s %s.dist" % (CONF_PATH, CONF_PATH))
    b.write(CONF_PATH, conf())
    # Redis wants a password; qworkerd gets it with LoadCredential= from the
    # system credential store.
    b.sh("echo 'requirepass %s' >> /etc/redis/redis.conf\n"
         "systemctl restart redis-server\n"
         "install -d -m 0700 /etc/credstore\n"
         "for c in qworkerd qworkerd@mail qworkerd@thumbs; do\n"
         "  (umask 077; echo %s > /etc/credstore/$c.redis.pass)\n"
         "done\n"
         "systemctl daemon-reload\n" % (PASSWORD, PASSWORD))
    b.setup_seconds = time.monotonic() - t0
    print("e2e: box %s up and provisioned in %.1fs" % (b.name, b.setup_seconds))
    return b


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and BOX is not None and BOX.up:
        rep.sections.append(("box journal and status (full journal: %s)" % JOURNAL_DUMP,
                             BOX.diagnostics()))
