'use strict';
/*
 * Tests of the qworkerd Node.js library: the test plays the daemon on fd 3
 * of the example worker (examples/worker.js), started as a child process.
 */
const test = require('node:test');
const assert = require('node:assert');
const path = require('path');
const { spawn } = require('child_process');
const { FrameReader, frame } = require('../qworkerd');

const EXAMPLE = path.join(__dirname, '..', 'examples', 'worker.js');

function job(seq, payload, meta = {}) {
  const m = Buffer.from(JSON.stringify(Object.assign({
    id: `id-${seq}`, queue: 'q', attempt: 1, max_attempts: 5, deadline: 1893456000000,
  }, meta)));
  const head = Buffer.alloc(12);
  head.writeBigUInt64BE(BigInt(seq), 0);
  head.writeUInt32BE(m.length, 8);
  return frame('J', Buffer.concat([head, m, Buffer.from(payload)]));
}

function cancel(seq, reason) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(seq));
  return frame('C', Buffer.concat([b, Buffer.from(reason)]));
}

/* The example worker with its frames as an async queue. */
function start(inflight = 1) {
  const child = spawn(process.execPath, [EXAMPLE], {
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    env: Object.assign({}, process.env, {
      NODE_PATH: path.join(__dirname, '..'), QW_WORKER_INFLIGHT: String(inflight),
    }),
  });
  const sock = child.stdio[3];
  const reader = new FrameReader();
  const frames = [];
  const waiting = [];
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  sock.on('data', (chunk) => {
    for (const f of reader.feed(chunk)) {
      if (waiting.length) waiting.shift()(f);
      else frames.push(f);
    }
  });
  return {
    child,
    output: () => out,
    send: (b) => sock.write(b),
    next: () => (frames.length ? Promise.resolve(frames.shift()) :
      new Promise((resolve) => waiting.push(resolve))),
    exited: () => new Promise((resolve) => child.on('exit', (code) => resolve(code))),
  };
}

function answer([type, body]) {
  const seq = Number(body.readBigUInt64BE(0));
  if (type === 'D') return ['D', seq];
  return ['F', seq, body[8], body.subarray(9).toString()];
}

test('ready first, with protocol 1', async () => {
  const w = start();
  const [type, body] = await w.next();
  assert.strictEqual(type, 'R');
  assert.strictEqual(JSON.parse(body).protocol, 1);
  const exited = w.exited();
  w.send(frame('S'));
  assert.strictEqual(await exited, 0);
});

test('done, failed, failed for good', async () => {
  const w = start();
  await w.next();
  w.send(job(1, 'hello'));
  assert.deepStrictEqual(answer(await w.next()), ['D', 1]);
  w.send(job(2, 'fail'));
  assert.deepStrictEqual(answer(await w.next()), ['F', 2, 0, 'asked to fail']);
  w.send(job(3, 'bad'));
  assert.deepStrictEqual(answer(await w.next()), ['F', 3, 1, 'asked to fail for good']);
  assert.match(w.output(), /job id-1 attempt 1 of 5: 5 bytes/);
  w.send(frame('S'));
  assert.strictEqual(await w.exited(), 0);
});

test('a cancel aborts the signal with its reason', async () => {
  const w = start();
  await w.next();
  w.send(job(4, 'sleep 30'));
  w.send(cancel(4, 'timeout'));
  assert.deepStrictEqual(answer(await w.next()), ['F', 4, 0, 'cancelled: timeout']);
  w.child.kill();
});

test('inflight jobs run side by side, and stop waits for them', async () => {
  const w = start(2);
  await w.next();
  w.send(job(5, 'sleep 30'));
  w.send(job(6, 'sleep 0.05'));
  assert.deepStrictEqual(answer(await w.next()), ['D', 6]);
  const exited = w.exited();
  w.send(frame('S'));
  w.send(cancel(5, 'shutdown'));
  assert.deepStrictEqual(answer(await w.next()), ['F', 5, 0, 'cancelled: shutdown']);
  assert.strictEqual(await exited, 0);
});
