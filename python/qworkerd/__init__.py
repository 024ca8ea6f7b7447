"""Persistent workers for qworkerd (qworkerd-worker(7)), standard library only.

A queue configured with ``worker = /usr/bin/python3 /path/to/script.py``
starts the script once and streams jobs to it on file descriptor 3::

    import qworkerd

    @qworkerd.worker
    def handle(job, cancel):
        print("got", job.id, len(job.payload), "bytes")   # goes to the log
        if job.payload == b"bad":
            raise qworkerd.PermanentError("cannot parse it")   # to dead at once
        cancel.wait(0.1)                  # a cancellable pause
        if cancel.is_set():               # cancel.reason: timeout, shutdown, cancelled
            raise RuntimeError("cancelled: " + cancel.reason)

Returning means the job succeeded (D), raising means it failed (F) and is
retried while attempts remain; PermanentError sends it to dead at once.
Jobs run on worker_inflight threads, one job per thread at a time.
"""
import json
import os
import queue
import socket
import struct
import sys
import threading
import traceback

__all__ = ["Job", "CancelEvent", "PermanentError", "ProtocolError", "run", "worker"]

PROTOCOL = 1
FRAME_MAX = 64 * 1024     # the most the daemon takes in one frame from us


class PermanentError(Exception):
    """Raised by a handler: the job goes to dead without another attempt."""


class ProtocolError(Exception):
    """The daemon sent something this library does not understand."""


class CancelEvent(threading.Event):
    """Set when the daemon cancels the job; reason says why: "timeout",
    "shutdown" or "cancelled"."""

    def __init__(self):
        super().__init__()
        self.reason = None

    def cancel(self, reason):
        self.reason = reason
        self.set()


class Job:
    """One job: id, queue, attempt (this run, from 1), max_attempts,
    deadline (Unix ms) and payload (bytes, exactly as enqueued)."""

    def __init__(self, seq, meta, payload):
        self.seq = seq
        self.id = meta["id"]
        self.queue = meta["queue"]
        self.attempt = meta["attempt"]
        self.max_attempts = meta["max_attempts"]
        self.deadline = meta["deadline"]
        self.payload = payload

    def __repr__(self):
        return "Job(id=%r, queue=%r, attempt=%d)" % (self.id, self.queue, self.attempt)


def frame(kind, body=b""):
    """A frame: 4-byte big-endian length, the type byte, the body."""
    return struct.pack(">I", 1 + len(body)) + kind + body


def parse_job(body):
    """(seq, meta, payload) of a J frame's body."""
    if len(body) < 12:
        raise ProtocolError("J frame of %d bytes" % (len(body) + 1))
    seq, mlen = struct.unpack(">QI", body[:12])
    if 12 + mlen > len(body):
        raise ProtocolError("J frame's JSON runs past its end")
    meta = json.loads(body[12:12 + mlen].decode("utf-8"))
    return seq, meta, body[12 + mlen:]


def failed(seq, error, permanent=False):
    """An F frame; the text is cut to what the daemon takes."""
    text = str(error).encode("utf-8", "replace")[:FRAME_MAX - 64]
    return frame(b"F", struct.pack(">QB", seq, 1 if permanent else 0) + text)


class _Conn:
    """The socket on fd 3: whole frames in, whole frames out (thread safe)."""

    def __init__(self, sock):
        self.sock = sock
        self.lock = threading.Lock()
        self.buf = bytearray()

    def send(self, data):
        with self.lock:
            self.sock.sendall(data)

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv(self):
        """(type, body), or None at EOF."""
        if not self._fill(4):
            return None
        (n,) = struct.unpack(">I", self.buf[:4])
        if n < 1:
            raise ProtocolError("frame of length 0")
        if not self._fill(4 + n):
            return None
        kind, body = bytes(self.buf[4:5]), bytes(self.buf[5:4 + n])
        del self.buf[:4 + n]
        return kind, body


