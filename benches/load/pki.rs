//! Certificates for the TLS cases, minted per run with rcgen (ECDSA P-256): a CA and one
//! server leaf for `localhost`, `bench.local` and `upstream.local`, written as PEM files that
//! every system reads (haproxy wants certificate and key in one file).
//!
//! Must not: check anything in; keys live only in the run's temp dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// The names the leaf is valid for.
pub const SANS: [&str; 3] = ["localhost", "bench.local", "upstream.local"];

/// PEM files of the run's PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The leaf certificate.
    pub cert: PathBuf,
    /// The leaf's PKCS#8 key.
    pub key: PathBuf,
    /// Leaf certificate followed by its key (haproxy `crt`).
    pub combined: PathBuf,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    /// Mint a CA and a leaf into `dir`.
    pub fn mint(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "meshgate bench CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(SANS.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, SANS[0]);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer).expect("sign leaf");

        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            combined: dir.join("combined.pem"),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(&pki.ca, ca_cert.pem()).expect("write ca.pem");
        std::fs::write(&pki.cert, &pki.cert_pem).expect("write tls.crt");
        std::fs::write(&pki.key, &pki.key_pem).expect("write tls.key");
        std::fs::write(&pki.combined, format!("{}{}", pki.cert_pem, pki.key_pem))
            .expect("write combined.pem");
        pki
    }

    /// A rustls server configuration presenting the leaf, offering h2 and http/1.1.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let chain = vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server cert");
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}
