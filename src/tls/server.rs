//! rustls server configurations for Gateway servers (`tls.mode` SIMPLE, MUTUAL,
//! OPTIONAL_MUTUAL): certificates from files or a `credentialName`, client verification,
//! protocol versions, cipher suites and ALPN. Built at compile time; the data plane only
//! picks one by SNI.
//!
//! Depends on: rustls, rustls-pki-types (PEM), `tls::provider`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{
    ProducesTickets, ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier,
};
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};

use super::identity::SanVerifier;
use super::provider;

/// PEM material for one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pem {
    /// Certificate chain, leaf first.
    pub cert: Vec<u8>,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Vec<u8>,
    /// CA bundle for client verification, if any.
    pub ca: Option<Vec<u8>>,
    /// Where each part came from, for error messages.
    pub origin: String,
}

/// Where certificates come from: `credentialName` lookups and the files a config names.
/// Files today; Kubernetes Secrets later.
pub trait Credentials: Send + Sync + std::fmt::Debug {
    /// The directory `credentialName` resolves in.
    fn certs_dir(&self) -> &Path;

    /// Read a certificate or key file.
    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    /// The credential `name` for a Gateway in `namespace`: `<dir>/NAME/tls.crt`, `tls.key`
    /// and `ca.crt` (or `<dir>/NAME-cacert/ca.crt`, Istio's separate CA secret).
    fn load(&self, _namespace: &str, name: &str) -> Result<Pem, String> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(format!("invalid credential name {name:?}"));
        }
        let dir = self.certs_dir().join(name);
        let read = |p: &Path| {
            self.read_file(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let cert = read(&dir.join("tls.crt"))?;
        let key = read(&dir.join("tls.key"))?;
        let separate = self
            .certs_dir()
            .join(format!("{name}-cacert"))
            .join("ca.crt");
        let ca = [dir.join("ca.crt"), separate]
            .iter()
            .find_map(|p| self.read_file(p).ok());
        Ok(Pem {
            cert,
            key,
            ca,
            origin: dir.display().to_string(),
        })
    }
}

/// Certificates read straight from `--certs-dir` and the paths a config names.
#[derive(Debug, Clone)]
pub struct CertsDir(pub PathBuf);

impl Credentials for CertsDir {
    fn certs_dir(&self) -> &Path {
        &self.0
    }
}

/// Certificates read once, before compiling, so what a snapshot serves is exactly what was
/// recorded as its input (a file rewritten during a compile cannot go unnoticed). Paths not
/// read beforehand fall back to the disk.
#[derive(Debug, Clone)]
pub struct Preloaded {
    /// The `--certs-dir`.
    pub dir: PathBuf,
    /// Contents by path; `None` for a file that did not exist.
    pub files: HashMap<PathBuf, Option<Vec<u8>>>,
}

impl Credentials for Preloaded {
    fn certs_dir(&self) -> &Path {
        &self.dir
    }

    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        match self.files.get(path) {
            Some(Some(b)) => Ok(b.clone()),
            Some(None) => Err(std::io::ErrorKind::NotFound.into()),
            None => std::fs::read(path),
        }
    }
}

/// Client certificate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// SIMPLE: no client certificate asked for.
    None,
    /// MUTUAL: a valid client certificate is required.
    Required,
    /// OPTIONAL_MUTUAL: verified when offered.
    Optional,
}

/// What a Gateway server's `tls` block asks for.
#[derive(Debug, Clone)]
pub struct Params<'a> {
    pub pem: &'a Pem,
    pub client_auth: ClientAuth,
    pub min_version: Option<&'a str>,
    pub max_version: Option<&'a str>,
    pub cipher_suites: &'a [String],
    /// Client certificate SANs accepted (`subjectAltNames`); empty accepts any.
    pub client_sans: &'a [String],
    /// Offer h2 and http/1.1 by ALPN (HTTPS servers); TLS servers that terminate into TCP
    /// offer nothing, so clients speak whatever they speak.
    pub alpn: bool,
}

/// A configuration error, naming the `tls` field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// Field under `tls`, e.g. `minProtocolVersion`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        field,
        message: message.into(),
    }
}

/// Session resumption shared by the servers of one compile. rustls gives every
/// `ServerConfig` its own 256-entry cache (about 30 KiB reserved, ~98 KiB once full), which
/// would make thousands of certificates cost hundreds of MiB. Servers share one cache and one
/// ticket key per client-authentication policy (mode and CA bundle), so a session made
/// without a client certificate can never resume on a server that requires one.
///
/// TLS 1.3 resumes with stateless tickets (ChaCha20-Poly1305 under a random key rotated every
/// 6 h, as Envoy's default stateless session resumption), not stateful ones: taking a
/// stateful ticket out of rustls' cache is a linear scan of it, which with 4,096 sessions cost
/// 8% of the CPU of a TLS handshake. The cache remains for TLS 1.2 session IDs.
#[derive(Default)]
pub struct SessionCaches(HashMap<CacheKey, Resumption>);

