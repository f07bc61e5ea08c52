//! The process-wide rustls crypto provider (ring). reqwest is built without a
//! provider of its own so only one TLS backend is linked.

/// Installs ring as the rustls provider; idempotent and cheap.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is the goal.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
