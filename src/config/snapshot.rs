//! The immutable, compiled model the data plane reads: listeners, per-port route tables and
//! clusters. Built by `compile`, published whole through `ConfigStore`.
//!
//! Depends on: `route`, `upstream`, `config::error`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::error::ConfigError;
use crate::route::RouteTable;
use crate::upstream::Cluster;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Gateway servers (plain HTTP, HTTP2 or GRPC).
    Gateway,
    /// The `--mesh-port` listener: VirtualServices bound to `mesh`, by Host or as a forward proxy.
    Mesh,
}

/// One listening port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The Gateway server port (what routes match on), or the mesh port.
    pub port: u16,
    /// Gateway or mesh.
    pub kind: ListenerKind,
    /// `Gateway ns/name servers[i]` for each server on the port.
    pub servers: Vec<String>,
}

/// A compiled configuration.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Set when published; 0 before.
    pub generation: u64,
    /// Ports to serve, sorted.
    pub listeners: Vec<Listener>,
    /// Route table per listener port.
    pub tables: HashMap<u16, RouteTable>,
    /// Clusters referenced by routes (indexes in `WeightedDestination::cluster`).
    pub clusters: Vec<Arc<Cluster>>,
    /// Problems that did not prevent serving.
    pub warnings: Vec<ConfigError>,
    /// Source files, in order.
    pub files: Vec<String>,
    /// Pre-rendered `/config_dump` body (without the generation).
    pub dump: serde_json::Value,
}

impl Snapshot {
    /// The route table of listener `port`.
    pub fn table(&self, port: u16) -> Option<&RouteTable> {
        self.tables.get(&port)
    }

    /// The listener on `port`.
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }
}
