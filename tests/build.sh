#!/bin/sh
# Builds qworkerd out of tree in DIR (default: build/ in the source tree) with
# extra configure flags. The source tree itself stays unconfigured, so several
# builds (plain, ASan) can live side by side.
# Usage: tests/build.sh [DIR [CONFIGURE-FLAGS...]]
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$src/build}
[ $# -gt 0 ] && shift
cd "$src"
if ! { [ -x configure ] && [ configure -nt configure.ac ] && [ Makefile.in -nt Makefile.am ]; }; then
	autoreconf -fi >"${TMPDIR:-/tmp}/qw-autoreconf.log" 2>&1 ||
		{ cat "${TMPDIR:-/tmp}/qw-autoreconf.log" >&2; exit 1; }
fi
mkdir -p "$dir"
cd "$dir"
if [ ! -f Makefile ] || [ "$src/configure" -nt Makefile ] || [ -n "$*" ]; then
	"$src/configure" -q --enable-werror "$@"
fi
make -s -j"$(nproc)" >/dev/null
