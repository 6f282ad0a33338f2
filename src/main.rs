//! The meshgate command line: parse flags, set up logging, run. No logic lives here.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use meshgate::config::{self, AccessLog, Bootstrap, CompileOptions};

#[cfg(feature = "mimalloc")]
mod allocator;

/// mimalloc: glibc's allocator was 15% of the instructions per proxied request (callgrind,
/// `benches/profile.sh`); the hot path allocates and frees small objects on one thread.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: allocator::MiMalloc = allocator::MiMalloc;

/// A standalone ingress/egress gateway that speaks Istio's networking API.
#[derive(Debug, Parser)]
#[command(name = "meshgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Istio YAML file or directory (repeatable); default `config/`.
    #[arg(long = "config", value_name = "PATH", global = true)]
    config: Vec<PathBuf>,
    /// Admin API address.
    #[arg(long, default_value = "127.0.0.1:15000", value_name = "ADDR")]
    admin: SocketAddr,
    /// IP address every Gateway server port is bound on.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    bind_address: IpAddr,
    /// Directory holding `credentialName` certificates.
    #[arg(long, default_value = "certs", value_name = "DIR", global = true)]
    certs_dir: PathBuf,
    /// Serve only Gateways whose selector has this label (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label, global = true)]
    selector: Vec<(String, String)>,
    /// Also serve mesh-bound VirtualServices (no `gateways`) on this plain HTTP port, by
    /// Host header or as a forward proxy.
    #[arg(long, value_name = "PORT", global = true)]
    mesh_port: Option<u16>,
    /// After SIGTERM, keep accepting this long while /healthz/ready reports 503.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    drain_delay: Duration,
    /// Then let in-flight requests finish for at most this long.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Access log on stdout.
    #[arg(long, value_enum, default_value = "off")]
    access_log: AccessLogArg,
    /// `x-forwarded-client-cert` to upstreams: `sanitize` removes it; `sanitize-set` sets
    /// the mutual TLS client's identity (Istio's gateway behaviour); `append-forward`,
    /// `forward-only`, `always-forward-only` as in Envoy.
    #[arg(long, value_enum, default_value = "sanitize")]
    forward_client_cert: ForwardClientCertArg,
    /// Percent of requests sampled when meshgate starts their trace context (W3C
    /// `traceparent` and B3 headers); requests that arrive with one keep it.
    #[arg(long, default_value = "1", value_name = "PERCENT", value_parser = parse_percent)]
    trace_sampling: f64,
    /// Where the Istio resources come from: `--config` files, or the Kubernetes API
    /// (kubeconfig or in-cluster service account; needs the `kubernetes` build feature).
    #[arg(long, value_enum, default_value = "files")]
    source: SourceArg,
    /// With `--source kubernetes`: watch only this namespace (repeatable; default all).
    #[arg(long = "namespace", value_name = "NS")]
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    namespaces: Vec<String>,
    /// With `--source kubernetes` and no `--selector`: the downward API file holding this
    /// pod's labels; Gateways whose selector matches them are served (all if it is absent).
    #[arg(long, default_value = "/etc/podinfo/labels", value_name = "PATH")]
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pod_labels_file: PathBuf,
    /// Keep HTTP/1.1 header-name case end to end (Envoy's `preserve_case` formatter) for
    /// peers that wrongly treat names as case-sensitive; by default names are sent in
    /// lowercase, as Istio's gateway does. Costs about a sixth more CPU per request.
    #[arg(long)]
    preserve_header_case: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Timeouts and limits; each default is Bootstrap's (the README lists them all).
