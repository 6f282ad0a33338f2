//! Chaos under load (issue 7): meshgate keeps its promises while things break around it.
//!
//! - `kill-backend`: wrk drives GETs at a route over two endpoints; one endpoint is killed
//!   (listener and every connection closed at once) a third of the way in and restarted on
//!   the same port at two thirds. No request may fail (the route retries `reset` and
//!   `connect-failure`, as an Istio user would configure), and the restarted endpoint must get
//!   traffic again.
//! - `sigterm`: under wrk load, 20 slow requests (the backend answers after 500 ms) are in
//!   flight when meshgate gets SIGTERM; each must complete with 200, and meshgate must exit 0
//!   on its own.
//!
//! The third scenario of the issue, config swaps mid-run, is the `swap-storm` case.
//!
//! Must not: touch peers; these are meshgate's alone. Each scenario prints its figure.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use crate::cases::first_line;
use crate::loadgen::{self, Probe, Target, Wrk};
use crate::peers::HOST;
use crate::procs::{self, Proc};
use crate::report::{CaseResult, ChaosLine, Row, RowStatus};
use crate::systems::{self, System};
use crate::Bench;

/// The case name.
pub const NAME: &str = "chaos";

/// An upstream endpoint that can be killed and brought back on the same port.
struct Backend {
    port: u16,
    served: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    /// Serve on `port` (0: any), counting responses into `served`.
    fn start(port: u16, served: Arc<AtomicU64>) -> Result<Backend, String> {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
        // Bound here so that a taken port fails the caller; listening needs the runtime.
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|e| format!("bind backend {port}: {e}"))?;
        let std_listener = socket;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let count = served.clone();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match std_listener.listen(1024) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
                let _ = ready_tx.send(Ok(port));
                tokio::select! {
                    () = accept(listener, count) => {}
                    _ = rx => {}
                }
            });
            // Dropping the runtime drops every connection task: their sockets close at once,
            // as a crashed process's would.
            drop(rt);
        });
        let port = ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|e| format!("backend did not start: {e}"))??;
        Ok(Backend {
            port,
            served,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Close the listener and every connection now.
    fn kill(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn accept(l: tokio::net::TcpListener, served: Arc<AtomicU64>) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let served = served.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let served = served.clone();
                async move {
                    if req.uri().path().starts_with("/slow") {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

/// The route: two endpoints, retries on resets and connect failures.
fn config(port: u16, a: u16, b: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: chaos-gw}}
spec:
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: [\"{HOST}\"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: chaos}}
spec:
  hosts: [chaos.bench]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {a}}}}}
  - {{address: 127.0.0.1, ports: {{http: {b}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: chaos}}
spec:
  hosts: [\"{HOST}\"]
  gateways: [chaos-gw]
  http:
  - route: [{{destination: {{host: chaos.bench}}}}]
    retries: {{attempts: 3, retryOn: \"connect-failure,refused-stream,reset,gateway-error\"}}
---
"
    )
}

/// Run both scenarios.
pub fn run(b: &Bench) -> CaseResult {
    let secs = if b.settings.quick { 3 } else { 9 };
    let mut result = CaseResult {
        name: NAME.into(),
        title: format!("chaos under load: a backend killed and restarted during {secs} s of wrk (20 conns); SIGTERM with 20 slow requests in flight"),
        rows: vec![Row::new(System::Meshgate, RowStatus::Measured)],
        swap: None,
        chaos: Vec::new(),
    };
    for (name, outcome) in [
        ("kill-backend", kill_backend(b, secs)),
        ("sigterm", sigterm(b)),
    ] {
        let line = outcome.unwrap_or_else(|e| {
            println!("load: {NAME}/{name}: failed: {}", first_line(&e));
            eprintln!("{e}");
            ChaosLine {
                scenario: name.into(),
                figure: format!("failed: {}", first_line(&e)),
                errors: 1,
            }
        });
        println!(
            "load: {NAME}/{}: {} (errors {})",
            line.scenario, line.figure, line.errors
        );
        result.chaos.push(line);
    }
    result
}

fn start_meshgate(b: &Bench, dir: &Path, yaml: &str, drain: (&str, &str)) -> Result<Proc, String> {
    let cfg_dir = dir.join("config");
    std::fs::create_dir_all(&cfg_dir).map_err(|e| format!("mkdir: {e}"))?;
    std::fs::write(cfg_dir.join("chaos.yaml"), yaml).map_err(|e| format!("write: {e}"))?;
    let (mut args, env) = systems::meshgate_args(&cfg_dir, dir);
    for (flag, value) in [("--drain-delay", drain.0), ("--drain-timeout", drain.1)] {
        if let Some(i) = args.iter().position(|a| a == flag) {
            args[i + 1] = value.into();
        }
    }
    Proc::spawn(
        "meshgate",
        &b.tools.meshgate,
        &args,
        &env,
        b.proxy_core,
        &dir.join("stdout.log"),
    )
    .map_err(|e| format!("start meshgate: {e}"))
}

fn kill_backend(b: &Bench, secs: u64) -> Result<ChaosLine, String> {
    let dir = b.root.join("chaos-kill");
    let served = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let a = Backend::start(0, served[0].clone())?;
    let mut victim = Backend::start(0, served[1].clone())?;
    let port = procs::free_port();
    let mut mg = start_meshgate(b, &dir, &config(port, a.port, victim.port), ("0s", "5s"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    mg.wait_port(addr, Duration::from_secs(20))?;
    loadgen::wait_ok(addr, HOST, "/", Duration::from_secs(20))?;
    let target = Target {
        scheme: "http",
        url_host: "127.0.0.1",
        port,
        host: HOST.into(),
        path: "/",
    };
    let wrk = loadgen::wrk_spawn(
        &target,
        Wrk::saturate(20, false),
        secs,
        b.load_core,
        &dir,
        "chaos-kill",
    )?;
    let third = Duration::from_secs_f64(secs as f64 / 3.0);
    std::thread::sleep(third);
    let before = victim.served.load(Ordering::Relaxed);
    let killed_at = Instant::now();
    victim.kill();
    std::thread::sleep(third);
    let during = victim.served.load(Ordering::Relaxed) - before;
    let restarted = Backend::start(victim.port, served[1].clone())?;
    let back = restarted.served.load(Ordering::Relaxed);
    let down_for = killed_at.elapsed();
    let run = loadgen::wrk_collect(wrk, Duration::from_secs(secs + 30))?;
    let after = restarted.served.load(Ordering::Relaxed) - back;
    let total_a = a.served.load(Ordering::Relaxed);
    drop(mg);
    let mut errors = run.errors;
    let mut figure = format!(
        "{} requests, {} failed; the killed endpoint served {before} before, {during} while down ({:.1} s), {after} after its restart (the other: {total_a})",
        run.requests,
        run.errors,
        down_for.as_secs_f64()
    );
    if after == 0 {
        errors += 1;
        let _ = write!(figure, "; traffic did not return to the restarted endpoint");
    }
    if !run.detail.is_empty() {
        let _ = write!(figure, "; wrk: {}", run.detail);
    }
    Ok(ChaosLine {
        scenario: "kill-backend".into(),
        figure,
        errors,
    })
}

fn sigterm(b: &Bench) -> Result<ChaosLine, String> {
    let dir = b.root.join("chaos-sigterm");
    let served = Arc::new(AtomicU64::new(0));
    let a = Backend::start(0, served.clone())?;
    let other = Backend::start(0, Arc::new(AtomicU64::new(0)))?;
    let port = procs::free_port();
    let mut mg = start_meshgate(b, &dir, &config(port, a.port, other.port), ("0s", "10s"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    mg.wait_port(addr, Duration::from_secs(20))?;
    loadgen::wait_ok(addr, HOST, "/", Duration::from_secs(20))?;
    let target = Target {
        scheme: "http",
        url_host: "127.0.0.1",
        port,
        host: HOST.into(),
        path: "/",
    };
    let wrk = loadgen::wrk_spawn(
        &target,
        Wrk::saturate(20, false),
        3,
        b.load_core,
        &dir,
        "chaos-sigterm",
    )?;
    std::thread::sleep(Duration::from_millis(500));
    // Connect the slow clients first, so that each request is in flight, not queued.
    let mut probes = Vec::new();
    for _ in 0..20 {
        probes.push(Probe::connect(addr)?);
    }
    let slow: Vec<_> = probes
        .into_iter()
        .map(|mut p| std::thread::spawn(move || p.get(HOST, "/slow").map(|r| r.status)))
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let signalled = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &mg.pid.to_string()])
        .status();
    let statuses: Vec<Result<u16, String>> = slow
        .into_iter()
        .map(|t| t.join().unwrap_or_else(|_| Err("panicked".into())))
        .collect();
    let exit = mg.wait_for(Duration::from_secs(15));
    let exited_after = signalled.elapsed();
    let _ = loadgen::wrk_collect(wrk, Duration::from_secs(30));
    let ok = statuses.iter().filter(|s| matches!(s, Ok(200))).count();
    let mut errors = (statuses.len() - ok) as u64;
    let mut figure = format!(
        "{ok} of {} in-flight slow requests completed with 200 after SIGTERM",
        statuses.len()
    );
    match exit {
        Some(s) if s.success() => {
            let _ = write!(
                figure,
                "; exited 0 {:.2} s after the signal",
                exited_after.as_secs_f64()
            );
        }
        Some(s) => {
            errors += 1;
            let _ = write!(figure, "; exited with {s}");
        }
        None => {
            errors += 1;
            let _ = write!(figure, "; did not exit within 15 s");
        }
    }
    let failed: Vec<String> = statuses
        .iter()
        .filter_map(|s| match s {
            Ok(200) => None,
            Ok(c) => Some(format!("status {c}")),
            Err(e) => Some(e.clone()),
        })
        .take(3)
        .collect();
    if !failed.is_empty() {
        let _ = write!(figure, "; failures: {}", failed.join(", "));
    }
    drop(a);
    drop(other);
    Ok(ChaosLine {
        scenario: "sigterm".into(),
        figure,
        errors,
    })
}
