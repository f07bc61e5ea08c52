#!/usr/bin/env bash
# Generates the Python stubs of the faceid.v1 contract into examples/python/gen/
# (message classes, type hints and the gRPC client). google.rpc comes from the
# googleapis-common-protos package, so only faceid/v1/faceid.proto is compiled.
# Run it with the Python that has requirements.txt installed:
#   PYTHON=.venv/bin/python examples/python/generate.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/gen"
rm -rf "$out"
mkdir -p "$out"
"${PYTHON:-python3}" -m grpc_tools.protoc \
    --proto_path="$here/../../proto" \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    faceid/v1/faceid.proto
echo "generated $out/faceid/v1" >&2
