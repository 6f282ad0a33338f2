//! Load benchmark: meshgate against nginx, haproxy, Envoy, Pingora and Caddy, on loopback,
//! in one run. See `benches/README.md` for the method and `benches/load/run.sh` for the one command
//! that installs the peers and runs it.
//!
//! `cargo bench --bench load -- [CASE|GROUP ...]`; `LOAD_QUICK=1` for a smoke run.
//!
//! Layout: `peers` renders configs, `systems` starts them, `procs` owns child processes,
//! `loadgen` runs wrk/h2load and parses them, `sample` reads /proc, `cases` runs a case,
//! `swap` runs the config-swap storm, `chaos` breaks things under load, `idle` measures memory at rest, `report` writes the tables and chart, `upstream` and
//! `pki` are the in-bench backend and certificates.

// A bench binary: setup failures should stop it loudly, and it prints its report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    unreachable_pub
)]

mod cases;
mod chaos;
mod idle;
mod loadgen;
mod peers;
mod pki;
mod procs;
mod report;
mod sample;
mod swap;
mod systems;
mod upstream;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use procs::Core;
use report::Header;
use systems::{System, Tools};

/// Durations and counts of one run.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Warm-up per system per case, seconds.
    pub warmup_secs: u64,
    /// Length of one measured run, seconds.
    pub run_secs: u64,
    /// Measured runs per system per case.
    pub runs: usize,
    /// Length of the constant-rate run (0: none), seconds.
    pub rate_secs: u64,
    /// Config writes in the swap storm.
    pub swaps: usize,
    /// `LOAD_QUICK=1`.
    pub quick: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = std::env::var("LOAD_QUICK").is_ok_and(|v| v == "1");
        if quick {
            Settings {
                warmup_secs: 1,
                run_secs: 1,
                runs: 1,
                rate_secs: 1,
                swaps: 20,
                quick,
            }
        } else {
            Settings {
                warmup_secs: 2,
                run_secs: 5,
                runs: 3,
                rate_secs: 5,
                swaps: 50,
                quick,
            }
        }
    }
}