#[derive(Debug, Args)]
#[command(next_help_heading = "Timeouts and limits")]
struct LimitArgs {
    /// Time a client has for a complete request head; also closes idle keep-alive
    /// connections and connections that send nothing [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    header_read_timeout: Option<Duration>,
    /// Time a TLS client has for its ClientHello and the handshake [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    tls_handshake_timeout: Option<Duration>,
    /// Upstream TCP connect timeout, unless a DestinationRule sets one [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    connect_timeout: Option<Duration>,
    /// Idle upstream HTTP/1.1 connections are closed after this long, unless a
    /// DestinationRule sets `idleTimeout` [default: 4s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    upstream_idle_timeout: Option<Duration>,
    /// Passthrough and TCP connections are closed after this long without a byte [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    tcp_idle_timeout: Option<Duration>,
    /// HTTP/2 connections with no open stream are sent GOAWAY and closed after this long
    /// (Istio's `ISTIO_META_IDLE_TIMEOUT`); 0: never [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    h2_idle_timeout: Option<Duration>,
    /// A request that waits this long for its response head with no request body byte in
    /// between gets 504 (408 while its body is still due), flag SI; Envoy's
    /// `stream_idle_timeout`; 0: off, as on Istio's gateway [default: 0s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stream_idle_timeout: Option<Duration>,
    /// Requests in flight to one destination when its DestinationRule sets no
    /// `http2MaxRequests`; more get 503 UO; 0: unbounded, as in Istio [default: 10000].
    #[arg(long, value_name = "N")]
    max_requests_per_destination: Option<usize>,
    /// Open downstream connections across all listeners [default: 10000].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Open downstream connections per listener [default: only the global cap].
    #[arg(long, value_name = "N")]
    max_connections_per_listener: Option<usize>,
    /// Largest request head, or HTTP/2 header list, in bytes (431 over it) [default: 65536].
    #[arg(long, value_name = "BYTES")]
    max_request_head: Option<usize>,
    /// Most header fields in a request (431 over it) [default: 100].
    #[arg(long, value_name = "N")]
    max_request_headers: Option<usize>,
    /// Longest request target in bytes (414 over it) [default: 16384].
    #[arg(long, value_name = "BYTES")]
    max_request_target: Option<usize>,
    /// Largest request body kept so that it can be sent again on retry [default: 65536].
    #[arg(long, value_name = "BYTES")]
    max_replay_body: Option<usize>,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS [default: 256].
    #[arg(long, value_name = "N")]
    h2_max_concurrent_streams: Option<u32>,
    /// HTTP/2 initial stream flow-control window in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    h2_stream_window: Option<u32>,
    /// HTTP/2 initial connection flow-control window in bytes [default: 2097152].
    #[arg(long, value_name = "BYTES")]
    h2_connection_window: Option<u32>,
    /// HTTP/2 streams a client may reset before they are accepted, before the connection is
    /// closed with ENHANCE_YOUR_CALM (rapid reset) [default: 20].
    #[arg(long, value_name = "N")]
    h2_max_pending_resets: Option<usize>,
}

