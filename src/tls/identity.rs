//! A TLS peer's certificate identity: its SANs, subject and fingerprint, read from the
//! certificate the handshake verified. Used to restrict client certificates to Gateway
//! `tls.subjectAltNames` (checked inside the handshake, as Envoy does, so a refused client
//! never gets a connection) and to build `x-forwarded-client-cert` elements.
//!
//! Depends on: x509-parser, ring (SHA-256), rustls.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid2abbrev, oid_registry};

/// What a certificate says about its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Lowercase hex SHA-256 of the DER certificate (XFCC `Hash`).
    pub hash: String,
    /// Subject in RFC 2253 form (`CN=client,O=example`), as Envoy prints it.
    pub subject: String,
    /// URI SANs (SPIFFE IDs and the like).
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// Email SANs.
    pub emails: Vec<String>,
}

impl Identity {
    /// Read a DER certificate; `None` when it does not parse.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut id = Identity {
            hash: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
            subject: rfc2253(cert.subject()),
            ..Identity::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => id.uris.push((*u).to_owned()),
                    GeneralName::DNSName(d) => id.dns.push((*d).to_owned()),
                    GeneralName::RFC822Name(e) => id.emails.push((*e).to_owned()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => id
                            .ips
                            .extend(<[u8; 4]>::try_from(*b).ok().map(IpAddr::from)),
                        16 => id
                            .ips
                            .extend(<[u8; 16]>::try_from(*b).ok().map(IpAddr::from)),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Some(id)
    }

    /// Whether any SAN equals one of `allowed` exactly (Istio's `subjectAltNames`).
    pub fn has_any_san(&self, allowed: &[String]) -> bool {
        allowed.iter().any(|a| {
            self.uris.iter().any(|u| u == a)
                || self.dns.iter().any(|d| d.eq_ignore_ascii_case(a))
                || self.emails.iter().any(|e| e == a)
                || a.parse::<IpAddr>().is_ok_and(|ip| self.ips.contains(&ip))
        })
    }

    /// One `x-forwarded-client-cert` element in Envoy's format with Istio's gateway
    /// details (Hash, Subject, URI, DNS); `by` is the gateway's own URI SAN, if any.
    pub fn xfcc_element(&self, by: Option<&str>) -> String {
        let mut out = String::new();
        if let Some(by) = by {
            out.push_str("By=");
            out.push_str(&quote(by));
            out.push(';');
        }
        out.push_str("Hash=");
        out.push_str(&self.hash);
        out.push_str(";Subject=\"");
        out.push_str(&self.subject.replace('"', "\\\""));
        out.push('"');
        for u in &self.uris {
            out.push_str(";URI=");
            out.push_str(&quote(u));
        }
        for d in &self.dns {
            out.push_str(";DNS=");
            out.push_str(&quote(d));
        }
        out
    }
}

/// Quote an XFCC value when it holds a separator (`,`, `;`, `=`), as Envoy does.
fn quote(v: &str) -> String {
    if v.contains([',', ';', '=', '"']) {
        format!("\"{}\"", v.replace('"', "\\\""))
    } else {
        v.to_owned()
    }
}

/// RFC 2253: RDNs last to first, `TYPE=value`, special characters escaped.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut rdns = Vec::new();
    for rdn in name.iter_rdn() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|atv| {
                let ty = oid2abbrev(atv.attr_type(), oid_registry())
                    .map(str::to_owned)
                    .unwrap_or_else(|_| atv.attr_type().to_id_string());
                let value = atv
                    .as_str()
                    .map(escape_dn)
                    .unwrap_or_else(|_| format!("#{}", hex(atv.attr_value().data)));
                format!("{ty}={value}")
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

fn escape_dn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.len() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A client verifier that also requires one of `allowed` among the certificate's SANs.
#[derive(Debug)]
pub struct SanVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl SanVerifier {
    /// Wrap `inner` (chain verification) with a SAN allow-list.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, allowed: Vec<String>) -> Self {
        Self { inner, allowed }
    }
}

impl ClientCertVerifier for SanVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match Identity::from_der(end_entity) {
            Some(id) if id.has_any_san(&self.allowed) => Ok(ok),
            Some(id) => {
                tracing::debug!(subject = %id.subject, "client certificate SANs not allowed");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName,
                ))
            }
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            )),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "client, one");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        p.subject_alt_names = sans;
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_sans_subject_and_hash() {
        let der = cert(vec![
            rcgen::SanType::URI(
                "spiffe://cluster.local/ns/default/sa/sleep"
                    .try_into()
                    .unwrap(),
            ),
            rcgen::SanType::DnsName("client.example.com".try_into().unwrap()),
            rcgen::SanType::IpAddress(IpAddr::from([10, 0, 0, 1])),
        ]);
        let id = Identity::from_der(&der).unwrap();
        assert_eq!(id.uris, ["spiffe://cluster.local/ns/default/sa/sleep"]);
        assert_eq!(id.dns, ["client.example.com"]);
        assert_eq!(id.subject, "O=Example,CN=client\\, one");
        assert_eq!(id.hash.len(), 64);
        assert!(id.has_any_san(&["client.example.com".into()]));
        assert!(id.has_any_san(&["spiffe://cluster.local/ns/default/sa/sleep".into()]));
        assert!(id.has_any_san(&["10.0.0.1".into()]));
        assert!(!id.has_any_san(&["other.example.com".into(), "spiffe://x".into()]));
        let x = id.xfcc_element(Some("spiffe://gw"));
        assert_eq!(
            x,
            format!(
                "By=spiffe://gw;Hash={};Subject=\"O=Example,CN=client\\, one\";URI=spiffe://cluster.local/ns/default/sa/sleep;DNS=client.example.com",
                id.hash
            )
        );
        assert!(Identity::from_der(b"not a cert").is_none());
    }
}
