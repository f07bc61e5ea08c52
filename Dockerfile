# syntax=docker/dockerfile:1
# The faceid-gateway image: built with the official Rust image, run on
# distroless (glibc, CA certificates, no shell) as the nonroot user 65532.
#   docker build -t faceid-gateway:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Only what the binary needs (see .dockerignore); protos are compiled in
# build.rs by protox, so no protoc is required.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
# Cache mounts keep the registry and target dir between builds; the binary is
# copied out because the target mount does not persist into the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin faceid-gateway \
 && install -D -m 0755 target/release/faceid-gateway /out/faceid-gateway

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="faceid-gateway" \
      org.opencontainers.image.description="gRPC gateway to Tencent Cloud FaceID CheckIdCardInformation" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/faceid-gateway /usr/local/bin/faceid-gateway
USER nonroot
# 50051: gRPC (FACEID_LISTEN); 9090: admin HTTP with /metrics (FACEID_ADMIN_LISTEN).
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/faceid-gateway"]
CMD ["serve"]
