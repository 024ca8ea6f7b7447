#!/bin/sh
# Quick start 2: install what is missing, build, and run the whole test suite
# (cmocka unit tests, pytest integration tests against a real redis-server,
# the Debian package, and the end-to-end test under a real systemd). One
# progress line per phase; the last line is always 'N passed, N failed'
# (.ci/run relies on it), with what was skipped, and why, on the line before.
set -eu
cd "$(dirname "$0")"
say() { echo "test.sh: $*"; }
say "1/3 dependencies: tests/deps.sh (apt-get, only for what is missing)"
sh tests/deps.sh
say "2/3 build: tests/build.sh build (out of tree, -Werror)"
sh tests/build.sh build
e2e="the end-to-end test (about 1 minute)"
box=${SYSTEMD_BOX_DIR:-/var/tmp/systemd-box}
if [ "${QW_E2E:-}" = skip ]; then
	e2e="not the end-to-end test (QW_E2E=skip)"
elif [ "$(id -u)" -ne 0 ]; then
	e2e="not the end-to-end test (it needs root)"
elif [ ! -d "$box/rootfs" ]; then
	e2e="the end-to-end test, whose first run builds a 229 MB Debian root file system with debootstrap into $box (a few minutes, once)"
fi
say "3/3 tests: unit, integration, Debian package, and $e2e; 3 to 10 minutes; logs in build/tests/"
status=0
make -s -C build check >/dev/null 2>&1 || { status=$?; cat build/test-suite.log; }
/usr/bin/python3 tests/summary.py build
exit "$status"
