//! The cases, in priority order, and how one is run: start every applicable system, warm
//! each up, then measured rounds that rotate the order of the systems (so drift over time is
//! spread over all of them), then an optional constant-rate round at 50% of the slowest
//! proxy's saturation, sampling each proxy's CPU time around every run and its peak RSS at
//! the end.
//!
//! Must not: format output (see `report`).

use std::time::Duration;

use crate::loadgen::{self, H2Load, Run, Target};
use crate::peers::Mode;
use crate::report::{CaseResult, Row, RowStatus};
use crate::sample;
use crate::systems::{self, Running, System};
use crate::Bench;

/// HTTP/1.1 connections for wrk.
pub const H1_CONNS: u32 = 50;
/// HTTP/2 connections.
pub const H2_CLIENTS: u32 = 10;
/// Concurrent streams per HTTP/2 connection.
pub const H2_STREAMS: u32 = 10;

/// The load of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// wrk over HTTP/1.1 (TLS when the mode terminates or passes TLS through).
    Wrk {
        /// Send `Connection: close` (one connection, and TLS handshake, per request).
        close: bool,
    },
    /// h2load over h2c.
    H2,
}

/// One benchmark case.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Name, also the filter word.
    pub name: &'static str,
    /// A group name the filter also accepts (e.g. `tls-term`).
    pub group: &'static str,
    /// One line for the report.
    pub title: &'static str,
    /// What the systems do.
    pub mode: Mode,
    /// How load is generated.
    pub load: Load,
    /// The request path (`/api/100k` for the big body).
    pub path: &'static str,
    /// The systems that apply; the others are n/a.
    pub systems: &'static [System],
    /// Also measure latency at 50% of the slowest proxy's saturation.
    pub half_rate: bool,
}

const ALL: &[System] = &System::ALL;
const TLS: &[System] = &[
    System::Direct,
    System::Meshgate,
    System::Nginx,
    System::Haproxy,
    System::Envoy,
];
const PASS: &[System] = &[
    System::Direct,
    System::Meshgate,
    System::Nginx,
    System::Haproxy,
];

/// Every case except the swap storm (see `swap`), in priority order.
pub const CASES: &[Case] = &[
    Case {
        name: "h1-keepalive",
        group: "h1",
        title: "HTTP/1.1 keep-alive, 1 KiB body, wrk 50 connections",
        mode: Mode::Http,
        load: Load::Wrk { close: false },
        path: "/api/1k",
        systems: ALL,
        half_rate: true,
    },
    Case {
        name: "h1-close",
        group: "h1",
        title: "HTTP/1.1 new connection per request (Connection: close), 1 KiB body, wrk 50 connections",
        mode: Mode::Http,
        load: Load::Wrk { close: true },
        path: "/api/1k",
        systems: ALL,
        half_rate: false,
    },
    Case {
        name: "h2",
        group: "h2",
        title: "HTTP/2 (h2c) multiplexed, 1 KiB body, h2load 10 connections x 10 streams",
        mode: Mode::Http,
        load: Load::H2,
        path: "/api/1k",
        systems: ALL,
        half_rate: true,
    },
    Case {
        name: "body-100k",
        group: "body",
        title: "HTTP/1.1 keep-alive, 100 KiB body, wrk 50 connections",
        mode: Mode::Http,
        load: Load::Wrk { close: false },
        path: "/api/100k",
        systems: ALL,
        half_rate: true,
    },
    Case {
        name: "tls-handshake",
        group: "tls-term",
        title: "TLS termination, new TLS connection per request (handshakes/s = req/s), wrk 50 connections; wrk offers its previous session, so most handshakes are resumptions (in TLS 1.3 still with an X25519 exchange)",
        mode: Mode::TlsTerm,
        load: Load::Wrk { close: true },
        path: "/api/1k",
        systems: TLS,
        half_rate: false,
    },
    Case {
        name: "tls-keepalive",
        group: "tls-term",
        title: "TLS termination, kept-alive HTTP/1.1 over TLS, 1 KiB body, wrk 50 connections",
        mode: Mode::TlsTerm,
        load: Load::Wrk { close: false },
        path: "/api/1k",
        systems: TLS,
        half_rate: true,
    },
    Case {
        name: "tls-passthrough",
        group: "tls-passthrough",
        title: "TLS SNI passthrough to a TLS upstream, 100 KiB body, wrk 50 kept-alive connections (see MB/s)",
        mode: Mode::Passthrough,
        load: Load::Wrk { close: false },
        path: "/api/100k",
        systems: PASS,
        half_rate: false,
    },
    Case {
        name: "tls-origination",
        group: "tls-origination",
        title: "TLS origination: plain HTTP/1.1 in, verified TLS to the upstream, 1 KiB body, wrk 50 connections",
        mode: Mode::Origination,
        load: Load::Wrk { close: false },
        path: "/api/1k",
        systems: TLS,
        half_rate: false,
    },
    Case {
        name: "hosts-10k",
        group: "hosts",
        title: "10,000 hosts in the config (request for host 7,500), HTTP/1.1 keep-alive, wrk 50 connections",
        mode: Mode::Hosts(10_000),
        load: Load::Wrk { close: false },
        path: "/api/1k",
        systems: ALL,
        half_rate: false,
    },
];

impl Case {
    /// Whether `filters` select this case (no filter selects all).
    pub fn selected(&self, filters: &[String]) -> bool {
        filters.is_empty() || filters.iter().any(|f| f == self.name || f == self.group)
    }

    fn target(&self, r: &Running, host: &str) -> Target {
        let tls = matches!(self.mode, Mode::TlsTerm | Mode::Passthrough);
        Target {
            scheme: if tls { "https" } else { "http" },
            url_host: if tls { "localhost" } else { "127.0.0.1" },
            port: r.port,
            host: host.to_owned(),
            path: self.path,
        }
    }

