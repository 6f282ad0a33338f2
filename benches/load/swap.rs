//! The config-swap storm: meshgate serves two wrk loads (keep-alive and new connection per
//! request) while the bench rewrites its watched config file (write to a temp name, rename
//! over, as editors and ConfigMaps do) at least every 100 ms, alternating the route weights and
//! the route list. Each config sets `x-bench-gen: <n>` on responses; a probe on a new
//! connection per poll measures the time from the rename to the first response carrying the
//! new generation. Every wrk error and every failed probe counts as an error (must be 0).
//!
//! Must not: touch peers; the storm is meshgate's alone.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cases::first_line;
use crate::loadgen::{self, Probe, Target, Wrk};
use crate::peers::HOST;
use crate::report::{CaseResult, Row, RowStatus, SwapResult};
use crate::sample;
use crate::systems::{self, System};
use crate::Bench;

/// The case name.
pub const NAME: &str = "swap-storm";

/// Config generation `n`: weights 70/30 on even generations and 30/70 with an extra route
/// on odd ones.
fn config(n: usize, port: u16, up: [u16; 2]) -> String {
    let mut y = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: bench-gw\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {{number: {port}, name: bench, protocol: HTTP}}\n    hosts: [\"{HOST}\"]\n---\n"
    );
    for (name, p) in [("a", up[0]), ("b", up[1])] {
        let _ = write!(
            y,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: svc-{name}\nspec:\n  hosts: [svc-{name}.bench]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {p}}}}}\n---\n"
        );
    }
    let (wa, wb) = if n.is_multiple_of(2) {
        (70, 30)
    } else {
        (30, 70)
    };
    let extra = if n % 2 == 1 {
        "  - match: [{uri: {prefix: /other}}]\n    route:\n    - destination: {host: svc-b.bench, port: {number: 80}}\n"
    } else {
        ""
    };
    let _ = write!(
        y,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: bench\nspec:\n  hosts: [\"{HOST}\"]\n  gateways: [bench-gw]\n  http:\n{extra}  - match: [{{uri: {{prefix: /api}}}}]\n    headers:\n      response:\n        set: {{x-bench-gen: \"{n}\"}}\n    route:\n    - destination: {{host: svc-a.bench, port: {{number: 80}}}}\n      weight: {wa}\n    - destination: {{host: svc-b.bench, port: {{number: 80}}}}\n      weight: {wb}\n---\n"
    );
    y
}

/// Replace `dir/bench.yaml` atomically.
fn publish(dir: &Path, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(".bench.yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join("bench.yaml"))
}

/// Run the storm with `swaps` config writes.
pub fn run(b: &Bench, swaps: usize) -> CaseResult {
    let title = format!(
        "config-swap storm: {swaps} rewrites of the watched file (≥100 ms apart, each waits until served) under wrk keep-alive (40 conns) + Connection: close (10 conns)"
    );
    let mut result = CaseResult {
        name: NAME.into(),
        title,
        rows: vec![Row::new(System::Meshgate, RowStatus::Measured)],
        swap: None,
        chaos: Vec::new(),
    };
    match storm(b, swaps) {
        Ok(s) => result.swap = Some(s),
        Err(e) => {
            println!("load: {NAME}: failed: {}", first_line(&e));
            eprintln!("{e}");
            result.rows[0].status = RowStatus::Skipped("failed".into());
            result.swap = Some(SwapResult {
                swaps,
                errors: 1,
                detail: first_line(&e).to_owned(),
                ..SwapResult::default()
            });
        }
    }
    result
}

fn storm(b: &Bench, swaps: usize) -> Result<SwapResult, String> {
    let dir = b.root.join("swap");
    let cfg_dir = dir.join("config");
    std::fs::create_dir_all(&cfg_dir).map_err(|e| format!("mkdir: {e}"))?;
    let port = crate::procs::free_port();
    publish(&cfg_dir, &config(0, port, b.up.plain)).map_err(|e| format!("write config: {e}"))?;
    let mut mg = systems::spawn_meshgate(b, &cfg_dir, &dir)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    mg.wait_port(addr, Duration::from_secs(20))?;
    loadgen::wait_ok(addr, HOST, "/api/1k", Duration::from_secs(20))?;

    let target = Target {
        scheme: "http",
        url_host: "127.0.0.1",
        port,
        host: HOST.into(),
        path: "/api/1k",
    };
    let started = Instant::now();
    let keep = loadgen::wrk_spawn(
        &target,
        Wrk::saturate(40, false),
        600,
        b.load_core,
        &b.root,
        "swap-keep",
    )?;
    let close = loadgen::wrk_spawn(
        &target,
        Wrk::saturate(10, true),
        600,
        b.load_core,
        &b.root,
        "swap-close",
    )?;
    std::thread::sleep(Duration::from_millis(500));

    let mut latencies: Vec<f64> = Vec::new();
    let mut probe_errors = 0u64;
    let mut detail = String::new();
    for n in 1..=swaps {
        let want = n.to_string();
        publish(&cfg_dir, &config(n, port, b.up.plain))
            .map_err(|e| format!("write config: {e}"))?;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            match Probe::connect(addr).and_then(|mut p| p.get(HOST, "/api/1k")) {
                Ok(r) if r.status == 200 => {
                    if r.header("x-bench-gen") == Some(want.as_str()) {
                        latencies.push(t0.elapsed().as_secs_f64() * 1e3);
                        break;
                    }
                }
                Ok(r) => {
                    probe_errors += 1;
                    let _ = write!(detail, "probe status {}; ", r.status);
                }
                Err(e) => {
                    probe_errors += 1;
                    let _ = write!(detail, "probe {e}; ");
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(rest) = Duration::from_millis(100).checked_sub(t0.elapsed()) {
            std::thread::sleep(rest);
        }
        if mg.exited().is_some() {
            return Err(format!(
                "meshgate exited during the storm:\n{}",
                mg.log_tail()
            ));
        }
    }
    keep.interrupt();
    close.interrupt();
    let elapsed = started.elapsed().as_secs_f64();
    let rk = loadgen::wrk_collect(keep, Duration::from_secs(30))?;
    let rc = loadgen::wrk_collect(close, Duration::from_secs(30))?;
    let rss_kib = sample::peak_rss_kib(mg.pid);
    drop(mg);

    let observed = latencies.len();
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i]
    };
    for r in [&rk, &rc] {
        if r.errors > 0 {
            let _ = write!(detail, "wrk: {}; ", r.detail);
        }
    }
    Ok(SwapResult {
        swaps,
        observed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        requests: rk.requests + rc.requests,
        errors: rk.errors + rc.errors + probe_errors,
        detail: detail.trim_end_matches("; ").to_owned(),
        rps: (rk.requests + rc.requests) as f64 / elapsed.max(1e-9),
        rss_kib,
    })
}
