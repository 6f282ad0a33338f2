//! meshgate's own settings (addresses, limits, sources), with their defaults. Every default
//! lives here with its unit.
//!
//! Depends on: std, `upstream::PoolSettings`, kube (`Config`, `Client`; feature `kubernetes`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::upstream::PoolSettings;

/// Access log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLog {
    /// No access log (default, as in Istio's default profile).
    #[default]
    Off,
    /// One human-readable line per request on stdout.
    Text,
    /// One JSON object per request on stdout.
    Json,
}

/// Where the Istio resources come from.
#[derive(Debug, Clone, Default)]
pub enum Source {
    /// `--config` files and directories, watched for changes (default).
    #[default]
    Files,
    /// The Kubernetes API (`--source kubernetes`).
    #[cfg(feature = "kubernetes")]
    Kubernetes(KubeSettings),
}

/// Settings of the Kubernetes source.
#[cfg(feature = "kubernetes")]
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// Namespaces to watch (`--namespace`, repeatable); empty means all namespaces.
    pub namespaces: Vec<String>,
    /// Downward API file with this pod's labels (`--pod-labels-file`), read when no
    /// `--selector` is given; default `/etc/podinfo/labels`.
    pub pod_labels_file: PathBuf,
    /// How to reach the API server; default: kubeconfig or in-cluster inference.
    pub connect: KubeConnect,
}

#[cfg(feature = "kubernetes")]
impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            pod_labels_file: PathBuf::from("/etc/podinfo/labels"),
            connect: KubeConnect::Infer,
        }
    }
}

/// How the Kubernetes source reaches the API server.
#[cfg(feature = "kubernetes")]
#[derive(Clone, Default)]
pub enum KubeConnect {
    /// `KUBECONFIG` / `~/.kube/config`, else the in-cluster service account (kube's
    /// `Config::infer`).
    #[default]
    Infer,
    /// This configuration (tests point it at an emulator URL with `kube::Config::new`).
    Config(Box<kube::Config>),
    /// This client (tests build one over a `tower-test` mock service).
    Client(kube::Client),
}

#[cfg(feature = "kubernetes")]
impl std::fmt::Debug for KubeConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // kube::Client is not Debug, and a Config may carry credentials: print the shape only.
        match self {
            Self::Infer => f.write_str("Infer"),
            Self::Config(c) => write!(f, "Config({})", c.cluster_url),
            Self::Client(_) => f.write_str("Client(..)"),
        }
    }
}

/// Everything meshgate needs to start.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Where the Istio resources come from (`--source`); default the `--config` files.
    pub source: Source,
    /// Files and directories of Istio YAML (`--config`); default `config/`.
    pub config_paths: Vec<PathBuf>,
    /// Admin server address (`--admin`); default 127.0.0.1:15000.
    pub admin_addr: SocketAddr,
    /// IP every Gateway server port binds on (`--bind-address`); default 0.0.0.0.
    pub bind_address: IpAddr,
    /// Directory of `credentialName` certificates (`--certs-dir`); default `certs/`.
    pub certs_dir: PathBuf,
    /// Serve only Gateways whose selector has these labels (`--selector`).
    pub selector: BTreeMap<String, String>,
    /// Extra plain HTTP listener for mesh-bound VirtualServices (`--mesh-port`).
    pub mesh_port: Option<u16>,
    /// Bind every listener on an ephemeral port instead of its configured one (tests).
    pub ephemeral_ports: bool,
    /// Access log format (`--access-log`).
    pub access_log: AccessLog,
    /// Percent (0..=100) of requests sampled when meshgate starts a trace context
    /// (`--trace-sampling`; default 1, Istio's).
    pub trace_sampling: f64,
    /// `x-forwarded-client-cert` handling (`--forward-client-cert`); default sanitize.
    pub forward_client_cert: crate::http::headers::ForwardClientCert,
    /// Time a client has to send a complete request head (seconds-scale; default 10 s).
    pub header_read_timeout: Duration,
    /// Largest request body buffered so that it can be sent again on retry (bytes; 64 KiB).
    pub max_replay_body: usize,
    /// Open downstream connections across all listeners (default 10,000).
    pub max_connections: usize,
    /// Open downstream connections per listener (default: only the global cap applies).
    pub max_connections_per_listener: Option<usize>,
    /// Request size and HTTP/2 limits.
    pub http_limits: crate::http::server::HttpLimits,
    /// Upstream connect / pool settings (connect 10 s, idle 4 s, 128 idle per endpoint).
    pub pool: PoolSettings,
    /// How long to keep accepting after SIGTERM while readiness reports 503, so load
    /// balancers stop sending new connections first (default 5 s).
    pub drain_delay: Duration,
    /// How long in-flight work may run after shutdown starts (default 30 s).
    pub drain_timeout: Duration,
    /// Time for a TLS client to send its ClientHello and finish the handshake (default 10 s).
    pub tls_handshake_timeout: Duration,
    /// Idle timeout of passthrough and TCP connections (default 1 h, Envoy's).
    pub tcp_idle_timeout: Duration,
    /// An HTTP/2 connection with no open stream for this long is drained and closed (default
    /// 1 h: Envoy's `idle_timeout`, which Istio's `ISTIO_META_IDLE_TIMEOUT` sets; zero: never).
    pub h2_idle_timeout: Duration,
    /// Longest silence while a request waits for its response head (Envoy's
    /// `stream_idle_timeout`; default zero: off, as Istio configures its gateways).
    pub stream_idle_timeout: Duration,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            source: Source::Files,
            config_paths: vec![PathBuf::from("config")],
            admin_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 15000)),
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            certs_dir: PathBuf::from("certs"),
            selector: BTreeMap::new(),
            mesh_port: None,
            ephemeral_ports: false,
            access_log: AccessLog::Off,
            forward_client_cert: Default::default(),
            trace_sampling: 1.0,
            header_read_timeout: Duration::from_secs(10),
            max_replay_body: 64 * 1024,
            max_connections: 10_000,
            max_connections_per_listener: None,
            http_limits: Default::default(),
            pool: PoolSettings::default(),
            drain_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            tcp_idle_timeout: Duration::from_secs(3600),
            h2_idle_timeout: Duration::from_secs(3600),
            stream_idle_timeout: Duration::ZERO,
        }
    }
}
