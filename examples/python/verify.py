#!/usr/bin/env python3
"""Verify one ID card image with faceid-gateway and print the answer as JSON.

    python examples/python/verify.py examples/images/id-card.png
    python examples/python/verify.py https://example.com/card.jpg --check copy_warn

Prints the response (verdict, similarity, card fields, ...) and exits 0 when
the verification ran, whatever the verdict: only VERDICT_MATCH means "same
person, genuine card". On a gRPC error it prints {"error": {...}} with the
code and the decoded ErrorInfo / BadRequest / RetryInfo details, and exits 1.

Every call is billed by Tencent, so a retry must not pay twice: the call
carries an `idempotency-key` (one per verification, the same on every retry),
and a retry after UNAVAILABLE, DEADLINE_EXCEEDED or a short RetryInfo gets
the first answer if the gateway already has it (stderr then says the answer
was replayed).

Setup, once, from the repository root:
    python3 -m venv .venv && .venv/bin/pip install -r examples/python/requirements.txt
    PYTHON=.venv/bin/python examples/python/generate.sh
"""

import argparse
import json
import sys
import time
import uuid

import grpc

import common


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="a PNG/JPEG file or an http(s) URL of one")
    parser.add_argument("--target", default="localhost:50051", help="gateway address (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=30, help="deadline in seconds (default %(default)s)")
    parser.add_argument("--check", action="append", default=[], choices=common.check_names(),
                        help="switch on a forgery/quality check (repeatable)")
    parser.add_argument("--retries", type=int, default=2,
                        help="retries after a transient error, same idempotency-key (default %(default)s)")
    parser.add_argument("--idempotency-key", default=None,
                        help="the call's idempotency-key (default: a new UUID per run)")
    args = parser.parse_args()

    try:
        request = common.build_request(args.image, args.check)
    except OSError as err:
        parser.error(f"cannot read {args.image}: {err.strerror}")
    # One key per verification, sent again on every retry of it.
    metadata = [("idempotency-key", args.idempotency_key or str(uuid.uuid4()))]
    with grpc.insecure_channel(args.target) as channel:
        stub = common.Stub(channel)
        for attempt in range(args.retries + 1):
            try:
                response, call = stub.VerifyIdCard.with_call(request, timeout=args.timeout, metadata=metadata)
                break
            except grpc.RpcError as err:
                error = common.rpc_error_to_dict(err)
                delay = retry_delay(error)
                if attempt == args.retries or delay is None:
                    print(json.dumps({"error": error}, ensure_ascii=False, indent=2))
                    return 1
                print(f"{error['code']}; retrying in {delay:g}s with the same idempotency-key", file=sys.stderr)
                time.sleep(delay)
    if dict(call.initial_metadata()).get("idempotent-replay") == "true":
        print("the gateway replayed an earlier answer under this idempotency-key (not billed again)", file=sys.stderr)
    print(json.dumps(common.result_to_dict(response), ensure_ascii=False, indent=2))
    return 0


def retry_delay(error):
    """Seconds to wait before retrying, or None when a retry cannot help soon
    (input errors, a spent budget whose RetryInfo is hours away, ...)."""
    delay = error.get("retry_info", {}).get("retry_delay")
    if delay is not None:
        seconds = float(delay.rstrip("s"))
        return seconds if seconds <= 10 else None
    return 1.0 if error["code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else None


if __name__ == "__main__":
    sys.exit(main())
