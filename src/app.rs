//! Wiring: first load, the config task (file watch or Kubernetes reflectors, SIGHUP, explicit
//! reloads), listener reconciliation, admin, signals and drain. The only place that knows
//! every part; nothing depends on it.
//!
//! Both sources ping the same `Notify` on a change; the config task debounces a burst into one
//! reload, reads a complete `RawSet` + credentials from the active source, and from there on
//! the path (compile, bind, publish or reject) is the same for both.
//!
//! Depends on: everything.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
#[cfg(feature = "kubernetes")]
use crate::config::source::kube::{KubeSource, SourceError};
use crate::config::source::watch::Watcher;
use crate::config::{
    self, Bootstrap, CompileOptions, ConfigError, ConfigStore, RawSet, Snapshot, Source,
};
use crate::http::proxy::Proxy;
use crate::http::server::ServerSettings;
use crate::listen;
use crate::metrics::Metrics;
use crate::shutdown::Drain;
use crate::tls::server::{Credentials, Preloaded};
use crate::upstream::Registry;

/// Quiet time after a file event before reloading, so a burst of writes is one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Longest a burst of events can delay a reload.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);
/// How often snapshots still held by requests after a swap are checked for release.
const REAP_EVERY: Duration = Duration::from_millis(100);

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
    /// Reading or compiling the config stopped abnormally: it panicked (a bug) or the
    /// runtime is shutting down. The old config stays.
    #[error("config work failed: {0}")]
    Internal(String),
    /// The Kubernetes source could not be set up.
    #[cfg(feature = "kubernetes")]
    #[error("kubernetes source: {0}")]
    Kubernetes(#[from] SourceError),
}

/// The outcome of one reload.
pub type ReloadResult = Result<u64, Vec<String>>;

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// The active config.
    pub store: Arc<ConfigStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Lifecycle handle.
    pub drain: Drain,
    listeners: Arc<Mutex<BTreeMap<u16, SocketAddr>>>,
    reload_tx: mpsc::UnboundedSender<Option<oneshot::Sender<ReloadResult>>>,
    drain_delay: Duration,
    drain_timeout: Duration,
}

