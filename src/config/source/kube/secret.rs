//! Kubernetes Secrets as `credentialName` certificates, in Istio's layouts: `tls.crt`,
//! `tls.key`, `ca.crt` (kubernetes.io/tls) or the generic `cert`, `key`, `cacert`; the CA may
//! also sit in a separate Secret named `NAME-cacert`. A credential resolves in the namespace
//! of the Gateway (or DestinationRule) that names it.
//!
//! Secrets are stripped to those keys as they arrive, so service-account tokens and other
//! data are never kept in memory. Pure apart from the `Credentials` file fallback.
//!
//! Depends on: k8s-openapi (Secret), `tls::server::{Credentials, Pem}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;

use crate::tls::server::{Credentials, Pem};

/// Keys of the certificate chain, the private key and the CA bundle, in lookup order.
const CERT_KEYS: [&str; 2] = ["tls.crt", "cert"];
const KEY_KEYS: [&str; 2] = ["tls.key", "key"];
const CA_KEYS: [&str; 2] = ["ca.crt", "cacert"];

/// Drop everything but the TLS keys (and the metadata the store needs) from `secret`.
pub(crate) fn strip(secret: &mut Secret) {
    if let Some(data) = secret.data.as_mut() {
        data.retain(|k, _| is_tls_key(k));
    }
    // stringData is write-only in the API, but an emulator may echo it back.
    secret.string_data = None;
    secret.metadata.annotations = None;
    secret.metadata.managed_fields = None;
}

fn is_tls_key(k: &str) -> bool {
    CERT_KEYS.contains(&k) || KEY_KEYS.contains(&k) || CA_KEYS.contains(&k)
}

/// The TLS parts of one Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsSecret {
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    ca: Option<Vec<u8>>,
}

impl TlsSecret {
    /// Read the parts of `secret`; `None` when it has none of the TLS keys.
    pub(crate) fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let find = |keys: &[&str]| keys.iter().find_map(|k| data.get(*k)).map(|b| b.0.clone());
        let parts = Self {
            cert: find(&CERT_KEYS),
            key: find(&KEY_KEYS),
            ca: find(&CA_KEYS),
        };
        (parts != Self::default()).then_some(parts)
    }
}

/// `credentialName` lookups answered from the Secrets the source has seen; file paths named
/// by a config (`serverCertificate: /etc/...`) are still read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeCredentials {
    certs_dir: PathBuf,
    /// By (namespace, name).
    secrets: BTreeMap<(String, String), TlsSecret>,
}

impl KubeCredentials {
    /// Credentials from `secrets` ((namespace, name) and parts); paths resolve under
    /// `certs_dir`.
    pub(crate) fn new(certs_dir: PathBuf, secrets: BTreeMap<(String, String), TlsSecret>) -> Self {
        Self { certs_dir, secrets }
    }

    /// Every byte a compile can read from these Secrets, in a fixed order: equal
    /// fingerprints mean the certificates served would be the same.
    pub(crate) fn fingerprint(&self) -> Vec<Option<Vec<u8>>> {
        self.secrets
            .iter()
            .flat_map(|((ns, name), s)| {
                [
                    Some(format!("{ns}/{name}").into_bytes()),
                    s.cert.clone(),
                    s.key.clone(),
                    s.ca.clone(),
                ]
            })
            .collect()
    }
}

impl Credentials for KubeCredentials {
    fn certs_dir(&self) -> &Path {
        &self.certs_dir
    }

    fn load(&self, namespace: &str, name: &str) -> Result<Pem, String> {
        let get = |n: &str| self.secrets.get(&(namespace.to_owned(), n.to_owned()));
        let separate_ca = || get(&format!("{name}-cacert")).and_then(|s| s.ca.clone());
        let Some(main) = get(name) else {
            return Err(format!(
                "secret {namespace}/{name} not found (or has no tls.crt/tls.key/ca.crt or cert/key/cacert)"
            ));
        };
        let ca = main.ca.clone().or_else(separate_ca);
        let (cert, key) = match (&main.cert, &main.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            // A CA-only Secret is enough for a DestinationRule SIMPLE origination; a server
            // using it fails later with "no certificate found", naming the secret.
            (None, None) if ca.is_some() => (Vec::new(), Vec::new()),
            (None, _) => return Err(format!("secret {namespace}/{name} has no tls.crt or cert")),
            (_, None) => return Err(format!("secret {namespace}/{name} has no tls.key or key")),
        };
        Ok(Pem {
            cert,
            key,
            ca,
            origin: format!("secret {namespace}/{name}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.to_owned());
        s.metadata.namespace = Some("gw".to_owned());
        s.data = Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        s
    }

    fn creds(secrets: &[Secret]) -> KubeCredentials {
        let map = secrets
            .iter()
            .filter_map(|s| {
                let key = (s.metadata.namespace.clone()?, s.metadata.name.clone()?);
                Some((key, TlsSecret::from_secret(s)?))
            })
            .collect();
        KubeCredentials::new(PathBuf::from("certs"), map)
    }

    #[test]
    fn kubernetes_tls_layout_to_pem() {
        let c = creds(&[secret(
            "web",
            &[("tls.crt", "CERT"), ("tls.key", "KEY"), ("ca.crt", "CA")],
        )]);
        let pem = c.load("gw", "web").unwrap();
        assert_eq!(pem.cert, b"CERT");
        assert_eq!(pem.key, b"KEY");
        assert_eq!(pem.ca.as_deref(), Some(&b"CA"[..]));
        assert_eq!(pem.origin, "secret gw/web");
    }

    #[test]
    fn generic_layout_and_separate_cacert_secret() {
        let c = creds(&[
            secret("api", &[("cert", "C"), ("key", "K")]),
            secret("api-cacert", &[("cacert", "CA2")]),
        ]);
        let pem = c.load("gw", "api").unwrap();
        assert_eq!(
            (pem.cert.as_slice(), pem.key.as_slice()),
            (&b"C"[..], &b"K"[..])
        );
        assert_eq!(pem.ca.as_deref(), Some(&b"CA2"[..]));
    }

    #[test]
    fn resolves_only_in_the_namespace_asked() {
        let c = creds(&[secret("web", &[("tls.crt", "C"), ("tls.key", "K")])]);
        let e = c.load("other", "web").unwrap_err();
        assert!(e.contains("secret other/web not found"), "{e}");
    }

    #[test]
    fn missing_key_is_named() {
        let c = creds(&[secret("web", &[("tls.crt", "C")])]);
        assert!(c.load("gw", "web").unwrap_err().contains("no tls.key"));
    }

    #[test]
    fn strip_keeps_only_tls_keys() {
        let mut s = secret("t", &[("token", "sa-token"), ("tls.crt", "C")]);
        strip(&mut s);
        let keys: Vec<_> = s.data.unwrap().into_keys().collect();
        assert_eq!(keys, ["tls.crt"]);
        let none = secret("t", &[("password", "p")]);
        assert!(TlsSecret::from_secret(&none).is_none());
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let a = creds(&[secret("web", &[("tls.crt", "C1"), ("tls.key", "K")])]);
        let b = creds(&[secret("web", &[("tls.crt", "C2"), ("tls.key", "K")])]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
