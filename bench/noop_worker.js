'use strict';
/*
 * noop_worker.js - bench/run's Node no-op persistent worker (node/qworkerd
 * library): `worker = /usr/bin/node bench/noop_worker.js`, worker_inflight 10
 * in one process, as BullMQ's `new Worker(..., {concurrency: 10})`.
 * With $BENCH_STAMP_FILE set it appends "now_ns - payload_ns" to that file.
 */
const fs = require('fs');
const path = require('path');
const { performance } = require('perf_hooks');
const qworkerd = require(path.join(__dirname, '..', 'node', 'qworkerd'));

const stamp = process.env.BENCH_STAMP_FILE;
let fd = null;

qworkerd.run(async (job) => {
  if (!stamp) return;
  const now = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
  if (fd === null) fd = fs.openSync(stamp, 'a');
  fs.writeSync(fd, `${now - BigInt(job.payload.toString())}\n`);
});
