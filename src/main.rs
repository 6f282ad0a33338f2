//! The meshgate command line: parse flags, set up logging, run. No logic lives here.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use meshgate::config::{self, AccessLog, Bootstrap, CompileOptions};

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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and validate configuration without serving; exit 1 listing every error.
    Validate {
        /// Files or directories to check.
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
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

fn validate(paths: &[PathBuf], cli: &Cli) -> ExitCode {
    let raw = match config::source::file::load(paths) {
        Ok(raw) => raw,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s)", errors.len());
            return ExitCode::FAILURE;
        }
    };
    meshgate::tls::install_default_provider();
    let registry = meshgate::upstream::Registry::default();
    let credentials = meshgate::tls::server::CertsDir(cli.certs_dir.clone());
    let opts = CompileOptions {
        selector: selector(cli),
        mesh_port: cli.mesh_port,
        registry: &registry,
        credentials: &credentials,
    };
    match config::compile(&raw, &opts) {
        Ok(snap) => {
            for w in &snap.warnings {
                eprintln!("warning: {w}");
            }
            let [gw, vs, dr, se, we] = raw.counts();
            eprintln!(
                "valid: {gw} Gateway, {vs} VirtualService, {dr} DestinationRule, {se} ServiceEntry, {we} WorkloadEntry; \
                 {} listener(s), {} cluster(s), {} warning(s)",
                snap.listeners.len(),
                snap.clusters.len(),
                snap.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(f) => {
            for w in &f.warnings {
                eprintln!("warning: {w}");
            }
            for e in &f.errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s)", f.errors.len());
            ExitCode::FAILURE
        }
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
        ..Bootstrap::default()
    };
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