impl Running {
    /// Where configured port `port` is served now.
    pub fn listener(&self, port: u16) -> Option<SocketAddr> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&port)
            .copied()
    }

    /// Every configured port and its bound address.
    pub fn listeners(&self) -> BTreeMap<u16, SocketAddr> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reload the config now; the new generation, or the errors that kept the old one.
    pub async fn reload(&self) -> ReloadResult {
        let (tx, rx) = oneshot::channel();
        if self.reload_tx.send(Some(tx)).is_err() {
            return Err(vec!["config task stopped".to_owned()]);
        }
        rx.await
            .unwrap_or_else(|_| Err(vec!["config task stopped".to_owned()]))
    }

    /// Ask for a reload without waiting (SIGHUP).
    pub fn trigger_reload(&self) {
        let _ = self.reload_tx.send(None);
    }

    /// Graceful shutdown: not ready at once, keep accepting for the drain delay (so load
    /// balancers notice), then stop accepting, let in-flight requests finish (HTTP/1 gets
    /// `Connection: close`, HTTP/2 GOAWAY) up to the drain timeout.
    pub async fn shutdown(self) {
        self.drain.set_ready(false);
        tokio::time::sleep(self.drain_delay).await;
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

/// Everything the config task owns.
struct ConfigTask {
    boot: Bootstrap,
    registry: Arc<Registry>,
    store: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    ctx: Arc<listen::Ctx>,
    conns: Arc<Semaphore>,
    drain: Drain,
    active: HashMap<u16, Active>,
    addrs: Arc<Mutex<BTreeMap<u16, SocketAddr>>>,
    source: ActiveSource,
    /// What the last published snapshot was built from.
    last_input: Option<Input>,
    /// Replaced snapshots a request still held when they were swapped out; freed on a
    /// blocking thread once this is their last reference (`reap`).
    retired: Vec<Arc<Snapshot>>,
}

/// What a snapshot is built from: the resources and every certificate's bytes.
type Input = (RawSet, Vec<Option<Vec<u8>>>);

/// The source the config task reads.
enum ActiveSource {
    /// `--config` files, with their watcher when the platform gives one.
    Files(Option<Watcher>),
    /// Reflectors over the Kubernetes API.
    #[cfg(feature = "kubernetes")]
    Kubernetes(Arc<KubeSource>),
}

/// A port being served.
struct Active {
    /// Cancelled when the port leaves the config: its accept loop stops.
    token: CancellationToken,
    /// Its socket, for `TCP_DEFER_ACCEPT` when its protocol changes on reload.
    listener: Arc<tokio::net::TcpListener>,
    /// Whether accepts are deferred now.
    deferred: bool,
}

/// One read of the active source.
struct Loaded {
    raw: RawSet,
    /// Every certificate byte the compile may use, compared to spot a change.
    certs: Vec<Option<Vec<u8>>>,
    credentials: Box<dyn Credentials>,
    /// This gateway's labels, when Gateways are selected by them
    /// (`CompileOptions::workload_labels`).
    workload_labels: Option<BTreeMap<String, String>>,
}

/// Load the config, bind every listener and the admin port, and start serving.
pub async fn start(boot: Bootstrap) -> Result<Running, StartError> {
    crate::tls::install_default_provider();
    let metrics = Arc::new(Metrics::new()?);
    let registry = Arc::new(Registry::new(boot.pool));
    let store = Arc::new(ConfigStore::new());
    let drain = Drain::new();

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
        access_log: boot.access_log,
        forward_client_cert: boot.forward_client_cert,
        mirrors: Default::default(),
        trace_sampling: boot.trace_sampling,
        max_request_target: boot.http_limits.max_request_target,
        stream_idle_timeout: Some(boot.stream_idle_timeout).filter(|t| !t.is_zero()),
    });
    let ctx = Arc::new(listen::Ctx {
        proxy,
        http: ServerSettings {
            header_read_timeout: boot.header_read_timeout,
            limits: boot.http_limits,
            h2_idle_timeout: boot.h2_idle_timeout,
            preserve_header_case: boot.pool.preserve_header_case,
        },
        l4: listen::L4Settings {
            connect_timeout: boot.pool.connect_timeout,
            idle_timeout: boot.tcp_idle_timeout,
        },
        tls_handshake_timeout: boot.tls_handshake_timeout,
    });
    let changed = Arc::new(Notify::new());
    let source = match &boot.source {
        Source::Files => ActiveSource::Files(match Watcher::new(changed.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch config files; reload with SIGHUP");
                None
            }
        }),
        #[cfg(feature = "kubernetes")]
        Source::Kubernetes(settings) => ActiveSource::Kubernetes(Arc::new(
            KubeSource::start(
                settings,
                boot.certs_dir.clone(),
                boot.selector.is_empty(),
                changed.clone(),
            )
            .await?,
        )),
    };
    let addrs = Arc::new(Mutex::new(BTreeMap::new()));
    let mut task = ConfigTask {
        registry,
        store: store.clone(),
        metrics: metrics.clone(),
        ctx,
        conns: Arc::new(Semaphore::new(boot.max_connections)),
        drain: drain.clone(),
        active: HashMap::new(),
        addrs: addrs.clone(),
        source,
        last_input: None,
        retired: Vec::new(),
        boot,
    };
    // The first load must succeed: there is nothing to fall back on.
    task.load().await?;
    let drain_delay = task.boot.drain_delay;
    let drain_timeout = task.boot.drain_timeout;
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    tokio::spawn(task.run(reload_rx, changed));

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
        store,
        metrics,
        drain,
        listeners: addrs,
        reload_tx,
        drain_delay,
        drain_timeout,
    })
}

impl ConfigTask {
    fn rejected(&self, errors: Vec<ConfigError>) -> StartError {
        self.metrics
            .config_reloads
            .with_label_values(&["rejected"])
            .inc();
        StartError::Config(errors)
    }

    /// Read the `--config` files and the certificates they reference.
    async fn read_files(&mut self) -> Result<Loaded, Vec<ConfigError>> {
        let paths = self.boot.config_paths.clone();
        let certs_dir = self.boot.certs_dir.clone();
        let (raw, referenced) = off_runtime(move || {
            let raw = config::source::file::load(&paths)?;
            let referenced = raw.referenced_files(&certs_dir);
            Ok((raw, referenced))
        })
        .await
        .unwrap_or_else(|e| Err(unfinished(&e)))?;
        // Watch before compiling: a config rejected for a missing certificate must be
        // retried when that file appears.
        if let ActiveSource::Files(Some(w)) = &mut self.source {
            let mut paths = self.boot.config_paths.clone();
            paths.extend(referenced.iter().cloned());
            for e in w.set(&paths, &referenced) {
                tracing::debug!("{e}");
            }
        }
        // Read certificates once: the compile uses exactly these bytes, so the recorded input
        // is what is served, and a later change is always seen as a change.
        let certs: Vec<Option<Vec<u8>>> =
            referenced.iter().map(|p| std::fs::read(p).ok()).collect();
        let credentials = Box::new(Preloaded {
            dir: self.boot.certs_dir.clone(),
            files: referenced.into_iter().zip(certs.iter().cloned()).collect(),
        });
        Ok(Loaded {
            raw,
            certs,
            credentials,
            workload_labels: None,
        })
    }