    /// One saturating run.
    fn saturate(&self, b: &Bench, r: &Running, host: &str, secs: u64) -> Result<Run, String> {
        let t = self.target(r, host);
        match self.load {
            Load::Wrk { close } => loadgen::wrk(&t, H1_CONNS, close, secs, b.load_core, &b.root),
            Load::H2 => loadgen::h2load(
                &t,
                H2Load {
                    clients: H2_CLIENTS,
                    streams: H2_STREAMS,
                    rate: None,
                },
                secs,
                b.load_core,
                &b.root,
            ),
        }
    }

    /// One run at `rate` requests/s: wrk paced with random think times for HTTP/1.1 (spread
    /// arrivals), h2load `--rps` for HTTP/2 (each client's requests in bursts).
    fn at_rate(
        &self,
        b: &Bench,
        r: &Running,
        host: &str,
        rate: f64,
        secs: u64,
    ) -> Result<Run, String> {
        let t = self.target(r, host);
        match self.load {
            Load::H2 => {
                let how = H2Load {
                    clients: H2_CLIENTS,
                    streams: H2_STREAMS,
                    rate: Some(rate),
                };
                loadgen::h2load(&t, how, secs, b.load_core, &b.root)
            }
            Load::Wrk { .. } => loadgen::wrk_paced(&t, H1_CONNS, rate, secs, b.load_core, &b.root),
        }
    }
}

/// Run `case` over every installed, applicable system.
pub fn run(case: &Case, b: &Bench) -> CaseResult {
    let s = &b.settings;
    let host = crate::peers::Spec {
        mode: case.mode,
        listen: 0,
        up: [0, 0],
        pki: &b.pki,
        dir: &b.root,
        h2c: false,
    }
    .host();
    let h2c = case.load == Load::H2;
    let mut rows: Vec<Row> = Vec::new();
    let mut running: Vec<Running> = Vec::new();
    for sys in System::ALL {
        if !case.systems.contains(&sys) {
            rows.push(Row::new(sys, RowStatus::NotApplicable));
            continue;
        }
        if !b.tools.has(sys) {
            rows.push(Row::new(sys, RowStatus::Skipped("not installed".into())));
            continue;
        }
        match systems::start(sys, case.mode, h2c, b) {
            Ok(r) => {
                let mut row = Row::new(sys, RowStatus::Measured);
                if case.mode == Mode::TlsTerm {
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], r.port));
                    row.tls =
                        Some(loadgen::tls_version(addr, &host).unwrap_or_else(|| "unknown".into()));
                }
                rows.push(row);
                running.push(r);
            }
            Err(e) => {
                println!(
                    "load: {}: {} failed to start, skipped: {}",
                    case.name,
                    sys.name(),
                    first_line(&e)
                );
                eprintln!("{e}");
                rows.push(Row::new(sys, RowStatus::Skipped("failed to start".into())));
            }
        }
    }
    let row_of = |rows: &mut Vec<Row>, sys: System| -> usize {
        rows.iter().position(|r| r.system == sys).unwrap_or(0)
    };

    // Warm-up: every system once, results thrown away (but a failure is reported).
    for r in &running {
        if let Err(e) = case.saturate(b, r, &host, s.warmup_secs) {
            println!(
                "load: {}: {} warm-up failed: {}",
                case.name,
                r.system.name(),
                first_line(&e)
            );
        }
    }
    // Measured rounds, rotating the order.
    for round in 0..s.runs {
        let n = running.len().max(1);
        for k in 0..running.len() {
            let r = &running[(k + round) % n];
            let before = sample::cpu_seconds(r.cpu);
            let res = case.saturate(b, r, &host, s.run_secs);
            let cpu = sample::cpu_seconds(r.cpu) - before;
            let i = row_of(&mut rows, r.system);
            match res {
                Ok(run) => {
                    rows[i].cpu_s += cpu;
                    rows[i].runs.push(run);
                }
                Err(e) => {
                    println!(
                        "load: {}: {} run failed: {}",
                        case.name,
                        r.system.name(),
                        first_line(&e)
                    );
                    rows[i].failures += 1;
                }
            }
        }
    }
    // Latency at 50% of the slowest proxy's saturation.
    if case.half_rate && s.rate_secs > 0 {
        let slowest = rows
            .iter()
            .filter(|r| r.system != System::Direct && !r.runs.is_empty())
            .map(Row::rps)
            .fold(f64::INFINITY, f64::min);
        if slowest.is_finite() && slowest > 0.0 {
            let rate = slowest / 2.0;
            for r in &running {
                let i = row_of(&mut rows, r.system);
                match case.at_rate(b, r, &host, rate, s.rate_secs) {
                    Ok(run) => rows[i].half = Some((rate, run)),
                    Err(e) => println!(
                        "load: {}: {} constant-rate run failed: {}",
                        case.name,
                        r.system.name(),
                        first_line(&e)
                    ),
                }
            }
        }
    }
    for r in &mut running {
        let i = row_of(&mut rows, r.system);
        if let Some(p) = &mut r.proc {
            rows[i].rss_kib = Some(sample::peak_rss_kib(p.pid));
            if let Some(st) = p.exited() {
                println!(
                    "load: {}: {} EXITED during the case ({st})",
                    case.name,
                    r.system.name()
                );
                rows[i].failures += 1;
            }
        }
    }
    drop(running);
    std::thread::sleep(Duration::from_millis(200));
    CaseResult {
        name: case.name.to_owned(),
        title: case.title.to_owned(),
        rows,
        swap: None,
        chaos: Vec::new(),
    }
}

/// The first line of a multi-line message.
pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
