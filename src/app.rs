//! Wiring: first load, listeners, admin, signals, drain. The only place that knows every
//! part; nothing depends on it.
//!
//! Depends on: everything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::admin::{self, AdminState};
use crate::config::{self, AccessLog, Bootstrap, CompileOptions, ConfigError, ConfigStore};
use crate::http::proxy::Proxy;
use crate::http::server::ServerSettings;
use crate::listen;
use crate::metrics::Metrics;
use crate::shutdown::Drain;
use crate::tls::server::CertsDir;
use crate::upstream::Registry;

/// Why meshgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration:\n{}", config::ConfigErrors(.0.clone()))]
    Config(Vec<ConfigError>),
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Metrics registration failed (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// Configured port -> bound address.
    pub listeners: BTreeMap<u16, SocketAddr>,
    /// The active config.
    pub store: Arc<ConfigStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Lifecycle handle.
    pub drain: Drain,
    drain_timeout: std::time::Duration,
}

impl Running {
    /// Stop accepting, let in-flight requests finish (up to the drain timeout), return.
    pub async fn shutdown(self) {
        self.drain.shutdown();
        self.drain.tracker.close();
        if tokio::time::timeout(self.drain_timeout, self.drain.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout reached; dropping remaining connections");
        }
    }
}

/// Load the config, bind every listener and the admin port, and start serving.
pub async fn start(boot: Bootstrap) -> Result<Running, StartError> {
    crate::tls::install_default_provider();
    let metrics = Arc::new(Metrics::new()?);
    let registry = Arc::new(Registry::new(boot.pool));
    let store = Arc::new(ConfigStore::new());
    let drain = Drain::new();

    let raw = config::source::file::load(&boot.config_paths).map_err(StartError::Config)?;
    let credentials = CertsDir(boot.certs_dir.clone());
    let opts = CompileOptions {
        selector: boot.selector.clone(),
        mesh_port: boot.mesh_port,
        registry: &registry,
        credentials: &credentials,
    };
    let snap = config::compile(&raw, &opts).map_err(|f| {
        metrics
            .config_reloads
            .with_label_values(&["rejected"])
            .inc();
        for w in &f.warnings {
            tracing::warn!("{w}");
        }
        StartError::Config(f.errors)
    })?;
    for w in &snap.warnings {
        tracing::warn!("{w}");
    }
    let [gw, vs, dr, se, we] = raw.counts();
    let generation = store.publish(snap);
    metrics
        .config_generation
        .set(i64::try_from(generation).unwrap_or(i64::MAX));
    metrics.config_reloads.with_label_values(&["applied"]).inc();
    tracing::info!(
        generation,
        gateways = gw,
        virtual_services = vs,
        destination_rules = dr,
        service_entries = se,
        workload_entries = we,
        "config loaded"
    );

    let admin_listener = tokio::net::TcpListener::bind(boot.admin_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: boot.admin_addr,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: boot.admin_addr,
            source,
        })?;

    let proxy = Arc::new(Proxy {
        store: store.clone(),
        metrics: metrics.clone(),
        max_replay_body: boot.max_replay_body,
        access_log: boot.access_log != AccessLog::Off,
    });
    let ctx = Arc::new(listen::Ctx {
        proxy,
        http: ServerSettings {
            header_read_timeout: boot.header_read_timeout,
        },
        l4: listen::L4Settings {
            connect_timeout: boot.pool.connect_timeout,
            idle_timeout: boot.tcp_idle_timeout,
        },
        tls_handshake_timeout: boot.tls_handshake_timeout,
    });
    let conns = Arc::new(Semaphore::new(boot.max_connections));
    let mut listeners = BTreeMap::new();
    let mut bound = Vec::new();
    for l in &store.load().listeners {
        let port = if boot.ephemeral_ports { 0 } else { l.port };
        let addr = SocketAddr::new(boot.bind_address, port);
        let b = listen::bind(l.port, addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = b
            .listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        tracing::info!(port = l.port, addr = %local, kind = ?l.kind, "listening");
        listeners.insert(l.port, local);
        bound.push(b);
    }
    for b in bound {
        tokio::spawn(listen::accept_loop(
            b,
            ctx.clone(),
            conns.clone(),
            drain.clone(),
        ));
    }
    tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            store: store.clone(),
            metrics: metrics.clone(),
            drain: drain.clone(),
        },
    ));
    tracing::info!(addr = %admin_addr, "admin listening");
    drain.set_ready(true);
    Ok(Running {
        admin_addr,
        listeners,
        store,
        metrics,
        drain,
        drain_timeout: boot.drain_timeout,
    })
}

/// Run until `stop` resolves, then drain and return.
pub async fn run(
    boot: Bootstrap,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let running = start(boot).await?;
    stop.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
