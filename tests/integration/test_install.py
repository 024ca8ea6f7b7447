"""`make install` (README, Installing): everything under the configured
prefix, one plugin directory that the installed config, the man pages and
the files agree on, and an edited configuration that a second install (an
upgrade) keeps. With --prefix=/usr, the layout Debian expects."""
import os
import re
import subprocess

from conftest import BUILD, TOP

SRC = os.environ.get("QW_SRCDIR", TOP)


def clean_env():
    """make check's make variables must not leak into the nested make."""
    return {k: v for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR")}


def make(*args, cwd=BUILD):
    p = subprocess.run(["make", "-s"] + list(args), cwd=cwd, env=clean_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, "make %s: %s%s" % (" ".join(args), p.stdout, p.stderr)
    return p.stdout


def makevar(name, cwd=BUILD):
    """A directory variable of the build's Makefile, fully expanded."""
    p = subprocess.run(["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-",
                        "qw-print"], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                       input="qw-print:\n\t@echo $(%s)\n" % name)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def files(root):
    out = []
    for d, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(d, n), root) for n in names]
    return sorted(out)


def test_install_twice_keeps_an_edited_conf(tmp_path):
    dest = str(tmp_path / "root")
    make("install", "DESTDIR=" + dest)
    sysconf, docdir = makevar("sysconfdir"), makevar("docdir")
    conf = dest + sysconf + "/qworkerd/qworkerd.conf"
    example = dest + docdir + "/examples/qworkerd.conf"
    shipped = open(example).read()
    assert open(conf).read() == shipped
    with open(conf, "a") as f:
        f.write("\n# edited by the administrator\n")
    edited = open(conf).read()
    out = make("install", "DESTDIR=" + dest)
    assert open(conf).read() == edited, "a second make install overwrote the edited config"
    assert "KEEP" in out and conf in out, out
    assert open(example).read() == shipped, "the example is installed every time"
    # uninstall leaves the edited config, and only it
    make("uninstall", "DESTDIR=" + dest)
    assert files(dest) == [os.path.relpath(conf, dest)]


def test_everything_under_the_prefix_and_one_plugin_dir(tmp_path):
    dest = str(tmp_path / "root")
    make("install", "DESTDIR=" + dest)
    prefix = makevar("prefix")
    installed = files(dest)
    if prefix != "/usr":
        # units and completions too (the default prefix is /usr/local)
        outside = [f for f in installed if not ("/" + f).startswith(prefix + "/")]
        assert not outside, "installed outside %s: %s" % (prefix, outside)
    plugindir = makevar("libdir") + "/qworkerd/plugins"
    assert os.path.isfile(dest + plugindir + "/noop.so"), installed
    conf = open(dest + makevar("sysconfdir") + "/qworkerd/qworkerd.conf").read()
    m = re.search(r"^#plugin = (\S+)$", conf, re.M)
    assert m and m.group(1) == plugindir + "/noop.so", m and m.group(0)
    assert os.path.isfile(dest + m.group(1))
    man = makevar("mandir")
    for page in ("man8/qworkerd.8", "man3/qworkerd-plugin.3", "man5/qworkerd.conf.5"):
        text = open(dest + man + "/" + page).read()
        dirs = set(re.findall(r"(/\S*?/qworkerd/plugins)\b", text))
        assert dirs == {plugindir}, (page, dirs)
    unitdir = makevar("systemdsystemunitdir")
    assert os.path.isfile(dest + unitdir + "/qworkerd.service")
    assert os.path.isfile(dest + makevar("bashcompletiondir") + "/qworkerctl")


def test_prefix_usr_is_the_debian_layout(tmp_path):
    """--prefix=/usr: multiarch libdir, units and completions where
    pkg-config says (as dh_auto_configure would have them)."""
    b = str(tmp_path)
    p = subprocess.run([os.path.join(SRC, "configure"), "-q", "--prefix=/usr",
                        "--sysconfdir=/etc"], cwd=b, env=clean_env(), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True,
                               text=True).stdout.strip()
    assert makevar("libdir", b) == "/usr/lib/" + multiarch
    pc = lambda mod, var: subprocess.run(["pkg-config", "--variable=" + var, mod],
                                         capture_output=True, text=True).stdout.strip()
    assert makevar("systemdsystemunitdir", b) == (pc("systemd", "systemdsystemunitdir")
                                                  or "/usr/lib/systemd/system")
    assert makevar("bashcompletiondir", b) == (pc("bash-completion", "completionsdir")
                                               or "/usr/share/bash-completion/completions")
    # default prefix: everything under /usr/local
    b2 = str(tmp_path / "local")
    os.makedirs(b2)
    p = subprocess.run([os.path.join(SRC, "configure"), "-q"], cwd=b2, env=clean_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert makevar("systemdsystemunitdir", b2) == "/usr/local/lib/systemd/system"
    assert makevar("libdir", b2) == "/usr/local/lib"
