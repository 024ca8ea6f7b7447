"""Unit tests of the qworkerd Python library: the test plays the daemon on
one end of a socketpair, the library serves the other end on a thread."""
import json
import socket
import struct
import threading
import time
import unittest

import qworkerd


def frame(kind, body=b""):
    return struct.pack(">I", 1 + len(body)) + kind + body


def job(seq, payload=b"", **meta):
    m = {"id": "id-%d" % seq, "queue": "q", "attempt": 1, "max_attempts": 5,
         "deadline": 1893456000000}
    m.update(meta)
    j = json.dumps(m).encode()
    return frame(b"J", struct.pack(">QI", seq, len(j)) + j + payload)


class Daemon:
    """The test's end: sends frames, reads whole frames with a timeout."""

    def __init__(self, handler, inflight=1):
        self.sock, theirs = socket.socketpair()
        self.sock.settimeout(10)
        self.buf = b""
        self.thread = threading.Thread(target=qworkerd.run,
                                       args=(handler, theirs.detach(), inflight), daemon=True)
        self.thread.start()

    def send(self, data):
        self.sock.sendall(data)

    def recv(self):
        while len(self.buf) < 4 or len(self.buf) < 4 + struct.unpack(">I", self.buf[:4])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        n = struct.unpack(">I", self.buf[:4])[0]
        kind, body = self.buf[4:5], self.buf[5:4 + n]
        self.buf = self.buf[4 + n:]
        return kind, body

    def answer(self):
        kind, body = self.recv()
        (seq,) = struct.unpack(">Q", body[:8])
        if kind == b"D":
            return "D", seq
        return "F", seq, body[8], body[9:].decode()


class LibraryTest(unittest.TestCase):
    def test_ready_first_with_protocol_1(self):
        d = Daemon(lambda job, cancel: None)
        kind, body = d.recv()
        self.assertEqual(kind, b"R")
        self.assertEqual(json.loads(body)["protocol"], 1)
        d.send(frame(b"S"))
        d.thread.join(5)
        self.assertFalse(d.thread.is_alive())

    def test_job_fields_and_payload_bytes(self):
        seen = []
        d = Daemon(lambda job, cancel: seen.append(job))
        d.recv()
        payload = bytes(range(256)) * 10
        d.send(job(7, payload, attempt=2))
        self.assertEqual(d.answer(), ("D", 7))
        (j,) = seen
        self.assertEqual((j.seq, j.id, j.queue, j.attempt, j.max_attempts, j.deadline),
                         (7, "id-7", "q", 2, 5, 1893456000000))
        self.assertEqual(j.payload, payload)

    def test_failures_and_permanent_failures(self):
        def handler(job, cancel):
            if job.payload == b"perm":
                raise qworkerd.PermanentError("no good")
            raise ValueError("try again")
        d = Daemon(handler)
        d.recv()
        d.send(job(1, b"perm"))
        self.assertEqual(d.answer(), ("F", 1, 1, "no good"))
        d.send(job(2, b"other"))
        self.assertEqual(d.answer(), ("F", 2, 0, "ValueError: try again"))

    def test_cancel_sets_the_event_with_its_reason(self):
        reasons = []

        def handler(job, cancel):
            self.assertTrue(cancel.wait(10))
            reasons.append(cancel.reason)
            raise RuntimeError("cancelled")
        d = Daemon(handler)
        d.recv()
        d.send(job(3))
        d.send(frame(b"C", struct.pack(">Q", 3) + b"timeout"))
        self.assertEqual(d.answer(), ("F", 3, 0, "RuntimeError: cancelled"))
        self.assertEqual(reasons, ["timeout"])

    def test_inflight_jobs_run_side_by_side(self):
        both = threading.Barrier(2, timeout=10)
        d = Daemon(lambda job, cancel: both.wait(), inflight=2)
        d.recv()
        d.send(job(1) + job(2))
        self.assertEqual(sorted([d.answer(), d.answer()]), [("D", 1), ("D", 2)])

    def test_jobs_run_on_at_most_inflight_threads(self):
        threads = set()
        d = Daemon(lambda job, cancel: threads.add(threading.current_thread()), inflight=2)
        d.recv()
        for seq in range(1, 41, 2):
            d.send(job(seq) + job(seq + 1))
            self.assertEqual(sorted([d.answer(), d.answer()]), [("D", seq), ("D", seq + 1)])
        self.assertLessEqual(len(threads), 2)
        d.send(frame(b"S"))
        d.thread.join(5)
        self.assertFalse(d.thread.is_alive())

    def test_stop_finishes_running_jobs_and_takes_their_cancel(self):
        started = threading.Event()

        def handler(job, cancel):
            started.set()
            cancel.wait(10)
            raise RuntimeError(cancel.reason)
        d = Daemon(handler)
        d.recv()
        d.send(job(9))
        started.wait(10)
        d.send(frame(b"S"))
        time.sleep(0.1)
        self.assertTrue(d.thread.is_alive())
        d.send(frame(b"C", struct.pack(">Q", 9) + b"shutdown"))
        self.assertEqual(d.answer(), ("F", 9, 0, "RuntimeError: shutdown"))
        d.thread.join(5)
        self.assertFalse(d.thread.is_alive())
        self.assertIsNone(d.recv())

    def test_decorator_only_runs_in_main(self):
        def handler(job, cancel):
            pass
        self.assertIs(qworkerd.worker(handler), handler)


if __name__ == "__main__":
    unittest.main()