/// A policy's session cache and ticket key.
#[derive(Clone)]
struct Resumption {
    store: Arc<dyn StoresServerSessions>,
    tickets: Arc<dyn ProducesTickets>,
}

/// Client-auth mode, CA bundle and accepted SANs of the servers sharing a cache.
type CacheKey = (ClientAuth, Option<Vec<u8>>, Vec<String>);

impl std::fmt::Debug for SessionCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCaches")
            .field("caches", &self.0.len())
            .finish()
    }
}

/// Sessions kept per shared cache.
const SESSIONS_PER_CACHE: usize = 4096;

impl SessionCaches {
    fn for_policy(
        &mut self,
        auth: ClientAuth,
        ca: Option<&[u8]>,
        sans: &[String],
    ) -> Result<Resumption, TlsError> {
        // A session resumed skips client verification: it must have passed the same checks.
        let key = (
            auth,
            (auth != ClientAuth::None)
                .then(|| ca.map(<[u8]>::to_vec))
                .flatten(),
            sans.to_vec(),
        );
        if let Some(r) = self.0.get(&key) {
            return Ok(r.clone());
        }
        let tickets = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| err("tls", format!("session ticket key: {e}")))?;
        let r = Resumption {
            store: ServerSessionMemoryCache::new(SESSIONS_PER_CACHE),
            tickets,
        };
        self.0.insert(key, r.clone());
        Ok(r)
    }
}

