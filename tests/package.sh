#!/bin/sh
# Builds the Debian packages (debian/) with `dpkg-buildpackage -us -uc -b`
# and lints them with `lintian --fail-on error`. dpkg-buildpackage writes
# its products into the parent of the tree it builds, so it builds a copy of
# the source tree in a temporary directory; the .deb, .changes and
# .buildinfo files, the build log and lintian's report end up in OUTDIR.
# Usage: tests/package.sh OUTDIR
# Exit status: 0 built and lint clean, 1 failed (the reason on stderr),
# 77 dpkg-buildpackage is not installed (tests/deps.sh installs it).
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: tests/package.sh OUTDIR}
for tool in dpkg-buildpackage lintian; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "package: SKIPPED because $tool is not installed (sh tests/deps.sh installs it)"
		exit 77
	}
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo "$out"/build.log "$out"/lintian.txt
tmp=$(mktemp -d "${TMPDIR:-/tmp}/qworkerd-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
# The tree as it is (uncommitted changes included), without builds, caches
# and what autoreconf or an in-tree configure left (dh regenerates it).
mkdir "$tmp/qworkerd"
tar -C "$src" --exclude=./.git --exclude='./build*' --exclude=__pycache__ \
	--exclude=.pytest_cache --exclude=./autom4te.cache --exclude=./config.status \
	--exclude=./config.log --exclude=./Makefile --exclude=./config.h \
	--exclude=./debian/build --exclude=./debian/.debhelper --exclude=./examples \
	-cf - . | tar -C "$tmp/qworkerd" -xf -
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES -u DESTDIR \
	sh -c 'cd "$1" && dpkg-buildpackage -us -uc -b' sh "$tmp/qworkerd" \
	>"$out/build.log" 2>&1 || {
	tail -n 60 "$out/build.log" >&2
	echo "package: dpkg-buildpackage -us -uc -b failed; the whole log is $out/build.log" >&2
	exit 1
}
mv "$tmp"/*.deb "$tmp"/*.changes "$tmp"/*.buildinfo "$out"/
# .changes names the .debs and the .buildinfo: lintian checks all of them.
if ! lintian --fail-on error --no-tag-display-limit --info "$out"/*.changes \
	>"$out/lintian.txt" 2>&1; then
	cat "$out/lintian.txt" >&2
	echo "package: lintian --fail-on error found errors (above)" >&2
	exit 1
fi
ls "$out"/*.deb
