//! A throwaway PKI for TLS tests: `Ca::new("root")` makes a CA (rcgen, ring), `ca.server(..)`
//! and `ca.client(..)` issue leaf certificates for DNS SANs and write them as PEM files into
//! a temp dir that lives as long as any handle to it. Everything is minted per test run.
//!
//! Client side: `TlsClient::new(&ca)` builds a rustls client (ring provider) trusting that
//! CA, optionally presenting a client certificate, offering ALPN or limited to one protocol
//! version; `connect(addr, "name")` returns a `Handshake`: the result, the negotiated ALPN,
//! version and cipher suite, and the leaf certificate the server presented (recorded even
//! when verification then fails), so a test can assert which certificate an SNI got.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CipherSuite, ClientConfig, DigitallySignedStruct, ProtocolVersion,
    RootCertStore, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::within;

/// The only crypto provider tests use.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority.
pub struct Ca {
    pub name: String,
    issuer: Issuer<'static, KeyPair>,
    cert: rcgen::Certificate,
    dir: Arc<tempfile::TempDir>,
    /// `ca.pem` of this CA.
    pub pem_path: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("name", &self.name).finish()
    }
}

/// A leaf certificate and its key, in memory and on disk.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub name: String,
    /// Certificate PEM (the leaf only).
    pub cert_pem: String,
    /// PKCS#8 private key PEM.
    pub key_pem: String,
    /// The leaf in DER, to compare with what a server presented.
    pub der: CertificateDer<'static>,
    /// `<name>/tls.crt`.
    pub cert_path: PathBuf,
    /// `<name>/tls.key`.
    pub key_path: PathBuf,
    /// PEM of the CA that issued it.
    pub ca_pem: String,
    _dir: Arc<tempfile::TempDir>,
}

impl Ca {
    /// A new self-signed CA with common name `name`, its PEM written to `<tmp>/ca.pem`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "meshgate tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let issuer = Issuer::new(params, key);
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, cert.pem()).expect("write ca.pem");
        Self {
            name: name.to_owned(),
            issuer,
            cert,
            dir,
            pem_path,
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The temp dir this CA writes into.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate (serverAuth) for `sans`, written under `<tmp>/<name>/`.
    pub fn server(&self, name: &str, sans: &[&str]) -> Leaf {
        self.issue(name, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (clientAuth) for `sans`, written under `<tmp>/<name>/`.
    pub fn client(&self, name: &str, sans: &[&str]) -> Leaf {
        self.issue(name, sans, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A server certificate like [`Ca::server`] that names a CRL distribution point, as
    /// public CAs' certificates do (scanners rate a certificate without one as a weakness).
    pub fn server_with_crl(&self, name: &str, sans: &[&str], crl_url: &str) -> Leaf {
        self.issue_with(name, sans, ExtendedKeyUsagePurpose::ServerAuth, |p| {
            p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![crl_url.to_owned()],
            }];
            // A public CA's validity (rcgen's default runs to the year 4096, which scanners
            // flag): from two days ago for a year.
            let today = days_since_epoch();
            let (y, m, d) = civil(today - 2);
            p.not_before = rcgen::date_time_ymd(y, m, d);
            let (y, m, d) = civil(today + 365);
            p.not_after = rcgen::date_time_ymd(y, m, d);
        })
    }

    fn issue(&self, name: &str, sans: &[&str], eku: ExtendedKeyUsagePurpose) -> Leaf {
        self.issue_with(name, sans, eku, |_| {})
    }

    fn issue_with(
        &self,
        name: &str,
        sans: &[&str],
        eku: ExtendedKeyUsagePurpose,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            sans.first().map_or(name, String::as_str),
        );
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("leaf dir");
        let cert_path = dir.join("tls.crt");
        let key_path = dir.join("tls.key");
        std::fs::write(&cert_path, cert.pem()).expect("write tls.crt");
        std::fs::write(&key_path, key.serialize_pem()).expect("write tls.key");
        Leaf {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            cert_path,
            key_path,
            ca_pem: self.pem(),
            _dir: self.dir.clone(),
        }
    }
}

impl Leaf {
    /// The certificate chain (leaf only) for rustls.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.der.clone()]
    }

    /// The private key for rustls.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("parse key PEM")
    }

    /// Write this leaf as `credentialName: <name>` under `certs_dir`: `tls.crt`, `tls.key`
    /// and, when given, `ca.crt` (the CA that verifies client certificates).
    pub fn write_credential(&self, certs_dir: &Path, name: &str, client_ca: Option<&Ca>) {
        let dir = certs_dir.join(name);
        std::fs::create_dir_all(&dir).expect("credential dir");
        std::fs::write(dir.join("tls.crt"), &self.cert_pem).expect("write tls.crt");
        std::fs::write(dir.join("tls.key"), &self.key_pem).expect("write tls.key");
        if let Some(ca) = client_ca {
            std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write ca.crt");
        }
    }

    /// A rustls server configuration presenting this leaf, offering `alpn`.
    pub fn server_config(&self, alpn: &[&str]) -> Arc<ServerConfig> {
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(self.chain(), self.key())
            .expect("server cert");
        cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(cfg)
    }

    /// A tokio-rustls acceptor presenting this leaf, offering `alpn`.
    pub fn acceptor(&self, alpn: &[&str]) -> TlsAcceptor {
        TlsAcceptor::from(self.server_config(alpn))
    }
}

