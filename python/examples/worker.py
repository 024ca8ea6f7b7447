#!/usr/bin/python3
"""An example persistent worker for qworkerd (qworkerd-worker(7)).

    [queue thumbs]
    worker = /usr/bin/python3 /usr/share/doc/qworkerd/examples/worker.py
    worker_inflight = 4

Payload "fail" fails (retried), "bad" fails for good (dead at once),
"sleep N" waits N seconds unless cancelled; anything else succeeds. Each
job's payload is echoed to the log, byte count first.
"""
import qworkerd


@qworkerd.worker
def handle(job, cancel):
    print("job %s attempt %d of %d: %d bytes" % (job.id, job.attempt, job.max_attempts,
                                                len(job.payload)))
    if job.payload == b"fail":
        raise RuntimeError("asked to fail")
    if job.payload == b"bad":
        raise qworkerd.PermanentError("asked to fail for good")
    if job.payload.startswith(b"sleep "):
        if cancel.wait(float(job.payload[6:])):
            raise RuntimeError("cancelled: %s" % cancel.reason)