impl LimitArgs {
    /// Apply the flags given to `boot`.
    fn apply(&self, boot: &mut Bootstrap) {
        fn set<T: Copy>(slot: &mut T, flag: Option<T>) {
            if let Some(v) = flag {
                *slot = v;
            }
        }
        set(&mut boot.header_read_timeout, self.header_read_timeout);
        set(&mut boot.tls_handshake_timeout, self.tls_handshake_timeout);
        set(&mut boot.pool.connect_timeout, self.connect_timeout);
        set(&mut boot.pool.idle_timeout, self.upstream_idle_timeout);
        set(&mut boot.tcp_idle_timeout, self.tcp_idle_timeout);
        set(&mut boot.h2_idle_timeout, self.h2_idle_timeout);
        set(&mut boot.stream_idle_timeout, self.stream_idle_timeout);
        set(&mut boot.max_connections, self.max_connections);
        if let Some(n) = self.max_requests_per_destination {
            boot.pool.max_requests = (n > 0).then_some(n);
        }
        if self.max_connections_per_listener.is_some() {
            boot.max_connections_per_listener = self.max_connections_per_listener;
        }
        set(&mut boot.max_replay_body, self.max_replay_body);
        let l = &mut boot.http_limits;
        set(&mut l.max_request_head, self.max_request_head);
        set(&mut l.max_request_headers, self.max_request_headers);
        set(&mut l.max_request_target, self.max_request_target);
        set(
            &mut l.h2_max_concurrent_streams,
            self.h2_max_concurrent_streams,
        );
        set(&mut l.h2_stream_window, self.h2_stream_window);
        set(&mut l.h2_connection_window, self.h2_connection_window);
        set(
            &mut l.h2_max_pending_accept_reset_streams,
            self.h2_max_pending_resets,
        );
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and validate configuration without serving; exit 1 listing every error.
    Validate {
        /// Files or directories to check.
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
    /// Explain, without sending anything, how a request would be routed: listener, Gateway
    /// server, virtual host, VirtualService rule and match block (and why earlier rules did
    /// not match), destinations with their endpoints and policies, or why it is rejected.
    /// Exit 0 when routed, 2 when rejected, 1 on configuration errors.
    Explain(ExplainArgs),
    /// Exit 0 if the admin API reports ready (GET /healthz/ready answers 200 within 2 s),
    /// else 1. For a container HEALTHCHECK in an image without curl.
    Healthcheck {
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:15000", value_name = "ADDR")]
        admin: SocketAddr,
    },
}

/// `meshgate explain` options, curl-like.
#[derive(Debug, Args)]
struct ExplainArgs {
    /// The request URL, e.g. http://bookinfo.example:8080/productpage?x=1.
    #[arg(value_name = "URL")]
    url: String,
    /// Request header `name: value` (repeatable); `Host` replaces the URL's host.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Request method.
    #[arg(short = 'X', long, default_value = "GET", value_name = "M")]
    method: String,
    /// SNI of the ClientHello; https defaults to the URL's host; '' sends none.
    #[arg(long, value_name = "NAME")]
    sni: Option<String>,
    /// Listener port; defaults to the URL's port, else 80 (http) or 443 (https).
    #[arg(long, value_name = "P")]
    port: Option<u16>,
    /// Print the explanation as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceArg {
    Files,
    Kubernetes,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ForwardClientCertArg {
    AppendForward,
    AlwaysForwardOnly,
    ForwardOnly,
    Sanitize,
    SanitizeSet,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AccessLogArg {
    Off,
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
        .or_else(|| s.parse::<u64>().ok().map(Duration::from_secs))
        .ok_or_else(|| format!("expected a duration such as 5s or 500ms, got {s:?}"))
}

fn parse_percent(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .ok_or_else(|| format!("expected a percentage 0..=100, got {s:?}"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate { ref paths }) => validate(paths, &cli),
        Some(Command::Healthcheck { admin }) => healthcheck(admin),
        Some(Command::Explain(ref args)) => explain(args, &cli),
        None => match serve(cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meshgate: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn selector(cli: &Cli) -> BTreeMap<String, String> {
    cli.selector.iter().cloned().collect()
}

/// Read `paths` and compile them offline, as `serve` would (validate, explain). Read errors
/// are printed here; `None` then.
fn compile_offline(
    paths: &[PathBuf],
    cli: &Cli,
) -> Option<(
    config::RawSet,
    Result<config::Snapshot, config::CompileFailure>,
)> {
    let raw = match config::source::file::load(paths) {
        Ok(raw) => raw,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s)", errors.len());
            return None;
        }
    };
    meshgate::tls::install_default_provider();
    let registry = meshgate::upstream::Registry::default();
    let credentials = meshgate::tls::server::CertsDir(cli.certs_dir.clone());
    let opts = CompileOptions {
        workload_labels: None,
        selector: selector(cli),
        mesh_port: cli.mesh_port,
        registry: &registry,
        credentials: &credentials,
    };
    let compiled = config::compile(&raw, &opts);
    Some((raw, compiled))
}

fn validate(paths: &[PathBuf], cli: &Cli) -> ExitCode {
    use meshgate::analyze::{self, Severity};
    let Some((raw, compiled)) = compile_offline(paths, cli) else {
        return ExitCode::FAILURE;
    };
    let credentials = meshgate::tls::server::CertsDir(cli.certs_dir.clone());
    let (warnings, errors, snap) = match &compiled {
        Ok(snap) => (&snap.warnings, &Vec::new(), Some(snap)),
        Err(f) => (&f.warnings, &f.errors, None),
    };
    // Every line has a code: compile problems classified, then the analyzer's own checks.
    let mut findings: Vec<analyze::Finding> = errors
        .iter()
        .map(|e| analyze::classify(e, Severity::Error))
        .chain(
            warnings
                .iter()
                .map(|w| analyze::classify(w, Severity::Warning)),
        )
        .collect();
    findings.extend(analyze::analyze(
        &raw,
        snap,
        &credentials,
        std::time::SystemTime::now(),
    ));
    findings.sort_by_key(|f| f.severity);
    for f in &findings {
        eprintln!("{f}");
    }
    let n_errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let n_warnings = findings.len() - n_errors;
    match snap {
        Some(snap) if n_errors == 0 => {
            let [gw, vs, dr, se, we] = raw.counts();
            eprintln!(
                "valid: {gw} Gateway, {vs} VirtualService, {dr} DestinationRule, {se} ServiceEntry, {we} WorkloadEntry; \
                 {} listener(s), {} cluster(s), {n_warnings} warning(s)",
                snap.listeners.len(),
                snap.clusters.len(),
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{n_errors} error(s), {n_warnings} warning(s)");
            ExitCode::FAILURE
        }
    }
}

fn explain(args: &ExplainArgs, cli: &Cli) -> ExitCode {
    let req = match meshgate::explain::ExplainRequest::try_new(
        &args.url,
        Some(&args.method),
        args.headers.iter().map(String::as_str),
        args.sni.as_deref(),
        args.port,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshgate explain: {e}");
            return ExitCode::FAILURE;
        }
    };
    let paths = if cli.config.is_empty() {
        Bootstrap::default().config_paths
    } else {
        cli.config.clone()
    };
    let Some((_, compiled)) = compile_offline(&paths, cli) else {
        return ExitCode::FAILURE;
    };
    let snap = match compiled {
        Ok(snap) => snap,
        Err(f) => {
            for e in &f.errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s): nothing would be served", f.errors.len());
            return ExitCode::FAILURE;
        }
    };
    // Warnings can be the answer ("bound to the mesh only"), so they are shown.
    for w in &snap.warnings {
        eprintln!("warning: {w}");
    }
    let ex = meshgate::explain::explain(&snap, &req);
    let text = if args.json {
        match serde_json::to_string_pretty(&ex) {
            Ok(j) => j + "\n",
            Err(e) => {
                eprintln!("meshgate explain: cannot render JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let mut t = ex.to_string();
        if !t.ends_with('\n') {
            t.push('\n');
        }
        t
    };
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
        eprintln!("meshgate explain: {e}");
        return ExitCode::FAILURE;
    }
    if ex.is_routed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn serve(cli: Cli) -> anyhow::Result<()> {
    let access_log = match cli.access_log {
        AccessLogArg::Off => AccessLog::Off,
        AccessLogArg::Text => AccessLog::Text,
        AccessLogArg::Json => AccessLog::Json,
    };
    let _guard = meshgate::telemetry::init(access_log);
    let mut boot = Bootstrap {
        admin_addr: cli.admin,
        bind_address: cli.bind_address,
        certs_dir: cli.certs_dir.clone(),
        selector: selector(&cli),
        mesh_port: cli.mesh_port,
        access_log,
        drain_delay: cli.drain_delay,
        drain_timeout: cli.drain_timeout,
        trace_sampling: cli.trace_sampling,
        forward_client_cert: {
            use meshgate::http::headers::ForwardClientCert as F;
            match cli.forward_client_cert {
                ForwardClientCertArg::AppendForward => F::AppendForward,
                ForwardClientCertArg::AlwaysForwardOnly => F::AlwaysForwardOnly,
                ForwardClientCertArg::ForwardOnly => F::ForwardOnly,
                ForwardClientCertArg::Sanitize => F::Sanitize,
                ForwardClientCertArg::SanitizeSet => F::SanitizeSet,
            }
        },
        ..Bootstrap::default()
    };
    boot.pool.preserve_header_case = cli.preserve_header_case;
    cli.limits.apply(&mut boot);
    if cli.source == SourceArg::Kubernetes {
        boot.source = kubernetes_source(&cli)?;
    }
    if !cli.config.is_empty() {
        boot.config_paths = cli.config;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(meshgate::run(boot, shutdown_signal()))?;
    Ok(())
}

#[cfg(feature = "kubernetes")]
fn kubernetes_source(cli: &Cli) -> anyhow::Result<config::Source> {
    Ok(config::Source::Kubernetes(config::KubeSettings {
        namespaces: cli.namespaces.clone(),
        pod_labels_file: cli.pod_labels_file.clone(),
        connect: config::KubeConnect::Infer,
    }))
}

#[cfg(not(feature = "kubernetes"))]
fn kubernetes_source(_cli: &Cli) -> anyhow::Result<config::Source> {
    anyhow::bail!("--source kubernetes: this meshgate was built without the `kubernetes` feature")
}

/// The readiness probe as a command: a raw HTTP/1.1 GET with one 2 s deadline overall.
fn healthcheck(admin: SocketAddr) -> ExitCode {
    match probe_ready(admin, Duration::from_secs(2)) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("meshgate healthcheck: {admin}/healthz/ready answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("meshgate healthcheck: {admin}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The status code of `GET /healthz/ready` on `admin`, within `limit`.
fn probe_ready(admin: SocketAddr, limit: Duration) -> std::io::Result<u16> {
    let deadline = Instant::now() + limit;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(std::io::ErrorKind::TimedOut)
    };
    let mut conn = TcpStream::connect_timeout(&admin, left()?)?;
    conn.set_write_timeout(Some(left()?))?;
    // One write: `write!` on a socket would send each formatted piece separately.
    let request =
        format!("GET /healthz/ready HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes())?;
    // The status line is all we need: "HTTP/1.1 200 OK".
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        conn.set_read_timeout(Some(left()?))?;
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    use super::*;

    /// A one-shot server that reads a request and answers `reply`.
    fn answer_once(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // Read the whole request head first: closing with unread bytes would make the
            // kernel reset the connection and the client could see that instead of `reply`.
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            assert!(req.starts_with(b"GET /healthz/ready HTTP/1.1\r\n"));
            s.write_all(reply).unwrap();
            let _ = s.shutdown(std::net::Shutdown::Write);
            // Wait for the client to close, so nothing is reset under it.
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        });
        addr
    }

    #[test]
    fn probe_reads_the_status_code() {
        let ok = answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(probe_ready(ok, Duration::from_secs(2)).unwrap(), 200);
        let draining = answer_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert_eq!(probe_ready(draining, Duration::from_secs(2)).unwrap(), 503);
        let garbage = answer_once(b"SSH-2.0-OpenSSH\r\n");
        assert!(probe_ready(garbage, Duration::from_secs(2)).is_err());
    }

    #[test]
    fn probe_gives_up_at_its_deadline() {
        // Accepts (the kernel backlog does) but never answers.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        let e = probe_ready(l.local_addr().unwrap(), Duration::from_millis(300)).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// The defaults printed by `--help` for the limit flags are Bootstrap's real defaults.
    #[test]
    fn limit_flag_help_matches_bootstrap_defaults() {
        use clap::CommandFactory;
        let boot = Bootstrap::default();
        let l = boot.http_limits;
        let secs = |d: Duration| format!("{}s", d.as_secs());
        let expected = [
            ("header-read-timeout", secs(boot.header_read_timeout)),
            ("tls-handshake-timeout", secs(boot.tls_handshake_timeout)),
            ("connect-timeout", secs(boot.pool.connect_timeout)),
            ("upstream-idle-timeout", secs(boot.pool.idle_timeout)),
            (
                "tcp-idle-timeout",
                format!("{}h", boot.tcp_idle_timeout.as_secs() / 3600),
            ),
            (
                "h2-idle-timeout",
                format!("{}h", boot.h2_idle_timeout.as_secs() / 3600),
            ),
            ("stream-idle-timeout", secs(boot.stream_idle_timeout)),
            ("max-connections", boot.max_connections.to_string()),
            (
                "max-requests-per-destination",
                boot.pool.max_requests.unwrap_or(0).to_string(),
            ),
            ("max-request-head", l.max_request_head.to_string()),
            ("max-request-headers", l.max_request_headers.to_string()),
            ("max-request-target", l.max_request_target.to_string()),
            ("max-replay-body", boot.max_replay_body.to_string()),
            (
                "h2-max-concurrent-streams",
                l.h2_max_concurrent_streams.to_string(),
            ),
            ("h2-stream-window", l.h2_stream_window.to_string()),
            ("h2-connection-window", l.h2_connection_window.to_string()),
            (
                "h2-max-pending-resets",
                l.h2_max_pending_accept_reset_streams.to_string(),
            ),
        ];
        let cmd = Cli::command();
        for (flag, value) in expected {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .unwrap_or_else(|| panic!("no --{flag}"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                help.ends_with(&format!("[default: {value}]")),
                "--{flag}: help says {help:?}, Bootstrap's default is {value}"
            );
        }
        assert_eq!(boot.max_connections_per_listener, None);
    }
}
