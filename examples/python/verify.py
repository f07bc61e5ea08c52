#!/usr/bin/env python3
"""Verify one ID card image with faceid-gateway and print the answer as JSON.

    python examples/python/verify.py examples/images/id-card.png
    python examples/python/verify.py https://example.com/card.jpg --check copy_warn

Prints the response (verdict, similarity, card fields, ...) and exits 0 when
the verification ran, whatever the verdict: only VERDICT_MATCH means "same
person, genuine card". On a gRPC error it prints {"error": {...}} with the
code and the decoded ErrorInfo / BadRequest / RetryInfo details, and exits 1.

Setup, once, from the repository root:
    python3 -m venv .venv && .venv/bin/pip install -r examples/python/requirements.txt
    PYTHON=.venv/bin/python examples/python/generate.sh
"""

import argparse
import json
import sys

import grpc

import common


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="a PNG/JPEG file or an http(s) URL of one")
    parser.add_argument("--target", default="localhost:50051", help="gateway address (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=30, help="deadline in seconds (default %(default)s)")
    parser.add_argument("--check", action="append", default=[], choices=common.check_names(),
                        help="switch on a forgery/quality check (repeatable)")
    args = parser.parse_args()

    try:
        request = common.build_request(args.image, args.check)
    except OSError as err:
        parser.error(f"cannot read {args.image}: {err.strerror}")
    with grpc.insecure_channel(args.target) as channel:
        try:
            response = common.Stub(channel).VerifyIdCard(request, timeout=args.timeout)
        except grpc.RpcError as err:
            print(json.dumps({"error": common.rpc_error_to_dict(err)}, ensure_ascii=False, indent=2))
            return 1
    print(json.dumps(common.result_to_dict(response), ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
