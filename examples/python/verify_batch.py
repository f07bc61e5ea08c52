#!/usr/bin/env python3
"""Stream every PNG/JPEG of a folder through VerifyIdCardBatch.

    python examples/python/verify_batch.py examples/images > answers.jsonl

Writes one JSON line per image to stdout as its answer arrives (completion
order): {"item_id", "verdict", ...} or {"item_id", "error": {"code", ...}}.
The item id is the file name. Shows a progress bar on stderr and, at the end,
the trailer counts x-batch-received / x-batch-succeeded / x-batch-failed.
The whole stream has a deadline and carries a W3C `traceparent` header.

Exits 0 when every image got an answer (an error answer counts) and the
stream ended OK, 1 otherwise. Setup: see verify.py.
"""

import argparse
import json
import pathlib
import secrets
import sys

import grpc

import common

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
TRAILER_COUNTS = ("x-batch-received", "x-batch-succeeded", "x-batch-failed")


def answer_to_dict(answer):
    """One VerifyIdCardBatchResponse as a compact dict."""
    if answer.WhichOneof("outcome") == "error":
        return {"item_id": answer.item_id, "error": common.status_to_dict(answer.error)}
    result = answer.result
    return {
        "item_id": answer.item_id,
        "verdict": common.faceid_pb2.Verdict.Name(result.verdict),
        "similarity": result.similarity,
        "result_code": result.result_code,
        "request_id": result.request_id,
    }


def show_progress(done, total, width=30):
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stderr.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=pathlib.Path, help="folder of PNG/JPEG images")
    parser.add_argument("--target", default="localhost:50051", help="gateway address (default %(default)s)")
    parser.add_argument("--deadline", type=float, default=120, help="deadline of the whole stream in seconds (default %(default)s)")
    parser.add_argument("--traceparent", help="W3C trace context to send (default: a new random trace)")
    args = parser.parse_args()

    paths = sorted(p for p in args.folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        parser.error(f"no PNG or JPEG file in {args.folder}")
    traceparent = args.traceparent or f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"

    def items():
        # A generator: images are read one at a time, as gRPC flow control asks for them.
        for path in paths:
            yield common.faceid_pb2.VerifyIdCardBatchRequest(
                item_id=path.name, request=common.build_request(str(path)))

    answered = set()
    stream_error = None
    show_progress(0, len(paths))
    with grpc.insecure_channel(args.target) as channel:
        call = common.Stub(channel).VerifyIdCardBatch(
            items(), timeout=args.deadline, metadata=[("traceparent", traceparent)])
        try:
            for answer in call:
                answered.add(answer.item_id)
                print(json.dumps(answer_to_dict(answer), ensure_ascii=False), flush=True)
                show_progress(len(answered), len(paths))
        except grpc.RpcError as err:
            stream_error = common.rpc_error_to_dict(err)
        trailers = dict(call.trailing_metadata() or ())

    sys.stderr.write("\n")
    print(f"traceparent: {traceparent}", file=sys.stderr)
    for key in TRAILER_COUNTS:
        print(f"{key}: {trailers.get(key, '(missing)')}", file=sys.stderr)
    if stream_error:
        print(f"stream ended with {stream_error['code']}: {stream_error['message']}", file=sys.stderr)
    missing = [p.name for p in paths if p.name not in answered]
    if missing:
        print(f"no answer for {len(missing)} item(s): {', '.join(missing)}", file=sys.stderr)
    return 1 if missing or stream_error else 0


if __name__ == "__main__":
    sys.exit(main())