    /// Read the active source.
    async fn read_source(&mut self) -> Result<Loaded, Vec<ConfigError>> {
        match &self.source {
            ActiveSource::Files(_) => self.read_files().await,
            #[cfg(feature = "kubernetes")]
            ActiveSource::Kubernetes(k) => {
                // Converting every watched object is the same order of work as parsing files.
                let k = k.clone();
                let input = off_runtime(move || k.read())
                    .await
                    .unwrap_or_else(|e| Err(unfinished(&e)))?;
                Ok(Loaded {
                    certs: input.credentials.fingerprint(),
                    workload_labels: input.workload_labels,
                    credentials: Box::new(input.credentials),
                    raw: input.raw,
                })
            }
        }
    }

    /// Load, compile, bind new ports, publish, retire removed ports. On any error the
    /// active snapshot and listeners stay as they were.
    async fn load(&mut self) -> Result<Option<u64>, StartError> {
        let loaded = self.read_source().await.map_err(|e| self.rejected(e))?;
        let input = (loaded.raw, loaded.certs);
        let last = self.last_input.take();
        let opts = OwnedOptions {
            selector: self.boot.selector.clone(),
            workload_labels: loaded.workload_labels,
            mesh_port: self.boot.mesh_port,
            registry: self.registry.clone(),
        };
        let credentials = loaded.credentials;
        // Comparing and compiling take a while for a large config (the two, with parsing,
        // held a runtime worker for 0.5 s per reload at 10,000 hosts, stalling every request
        // on it): on a blocking thread, with the inputs moved there and back.
        let (input, last, outcome) = off_runtime(move || {
            if last.as_ref() == Some(&input) {
                return (input, last, None);
            }
            let outcome = opts.compile(&input.0, credentials.as_ref());
            (input, last, Some(outcome))
        })
        .await
        .map_err(StartError::Internal)?;
        self.last_input = last;
        let Some(outcome) = outcome else {
            tracing::debug!("config unchanged");
            return Ok(None);
        };
        let snap = outcome.map_err(|e| self.rejected(e))?;
        // Bind new ports before publishing, so a port we cannot open rejects the reload.
        let mut fresh = Vec::new();
        for l in &snap.listeners {
            if self.active.contains_key(&l.port) {
                continue;
            }
            let port = if self.boot.ephemeral_ports { 0 } else { l.port };
            let addr = SocketAddr::new(self.boot.bind_address, port);
            match listen::bind(l.port, addr).await {
                Ok(b) => fresh.push((b, l.protocol)),
                Err(source) => {
                    self.metrics
                        .config_reloads
                        .with_label_values(&["rejected"])
                        .inc();
                    return Err(StartError::Bind { addr, source });
                }
            }
        }
        // Nothing below rejects the reload. A port kept from the last config whose protocol
        // changed (HTTP to TCP, say) has its deferred accept turned on or off.
        for l in &snap.listeners {
            if let Some(a) = self.active.get_mut(&l.port) {
                if a.deferred != listen::defer::wanted(l.protocol) {
                    a.deferred = listen::defer_accepts(&a.listener, l.port, l.protocol);
                }
            }
        }
        for w in &snap.warnings {
            tracing::warn!("{w}");
        }
        let ports: Vec<u16> = snap.listeners.iter().map(|l| l.port).collect();
        let [gw, vs, dr, se, we] = input.0.counts();
        let (generation, previous) = self.store.publish(snap);
        let replaced = self.last_input.replace(input);
        self.retired.push(previous);
        self.reap(replaced);
        self.metrics
            .config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.metrics
            .config_reloads
            .with_label_values(&["applied"])
            .inc();
        tracing::info!(
            generation,
            gateways = gw,
            virtual_services = vs,
            destination_rules = dr,
            service_entries = se,
            workload_entries = we,
            "config applied"
        );
        for (b, protocol) in fresh {
            let deferred = listen::defer_accepts(&b.listener, b.port, protocol);
            let token = self.drain.token.child_token();
            let (port, local) = (b.port, b.listener.local_addr().ok());
            tracing::info!(port, addr = ?local, "listening");
            if let Some(a) = local {
                self.addrs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(port, a);
            }
            self.active.insert(
                port,
                Active {
                    token: token.clone(),
                    listener: b.listener.clone(),
                    deferred,
                },
            );
            let per_listener = self
                .boot
                .max_connections_per_listener
                .map(|n| Arc::new(Semaphore::new(n)));
            tokio::spawn(listen::accept_loop(
                b,
                self.ctx.clone(),
                self.conns.clone(),
                per_listener,
                self.drain.clone(),
                token,
            ));
        }
        let removed: Vec<u16> = self
            .active
            .keys()
            .filter(|p| !ports.contains(p))
            .copied()
            .collect();
        for port in removed {
            if let Some(a) = self.active.remove(&port) {
                tracing::info!(port, "port removed: stop accepting, drain its connections");
                a.token.cancel();
            }
            self.addrs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&port);
        }
        Ok(Some(generation))
    }

    /// Free `input` and every retired snapshot no request holds any more, on a blocking
    /// thread: freeing a large snapshot is as big a job as building it, and if the last
    /// request holding it let go, that would happen on a runtime worker, between requests.
    fn reap(&mut self, input: Option<Input>) {
        // A count of one is ours alone: nobody can take a new reference to a snapshot that
        // is no longer in the store.
        let (free, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|s| Arc::strong_count(s) == 1);
        self.retired = held;
        if free.is_empty() && input.is_none() {
            return;
        }
        drop(tokio::task::spawn_blocking(move || drop((free, input))));
    }

    async fn reload(&mut self) -> ReloadResult {
        match self.load().await {
            Ok(Some(g)) => Ok(g),
            Ok(None) => {
                // Unchanged input, but valid: an earlier rejection no longer applies.
                self.store.reject(Vec::new());
                Ok(self.store.load().generation)
            }
            Err(e) => {
                let errors: Vec<String> = match &e {
                    StartError::Config(errs) => errs.iter().map(ToString::to_string).collect(),
                    other => vec![other.to_string()],
                };
                for e in &errors {
                    tracing::error!(
                        "config rejected, keeping generation {}: {e}",
                        self.store.load().generation
                    );
                }
                self.store.reject(errors.clone());
                Err(errors)
            }
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Option<oneshot::Sender<ReloadResult>>>,
        changed: Arc<Notify>,
    ) {
        loop {
            tokio::select! {
                req = rx.recv() => match req {
                    Some(reply) => {
                        let r = self.reload().await;
                        if let Some(tx) = reply {
                            let _ = tx.send(r);
                        }
                    }
                    None => return,
                },
                () = changed.notified() => {
                    // Debounce: wait until the files have been quiet for a moment, but never
                    // longer than MAX_DEBOUNCE, so a busy directory cannot starve reloads.
                    let until = tokio::time::Instant::now() + MAX_DEBOUNCE;
                    while tokio::time::timeout_at(until.min(tokio::time::Instant::now() + DEBOUNCE), changed.notified())
                        .await
                        .is_ok()
                    {}
                    let _ = self.reload().await;
                }
                () = tokio::time::sleep(REAP_EVERY), if !self.retired.is_empty() => self.reap(None),
                () = self.drain.token.cancelled() => return,
            }
        }
    }
}

