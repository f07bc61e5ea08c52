'use strict';
/**
 * Helpers shared by verify.js and verify_batch.js:
 * - load proto/faceid/v1/faceid.proto with @grpc/proto-loader and make a client;
 * - build a VerifyIdCardRequest from an image file or a URL;
 * - turn a result or an error into plain JSON-ready objects, decoding the
 *   google.rpc error details (ErrorInfo, BadRequest, RetryInfo, ...) that the
 *   gateway puts in the `grpc-status-details-bin` trailer.
 */
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
// protobufjs is the parser proto-loader uses; take that very copy for the details.
const protobuf = require(require.resolve('protobufjs', {
  paths: [path.dirname(require.resolve('@grpc/proto-loader'))],
}));

const PROTO_DIR = path.join(__dirname, '..', '..', 'proto');

const definition = protoLoader.loadSync('faceid/v1/faceid.proto', {
  includeDirs: [PROTO_DIR],
  keepCase: true, // proto field names (item_id, image_url), as in the .proto
  longs: String,
  enums: String, // "VERDICT_MATCH" rather than 1
  oneofs: true, // adds e.g. `outcome: 'result' | 'error'` to batch answers
});
const faceid = grpc.loadPackageDefinition(definition).faceid.v1;

// google.rpc.Status and the detail messages, read from the vendored protos
// (google/protobuf/*.proto imports are bundled with protobufjs).
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (_origin, target) => path.join(PROTO_DIR, target);
rpcRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
const Status = rpcRoot.lookupType('google.rpc.Status');

// The detail messages the gateway sends, by the key they get in our JSON.
const DETAIL_KEYS = {
  'google.rpc.ErrorInfo': 'error_info',
  'google.rpc.BadRequest': 'bad_request',
  'google.rpc.RetryInfo': 'retry_info',
  'google.rpc.QuotaFailure': 'quota_failure',
  'google.rpc.PreconditionFailure': 'precondition_failure',
};

const CHECK_NAMES = ['copy_warn', 'border_check_warn', 'reshoot_warn', 'detect_ps_warn', 'temp_id_warn', 'quality'];

function newClient(target) {
  return new faceid.IdCardVerificationService(target, grpc.credentials.createInsecure());
}

/** A VerifyIdCardRequest for an image path or a URL (the gateway checks the URL). */
function buildRequest(source, checks = []) {
  const request = source.includes('://') ? { image_url: source } : { image: fs.readFileSync(source) };
  if (checks.length > 0) request.checks = Object.fromEntries(checks.map((name) => [name, true]));
  return request;
}

/** A VerifyIdCardResponse as an object (proto field names; the portrait as its size). */
function resultToObject(response) {
  const { portrait, _quality, ...result } = response; // _quality: proto-loader's marker for `optional`
  return { ...result, portrait_bytes: portrait ? portrait.length : 0 };
}

/** A google.protobuf.Duration in its JSON form, e.g. "1s" or "0.25s". */
function durationText({ seconds = '0', nanos = 0 }) {
  return `${Number(seconds) + nanos / 1e9}s`;
}

/** A google.rpc.Status ({code, message, details: Any[]}) as code name, message and each known detail. */
function statusToObject(status) {
  const error = { code: grpc.status[status.code] ?? String(status.code), message: status.message };
  for (const detail of status.details ?? []) {
    const typeName = detail.type_url.slice(detail.type_url.lastIndexOf('/') + 1);
    const key = DETAIL_KEYS[typeName];
    if (!key) {
      (error.other_details ??= []).push(detail.type_url);
      continue;
    }
    const type = rpcRoot.lookupType(typeName);
    error[key] = type.toObject(type.decode(detail.value), { longs: String, enums: String });
  }
  if (error.retry_info?.retry_delay) error.retry_info.retry_delay = durationText(error.retry_info.retry_delay);
  return error;
}

/** A grpc-js error or final status as an object, with the details from `grpc-status-details-bin`. */
function rpcErrorToObject(err) {
  const [details] = err.metadata?.get('grpc-status-details-bin') ?? [];
  if (details) return statusToObject(Status.decode(details));
  // No rich status (e.g. a deadline the client enforced): code and message only.
  return { code: grpc.status[err.code], message: err.details };
}

module.exports = {
  grpc, CHECK_NAMES, newClient, buildRequest, resultToObject, statusToObject, rpcErrorToObject,
};
