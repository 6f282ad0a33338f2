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
    Arc::new(envoy_order(rustls::crypto::ring::default_provider()))
}

/// Install ring as the process-wide default provider (idempotent).
pub fn install_default_provider() {
    let _ = envoy_order(rustls::crypto::ring::default_provider()).install_default();
}

/// The provider's suites in the order Istio's gateway (Envoy on BoringSSL) prefers them:
/// AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305, in each protocol version. rustls
/// puts AES-256 first; AES-128 is as safe in practice, and with it TLS 1.3 hashes the
/// handshake with SHA-256 instead of SHA-384, which costs less per handshake.
fn envoy_order(mut p: CryptoProvider) -> CryptoProvider {
    use rustls::CipherSuite as S;
    let rank = |s: S| match s {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    };
    // TLS 1.3 suites first, then TLS 1.2, each version in Envoy's order (a stable sort
    // keeps ECDSA ahead of RSA as rustls has them).
    p.cipher_suites.sort_by_key(|s| {
        let v = u8::from(s.tls13().is_none());
        (v, rank(s.suite()))
    });
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_follow_envoys_order() {
        let names: Vec<String> = provider()
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            names,
            [
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            ]
        );
    }
}
