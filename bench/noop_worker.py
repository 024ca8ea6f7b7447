#!/usr/bin/python3
"""noop_worker.py - bench/run's Python no-op handler, one function run two ways:

  worker = /usr/bin/python3 bench/noop_worker.py     persistent worker
                                                      (python/qworkerd library)
  handler = /usr/bin/python3 bench/noop_worker.py    exec handler: a process per
                                                      job, payload on stdin

With $BENCH_STAMP_FILE set the handler appends "now_ns - payload_ns" to that
file instead (the pickup latency; the payload is the producer's push time).
The library is found through $PYTHONPATH (bench/run sets it to python/).
"""
import os
import sys
import time

import qworkerd

STAMP = os.environ.get("BENCH_STAMP_FILE")
_stamp_fd = None


def handle(job, cancel):
    if STAMP is None:
        return
    now = time.time_ns()
    global _stamp_fd
    if _stamp_fd is None:
        _stamp_fd = os.open(STAMP, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    os.write(_stamp_fd, b"%d\n" % (now - int(job.payload)))


class _ExecJob:
    def __init__(self, payload):
        self.payload = payload


if __name__ == "__main__":
    if "QW_WORKER_FD" in os.environ:
        qworkerd.run(handle)
    else:
        handle(_ExecJob(sys.stdin.buffer.read()), None)
