#!/bin/sh
# Quick start 1: install what is missing, build, and run qworkerd in the
# foreground with an example config. Without an argument it starts a private
# redis-server on a unix socket in a temporary directory; with one, it uses
# that Redis address instead (host:port or unix:/path).
# Usage: ./demo.sh [REDIS-ADDRESS]
set -eu
cd "$(dirname "$0")"
top=$(pwd)
say() { echo "demo.sh: $*"; }
say "1/3 dependencies: tests/deps.sh (apt-get, only for what is missing)"
sh tests/deps.sh
say "2/3 build: tests/build.sh build (about 20 s the first time)"
sh tests/build.sh build
work=$(mktemp -d /tmp/qworkerd-demo.XXXXXX)
redis_pid=""
cleanup() {
	[ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
if [ $# -gt 0 ]; then
	address=$1
	say "3/3 run: qworkerd with Redis at $address"
else
	say "3/3 run: a private redis-server in $work, then qworkerd"
	redis-server --port 0 --unixsocket "$work/redis.sock" --unixsocketperm 700 \
		--dir "$work" --save '' --appendonly no --logfile "$work/redis.log" &
	redis_pid=$!
	address="unix:$work/redis.sock"
	i=0
	until [ -S "$work/redis.sock" ]; do
		i=$((i + 1))
		[ $i -gt 100 ] && { echo "redis-server did not start: see $work/redis.log" >&2; exit 1; }
		sleep 0.1
	done
fi
sed -e "s|^address = .*|address = $address|" \
	-e "s|^handler = .*|handler = $top/etc/example-handler.sh|" etc/qworkerd.conf > "$work/qworkerd.conf"
case $address in
unix:*) cli="redis-cli -s ${address#unix:}" ;;
*) cli="redis-cli -h ${address%:*} -p ${address##*:}" ;;
esac
cat <<TXT

qworkerd runs in the foreground with $work/qworkerd.conf (Ctrl-C stops it).
Enqueue jobs from another terminal:
  $cli LPUSH 'qw:{mail}:pending' 'hello world'
  $cli LPUSH 'qw:{mail}:pending' '{"payload":"hello","timeout":5,"max_attempts":3}'
  $cli ZADD 'qw:{mail}:scheduled' \$(( \$(date +%s%3N) + 5000 )) 'run me in 5 s'
  $cli HGETALL 'qw:{mail}:stats'
  $cli LRANGE 'qw:{mail}:dead' 0 -1

TXT
# A session of its own: Ctrl-C reaches the script, which passes on exactly
# one SIGTERM, as systemd would (two would cancel running jobs at once).
setsid build/qworkerd -c "$work/qworkerd.conf" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' INT TERM
wait $pid || true
wait $pid 2>/dev/null || true
