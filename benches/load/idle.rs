//! Memory at rest (issue 9 targets: idle RSS ≤ 16 MiB, ≤ 10 KiB per idle keep-alive
//! connection at 10,000 connections): each system is started on the plain HTTP route, its
//! resident set (VmRSS of its process tree) read once it has served a few requests, then
//! 10,000 keep-alive connections (2,000 with `LOAD_QUICK=1`) each make one request and stay
//! open, and the resident set is read again 500 ms later and at rest 5 s later (while one
//! other client sends a request every 100 ms). Reported: idle RSS and the growth per
//! connection at both points.
//!
//! Must not: leave connections open past the case (they close when the case returns).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cases::first_line;
use crate::loadgen::Probe;
use crate::peers::{Mode, HOST};
use crate::report::{CaseResult, ChaosLine};
use crate::sample;
use crate::systems::{self, System};
use crate::Bench;

/// The case name.
pub const NAME: &str = "idle-conns";

/// Resident set of `pid` and its descendants now, KiB.
fn rss_kib(pid: u32) -> u64 {
    sample::tree(pid)
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .unwrap_or(0)
        })
        .sum()
}

/// Run the case over every installed proxy.
pub fn run(b: &Bench) -> CaseResult {
    let conns = if b.settings.quick { 2_000 } else { 10_000 };
    let mut result = CaseResult {
        name: NAME.into(),
        title: format!(
            "memory at rest: idle RSS, then {conns} keep-alive connections that made one request each and stay open"
        ),
        rows: Vec::new(),
        swap: None,
        chaos: Vec::new(),
    };
    for sys in System::ALL {
        if sys == System::Direct || !b.tools.has(sys) {
            continue;
        }
        let line = measure(b, sys, conns).unwrap_or_else(|e| {
            println!("load: {NAME}/{}: failed: {}", sys.name(), first_line(&e));
            ChaosLine {
                scenario: sys.name().into(),
                figure: format!("failed: {}", first_line(&e)),
                errors: 1,
            }
        });
        println!("load: {NAME}/{}: {}", line.scenario, line.figure);
        result.chaos.push(line);
    }
    result
}

fn measure(b: &Bench, sys: System, conns: usize) -> Result<ChaosLine, String> {
    let r = systems::start(sys, Mode::Http, false, b)?;
    let pid = r.proc.as_ref().map(|p| p.pid).ok_or("no process")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], r.port));
    // A few requests first, so that lazily built state (upstream pools) counts as idle.
    let mut warm = Probe::connect(addr)?;
    for _ in 0..20 {
        warm.get(HOST, "/api/1k")?;
    }
    drop(warm);
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(pid);
    let started = Instant::now();
    let mut open = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut p = Probe::connect(addr).map_err(|e| format!("connection {i}: {e}"))?;
        let reply = p
            .get(HOST, "/api/1k")
            .map_err(|e| format!("connection {i}: {e}"))?;
        if reply.status != 200 {
            return Err(format!("connection {i}: status {}", reply.status));
        }
        open.push(p);
    }
    let opened_in = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let loaded = rss_kib(pid);
    // At rest: 5 s later (meshgate parks a connection after 1-2 s at rest; mimalloc hands
    // freed pages back after a further second), while one of the
    // connections sends a request every 100 ms (a new one could exceed a connection cap).
    // A gateway at rest still serves some traffic, and allocators hand freed pages back on
    // activity, not in a process doing nothing.
    if let Some(trickle) = open.first_mut() {
        for _ in 0..50 {
            trickle.get(HOST, "/api/1k")?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let rested = rss_kib(pid);
    drop(open);
    let per_conn = |rss: u64| rss.saturating_sub(idle) as f64 / conns as f64;
    Ok(ChaosLine {
        scenario: sys.name().into(),
        figure: format!(
            "idle {:.1} MiB; with {conns} connections (opened in {:.1} s): {:.1} KiB per connection just after their request, {:.1} KiB at rest 5 s later",
            idle as f64 / 1024.0,
            opened_in.as_secs_f64(),
            per_conn(loaded),
            per_conn(rested),
        ),
        errors: 0,
    })
}
