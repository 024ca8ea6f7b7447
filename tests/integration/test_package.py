"""The Debian packages (debian/, issue 9): `dpkg-buildpackage -us -uc -b`
from a copy of the tree and `lintian --fail-on error` (tests/package.sh),
then what is in them: qworkerd has what `make install` installs (daemon,
units, man pages, the example config as a conffile, plugins, completion)
and libqworkerd-plugin-dev the header (a file that make install installs
and no package takes fails the build: dh_missing --fail-missing, compat 13); the plugin directory that the
config and the man pages name is the one the plugins are in; the
maintainer scripts start, enable and create nothing. The .debs stay in
BUILD/tests/deb for the end-to-end test, which installs them."""
import gzip
import os
import re
import subprocess

import pytest

from conftest import BUILD, TOP

SRC = os.environ.get("QW_SRCDIR", TOP)
OUT = os.path.join(BUILD, "tests", "deb")


@pytest.fixture(scope="module")
def debs():
    p = subprocess.run(["sh", os.path.join(SRC, "tests", "package.sh"), OUT],
                       capture_output=True, text=True, timeout=1800)
    if p.returncode == 77:
        pytest.skip(p.stdout.strip())
    assert p.returncode == 0, "tests/package.sh failed:\n%s%s" % (p.stdout, p.stderr)
    found = {}
    for name in os.listdir(OUT):
        m = re.match(r"([a-z0-9-]+)_[^_]+_[a-z0-9]+\.deb$", name)
        if m:
            found[m.group(1)] = os.path.join(OUT, name)
    return found


def contents(deb):
    out = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[5].lstrip(".") for line in out.splitlines()
            if not line.startswith("d")}


def extract(deb, tmp_path):
    d = str(tmp_path / os.path.basename(deb))
    subprocess.run(["dpkg-deb", "-x", deb, d], check=True)
    subprocess.run(["dpkg-deb", "-e", deb, d + "/DEBIAN"], check=True)
    return d


def test_lintian_clean_and_both_packages(debs):
    assert set(debs) >= {"qworkerd", "libqworkerd-plugin-dev", "python3-qworkerd",
                         "node-qworkerd"}, debs
    report = open(os.path.join(OUT, "lintian.txt")).read()
    assert not re.search(r"^E: ", report, re.M), report


def test_qworkerd_package_contents(debs, tmp_path):
    files = contents(debs["qworkerd"])
    multiarch = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"],
                               capture_output=True, text=True).stdout.strip()
    plugindir = "/usr/lib/%s/qworkerd/plugins" % multiarch
    want = {"/usr/sbin/qworkerd", "/etc/qworkerd/qworkerd.conf",
            "/lib/systemd/system/qworkerd.service", "/lib/systemd/system/qworkerd@.service",
            "/usr/share/man/man8/qworkerd.8.gz", "/usr/share/man/man5/qworkerd.conf.5.gz",
            "/usr/share/man/man7/qworkerd-jobs.7.gz", "/usr/share/man/man3/qworkerd-plugin.3.gz",
            "/usr/share/doc/qworkerd/examples/qworkerd.conf",
            "/usr/share/doc/qworkerd/examples/qworkerd.service.d-example.conf",
            "/usr/share/doc/qworkerd/examples/qworkerd-grafana.json",
            "/usr/share/bash-completion/completions/qworkerctl",
            plugindir + "/noop.so", plugindir + "/sleep.so", plugindir + "/fail.so"}
    assert not want - files, "missing from qworkerd: %s" % sorted(want - files)
    assert not [f for f in files if f.startswith("/usr/include")]
    # qworkerctl, once the build has it, is in the package too
    if os.path.exists(os.path.join(BUILD, "qworkerctl")):
        assert {"/usr/bin/qworkerctl", "/usr/share/man/man1/qworkerctl.1.gz"} <= files
    # a DynamicUser= unit needs no account, no directory under /var
    assert not [f for f in files if f.startswith("/var")], files

    root = extract(debs["qworkerd"], tmp_path)
    assert open(root + "/DEBIAN/conffiles").read().split() == ["/etc/qworkerd/qworkerd.conf"]
    conf = open(root + "/etc/qworkerd/qworkerd.conf").read()
    assert re.search(r"^#plugin = %s/noop\.so$" % re.escape(plugindir), conf, re.M)
    for page in ("man8/qworkerd.8.gz", "man3/qworkerd-plugin.3.gz", "man5/qworkerd.conf.5.gz"):
        text = gzip.open(root + "/usr/share/man/" + page, "rt").read()
        assert set(re.findall(r"(/\S*?/qworkerd/plugins)\b", text)) == {plugindir}, page
    unit = open(root + "/lib/systemd/system/qworkerd.service").read()
    assert "ExecStart=/usr/sbin/qworkerd -c /etc/qworkerd/qworkerd.conf\n" in unit


def test_maintainer_scripts_start_and_create_nothing(debs, tmp_path):
    root = extract(debs["qworkerd"], tmp_path)
    scripts = ""
    for name in ("preinst", "postinst", "prerm", "postrm"):
        path = root + "/DEBIAN/" + name
        if os.path.exists(path):
            scripts += open(path).read()
    for bad in ("adduser", "useradd", "mkdir", "install -d", "chown", "deb-systemd-invoke start",
                "deb-systemd-invoke restart "):
        assert bad not in scripts, bad
    # enabled again only when it was enabled before (an upgrade: the
    # "debian-installed" guard), restarted only when it runs
    assert "deb-systemd-helper debian-installed 'qworkerd.service'" in scripts
    assert "deb-systemd-invoke try-restart 'qworkerd.service'" in scripts
    # stopped on removal
    assert re.search(r'"\$1" = remove .*\n(.*\n)*?.*deb-systemd-invoke stop', scripts)


def test_dev_package_has_the_header(debs):
    assert contents(debs["libqworkerd-plugin-dev"]) >= {"/usr/include/qworkerd/plugin.h"}


def test_worker_libraries_packages(debs):
    """The persistent workers' libraries (qworkerd-worker(7)) in their own
    packages, where Debian keeps Python 3 and Node.js modules."""
    assert "/usr/lib/python3/dist-packages/qworkerd/__init__.py" in contents(debs["python3-qworkerd"])
    node = contents(debs["node-qworkerd"])
    assert {"/usr/share/nodejs/qworkerd/index.js", "/usr/share/nodejs/qworkerd/package.json"} <= node
