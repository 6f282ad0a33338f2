//! TLS: ClientHello parsing (`sni`), peeking it off a connection (`peek`), the rustls
//! server configurations built from Gateway servers (`server`), origination configs
//! (`client`) and peer certificate identities (`identity`).
//!
//! meshgate compiles in exactly one rustls crypto provider (ring); `provider()` is the only
//! way code here gets it, and `install_default_provider` makes it the process default.
//!
//! Depends on: rustls, tokio-rustls, tls-parser.

pub mod client;
pub mod identity;
pub mod peek;
pub mod server;
pub mod sni;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider every rustls config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Install ring as the process-wide default provider (idempotent).
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
