#!/usr/bin/env node
'use strict';
/**
 * Stream every PNG/JPEG of a folder through VerifyIdCardBatch.
 *
 *     node examples/node/verify_batch.js examples/images > answers.jsonl
 *
 * Writes one JSON line per image to stdout as its answer arrives (completion
 * order): {"item_id", "verdict", ...} or {"item_id", "error": {"code", ...}}.
 * The item id is the file name. Shows a progress bar on stderr and, at the end,
 * the trailer counts x-batch-received / x-batch-succeeded / x-batch-failed.
 * The whole stream has a deadline and carries a W3C `traceparent` header.
 *
 * Exits 0 when every image got an answer (an error answer counts) and the
 * stream ended OK, 1 otherwise. Setup: see verify.js.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const common = require('./common');

const IMAGE_SUFFIXES = new Set(['.png', '.jpg', '.jpeg']);
const TRAILER_COUNTS = ['x-batch-received', 'x-batch-succeeded', 'x-batch-failed'];

const USAGE = `usage: node verify_batch.js [--target HOST:PORT] [--deadline SECONDS] [--traceparent VALUE] FOLDER

Stream every PNG/JPEG of a folder through VerifyIdCardBatch.

  FOLDER           folder of PNG/JPEG images
  --target         gateway address (default localhost:50051)
  --deadline       deadline of the whole stream in seconds (default 120)
  --traceparent    W3C trace context to send (default: a new random trace)`;

function usageError(message) {
  console.error(`${USAGE}\n\nverify_batch.js: error: ${message}`);
  process.exit(2);
}

/** One VerifyIdCardBatchResponse as a compact object. */
function answerToObject(answer) {
  if (answer.outcome === 'error') return { item_id: answer.item_id, error: common.statusToObject(answer.error) };
  const { verdict, similarity = 0, result_code, request_id } = answer.result;
  return { item_id: answer.item_id, verdict, similarity, result_code, request_id };
}

function showProgress(done, total, width = 30) {
  const filled = Math.floor((width * done) / total);
  process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`);
}

function parseCommandLine() {
  try {
    const { values, positionals } = parseArgs({
      allowPositionals: true,
      options: {
        target: { type: 'string', default: 'localhost:50051' },
        deadline: { type: 'string', default: '120' },
        traceparent: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      console.log(USAGE);
      process.exit(0);
    }
    if (positionals.length !== 1) usageError('expected exactly one FOLDER');
    return { ...values, folder: positionals[0] };
  } catch (err) {
    return usageError(err.message);
  }
}

async function main() {
  const args = parseCommandLine();
  let names;
  try {
    names = fs.readdirSync(args.folder, { withFileTypes: true })
      .filter((entry) => entry.isFile() && IMAGE_SUFFIXES.has(path.extname(entry.name).toLowerCase()))
      .map((entry) => entry.name)
      .sort();
  } catch (err) {
    usageError(`cannot read ${args.folder}: ${err.message}`);
  }
  if (names.length === 0) usageError(`no PNG or JPEG file in ${args.folder}`);
  const traceparent = args.traceparent
    ?? `00-${crypto.randomBytes(16).toString('hex')}-${crypto.randomBytes(8).toString('hex')}-01`;

  const metadata = new common.grpc.Metadata();
  metadata.set('traceparent', traceparent);
  const client = common.newClient(args.target);
  const call = client.VerifyIdCardBatch(metadata, { deadline: Date.now() + Number(args.deadline) * 1000 });

  const answered = new Set();
  showProgress(0, names.length);
  call.on('data', (answer) => {
    answered.add(answer.item_id);
    console.log(JSON.stringify(answerToObject(answer)));
    showProgress(answered.size, names.length);
  });
  call.on('error', () => {}); // a failed stream is reported from its final status below
  let ended = false;
  const finalStatus = new Promise((resolve) => {
    call.on('status', (status) => {
      ended = true;
      resolve(status);
    });
  });
  // 'end' comes once every answer still buffered in the stream has been emitted as 'data'.
  const allRead = new Promise((resolve) => call.on('end', resolve));

  // Images are read one at a time, and sending waits whenever HTTP/2 flow control pushes back.
  for (const name of names) {
    if (ended) break;
    const item = { item_id: name, request: common.buildRequest(path.join(args.folder, name)) };
    if (!call.write(item)) await new Promise((resolve) => { call.once('drain', resolve); finalStatus.then(resolve); });
  }
  call.end();
  const [status] = await Promise.all([finalStatus, allRead]);
  client.close();

  process.stderr.write('\n');
  console.error(`traceparent: ${traceparent}`);
  for (const key of TRAILER_COUNTS) console.error(`${key}: ${status.metadata.get(key)[0] ?? '(missing)'}`);
  const streamFailed = status.code !== common.grpc.status.OK;
  if (streamFailed) {
    const error = common.rpcErrorToObject(status);
    console.error(`stream ended with ${error.code}: ${error.message}`);
  }
  const missing = names.filter((name) => !answered.has(name));
  if (missing.length > 0) console.error(`no answer for ${missing.length} item(s): ${missing.join(', ')}`);
  process.exitCode = missing.length > 0 || streamFailed ? 1 : 0;
}

main();
