"""Redis Sentinel (SPEC 15): a master, a replica and three redis-sentinel
processes on loopback. qworkerd finds the master through the sentinels,
follows it through a failover (a planned SENTINEL FAILOVER, or the master
killed) without a restart, and every job is accounted for. With
wait_replicas, a claim or result no replica confirmed holds work back."""
import os
import signal
import subprocess
import textwrap

import pytest

from conftest import (TOP, Daemon, QWORKERD, RedisServer, SLOW, free_port, get, read_lines,
                      script, stats, synced, wait_until)
import redis as redislib
from test_cli import EX_CONFIG, run

NAME = "mymaster"


class Sentinels:
    """Three redis-sentinel processes watching one master, quorum 2, which
    call a master down after 1 s without an answer."""

    def __init__(self, tmp, master_port, password=None):
        self.tmp = tmp
        self.password = password
        self.master_port = master_port
        self.procs = []
        self.ports = []

    def start(self, n=3):
        for i in range(n):
            port = free_port()
            conf = os.path.join(self.tmp, "sentinel-%d.conf" % i)
            with open(conf, "w") as f:
                f.write(textwrap.dedent("""\
                    port %d
                    bind 127.0.0.1
                    dir %s
                    logfile %s
                    sentinel monitor %s 127.0.0.1 %d 2
                    sentinel down-after-milliseconds %s 1000
                    sentinel failover-timeout %s 5000
                    """ % (port, self.tmp, os.path.join(self.tmp, "sentinel-%d.log" % i),
                           NAME, self.master_port, NAME, NAME)))
                if self.password:
                    f.write("requirepass %s\nsentinel sentinel-pass %s\n"
                            % (self.password, self.password))
            self.procs.append(subprocess.Popen(["redis-sentinel", conf]))
            self.ports.append(port)
        wait_until(self.ready, 60, interval=0.1, what="sentinels that know each other")

    def client(self, i=0):
        return redislib.Redis(host="127.0.0.1", port=self.ports[i], password=self.password,
                              decode_responses=True)

    def ready(self):
        """Every sentinel knows the replica and the other sentinels."""
        try:
            return all(len(self.client(i).execute_command("SENTINEL", "REPLICAS", NAME)) >= 1
                       and len(self.client(i).execute_command("SENTINEL", "SENTINELS", NAME))
                       >= len(self.ports) - 1 for i in range(len(self.ports)))
        except redislib.exceptions.ConnectionError:
            return False

    def master(self):
        ip, port = self.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", NAME)
        return "%s:%s" % (ip, port)

    def addresses(self):
        return ", ".join("127.0.0.1:%d" % p for p in self.ports)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


def start_ha(servers, tmp, password=None):
    """(master, replica, sentinels), the replica in sync."""
    master = servers()
    replica = servers()
    replica.client().execute_command("REPLICAOF", "127.0.0.1", master.port)
    wait_until(lambda: synced(replica), 30, what="replica in sync")
    s = Sentinels(tmp, master.port, password)
    return master, replica, s


@pytest.fixture
def ha(servers, tmp):
    master, replica, s = start_ha(servers, tmp)
    try:
        s.start()
        yield master, replica, s
    finally:
        s.stop()


@pytest.fixture
def make_daemon(tmp):
    made = []

    def make(sentinels, queue_body, redis_extra="", workers=""):
        d = Daemon(os.path.join(tmp, "d%d" % len(made)), None)
        os.makedirs(d.tmp)
        d.write_conf("[redis]\nsentinels = %s\nmaster_name = %s\n%s\n"
                     "[workers]\ninstance = test-1\nlog_level = debug\n%s\n"
                     "[queue work]\n%s\n" % (sentinels.addresses(), NAME, redis_extra,
                                             workers, queue_body))
        made.append(d)
        return d
    yield make
    for d in made:
        try:
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
        finally:
            d.kill()


def recorder(tmp):
    """A handler that appends its payload to runs.txt."""
    runs = os.path.join(tmp, "runs.txt")
    h = script(tmp, "h.sh", 'p=$(cat)\necho "$p" >> %s\n' % runs)
    return h, runs


