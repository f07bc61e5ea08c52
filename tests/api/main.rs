//! Behaviour tests of the gateway, one test binary (one link) for all of them.

mod batch;
mod check_config;
mod cli;
mod credentials;
mod encryption;
mod failover;
mod grpcurl;
mod hardening;
mod helpers;
mod http_json;
mod interop;
mod leaks;
mod process;
// The redis-server launcher, one file shared with faceid-bench.
#[path = "../support/redis.rs"]
mod redis_server;
mod security;
mod server;
mod spend;
mod telemetry;
mod unary;
mod upstream_stack;
mod validation;
