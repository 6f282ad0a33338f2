//! meshgate's own settings (addresses, limits, sources), with their defaults. Every default
//! lives here with its unit.
//!
//! Depends on: std, `upstream::PoolSettings`.

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

/// Everything meshgate needs to start.
#[derive(Debug, Clone)]
pub struct Bootstrap {
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
    /// Time a client has to send a complete request head (seconds-scale; default 10 s).
    pub header_read_timeout: Duration,
    /// Largest request body buffered so that it can be sent again on retry (bytes; 64 KiB).
    pub max_replay_body: usize,
    /// Open downstream connections across all listeners (default 10,000).
    pub max_connections: usize,
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
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            config_paths: vec![PathBuf::from("config")],
            admin_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 15000)),
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            certs_dir: PathBuf::from("certs"),
            selector: BTreeMap::new(),
            mesh_port: None,
            ephemeral_ports: false,
            access_log: AccessLog::Off,
            header_read_timeout: Duration::from_secs(10),
            max_replay_body: 64 * 1024,
            max_connections: 10_000,
            pool: PoolSettings::default(),
            drain_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            tcp_idle_timeout: Duration::from_secs(3600),
        }
    }
}