/// The TLS protocol versions a client may be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

impl Version {
    fn rustls(self) -> &'static SupportedProtocolVersion {
        match self {
            Version::Tls12 => &rustls::version::TLS12,
            Version::Tls13 => &rustls::version::TLS13,
        }
    }
}

/// A TLS client configuration under construction.
#[derive(Debug, Clone)]
pub struct TlsClient {
    roots: Vec<CertificateDer<'static>>,
    cert: Option<Leaf>,
    alpn: Vec<Vec<u8>>,
    version: Option<Version>,
    sni: bool,
}

impl TlsClient {
    /// Trust `ca` only; no client certificate, no ALPN, TLS 1.2 and 1.3, SNI sent.
    pub fn new(ca: &Ca) -> Self {
        Self {
            roots: vec![ca.der()],
            cert: None,
            alpn: Vec::new(),
            version: None,
            sni: true,
        }
    }

    /// Also trust `ca`.
    pub fn trust(mut self, ca: &Ca) -> Self {
        self.roots.push(ca.der());
        self
    }

    /// Present `leaf` as the client certificate.
    pub fn cert(mut self, leaf: &Leaf) -> Self {
        self.cert = Some(leaf.clone());
        self
    }

    /// Offer these ALPN protocols, in order.
    pub fn alpn(mut self, protos: &[&str]) -> Self {
        self.alpn = protos.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    /// Speak only `v`.
    pub fn only(mut self, v: Version) -> Self {
        self.version = Some(v);
        self
    }

    /// Send no `server_name` extension (the name passed to `connect` is still verified).
    pub fn no_sni(mut self) -> Self {
        self.sni = false;
        self
    }

    /// The rustls configuration, and the verifier recording what the server presented.
    fn config(&self) -> (Arc<ClientConfig>, Arc<Recording>) {
        let mut roots = RootCertStore::empty();
        for r in &self.roots {
            roots.add(r.clone()).expect("add root");
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("verifier");
        let recording = Arc::new(Recording {
            inner,
            leaf: Mutex::new(None),
        });
        let builder = ClientConfig::builder_with_provider(provider());
        let builder = match self.version {
            Some(v) => builder.with_protocol_versions(&[v.rustls()]),
            None => builder.with_safe_default_protocol_versions(),
        }
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(recording.clone());
        let mut cfg = match &self.cert {
            Some(leaf) => builder
                .with_client_auth_cert(leaf.chain(), leaf.key())
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = self.alpn.clone();
        cfg.enable_sni = self.sni;
        (Arc::new(cfg), recording)
    }

    /// A connector with this configuration (the presented leaf is not recorded).
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.config().0)
    }

    /// The first flight this client would send to `server_name` (its ClientHello), for
    /// tests that stop there.
    pub fn client_hello(&self, server_name: &str) -> Vec<u8> {
        let name = ServerName::try_from(server_name.to_owned()).expect("server name");
        let mut conn = rustls::ClientConnection::new(self.config().0, name).expect("client");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    /// Connect to `addr` over TCP and handshake, sending (and verifying) `server_name`.
    pub async fn connect(&self, addr: SocketAddr, server_name: &str) -> Handshake {
        let tcp = within(TcpStream::connect(addr)).await.expect("TCP connect");
        tcp.set_nodelay(true).expect("nodelay");
        self.handshake(tcp, server_name).await
    }

    /// Handshake over an already open `io`.
    pub async fn handshake<IO>(&self, io: IO, server_name: &str) -> Handshake<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let (cfg, recording) = self.config();
        let name = ServerName::try_from(server_name.to_owned()).expect("server name");
        // Boxed: a rustls connection is large, and so would be every future holding one.
        let result = within(Box::pin(TlsConnector::from(cfg).connect(name, io)))
            .await
            .map(Box::new);
        let leaf = recording.leaf.lock().expect("leaf lock").clone();
        let (alpn, version, suite) = match &result {
            Ok(s) => {
                let c = s.get_ref().1;
                (
                    c.alpn_protocol().map(<[u8]>::to_vec),
                    c.protocol_version(),
                    c.negotiated_cipher_suite().map(|s| s.suite()),
                )
            }
            Err(_) => (None, None, None),
        };
        Handshake {
            stream: result,
            alpn,
            version,
            suite,
            leaf,
        }
    }
}

/// The outcome of a client handshake.
#[derive(Debug)]
pub struct Handshake<IO = TcpStream> {
    /// The TLS stream (boxed: it is large), or why the handshake failed.
    pub stream: io::Result<Box<TlsStream<IO>>>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// The negotiated protocol version.
    pub version: Option<ProtocolVersion>,
    /// The negotiated cipher suite.
    pub suite: Option<CipherSuite>,
    /// The leaf certificate the server presented, if it got that far.
    pub leaf: Option<CertificateDer<'static>>,
}

impl<IO> Handshake<IO> {
    /// Whether the handshake completed.
    pub fn is_ok(&self) -> bool {
        self.stream.is_ok()
    }

