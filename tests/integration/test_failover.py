"""A failover that demotes the daemon's Redis to a replica (READONLY), or a
replica that lost its master and serves no stale data (MASTERDOWN): qworkerd
drops the connection and reconnects with backoff, takes nothing from a
replica, answers 503 on /health and says why in STATUS=, and once the server
is a master again every job, including those pushed meanwhile and the one
that was running through it, runs exactly once."""
import os
import socket
import urllib.error
import urllib.request

import pytest

from conftest import Daemon, free_port, get, read_lines, script, stats, synced, wait_until


@pytest.fixture
def make_daemon(tmp):
    made = []

    def make(redis_sock):
        d = Daemon(os.path.join(tmp, "d%d" % len(made)), redis_sock)
        os.makedirs(d.tmp)
        made.append(d)
        return d
    yield make
    for d in made:
        try:
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
        finally:
            d.kill()


def role(srv):
    return srv.client().execute_command("ROLE")[0].decode()


def start_daemon(make_daemon, tmp, srv, port):
    """A daemon on SRV whose handler appends its payload to runs.txt; a
    payload "slow" waits for the file release to exist first."""
    runs = os.path.join(tmp, "runs.txt")
    release = os.path.join(tmp, "release")
    h = script(tmp, "h.sh", """\
        p=$(cat)
        if [ "$p" = slow ]; then
            while [ ! -e %s ]; do sleep 0.05; done
        fi
        echo "$p" >> %s
        """ % (release, runs))
    d = make_daemon(srv.sock)
    d.conf({"mail": "handler = %s\nretry_base = 100ms" % h},
           workers="concurrency = 2\nmetrics_listen = 127.0.0.1:%d\n" % port)
    d.start()
    return d, runs, release


def test_a_demoted_master_is_left_until_it_is_a_master_again(servers, make_daemon, tmp):
    a = servers()
    b = servers()
    b.client().execute_command("REPLICAOF", "127.0.0.1", a.port)
    wait_until(lambda: synced(b), 30, what="b replicating a")
    port = free_port()
    health = "http://127.0.0.1:%d/health" % port
    d, runs, release = start_daemon(make_daemon, tmp, a, port)
    ra, rb = a.client(), b.client()

    ra.lpush("qw:{mail}:pending", *["before-%d" % i for i in range(5)])
    wait_until(lambda: stats(ra, "mail").get("succeeded") == 5, 30, what="5 succeeded")
    ra.lpush("qw:{mail}:pending", "slow")
    wait_until(lambda: ra.hlen("qw:{mail}:active:test-1") == 1, 30, what="slow job running")
    assert get(health) == (200, "ok\n")

    # The failover: b is promoted, a demoted to b's replica.
    ra.execute_command("WAIT", 1, 10000)
    rb.execute_command("REPLICAOF", "NO", "ONE")
    ra.execute_command("REPLICAOF", "127.0.0.1", b.port)
    wait_until(lambda: synced(a), 30, what="a replicating b")

    wait_until(lambda: get(health)[0] == 503, 30, what="/health 503")
    d.wait_log("connection to unix:%s lost: it is a read-only replica" % a.sock, 30)
    status, body = get(health)
    assert body == "Redis is a read-only replica; reconnecting\n"
    d.wait_message("STATUS=Redis at unix:%s is a read-only replica; reconnecting" % a.sock, 30)

    # Pushed to the new master meanwhile: replicated to a, never taken from it.
    rb.lpush("qw:{mail}:pending", *["during-%d" % i for i in range(5)])
    wait_until(lambda: ra.llen("qw:{mail}:pending") == 5, 30, what="replicated to a")
    with open(release, "w"):
        pass
    # Reconnects keep finding a replica (the backoff grows; ROLE says so).
    d.wait_log("cannot connect to unix:%s: it is a read-only replica" % a.sock, 30)
    assert get(health)[0] == 503
    assert role(a) == "slave" and ra.llen("qw:{mail}:pending") == 5

    ra.execute_command("REPLICAOF", "NO", "ONE")
    wait_until(lambda: stats(ra, "mail").get("succeeded") == 11, 60, what="11 succeeded")
    wait_until(lambda: get(health) == (200, "ok\n"), 30, what="/health 200")
    want = ["before-%d" % i for i in range(5)] + ["during-%d" % i for i in range(5)] + ["slow"]
    assert sorted(read_lines(runs)) == sorted(want)
    assert ra.llen("qw:{mail}:pending") == 0
    assert ra.hlen("qw:{mail}:active:test-1") == 0
    assert stats(ra, "mail").get("failed", 0) == 0
    assert d.stop() == 0


def test_a_replica_whose_master_is_down_is_left(servers, make_daemon, tmp):
    c = servers("--replica-serve-stale-data", "no")
    port = free_port()
    health = "http://127.0.0.1:%d/health" % port
    d, runs, _ = start_daemon(make_daemon, tmp, c, port)
    rc = c.client()
    rc.lpush("qw:{mail}:pending", "first")
    wait_until(lambda: stats(rc, "mail").get("succeeded") == 1, 30, what="first succeeded")

    # Made the replica of a master that is not there: every command but a
    # few answers MASTERDOWN.
    rc.execute_command("REPLICAOF", "127.0.0.1", free_port())
    wait_until(lambda: get(health)[0] == 503, 30, what="/health 503")
    d.wait_log("connection to unix:%s lost: it is a replica whose master is down" % c.sock, 30)
    d.wait_message("STATUS=Redis at unix:%s is a" % c.sock, 30)

    rc.execute_command("REPLICAOF", "NO", "ONE")
    rc.lpush("qw:{mail}:pending", "second")
    wait_until(lambda: stats(rc, "mail").get("succeeded") == 2, 60, what="second succeeded")
    wait_until(lambda: get(health) == (200, "ok\n"), 30, what="/health 200")
    assert read_lines(runs) == ["first", "second"]
    assert d.stop() == 0


def test_a_daemon_never_starts_on_a_replica(servers, make_daemon, tmp):
    """ROLE at connect: pointed at a replica from the start, it never
    becomes ready and takes nothing, until the replica is promoted."""
    a = servers()
    b = servers()
    b.client().execute_command("REPLICAOF", "127.0.0.1", a.port)
    wait_until(lambda: synced(b), 30, what="b replicating a")
    a.client().lpush("qw:{mail}:pending", "x")
    a.client().execute_command("WAIT", 1, 10000)
    port = free_port()
    runs = os.path.join(tmp, "runs.txt")
    h = script(tmp, "h.sh", 'cat >> %s; echo >> %s\n' % (runs, runs))
    d = make_daemon(b.sock)
    d.conf({"mail": "handler = %s" % h},
           workers="metrics_listen = 127.0.0.1:%d\n" % port)
    d.start(wait_ready=False)
    d.wait_message("STATUS=", 30)
    wait_until(lambda: get("http://127.0.0.1:%d/health" % port)[0] == 503, 30,
               what="/health 503")
    d.wait_log("cannot connect to unix:%s: it is a read-only replica" % b.sock, 30)
    d.wait_message("STATUS=Redis at unix:%s is a read-only replica; reconnecting" % b.sock, 30)
    assert not any("READY=1" in m for m in d.read_messages())
    assert read_lines(runs) == []
    b.client().execute_command("REPLICAOF", "NO", "ONE")
    d.wait_message("READY=1", 30)
    wait_until(lambda: read_lines(runs) == ["x"], 30, what="x ran")
    assert d.stop() == 0
