//! Sockets and connections, shared by every listening port (the gRPC port,
//! the admin port and the simulator): one accept loop ([`listener`]), one
//! way to serve HTTP/1.1 and HTTP/2 connections with their timeouts, caps and
//! graceful drain ([`http`]), TLS with reloading certificates ([`tls`]),
//! and the Redis connection the shared stores use ([`redis_connection`]).
//!
//! May import: [`crate::config`] (watched files) only. It knows nothing of
//! gRPC, Tencent or metrics: the ports hand it a service and counter handles.

pub(crate) mod http;
pub(crate) mod listener;
pub(crate) mod redis_connection;
pub(crate) mod tls;

pub use tls::install_crypto_provider;
