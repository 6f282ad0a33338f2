//! The immutable, compiled model the data plane reads: listeners, per-port route tables,
//! TLS servers chosen by SNI, L4 routes, and clusters. Built by `compile`, published whole
//! through `ConfigStore`.
//!
//! Depends on: `route`, `upstream`, `config::error`, rustls (server configs).

use std::sync::Arc;

use crate::config::error::ConfigError;
use crate::route::{FastMap, Forward, HostTable, RouteTable};
use crate::upstream::Cluster;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Gateway servers.
    Gateway,
    /// The `--mesh-port` listener: VirtualServices bound to `mesh`, by Host or as a forward proxy.
    Mesh,
}

/// The protocol family of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    /// Plain HTTP/1.1 and h2c.
    Http,
    /// TLS: terminated (HTTPS) or passed through, chosen by SNI.
    Tls,
    /// Opaque TCP.
    Tcp,
}

/// One listening port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The Gateway server port (what routes match on), or the mesh port.
    pub port: u16,
    /// Gateway or mesh.
    pub kind: ListenerKind,
    /// Protocol family.
    pub protocol: PortProtocol,
    /// `Gateway ns/name servers[i]` for each server on the port.
    pub servers: Vec<String>,
}

/// A TLS port: servers chosen by SNI, and passthrough routes.
#[derive(Debug, Default)]
pub struct TlsPort {
    /// Servers in config order.
    pub servers: Vec<TlsServer>,
    /// Server index by host pattern (exact, longest wildcard, `*` for no or unknown SNI).
    pub by_sni: HostTable<usize>,
    /// Passthrough routes by SNI pattern, in rule order.
    pub passthrough: HostTable<Vec<L4Route>>,
}

impl TlsPort {
    /// The server for a ClientHello with this SNI (`None`: no SNI).
    pub fn server_for(&self, sni: Option<&str>) -> Option<&TlsServer> {
        let i = match sni {
            Some(s) => self.by_sni.lookup(s),
            None => self.by_sni.lookup(""),
        }?;
        self.servers.get(*i)
    }
}

/// One Gateway server on a TLS port.
#[derive(Debug)]
pub struct TlsServer {
    /// `Gateway ns/name servers[i]`.
    pub id: String,
    /// Host patterns it serves (lowercase, namespace prefix removed).
    pub hosts: Vec<String>,
    /// Terminate or pass through.
    pub mode: TlsMode,
}

/// What a TLS server does with a connection.
#[derive(Debug)]
pub enum TlsMode {
    /// Terminate with this config, then route HTTP with this server's own table.
    Terminate {
        /// rustls configuration (certificate, client auth, versions, ALPN).
        config: Arc<rustls::ServerConfig>,
        /// Routes of the VirtualServices bound to this server.
        table: RouteTable,
    },
    /// A `TLS` server with mode SIMPLE / MUTUAL: terminate, then forward the plain bytes
    /// along the first TCP route of the VirtualServices bound to it.
    TerminateTcp {
        /// rustls configuration (certificate, client auth, versions; no ALPN).
        config: Arc<rustls::ServerConfig>,
        /// TCP routes, in order; the first one is used.
        routes: Vec<L4Route>,
    },
    /// Forward the bytes untouched to the route matching the SNI.
    Passthrough,
}

/// An L4 (TLS passthrough or TCP) route.
#[derive(Debug, Clone)]
pub struct L4Route {
    /// `namespace/vs` and rule index, for logs and metrics.
    pub name: Arc<str>,
    /// Weighted destinations.
    pub forward: Forward,
}

/// A compiled configuration.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Set when published; 0 before.
    pub generation: u64,
    /// Ports to serve, sorted.
    pub listeners: Vec<Listener>,
    /// Route table per plain HTTP listener port.
    pub tables: FastMap<u16, RouteTable>,
    /// TLS ports.
    pub tls: FastMap<u16, TlsPort>,
    /// TCP ports: routes in order; the first one is used.
    pub tcp: FastMap<u16, Vec<L4Route>>,
    /// Clusters referenced by routes (indexes in `WeightedDestination::cluster`).
    pub clusters: Vec<Arc<Cluster>>,
    /// Problems that did not prevent serving.
    pub warnings: Vec<ConfigError>,
    /// Source files, in order.
    pub files: Vec<String>,
}

impl Snapshot {
    /// The route table of plain HTTP listener `port`.
    pub fn table(&self, port: u16) -> Option<&RouteTable> {
        self.tables.get(&port)
    }

    /// The listener on `port`.
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }
}
