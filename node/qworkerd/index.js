'use strict';
/*
 * Persistent workers for qworkerd (qworkerd-worker(7)), no dependencies.
 *
 *   const qworkerd = require('qworkerd');
 *   qworkerd.run(async (job, signal) => {
 *     // job: { seq, id, queue, attempt, maxAttempts, deadline, payload (Buffer) }
 *     // signal: an AbortSignal, aborted with 'timeout', 'shutdown' or 'cancelled'
 *     if (job.payload.length === 0) throw new qworkerd.PermanentError('empty');
 *   });
 *
 * Resolving answers D (done), rejecting answers F (failed, retried while
 * attempts remain); a PermanentError sends the job to dead at once. Up to
 * worker_inflight jobs ($QW_WORKER_INFLIGHT) run at a time: the daemon
 * sends no more.
 */
const net = require('net');

const PROTOCOL = 1;
const FRAME_MAX = 64 * 1024; // the most the daemon takes in one frame from us

class PermanentError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PermanentError';
  }
}

function frame(type, body = Buffer.alloc(0)) {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(1 + body.length, 0);
  head.write(type, 4, 'latin1');
  return Buffer.concat([head, body]);
}

/* D: the 4-byte length (9), 'D', the 8-byte seq, in one allocation. */
function doneFrame(seq) {
  const b = Buffer.allocUnsafe(13);
  b.writeUInt32BE(9, 0);
  b[4] = 0x44;
  b.writeBigUInt64BE(seq, 5);
  return b;
}

function seqBytes(seq) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(seq);
  return b;
}

function failed(seq, err, permanent) {
  const text = Buffer.from(String(err && err.message !== undefined ?
    (err.name && err.name !== 'Error' && err.name !== 'PermanentError' ?
      err.name + ': ' + err.message : err.message) : err));
  const flag = Buffer.from([permanent ? 1 : 0]);
  return frame('F', Buffer.concat([seqBytes(seq), flag, text.subarray(0, FRAME_MAX - 64)]));
}

function parseJob(body) {
  if (body.length < 12) throw new Error(`J frame of ${body.length + 1} bytes`);
  const seq = body.readBigUInt64BE(0);
  const mlen = body.readUInt32BE(8);
  const meta = JSON.parse(body.subarray(12, 12 + mlen).toString('utf8'));
  return {
    seq, id: meta.id, queue: meta.queue, attempt: meta.attempt,
    maxAttempts: meta.max_attempts, deadline: meta.deadline,
    payload: body.subarray(12 + mlen),
  };
}

/* Splits a byte stream into frames: feed(chunk) returns [type, body] pairs. */
class FrameReader {
  constructor() {
    this.buf = Buffer.alloc(0);
  }

  feed(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out = [];
    while (this.buf.length >= 4) {
      const n = this.buf.readUInt32BE(0);
      if (n < 1) throw new Error('frame of length 0');
      if (this.buf.length < 4 + n) break;
      out.push([this.buf.toString('latin1', 4, 5), this.buf.subarray(5, 4 + n)]);
      this.buf = this.buf.subarray(4 + n);
    }
    return out;
  }
}

/*
 * Serves jobs from the daemon on fd 3 (or options.socket) until it says
 * stop (S) and the jobs running are done; then exits 0 (unless
 * options.exit is false: the returned promise resolves instead).
 */
function run(handler, options = {}) {
  const sock = options.socket ||
    new net.Socket({ fd: Number(process.env.QW_WORKER_FD || 3), readable: true, writable: true });
  const reader = new FrameReader();
  const running = new Map(); // seq -> AbortController
  /* Answers are written together once the jobs of a read have had their
   * turn: one write (and one wake-up of the daemon) for many answers. */
  let answers = [];
  let stopping = false;
  let resolveDone;
  const done = new Promise((resolve) => { resolveDone = resolve; });

  function flush() {
    const out = answers.length === 1 ? answers[0] : Buffer.concat(answers);
    answers = [];
    if (!sock.destroyed) sock.write(out);
    finishIfIdle();
  }

  function answer(out) {
    if (answers.push(out) === 1) setImmediate(flush);
  }

  function finishIfIdle() {
    if (!stopping || running.size > 0 || answers.length > 0) return;
    sock.end(() => {
      resolveDone();
      if (options.exit !== false) process.exit(0);
    });
  }

  async function start(body) {
    const job = parseJob(body);
    const ac = new AbortController();
    running.set(job.seq, ac);
    let out;
    try {
      await handler(job, ac.signal);
      out = doneFrame(job.seq);
    } catch (err) {
      out = failed(job.seq, err, err instanceof PermanentError);
      if (!(err instanceof PermanentError)) console.error(err);
    }
    running.delete(job.seq);
    answer(out);
  }

  function cancel(body) {
    if (body.length < 8) throw new Error(`C frame of ${body.length + 1} bytes`);
    const ac = running.get(body.readBigUInt64BE(0));
    if (ac) ac.abort(body.subarray(8).toString('latin1'));
  }

  sock.on('data', (chunk) => {
    for (const [type, body] of reader.feed(chunk)) {
      if (type === 'J') start(body);
      else if (type === 'C') cancel(body);
      else if (type === 'S') { stopping = true; finishIfIdle(); }
      else throw new Error(`unknown frame type ${JSON.stringify(type)}`);
    }
  });
  sock.on('end', () => { stopping = true; finishIfIdle(); });
  sock.write(frame('R', Buffer.from(JSON.stringify({
    protocol: PROTOCOL, pid: process.pid, library: 'qworkerd-node',
  }))));
  return done;
}

module.exports = { run, PermanentError, FrameReader, frame, parseJob };
