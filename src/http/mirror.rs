//! Request mirroring (`mirror`, `mirrors`): a fire-and-forget copy of the request to the
//! mirror cluster, with `-shadow` appended to the authority as Envoy does. The copy never
//! delays or fails the primary request: it runs in its own task, its answer is read and
//! dropped, and copies in flight are bounded (a slow mirror costs at most `MAX_IN_FLIGHT`
//! buffered bodies), as is each copy's lifetime.
//!
//! Depends on: `upstream`, `body`, `metrics`, tokio.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use super::headers::TraceContext;
use crate::body::UpBody;
use crate::metrics::Metrics;
use crate::upstream::Cluster;

/// Mirrored copies in flight across the process.
pub const MAX_IN_FLIGHT: usize = 256;
/// Longest a mirrored copy may take, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The bound on copies in flight.
#[derive(Debug, Clone)]
pub struct Mirrors(Arc<Semaphore>);

impl Default for Mirrors {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(MAX_IN_FLIGHT)))
    }
}

/// What to copy.
pub struct Copy<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Headers as sent to the primary upstream.
    pub headers: &'a HeaderMap,
    /// Authority of the primary request (gets `-shadow`).
    pub authority: &'a str,
    /// Path and query as sent upstream.
    pub path_and_query: &'a str,
    /// The whole body.
    pub body: Bytes,
    /// The trace context the gateway started for the request, if it did.
    pub trace: Option<&'a TraceContext>,
}

impl Mirrors {
    /// Send `copy` to `cluster` in the background, or drop it when too many are in flight.
    pub fn send(&self, cluster: Arc<Cluster>, copy: Copy<'_>, metrics: &Arc<Metrics>) {
        let Ok(permit) = self.0.clone().try_acquire_owned() else {
            metrics
                .mirrors
                .with_label_values(&[&cluster.name, "dropped"])
                .inc();
            return;
        };
        let shadow = crate::route::shadow_authority(copy.authority);
        let Ok(host) = HeaderValue::from_str(&shadow) else {
            return;
        };
        let mut headers = copy.headers.clone();
        if let Some(t) = copy.trace {
            t.insert_into(&mut headers);
        }
        let method = copy.method.clone();
        let path = copy.path_and_query.to_owned();
        let body = copy.body;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = tokio::time::timeout(TIMEOUT, async {
                let (_, ep) = cluster.pick(None, None).ok_or("no endpoint")?;
                let co = ep
                    .pool
                    .checkout(false, &cluster.limits.conn)
                    .await
                    .map_err(|_| "connect")?;
                let sent = if co.is_raw() {
                    let head = crate::upstream::h1::RawHead {
                        method: &method,
                        path_and_query: &path,
                        host: &host,
                        headers: &headers,
                        trace: None,
                        // Only the status is read.
                        raw_response: true,
                    };
                    co.send_raw(&head, Some(&body).filter(|b| !b.is_empty()))
                        .await
                        .map_err(|_| "send")?
                } else {
                    send_hyper(co, headers, host, method, &shadow, path, body).await?
                };
                let ok = sent.response.status().as_u16() < 500;
                sent.response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|_| "body")?;
                if let Some(conn) = sent.conn {
                    conn.release();
                }
                Ok::<bool, &'static str>(ok)
            })
            .await;
            let label = match result {
                Ok(Ok(true)) => "sent",
                Ok(Ok(false)) => "failed",
                Ok(Err(e)) => {
                    tracing::debug!(cluster = %cluster.name, error = e, "mirror copy failed");
                    "failed"
                }
                Err(_) => "failed",
            };
            metrics
                .mirrors
                .with_label_values(&[&cluster.name, label])
                .inc();
        });
    }
}

/// A copy sent through hyper (HTTP/2 upstreams, or header case to preserve).
async fn send_hyper(
    co: crate::upstream::Checkout,
    mut headers: http::HeaderMap,
    host: HeaderValue,
    method: http::Method,
    shadow: &str,
    path: String,
    body: bytes::Bytes,
) -> Result<crate::upstream::Sent, &'static str> {
    let (uri, version) = if co.is_h2() {
        headers.remove(HOST);
        let scheme = if co.is_tls() { "https" } else { "http" };
        (format!("{scheme}://{shadow}{path}"), Version::HTTP_2)
    } else {
        headers.insert(HOST, host);
        (path, Version::HTTP_11)
    };
    let uri: Uri = uri.parse().map_err(|_| "uri")?;
    let mut req = Request::new(if body.is_empty() {
        UpBody::Empty
    } else {
        UpBody::Full(Some(body))
    });
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    co.send(req).await.map_err(|_| "send")
}