def succeeded(client):
    try:
        return stats(client, "work").get("succeeded", 0)
    except redislib.exceptions.ConnectionError:
        return 0


def settled(client):
    """Nothing left in pending, scheduled or any active hash of the queue."""
    return (client.llen("qw:{work}:pending") == 0 and client.zcard("qw:{work}:scheduled") == 0
            and not any(client.hlen(k) for k in client.scan_iter("qw:{work}:active:*")))


def test_the_daemon_finds_the_master_through_the_sentinels(ha, make_daemon, tmp):
    master, replica, s = ha
    h, runs = recorder(tmp)
    port = free_port()
    d = make_daemon(s, "handler = %s" % h, workers="metrics_listen = 127.0.0.1:%d" % port)
    d.start()
    d.wait_log("sentinel: master %s at 127.0.0.1:%d" % (NAME, master.port))
    rm = master.client()
    rm.lpush("qw:{work}:pending", *["job-%d" % i for i in range(20)])
    wait_until(lambda: succeeded(rm) == 20, 30, what="20 succeeded")
    assert sorted(read_lines(runs)) == sorted("job-%d" % i for i in range(20))
    status, body = get("http://127.0.0.1:%d/health" % port)
    assert status == 200 and body == "ok\nmaster %s at 127.0.0.1:%d\n" % (NAME, master.port)
    d.wait_message("master %s at 127.0.0.1:%d" % (NAME, master.port))
    # Nothing was ever taken from the replica.
    assert replica.client().llen("qw:{work}:pending") == 0

    # A lost connection has the sentinels asked again: the same master.
    rm.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    d.wait_log("sentinel: master %s at 127.0.0.1:%d: " % (NAME, master.port))
    d.wait_log("sentinel: master %s is still at 127.0.0.1:%d (127.0.0.1:%d: "
               % (NAME, master.port, master.port))
    rm.lpush("qw:{work}:pending", "after")
    wait_until(lambda: succeeded(rm) == 21, 30, what="a job after the reconnect")
    assert d.stop() == 0


