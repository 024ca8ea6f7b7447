#!/usr/bin/node
'use strict';
/*
 * An example persistent worker for qworkerd in Node.js (qworkerd-worker(7)):
 *
 *   [queue thumbs]
 *   worker = /usr/bin/node /usr/share/doc/qworkerd/examples/worker.js
 *   worker_inflight = 16
 *
 * Payload "fail" fails (retried), "bad" fails for good (dead at once),
 * "sleep N" waits N seconds unless cancelled; anything else succeeds.
 */
const qworkerd = require('qworkerd');

qworkerd.run(async (job, signal) => {
  const payload = job.payload.toString();
  console.log(`job ${job.id} attempt ${job.attempt} of ${job.maxAttempts}: ${job.payload.length} bytes`);
  if (payload === 'fail') throw new Error('asked to fail');
  if (payload === 'bad') throw new qworkerd.PermanentError('asked to fail for good');
  if (payload.startsWith('sleep ')) {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, Number(payload.slice(6)) * 1000);
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(new Error(`cancelled: ${signal.reason}`));
      }, { once: true });
    });
  }
});
