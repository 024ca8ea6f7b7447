#!/bin/sh
# Installs the Debian 12 packages qworkerd needs to build, run and test,
# asking apt only for what is missing. Run as root. prometheus is there for
# its promtool, which checks /metrics (test_metrics2.py): Debian ships
# promtool in no smaller package.
set -eu
pkgs="build-essential autoconf automake pkg-config libevent-dev libhiredis-dev \
libsystemd-dev libjansson-dev libcmocka-dev redis-server redis-sentinel redis-tools \
debhelper devscripts lintian bash-completion man-db \
python3 python3-pytest python3-redis mandoc valgrind procps util-linux mount nodejs \
prometheus"
[ $# -gt 0 ] && pkgs="$pkgs $*"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