/// Run until `stop` resolves, then drain and return. SIGHUP reloads the config.
pub async fn run(
    boot: Bootstrap,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let running = start(boot).await?;
    let hup = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            if let Ok(mut s) = signal(SignalKind::hangup()) {
                while s.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading config");
                    running.trigger_reload();
                }
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = stop => {}
        () = hup => {}
    }
    tracing::info!("shutting down: not ready, draining");
    running.shutdown().await;
    Ok(())
}

/// Run `f` on the runtime's blocking threads; the error says why it did not finish (a panic
/// inside it, or the runtime shutting down).
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())
}

/// A read that `off_runtime` could not finish, as the config error a reload reports.
fn unfinished(why: &str) -> Vec<ConfigError> {
    vec![ConfigError::file(
        &Arc::from(""),
        0,
        format!("config work failed: {why}"),
    )]
}

/// The compile's options, owned, to move to a blocking thread.
struct OwnedOptions {
    selector: BTreeMap<String, String>,
    workload_labels: Option<BTreeMap<String, String>>,
    mesh_port: Option<u16>,
    registry: Arc<Registry>,
}

impl OwnedOptions {
    /// Compile `raw`; warnings of a rejected config are logged with its errors.
    fn compile(
        self,
        raw: &RawSet,
        credentials: &dyn Credentials,
    ) -> Result<Snapshot, Vec<ConfigError>> {
        let opts = CompileOptions {
            selector: self.selector,
            workload_labels: self.workload_labels,
            mesh_port: self.mesh_port,
            registry: &self.registry,
            credentials,
        };
        config::compile(raw, &opts).map_err(|f| {
            for w in &f.warnings {
                tracing::warn!("{w}");
            }
            f.errors
        })
    }
}
