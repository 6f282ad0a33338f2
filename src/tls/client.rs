//! rustls client configurations for TLS origination (DestinationRule `tls` with mode SIMPLE
//! or MUTUAL): trust roots (a CA bundle, or Mozilla's roots from webpki-roots by default),
//! the SNI to send, optional client certificate, `subjectAltNames` to accept instead of the
//! SNI, `insecureSkipVerify`, and ALPN.
//!
//! Depends on: rustls, rustls-pki-types, webpki-roots, `tls::provider`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::provider;
use super::server::TlsError;

/// What a DestinationRule's `tls` block asks for, resolved to bytes.
#[derive(Debug, Clone, Default, Hash)]
pub struct ClientParams {
    /// SNI sent and, unless `subject_alt_names` is set, the name the certificate must match.
    pub sni: String,
    /// CA bundle PEM; `None` uses Mozilla's roots.
    pub ca: Option<Vec<u8>>,
    /// Client certificate chain and key PEM (MUTUAL).
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// Names the server certificate may match instead of the SNI.
    pub subject_alt_names: Vec<String>,
    /// Accept any server certificate (explicit opt-in only).
    pub insecure_skip_verify: bool,
    /// Offer h2 (then http/1.1) by ALPN.
    pub h2: bool,
}

/// A ready client configuration and the name to connect with.
#[derive(Debug)]
pub struct ClientTls {
    /// rustls configuration.
    pub config: Arc<ClientConfig>,
    /// SNI / verification name.
    pub server_name: ServerName<'static>,
    /// Identity of the settings, so pools differ when settings differ.
    pub id: u64,
}

fn err(field: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        field,
        message: message.into(),
    }
}

/// Build a client configuration.
pub fn build(p: &ClientParams) -> Result<ClientTls, TlsError> {
    let prov = provider();
    let server_name = ServerName::try_from(p.sni.clone())
        .map_err(|_| err("sni", format!("invalid SNI {:?}", p.sni)))?;
    let mut roots = RootCertStore::empty();
    match &p.ca {
        Some(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| err("caCertificates", format!("invalid CA PEM: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| err("caCertificates", format!("unusable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(err("caCertificates", "no CA certificate found"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), prov.clone())
        .build()
        .map_err(|e| {
            err(
                "caCertificates",
                format!("cannot verify servers with these CAs: {e}"),
            )
        })?;
    let mut sans = Vec::new();
    for s in &p.subject_alt_names {
        sans.push(
            ServerName::try_from(s.clone())
                .map_err(|_| err("subjectAltNames", format!("invalid name {s:?}")))?,
        );
    }
    let verifier: Arc<dyn ServerCertVerifier> = Arc::new(Verifier {
        webpki,
        sans,
        insecure: p.insecure_skip_verify,
        provider: prov.clone(),
    });
    let builder = ClientConfig::builder_with_provider(prov)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("mode", format!("{e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match &p.client_cert {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| err("clientCertificate", format!("invalid certificate PEM: {e}")))?;
            if chain.is_empty() {
                return Err(err("clientCertificate", "no certificate found"));
            }
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| err("privateKey", format!("invalid private key PEM: {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                err(
                    "privateKey",
                    format!("client certificate and key rejected: {e}"),
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = if p.h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.hash(&mut h);
    Ok(ClientTls {
        config: Arc::new(cfg),
        server_name,
        id: h.finish(),
    })
}

/// WebPKI verification against the SNI, or against any of `sans` when set; or nothing when
/// `insecure` (handshake signatures are still checked).
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    sans: Vec<ServerName<'static>>,
    insecure: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        if self.sans.is_empty() {
            return self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp,
                now,
            );
        }
        let mut last = None;
        for name in &self.sans {
            match self
                .webpki
                .verify_server_cert(end_entity, intermediates, name, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(rustls::Error::General("no subjectAltNames".into())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