    /// The stream, panicking with the handshake error.
    #[track_caller]
    pub fn ok(self) -> Box<TlsStream<IO>> {
        match self.stream {
            Ok(s) => s,
            Err(e) => panic!("TLS handshake failed: {e}"),
        }
    }

    /// The handshake error as text ("" when it succeeded).
    pub fn error(&self) -> String {
        self.stream
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// The fatal alert the server sent, when that is why the handshake failed.
    pub fn alert(&self) -> Option<AlertDescription> {
        let e = self.stream.as_ref().err()?;
        match e.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::AlertReceived(a) => Some(*a),
            _ => None,
        }
    }

    /// Whether the server presented exactly `leaf`.
    pub fn presented(&self, leaf: &Leaf) -> bool {
        self.leaf.as_ref() == Some(&leaf.der)
    }
}

/// Verifies like WebPKI, remembering the end-entity certificate it was shown.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    leaf: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.leaf.lock().expect("leaf lock") = Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whole days since 1970-01-01 (UTC), now.
fn days_since_epoch() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs / 86_400).expect("days fit")
}

/// The date (year, month, day) `days` after 1970-01-01 (Howard Hinnant's civil-from-days).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        i32::try_from(y).expect("year"),
        u8::try_from(m).expect("month"),
        u8::try_from(d).expect("day"),
    )
}
