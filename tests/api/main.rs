//! Behaviour tests of the gateway, one test binary (one link) for all of them.

mod helpers;
mod server;
mod unary;
