#!/usr/bin/env bash
# Builds the Java example client, examples/java/FaceidVerify.java, into OUT_DIR
# (default: examples/java/build): the classes and a launcher,
# OUT_DIR/faceid-verify. Everything comes from Debian 12 packages (the jars in
# /usr/share/java), with plain protoc and javac: no Maven or Gradle.
#
#   apt-get install --no-install-recommends openjdk-17-jdk-headless protobuf-compiler \
#       protobuf-compiler-grpc-java-plugin libgrpc-java libprotobuf-java libguava-java \
#       libgoogle-gson-java libperfmark-java libnetty-java libgeronimo-annotation-1.3-spec-java
#   examples/java/build.sh [OUT_DIR]
#
# The stubs are generated from proto/ at every build, into a temporary folder:
# faceid/v1/faceid.proto with the grpc-java plugin, and the vendored
# google/rpc and google/api protos (com.google.rpc.ErrorInfo etc.: Debian's
# libgoogle-common-protos-java 1.16 predates ErrorInfo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto="$here/../../proto"
out=$(mkdir -p "${1:-$here/build}" && cd "${1:-$here/build}" && pwd)
jars=/usr/share/java

for tool in java javac protoc /usr/bin/grpc_java_plugin; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is not installed (see examples/java/README.md)" >&2; exit 1; }
done

# What grpc-java needs at run time, from the Debian packages above (netty is
# the transport; perfmark, guava and gson are grpc-core's own dependencies).
runtime=(grpc-api grpc-context grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub
    protobuf protobuf-util guava gson perfmark-api
    netty-buffer netty-codec netty-codec-http netty-codec-http2 netty-codec-socks netty-common
    netty-handler netty-handler-proxy netty-resolver netty-transport)
# javax.annotation.Generated: grpc-java 1.41's plugin puts it on the stub
# class, and JDK 11+ no longer has it (it is needed to compile only).
compile_only=(geronimo-annotation-1.3-spec)
missing=()
for jar in "${runtime[@]}" "${compile_only[@]}"; do
    [[ -f "$jars/$jar.jar" ]] || missing+=("$jars/$jar.jar")
done
if ((${#missing[@]})); then
    echo "build.sh: missing ${missing[*]} (see examples/java/README.md)" >&2
    exit 1
fi
classpath_of() { local IFS=:; echo "${*/#/$jars/}"; }
runtime_classpath=$(classpath_of "${runtime[@]/%/.jar}")
compile_classpath=$runtime_classpath:$(classpath_of "${compile_only[@]/%/.jar}")

gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
protoc --proto_path="$proto" \
    --java_out="$gen" \
    --plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin --grpc-java_out="$gen" \
    faceid/v1/faceid.proto google/rpc/status.proto google/rpc/error_details.proto \
    google/api/annotations.proto google/api/http.proto

rm -rf "$out/classes"
find "$gen" -name '*.java' > "$gen/sources.txt"
echo "$here/FaceidVerify.java" >> "$gen/sources.txt"
javac --release 17 -encoding UTF-8 -nowarn -Xlint:-options -d "$out/classes" \
    -cp "$compile_classpath" @"$gen/sources.txt"

cat > "$out/faceid-verify" <<EOF
#!/bin/sh
# Runs examples/java/FaceidVerify.java as built by examples/java/build.sh.
exec java -cp "$out/classes:$runtime_classpath" FaceidVerify "\$@"
EOF
chmod +x "$out/faceid-verify"
echo "built $out/faceid-verify" >&2