class _Runner:
    """Runs jobs on a pool of INFLIGHT long-lived threads: starting a thread
    per job cost more than the rest of a no-op job's path together."""

    def __init__(self, handler, conn, inflight):
        self.handler = handler
        self.conn = conn
        self.inflight = inflight
        self.jobs = queue.SimpleQueue()   # (job, cancel), or None: exit
        self.lock = threading.Lock()
        self.running = {}          # seq -> CancelEvent, from J until its answer is sent
        self.threads = []

    def _loop(self):
        while True:
            item = self.jobs.get()
            if item is None:
                return
            self._run(*item)

    def _run(self, job, cancel):
        try:
            self.handler(job, cancel)
            out = frame(b"D", struct.pack(">Q", job.seq))
        except PermanentError as e:
            out = failed(job.seq, str(e) or "permanent failure", True)
        except Exception as e:          # the job failed; the worker goes on
            traceback.print_exc(file=sys.stderr)
            out = failed(job.seq, "%s: %s" % (type(e).__name__, e))
        with self.lock:
            self.running.pop(job.seq, None)
        try:
            self.conn.send(out)
        except OSError:
            pass                        # the daemon is gone; so are we soon

    def start(self, body):
        seq, meta, payload = parse_job(body)
        job, cancel = Job(seq, meta, payload), CancelEvent()
        with self.lock:
            self.running[seq] = cancel
            idle = len(self.running) > len(self.threads) and len(self.threads) < self.inflight
        if idle:                        # threads start as jobs first need them
            t = threading.Thread(target=self._loop, daemon=True, name="job-%d" % len(self.threads))
            self.threads.append(t)
            t.start()
        self.jobs.put((job, cancel))

    def cancel(self, body):
        if len(body) < 8:
            raise ProtocolError("C frame of %d bytes" % (len(body) + 1))
        (seq,) = struct.unpack(">Q", body[:8])
        with self.lock:
            ev = self.running.get(seq)
        if ev is not None:
            ev.cancel(body[8:].decode("ascii", "replace"))

    def busy(self):
        with self.lock:
            return bool(self.running)

    def finish(self):
        """Waits for the jobs still running (EOF: nothing can cancel them)."""
        for _ in self.threads:
            self.jobs.put(None)
        for t in self.threads:
            t.join()


def run(handler, fd=None, inflight=None):
    """Serves jobs from the daemon until it sends S; then returns (exit 0
    when used as the script's last line). HANDLER(job, cancel) runs on a
    pool of INFLIGHT (default $QW_WORKER_INFLIGHT) threads, one job each."""
    fd = int(os.environ.get("QW_WORKER_FD", "3")) if fd is None else fd
    inflight = int(os.environ.get("QW_WORKER_INFLIGHT", "1")) if inflight is None else inflight
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except AttributeError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
    conn = _Conn(sock)
    runner = _Runner(handler, conn, max(1, inflight))
    conn.send(frame(b"R", json.dumps({"protocol": PROTOCOL, "pid": os.getpid(),
                                      "library": "qworkerd-python"}).encode()))
    stopping = False
    while not stopping or runner.busy():
        try:
            f = conn.recv()
        except socket.timeout:
            continue                    # stopping: look whether the jobs are done
        if f is None:
            break
        kind, body = f
        if kind == b"J":
            runner.start(body)
        elif kind == b"C":
            runner.cancel(body)
        elif kind == b"S":
            # Finish what we have; cancels for it may still come.
            stopping = True
            sock.settimeout(0.05)
        else:
            raise ProtocolError("unknown frame type %r" % kind)
    runner.finish()
    sock.close()


def worker(handler):
    """Decorator: in the script being run (``__main__``), serves jobs with
    HANDLER and exits when the daemon says stop; imported elsewhere (by
    tests, say) it only returns HANDLER."""
    if getattr(handler, "__module__", None) == "__main__":
        run(handler)
        sys.exit(0)
    return handler
