#!/usr/bin/env node
'use strict';
/**
 * Verify one ID card image with faceid-gateway and print the answer as JSON.
 *
 *     node examples/node/verify.js examples/images/id-card.png
 *     node examples/node/verify.js https://example.com/card.jpg --check copy_warn
 *
 * Prints the response (verdict, similarity, card fields, ...) and exits 0 when
 * the verification ran, whatever the verdict: only VERDICT_MATCH means "same
 * person, genuine card". On a gRPC error it prints {"error": {...}} with the
 * code and the decoded ErrorInfo / BadRequest / RetryInfo details, and exits 1.
 *
 * Every call is billed by Tencent, so a retry must not pay twice: the call
 * carries an `idempotency-key` (one per verification, the same on every
 * retry), and a retry after UNAVAILABLE, DEADLINE_EXCEEDED or a short RetryInfo
 * gets the first answer if the gateway already has it (stderr then says the
 * answer was replayed).
 *
 * Setup, once, from the repository root: npm ci --prefix examples/node
 */
const { randomUUID } = require('node:crypto');
const { parseArgs } = require('node:util');
const common = require('./common');

const USAGE = `usage: node verify.js [--target HOST:PORT] [--timeout SECONDS] [--check NAME]...
                 [--retries N] [--idempotency-key KEY] IMAGE

Verify one ID card image with faceid-gateway and print the answer as JSON.

  IMAGE            a PNG/JPEG file or an http(s) URL of one
  --target         gateway address (default localhost:50051)
  --timeout        deadline in seconds (default 30)
  --check NAME     switch on a forgery/quality check (repeatable):
                   ${common.CHECK_NAMES.join(', ')}
  --retries N      retries after a transient error, same idempotency-key (default 2)
  --idempotency-key KEY
                   the call's idempotency-key (default: a new UUID per run)`;

function usageError(message) {
  console.error(`${USAGE}\n\nverify.js: error: ${message}`);
  process.exit(2);
}

/** Seconds to wait before retrying, or null when a retry cannot help soon. */
function retryDelay(error) {
  const delay = error.retry_info?.retry_delay;
  if (delay !== undefined) {
    const seconds = Number(String(delay).replace(/s$/, ''));
    return seconds <= 10 ? seconds : null;
  }
  return ['UNAVAILABLE', 'DEADLINE_EXCEEDED'].includes(error.code) ? 1 : null;
}

/** One VerifyIdCard call: its answer and whether it was replayed. */
function verifyOnce(client, request, metadata, timeoutSeconds) {
  return new Promise((resolve, reject) => {
    let replayed = false;
    const deadline = Date.now() + timeoutSeconds * 1000;
    const call = client.VerifyIdCard(request, metadata, { deadline }, (err, response) => {
      if (err) reject(err);
      else resolve({ response, replayed });
    });
    call.on('metadata', (headers) => {
      replayed = headers.get('idempotent-replay')[0] === 'true';
    });
  });
}

async function verifyWithRetries(client, request, values) {
  // One key per verification, sent again on every retry of it.
  const metadata = new common.grpc.Metadata();
  metadata.set('idempotency-key', values['idempotency-key'] ?? randomUUID());
  const retries = Number(values.retries);
  for (let attempt = 0; ; attempt += 1) {
    try {
      const { response, replayed } = await verifyOnce(client, request, metadata, Number(values.timeout));
      if (replayed) {
        console.error('the gateway replayed an earlier answer under this idempotency-key (not billed again)');
      }
      console.log(JSON.stringify(common.resultToObject(response), null, 2));
      return;
    } catch (err) {
      const error = common.rpcErrorToObject(err);
      const delay = retryDelay(error);
      if (attempt >= retries || delay === null) {
        console.log(JSON.stringify({ error }, null, 2));
        process.exitCode = 1;
        return;
      }
      console.error(`${error.code}; retrying in ${delay}s with the same idempotency-key`);
      await new Promise((resolve) => { setTimeout(resolve, delay * 1000); });
    }
  }
}

function main() {
  let args;
  try {
    args = parseArgs({
      allowPositionals: true,
      options: {
        target: { type: 'string', default: 'localhost:50051' },
        timeout: { type: 'string', default: '30' },
        check: { type: 'string', multiple: true, default: [] },
        retries: { type: 'string', default: '2' },
        'idempotency-key': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    usageError(err.message);
  }
  const { values, positionals } = args;
  if (values.help) {
    console.log(USAGE);
    return;
  }
  if (positionals.length !== 1) usageError('expected exactly one IMAGE');
  const unknown = values.check.filter((name) => !common.CHECK_NAMES.includes(name));
  if (unknown.length > 0) usageError(`unknown check ${unknown.join(', ')}`);

  let request;
  try {
    request = common.buildRequest(positionals[0], values.check);
  } catch (err) {
    usageError(`cannot read ${positionals[0]}: ${err.message}`);
  }
  const client = common.newClient(values.target);
  verifyWithRetries(client, request, values).finally(() => client.close());
}

main();
