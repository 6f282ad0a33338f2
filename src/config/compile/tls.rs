//! A Gateway server's `tls` block into a rustls configuration (termination) or a
//! passthrough marker.
//!
//! Depends on: `config::{raw, istio, error}`, `tls::server`.

use crate::config::error::ConfigError;
use crate::config::istio::{Gateway, ServerTlsSettings};
use crate::config::raw::Res;
use crate::tls::server::{self, ClientAuth, Credentials, Pem, SessionCaches};

/// What a server's TLS settings compile to.
pub(super) enum ServerTls {
    Terminate {
        config: std::sync::Arc<rustls::ServerConfig>,
    },
    Passthrough,
    /// Route by the SNI Istio's sidecars send (`outbound_.PORT_.SUBSET_.HOST`) to that
    /// service, without VirtualServices.
    AutoPassthrough,
}

/// Compile `servers[i].tls` of `gw` for a server of `protocol` (HTTPS or TLS).
#[allow(
    clippy::too_many_arguments,
    reason = "threads the compile's shared state"
)]
pub(super) fn compile(
    gw: &Res<Gateway>,
    i: usize,
    protocol: &str,
    tls: Option<&ServerTlsSettings>,
    credentials: &dyn Credentials,
    caches: &mut SessionCaches,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<ServerTls> {
    let f = format!("servers[{i}].tls");
    let Some(tls) = tls else {
        errors.push(gw.error(&f, format!("{protocol} servers need a tls block")));
        return None;
    };
    let mode = tls.mode.as_deref().unwrap_or("SIMPLE");
    let client_auth = match mode {
        "PASSTHROUGH" => return Some(ServerTls::Passthrough),
        "AUTO_PASSTHROUGH" => return Some(ServerTls::AutoPassthrough),
        "ISTIO_MUTUAL" => {
            errors.push(gw.error(
                format!("{f}.mode"),
                "ISTIO_MUTUAL needs Istio's own CA: use MUTUAL with caCertificates",
            ));
            return None;
        }
        "SIMPLE" => ClientAuth::None,
        "MUTUAL" => ClientAuth::Required,
        "OPTIONAL_MUTUAL" => ClientAuth::Optional,
        other => {
            errors.push(gw.error(format!("{f}.mode"), format!("unknown TLS mode {other}")));
            return None;
        }
    };
    if !tls.subject_alt_names.is_empty() && client_auth == ClientAuth::None {
        warnings.push(gw.error(
            format!("{f}.subjectAltNames"),
            "ignored: SIMPLE mode asks no client certificate (use MUTUAL or OPTIONAL_MUTUAL)",
        ));
    }
    let pem = match (
        &tls.credential_name,
        &tls.server_certificate,
        &tls.private_key,
    ) {
        (Some(name), _, _) => match credentials.load(&gw.namespace, name) {
            Ok(p) => p,
            Err(e) => {
                errors.push(gw.error(format!("{f}.credentialName"), e));
                return None;
            }
        },
        (None, Some(cert), Some(key)) => {
            let read = |field: &str, path: &str, errors: &mut Vec<ConfigError>| match credentials
                .read_file(std::path::Path::new(path))
            {
                Ok(b) => Some(b),
                Err(e) => {
                    errors
                        .push(gw.error(format!("{f}.{field}"), format!("cannot read {path}: {e}")));
                    None
                }
            };
            let cert = read("serverCertificate", cert, errors);
            let key = read("privateKey", key, errors);
            let ca = match &tls.ca_certificates {
                Some(p) => Some(read("caCertificates", p, errors)?),
                None => None,
            };
            Pem {
                cert: cert?,
                key: key?,
                ca,
                origin: tls.server_certificate.clone().unwrap_or_default(),
            }
        }
        _ => {
            errors.push(gw.error(
                &f,
                "set credentialName, or serverCertificate and privateKey",
            ));
            return None;
        }
    };
    let params = server::Params {
        pem: &pem,
        client_auth,
        min_version: tls.min_protocol_version.as_deref(),
        max_version: tls.max_protocol_version.as_deref(),
        cipher_suites: &tls.cipher_suites,
        client_sans: if client_auth == ClientAuth::None {
            &[]
        } else {
            &tls.subject_alt_names
        },
        // A TLS server terminates into TCP routes: advertising h2 would mislead clients.
        alpn: protocol != "TLS",
    };
    match server::build(&params, caches) {
        Ok(config) => Some(ServerTls::Terminate { config }),
        Err(e) => {
            errors.push(gw.error(format!("{f}.{}", e.field), e.message));
            None
        }
    }
}
