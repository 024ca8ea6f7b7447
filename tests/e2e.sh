#!/bin/sh
# Runs the end-to-end test (tests/e2e): the Debian packages (tests/package.sh)
# installed with dpkg -i into a real systemd 252 booted by systemd-box, and
# driven with systemctl, journalctl and redis-cli. Called by `make check`;
# writes JUnit XML to BUILD/tests/e2e.xml so tests/summary.py counts its cases.
#
# Needs root. QW_E2E=skip skips it, saying so (exit 77); otherwise a box that
# cannot be built or booted fails the test with the reason. QW_E2E=required
# (CI) also turns "not root" from a skip into a failure.
set -u
srcdir=${QW_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
export QW_SRCDIR=$srcdir
export QW_BUILDDIR=${QW_BUILDDIR:-$(pwd)}
if [ "${QW_E2E:-}" = skip ]; then
	rm -f "$QW_BUILDDIR/tests/e2e.xml"
	echo "e2e: SKIPPED because QW_E2E=skip"
	exit 77
fi
mkdir -p "$QW_BUILDDIR/tests"
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider -rs --durations=0 --durations-min=1 \
	--junitxml="$QW_BUILDDIR/tests/e2e.xml" "$srcdir/tests/e2e" "$@"
