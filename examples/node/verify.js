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
 * Setup, once, from the repository root: npm ci --prefix examples/node
 */
const { parseArgs } = require('node:util');
const common = require('./common');

const USAGE = `usage: node verify.js [--target HOST:PORT] [--timeout SECONDS] [--check NAME]... IMAGE

Verify one ID card image with faceid-gateway and print the answer as JSON.

  IMAGE            a PNG/JPEG file or an http(s) URL of one
  --target         gateway address (default localhost:50051)
  --timeout        deadline in seconds (default 30)
  --check NAME     switch on a forgery/quality check (repeatable):
                   ${common.CHECK_NAMES.join(', ')}`;

function usageError(message) {
  console.error(`${USAGE}\n\nverify.js: error: ${message}`);
  process.exit(2);
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
  const deadline = Date.now() + Number(values.timeout) * 1000;
  client.VerifyIdCard(request, new common.grpc.Metadata(), { deadline }, (err, response) => {
    if (err) {
      console.log(JSON.stringify({ error: common.rpcErrorToObject(err) }, null, 2));
      process.exitCode = 1;
    } else {
      console.log(JSON.stringify(common.resultToObject(response), null, 2));
    }
    client.close();
  });
}

main();
