#!/bin/sh
# Quick start 2: install what is missing, build, and run the whole test suite
# (cmocka unit tests and pytest integration tests against a real redis-server).
set -eu
cd "$(dirname "$0")"
sh tests/deps.sh
sh tests/build.sh build
status=0
make -s -C build check >/dev/null 2>&1 || { status=$?; cat build/test-suite.log; }
/usr/bin/python3 tests/summary.py build
exit "$status"