/// What every case needs.
#[derive(Debug)]
pub struct Bench {
    /// Installed binaries.
    pub tools: Tools,
    /// The in-bench upstreams.
    pub up: upstream::Upstreams,
    /// Certificates.
    pub pki: pki::Pki,
    /// This run's scratch directory (configs, logs).
    pub root: PathBuf,
    /// Where proxies run.
    pub proxy_core: Core,
    /// Where load generators (and the upstream) run.
    pub load_core: Core,
    /// Durations.
    pub settings: Settings,
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let known: Vec<&str> = cases::CASES
        .iter()
        .flat_map(|c| [c.name, c.group])
        .chain([swap::NAME, chaos::NAME, idle::NAME])
        .collect();
    if let Some(bad) = filters.iter().find(|f| !known.contains(&f.as_str())) {
        println!("load: unknown case {bad:?}; cases: {}", known.join(", "));
        std::process::exit(2);
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let (proxy_core, load_core) = if cores >= 2 {
        // Everything of ours (upstream thread included) on core 1; proxies get core 0.
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status();
        (Core::Pin(0), Core::Pin(1))
    } else {
        println!("load: one core only, nothing is pinned: numbers are not comparable");
        (Core::Any, Core::Any)
    };
    procs::install_signal_handler();
    let settings = Settings::from_env();
    let tmp = tempfile::Builder::new()
        .prefix("meshgate-load-")
        .tempdir()
        .expect("temp dir");
    let root = tmp.path().to_owned();
    let pki = pki::Pki::mint(&root);
    let upstream = upstream::start(&pki, (cores >= 2).then_some(1));
    let tools = Tools::detect();
    for s in System::ALL {
        if !tools.has(s) {
            println!(
                "load: {} not installed, skipped (benches/load/run.sh installs it)",
                s.name()
            );
        }
    }
    if procs::which("wrk").is_none() || procs::which("h2load").is_none() {
        println!("load: wrk and h2load are needed (apt-get install wrk nghttp2-client); cases needing them will fail");
    }
    let bench = Bench {
        tools,
        up: upstream,
        pki,
        root,
        proxy_core,
        load_core,
        settings,
    };
    println!(
        "load: {} mode, scratch dir {}",
        if settings.quick { "quick" } else { "full" },
        bench.root.display()
    );

    let mut results = Vec::new();
    for case in cases::CASES.iter().filter(|c| c.selected(&filters)) {
        println!("load: case {} ...", case.name);
        results.push(cases::run(case, &bench));
    }
    if filters.is_empty() || filters.iter().any(|f| f == swap::NAME) {
        println!("load: case {} ...", swap::NAME);
        results.push(swap::run(&bench, settings.swaps));
    }
    if filters.is_empty() || filters.iter().any(|f| f == idle::NAME) {
        println!("load: case {} ...", idle::NAME);
        results.push(idle::run(&bench));
    }
    if filters.is_empty() || filters.iter().any(|f| f == chaos::NAME) {
        println!("load: case {} ...", chaos::NAME);
        results.push(chaos::run(&bench));
    }

    let header = Header {
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cpu: cpu_model(),
        cores,
        method: method(&settings, cores, &filters),
        versions: versions(&bench.tools),
    };
    let md = report::markdown(&header, &results);
    println!("\n{md}");
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    let _ = std::fs::create_dir_all(&out_dir);
    // A smoke run must not overwrite the real results.
    let stem = if settings.quick { "quick" } else { "latest" };
    let mut file_md = md.clone();
    match report::chart(&results, &out_dir.join(format!("{stem}.png")), &bench.root) {
        Ok(png) => {
            println!("load: chart written to {}", png.display());
            let _ = write!(file_md, "\n![requests/s and p99 per case]({stem}.png)\n");
        }
        Err(e) => println!("load: no chart: {e}"),
    }
    let md_path = out_dir.join(format!("{stem}.md"));
    match std::fs::write(&md_path, file_md) {
        Ok(()) => println!("load: report written to {}", md_path.display()),
        Err(e) => println!("load: cannot write {}: {e}", md_path.display()),
    }
    let errs = report::error_lines(&results);
    if !errs.is_empty() {
        println!("\n!!!!!!!!!! ERRORS (must be 0) !!!!!!!!!!");
        for e in &errs {
            println!("!! {e}");
        }
    }
    // Keep the scratch dir's logs when asked.
    if std::env::var("LOAD_KEEP").is_ok_and(|v| v == "1") {
        println!("load: kept {}", tmp.keep().display());
    }
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn method(s: &Settings, cores: usize, filters: &[String]) -> String {
    let pin = if cores >= 2 {
        "proxy pinned to core 0; wrk/h2load and the in-bench upstream on core 1"
    } else {
        "nothing pinned (one core)"
    };
    let which = if filters.is_empty() {
        "all cases".to_owned()
    } else {
        format!("cases: {}", filters.join(" "))
    };
    format!(
        "{} run ({which}); per case and system {} s warm-up, then {} measured run(s) of {} s rotating the systems' order, then {} s at 50% of the slowest proxy's saturation where shown (HTTP/1.1: wrk, each connection pacing itself with a random think time; HTTP/2: h2load --rps, whose clients send in bursts); one worker per proxy; {pin}",
        if s.quick { "quick (LOAD_QUICK=1)" } else { "full" },
        s.warmup_secs,
        s.runs,
        s.run_secs,
        s.rate_secs
    )
}

fn versions(tools: &Tools) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = System::ALL
        .into_iter()
        .filter(|s| *s != System::Direct && tools.has(*s))
        .map(|s| (s.name().to_owned(), tools.version(s)))
        .collect();
    for (name, arg) in [("wrk", "-v"), ("h2load", "--version")] {
        if let Some(bin) = procs::which(name) {
            let out = Command::new(bin).arg(arg).output();
            let text = out
                .map(|o| {
                    let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
                    t.push_str(&String::from_utf8_lossy(&o.stderr));
                    t
                })
                .unwrap_or_default();
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("?");
            v.push((name.to_owned(), line.trim().chars().take(60).collect()));
        }
    }
    v
}
