#!/bin/sh
# Runs the integration suite (pytest against a real redis-server). Called by
# `make check`; writes JUnit XML next to its log so .ci/run can count cases.
set -u
srcdir=${QW_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
export QW_BUILDDIR=${QW_BUILDDIR:-$(pwd)}
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider \
	--junitxml="$QW_BUILDDIR/tests/integration.xml" "$srcdir/tests/integration" "$@"