/// Build the rustls configuration for one server.
pub fn build(p: &Params<'_>, caches: &mut SessionCaches) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&p.pem.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(
                "serverCertificate",
                format!("{}: invalid certificate PEM: {e}", p.pem.origin),
            )
        })?;
    if chain.is_empty() {
        return Err(err(
            "serverCertificate",
            format!("{}: no certificate found", p.pem.origin),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&p.pem.key).map_err(|e| {
        err(
            "privateKey",
            format!("{}: invalid private key PEM: {e}", p.pem.origin),
        )
    })?;

    let mut prov: CryptoProvider = (*provider()).clone();
    if !p.cipher_suites.is_empty() {
        prov.cipher_suites = cipher_suites(&prov.cipher_suites, p.cipher_suites)?;
    }
    let prov = Arc::new(prov);
    let versions = versions(p.min_version, p.max_version)?;
    let builder = ServerConfig::builder_with_provider(prov.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| {
            err(
                "cipherSuites",
                format!("no usable cipher suite for these protocol versions: {e}"),
            )
        })?;
    let builder = match p.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required | ClientAuth::Optional => {
            let ca = p.pem.ca.as_deref().ok_or_else(|| {
                err(
                    "caCertificates",
                    "MUTUAL and OPTIONAL_MUTUAL need caCertificates",
                )
            })?;
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| err("caCertificates", format!("invalid CA PEM: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| err("caCertificates", format!("unusable CA certificate: {e}")))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), prov);
            let v = if p.client_auth == ClientAuth::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            let v = v.build().map_err(|e| {
                err(
                    "caCertificates",
                    format!("cannot verify clients with these CAs: {e}"),
                )
            })?;
            if p.client_sans.is_empty() {
                builder.with_client_cert_verifier(v)
            } else {
                builder.with_client_cert_verifier(Arc::new(SanVerifier::new(
                    v,
                    p.client_sans.to_vec(),
                )))
            }
        }
    };
    let mut cfg = builder.with_single_cert(chain, key).map_err(|e| {
        err(
            "privateKey",
            format!("{}: certificate and key rejected: {e}", p.pem.origin),
        )
    })?;
    if p.alpn {
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    let resumption = caches.for_policy(p.client_auth, p.pem.ca.as_deref(), p.client_sans)?;
    cfg.session_storage = resumption.store;
    cfg.ticketer = resumption.tickets;
    // Our suite order (Envoy's, see `tls::provider`, or `cipherSuites`' order) wins: a
    // client's preference could pick a weaker one that both offer.
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}

fn version(name: &str, field: &'static str) -> Result<u8, TlsError> {
    match name {
        "TLS_AUTO" => Ok(0),
        "TLSV1_2" => Ok(2),
        "TLSV1_3" => Ok(3),
        "TLSV1_0" | "TLSV1_1" => Err(err(
            field,
            format!("{name} is not supported: TLS 1.2 is the minimum"),
        )),
        other => Err(err(
            field,
            format!("unknown protocol version {other} (TLSV1_2 or TLSV1_3)"),
        )),
    }
}

fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let lo = min
        .map(|m| version(m, "minProtocolVersion"))
        .transpose()?
        .filter(|v| *v != 0)
        .unwrap_or(2);
    let hi = max
        .map(|m| version(m, "maxProtocolVersion"))
        .transpose()?
        .filter(|v| *v != 0)
        .unwrap_or(3);
    if lo > hi {
        return Err(err(
            "minProtocolVersion",
            "minProtocolVersion is above maxProtocolVersion",
        ));
    }
    let mut out = Vec::new();
    if hi >= 3 {
        out.push(&rustls::version::TLS13);
    }
    if lo <= 2 {
        out.push(&rustls::version::TLS12);
    }
    Ok(out)
}

/// Map Istio / OpenSSL cipher names (and IANA names) to rustls TLS 1.2 suites. TLS 1.3
/// suites are always kept, as in Envoy, where they are not configurable.
fn cipher_suites(
    all: &[SupportedCipherSuite],
    names: &[String],
) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let mut chosen: Vec<SupportedCipherSuite> = all
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    for raw in names {
        // Envoy accepts equal-preference groups: "[A|B]".
        for name in raw.trim_matches(['[', ']']).split('|') {
            let iana = match name.trim() {
                "ECDHE-ECDSA-AES128-GCM-SHA256" => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "ECDHE-ECDSA-AES256-GCM-SHA384" => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "ECDHE-ECDSA-CHACHA20-POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256" => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "ECDHE-RSA-AES256-GCM-SHA384" => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "ECDHE-RSA-CHACHA20-POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                other => other,
            };
            let found = all.iter().find(|s| {
                s.version() == &rustls::version::TLS12 && format!("{:?}", s.suite()) == iana
            });
            match found {
                Some(s) if !chosen.iter().any(|c| c.suite() == s.suite()) => chosen.push(*s),
                Some(_) => {}
                None => {
                    return Err(err(
                        "cipherSuites",
                        format!("unsupported cipher suite {name} (supported: ECDHE with AES-GCM or CHACHA20-POLY1305)"),
                    ))
                }
            }
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem() -> Pem {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Pem {
            cert: cert.pem().into_bytes(),
            key: key.serialize_pem().into_bytes(),
            ca: Some(cert.pem().into_bytes()),
            origin: "test".into(),
        }
    }

    fn params<'a>(pem: &'a Pem, suites: &'a [String]) -> Params<'a> {
        Params {
            pem,
            client_auth: ClientAuth::None,
            min_version: None,
            max_version: None,
            cipher_suites: suites,
            client_sans: &[],
            alpn: true,
        }
    }

    #[test]
    fn builds_with_defaults_and_alpn() {
        let pem = pem();
        let cfg = build(&params(&pem, &[]), &mut SessionCaches::default()).unwrap();
        assert_eq!(cfg.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(cfg.ignore_client_order, "the server's suite order must win");
    }

    #[test]
    fn session_caches_are_shared_per_client_auth_policy() {
        let pem = pem();
        let mut caches = SessionCaches::default();
        let a = build(&params(&pem, &[]), &mut caches).unwrap();
        let b = build(&params(&pem, &[]), &mut caches).unwrap();
        assert!(Arc::ptr_eq(&a.session_storage, &b.session_storage));
        let m = build(
            &Params {
                client_auth: ClientAuth::Required,
                ..params(&pem, &[])
            },
            &mut caches,
        )
        .unwrap();
        assert!(!Arc::ptr_eq(&a.session_storage, &m.session_storage));
        // Stateless TLS 1.3 tickets, one key per policy too.
        assert!(a.ticketer.enabled() && m.ticketer.enabled());
        assert!(Arc::ptr_eq(&a.ticketer, &b.ticketer));
        assert!(!Arc::ptr_eq(&a.ticketer, &m.ticketer));
        let ticket = a.ticketer.encrypt(b"session").unwrap();
        assert_eq!(
            b.ticketer.decrypt(&ticket).as_deref(),
            Some(&b"session"[..])
        );
        assert_eq!(m.ticketer.decrypt(&ticket), None);
    }

    #[test]
    fn versions_and_suites() {
        assert_eq!(versions(Some("TLSV1_3"), None).unwrap().len(), 1);
        assert_eq!(versions(None, Some("TLSV1_2")).unwrap().len(), 1);
        assert_eq!(versions(None, None).unwrap().len(), 2);
        assert_eq!(
            versions(Some("TLSV1_0"), None).unwrap_err().field,
            "minProtocolVersion"
        );
        assert!(versions(Some("TLSV1_3"), Some("TLSV1_2")).is_err());
        let all = provider().cipher_suites.clone();
        let picked = cipher_suites(
            &all,
            &["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-RSA-AES128-GCM-SHA256]".into()],
        )
        .unwrap();
        assert_eq!(
            picked
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS12)
                .count(),
            2
        );
        let e = cipher_suites(&all, &["AES128-SHA".into()]).unwrap_err();
        assert!(e.message.contains("unsupported cipher suite AES128-SHA"));
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let a = pem();
        let b = pem();
        let mixed = Pem { key: b.key, ..a };
        assert_eq!(
            build(&params(&mixed, &[]), &mut SessionCaches::default())
                .unwrap_err()
                .field,
            "privateKey"
        );
        let mutual = Params {
            client_auth: ClientAuth::Required,
            ..params(&mixed, &[])
        };
        let no_ca = Pem { ca: None, ..pem() };
        let e = build(
            &Params {
                pem: &no_ca,
                ..mutual
            },
            &mut SessionCaches::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "caCertificates");
    }
}
