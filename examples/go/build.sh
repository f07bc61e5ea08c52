#!/usr/bin/env bash
# Builds the Go example client, examples/go/main.go, into OUT_DIR/faceid-verify
# (default: examples/go/bin). Everything comes from Debian 12 packages, with no
# Go module proxy: GOPATH mode (GO111MODULE=off) against /usr/share/gocode.
#
#   apt-get install --no-install-recommends golang-go golang-google-grpc-dev \
#       golang-google-protobuf-dev protobuf-compiler protoc-gen-go protoc-gen-go-grpc
#   examples/go/build.sh [OUT_DIR]
#
# The stubs are generated from proto/ at every build, into a throwaway GOPATH:
#   - faceid/v1/faceid.proto at its go_package import path;
#   - the vendored google/rpc and google/api protos under faceidexample/google/...
#     Debian's golang-google-genproto-dev has these packages too, but generated
#     by the old golang/protobuf 1.3 generator, which does not mix with the
#     stubs protoc-gen-go 1.28 writes. main.go therefore uses its own copies.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto="$here/../../proto"
out=$(mkdir -p "${1:-$here/bin}" && cd "${1:-$here/bin}" && pwd)

for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is not installed (see examples/go/README.md)" >&2; exit 1; }
done
[[ -d /usr/share/gocode/src/google.golang.org/grpc ]] ||
    { echo "build.sh: golang-google-grpc-dev is not installed (see examples/go/README.md)" >&2; exit 1; }

gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src"

# Mgoogle/...=import path: where the vendored google protos go, for both plugins.
go_opts=Mgoogle/rpc/status.proto=faceidexample/google/rpc/statuspb
go_opts+=,Mgoogle/rpc/error_details.proto=faceidexample/google/rpc/errdetailspb
go_opts+=,Mgoogle/api/annotations.proto=faceidexample/google/api/annotationspb
go_opts+=,Mgoogle/api/http.proto=faceidexample/google/api/annotationspb

protoc --proto_path="$proto" \
    --go_out="$gopath/src" --go_opt="$go_opts" \
    --go-grpc_out="$gopath/src" --go-grpc_opt="$go_opts" \
    faceid/v1/faceid.proto google/rpc/status.proto google/rpc/error_details.proto \
    google/api/annotations.proto google/api/http.proto

mkdir -p "$gopath/src/faceidexample/cmd/faceid-verify"
cp "$here/main.go" "$gopath/src/faceidexample/cmd/faceid-verify/"
if [[ -z ${GOCACHE:-} && -z ${XDG_CACHE_HOME:-} && -z ${HOME:-} ]]; then
    export GOCACHE="$gopath/cache"  # go needs somewhere to cache builds
fi
(
    cd "$gopath/src/faceidexample/cmd/faceid-verify"
    # GOPATH mode: our GOPATH first, then Debian's libraries. No cgo, so no C compiler.
    export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS= CGO_ENABLED=0
    go vet .
    go build -o "$out/faceid-verify" .
)
echo "built $out/faceid-verify" >&2