def run_through_failover(ha, make_daemon, tmp, fail_over, n, redis_extra=""):
    """Pushes N jobs (replicated before anything runs), lets FAIL_OVER
    move the master while they run, and waits until the new master holds
    no job anywhere. Returns (daemon, payloads run, new master)."""
    master, replica, s = ha
    h, runs = recorder(tmp)
    d = make_daemon(s, "handler = %s\nretry_base = 100ms" % h, redis_extra=redis_extra,
                    workers="concurrency = 4\nmetrics_listen = 127.0.0.1:%d" % free_port())
    d.start()
    rm = master.client()
    want = ["job-%d" % i for i in range(n)]
    for i in range(0, n, 500):
        rm.lpush("qw:{work}:pending", *want[i:i + 500])
    assert rm.execute_command("WAIT", 1, 10000) == 1
    wait_until(lambda: len(read_lines(runs)) >= n // 10, 60, what="a tenth of the jobs run")
    fail_over(master, replica, s)
    wait_until(lambda: s.master() == "127.0.0.1:%d" % replica.port, 60, what="the failover")
    d.wait_log("sentinel: master %s at 127.0.0.1:%d (moved from 127.0.0.1:%d"
               % (NAME, replica.port, master.port), 60)
    rr = replica.client()
    wait_until(lambda: set(read_lines(runs)) == set(want) and settled(rr), 60 * SLOW,
               what="every job run and settled on the new master")
    assert d.proc.poll() is None, "the same process followed the master"
    assert rr.llen("qw:{work}:dead") == 0
    return d, read_lines(runs), rr


def duplicates(ran):
    return len(ran) - len(set(ran))


def test_a_planned_failover_is_followed_without_a_restart(ha, make_daemon, tmp):
    def fail_over(master, replica, s):
        s.client(1).execute_command("SENTINEL", "FAILOVER", NAME)
        # The new master needs a replica to confirm anything: the old
        # master becomes one (as the sentinels make it, only sooner).
        wait_until(lambda: s.master() == "127.0.0.1:%d" % replica.port, 60,
                   what="the failover")
        master.client().execute_command("REPLICAOF", "127.0.0.1", replica.port)

    d, ran, rr = run_through_failover(ha, make_daemon, tmp, fail_over, 2000,
                                      redis_extra="wait_replicas = 1")
    d.wait_log("+switch-master from sentinel")
    assert duplicates(ran) == 0, "nothing runs twice"
    # /health and STATUS= say where the master went, and why.
    master, replica, s = ha
    moved = "master %s at 127.0.0.1:%d (moved from 127.0.0.1:%d: +switch-master from " \
        "sentinel" % (NAME, replica.port, master.port)
    listen = [l for l in open(d.conf_path) if l.startswith("metrics_listen")][0]
    status, body = get("http://%s/health" % listen.split("=")[1].strip())
    assert status == 200 and body.startswith("ok\n" + moved), body
    d.wait_message(moved)
    assert d.stop() == 0


def test_a_killed_master_is_replaced_and_nothing_is_lost(ha, make_daemon, tmp):
    def fail_over(master, replica, s):
        master.proc.kill()
        master.proc.wait(10)
        # The new master needs a replica to confirm anything: the old one
        # comes back empty as its replica (as the sentinels would make it,
        # only sooner).
        wait_until(lambda: s.master() == "127.0.0.1:%d" % replica.port, 60,
                   what="the failover")
        RedisServer.start(master, "--port", str(master.port), "--bind", "127.0.0.1",
                          "--replicaof", "127.0.0.1", str(replica.port))
        wait_until(lambda: synced(master), 60, what="the old master replicating the new one")

    d, ran, rr = run_through_failover(ha, make_daemon, tmp, fail_over, 2000,
                                      redis_extra="wait_replicas = 1")
    print("wait_replicas = 1: %d of 2000 jobs ran twice" % duplicates(ran))
    assert duplicates(ran) == 0
    assert d.stop() == 0


def test_without_wait_a_killed_master_may_cost_duplicates_only(ha, make_daemon, tmp):
    def fail_over(master, replica, s):
        master.proc.kill()
        master.proc.wait(10)

    d, ran, rr = run_through_failover(ha, make_daemon, tmp, fail_over, 2000)
    # Results the old master acknowledged but never replicated were lost
    # with it: those jobs ran again (SPEC 4: the ack did not reach Redis
    # for good). None is lost.
    print("wait_replicas = 0: %d acknowledged results lost in the failover, so as many "
          "jobs ran twice" % duplicates(ran))
    assert d.stop() == 0


def test_an_unconfirmed_claim_starts_nothing_until_a_replica_confirms(ha, make_daemon, tmp):
    """wait_replicas = 1 with the replica stopped: jobs are taken (WAIT
    has to follow a write) but none starts; they go back to pending and
    run once each when the replica is back."""
    master, replica, s = ha
    h, runs = recorder(tmp)
    d = make_daemon(s, "handler = %s" % h, redis_extra="wait_replicas = 1\n"
                    "wait_timeout = 200ms")
    d.start()
    rm = master.client()
    rm.lpush("qw:{work}:pending", *["before-%d" % i for i in range(5)])
    wait_until(lambda: succeeded(rm) == 5, 30, what="5 confirmed and run")

    replica.stop()
    rm.lpush("qw:{work}:pending", *["held-%d" % i for i in range(5)])
    d.wait_log("jobs taken are not started: UNCONFIRMED only 0 of 1 replicas confirmed "
               "the write within 200ms; they go back to pending", 30)
    # Given back, not run: taken again and given back while the replica is away.
    wait_until(lambda: rm.llen("qw:{work}:pending") == 5, 30, what="given back")
    d.wait_log("results cannot be written: UNCONFIRMED", 30)
    assert sorted(read_lines(runs)) == sorted("before-%d" % i for i in range(5))

    RedisServer.start(replica, "--port", str(replica.port), "--bind", "127.0.0.1",
                      "--replicaof", "127.0.0.1", str(master.port))
    wait_until(lambda: succeeded(rm) == 10, 60, what="the held jobs run")
    wait_until(lambda: settled(rm), 30, what="nothing left in flight")
    ran = read_lines(runs)
    assert sorted(ran) == sorted(["before-%d" % i for i in range(5)] +
                                 ["held-%d" % i for i in range(5)])
    d.wait_log("results can be written again", 30)
    assert d.stop() == 0


def test_a_sentinel_password_from_the_credentials_directory(servers, make_daemon, tmp):
    master, replica, s = start_ha(servers, tmp, password="s3cret")
    try:
        s.start()
        creds = os.path.join(tmp, "creds")
        os.makedirs(creds)
        with open(os.path.join(creds, "sentinel.pass"), "w") as f:
            f.write("s3cret\n")
        h, runs = recorder(tmp)
        d = make_daemon(s, "handler = %s" % h)
        d.start(env={"CREDENTIALS_DIRECTORY": creds})
        d.wait_log("sentinel: master %s at 127.0.0.1:%d" % (NAME, master.port))
        d.wait_log("sentinel: listening for +switch-master")
        master.client().lpush("qw:{work}:pending", "x")
        wait_until(lambda: read_lines(runs) == ["x"], 30, what="x ran")
        assert d.stop() == 0
    finally:
        s.stop()


# config text (with {h} for a handler, {d} for the test's directory) -> (line, words)
BAD = {
    "sentinels_alone": ("[redis]\nsentinels = 127.0.0.1:26379\n", 2,
                        ["sentinels", "master_name must be set"]),
    "master_name_alone": ("[redis]\nprefix = qw\nmaster_name = m\n", 3,
                          ["master_name", "sentinels must be set"]),
    "with_address": ("[redis]\nsentinels = 127.0.0.1:26379\nmaster_name = m\n"
                     "address = 127.0.0.1:6379\n", 4, ["address and sentinels"]),
    "host_name": ("[redis]\nsentinels = 127.0.0.1:26379, sentinel.example:26379\n"
                  "master_name = m\n", 2, ["sentinels", "'sentinel.example:26379'",
                                           "not IP:PORT"]),
    "no_port": ("[redis]\nsentinels = 127.0.0.1\nmaster_name = m\n", 2,
                ["sentinels", "'127.0.0.1'"]),
    "twice": ("[redis]\nsentinels = 127.0.0.1:1, 127.0.0.1:1\nmaster_name = m\n", 2,
              ["127.0.0.1:1 is named twice"]),
    "empty_entry": ("[redis]\nsentinels = 127.0.0.1:1,,127.0.0.1:2\nmaster_name = m\n", 2,
                    ["sentinels", "''"]),
    "bad_name": ("[redis]\nsentinels = 127.0.0.1:1\nmaster_name = my\x01master\n", 3,
                 ["master_name"]),
    "password_file": ("[redis]\nsentinels = 127.0.0.1:1\nmaster_name = m\n"
                      "sentinel_password_file = {d}/nope.pass\n", 4,
                      ["sentinel_password_file", "{d}/nope.pass"]),
    "password_without_sentinels": ("[redis]\nsentinel_password_file = {d}/nope.pass\n", 2,
                                   ["sentinel_password_file", "sentinels are not set"]),
    "wait_timeout": ("[redis]\nwait_replicas = 1\nwait_timeout = 5s\n[workers]\n"
                     "lease_timeout = 10s\n", 3, ["wait_timeout", "quarter of lease_timeout"]),
    "wait_replicas": ("[redis]\nwait_replicas = -1\n", 2, ["wait_replicas"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sentinel_config(tmp, case):
    text, line, words = BAD[case]
    h = script(tmp, "h.sh", "exit 0\n")
    path = os.path.join(tmp, "bad.conf")
    with open(path, "w") as f:
        f.write(text.format(h=h, d=tmp) + "[queue q]\nhandler = %s\n" % h)
    p = run("-t", "-c", path)
    err = p.stderr.decode()
    assert p.returncode == EX_CONFIG, (p.returncode, err)
    assert "%s:%d: " % (path, line) in err, err
    for w in words:
        assert w.format(d=tmp) in err, (w, err)


def test_wait_timeout_is_checked_only_with_wait_replicas(tmp):
    h = script(tmp, "h.sh", "exit 0\n")
    path = os.path.join(tmp, "q.conf")
    with open(path, "w") as f:
        f.write("[redis]\nwait_timeout = 1s\n[workers]\nlease_timeout = 2s\n[queue q]\n"
                "handler = %s\n" % h)
    p = run("-t", "-c", path)
    assert p.returncode == 0, p.stderr.decode()


def test_an_empty_sentinel_pass_credential_is_named(tmp):
    h = script(tmp, "h.sh", "exit 0\n")
    path = os.path.join(tmp, "q.conf")
    with open(path, "w") as f:
        f.write("[redis]\nsentinels = 127.0.0.1:1\nmaster_name = m\n[queue q]\n"
                "handler = %s\n" % h)
    open(os.path.join(tmp, "sentinel.pass"), "w").close()
    p = subprocess.run([QWORKERD, "-t", "-c", path],
                       env=dict(os.environ, CREDENTIALS_DIRECTORY=tmp),
                       stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.returncode == EX_CONFIG
    assert "sentinel_password_file: %s/sentinel.pass: empty first line" % tmp in \
        p.stderr.decode()
    p = run("-t", "-c", path)
    assert p.returncode == 0, p.stderr.decode()


def test_a_master_that_refuses_our_password_is_named_and_left(ha, make_daemon, tmp):
    """The master is checked with AUTH and ROLE before any connection goes
    there: a wrong password is logged once at err, STATUS= says why, and
    the daemon waits (it is not ready) until it can work."""
    master, replica, s = ha
    pw = os.path.join(tmp, "redis.pass")
    with open(pw, "w") as f:
        f.write("wrong\n")
    h, runs = recorder(tmp)
    d = make_daemon(s, "handler = %s" % h, redis_extra="password_file = %s" % pw)
    d.start(wait_ready=False)
    d.wait_log("error: sentinel: master candidate 127.0.0.1:%d: AUTH failed: ERR AUTH"
               % master.port, 30)
    d.wait_message("STATUS=waiting for Redis at master %s (no sentinel of 3 named one "
                   "that answers; last: 127.0.0.1:%d: AUTH failed" % (NAME, master.port), 30)
    # Said loudly once, however often it is tried.
    d.wait_log("sentinel: master %s (no sentinel of 3" % NAME, 30)
    assert d.log().count("error: sentinel:") == 1
    assert not any("READY=1" in m for m in d.read_messages())


def test_a_reload_may_not_change_the_sentinels(ha, make_daemon, tmp):
    master, replica, s = ha
    h, runs = recorder(tmp)
    d = make_daemon(s, "handler = %s" % h)
    d.start()
    with open(d.conf_path) as f:
        text = f.read()
    with open(d.conf_path, "w") as f:
        f.write(text.replace("master_name = %s" % NAME, "master_name = other"))
    d.signal(signal.SIGHUP)
    d.wait_log("reload refused, old configuration kept: sentinels and master_name cannot "
               "change without a restart")
    master.client().lpush("qw:{work}:pending", "still")
    wait_until(lambda: read_lines(runs) == ["still"], 30, what="the job run")
    assert d.stop() == 0


def test_the_example_configuration_checks(tmp):
    """etc/qworkerd-sentinel.conf passes -t (with a handler that exists here)."""
    h = script(tmp, "h.sh", "exit 0\n")
    with open(os.path.join(TOP, "etc", "qworkerd-sentinel.conf")) as f:
        text = f.read()
    path = os.path.join(tmp, "sentinel.conf")
    with open(path, "w") as f:
        f.write(text.replace("/usr/libexec/send-mail", h))
    p = run("-t", "-c", path)
    assert p.returncode == 0, p.stderr.decode()
