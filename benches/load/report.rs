//! Results and their presentation: a markdown table per case (stdout and
//! `benches/results/latest.md`, headed by the date, CPU model and core count) with
//! meshgate ÷ peer ratios, errors flagged loudly, and a PNG chart (gnuplot) of requests/s and
//! p99 per case.
//!
//! Must not: run anything but gnuplot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::loadgen::Run;
use crate::systems::System;

/// Whether a row was measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowStatus {
    /// It ran.
    Measured,
    /// The case does not apply to this system.
    NotApplicable,
    /// It could not run, and why.
    Skipped(String),
}

/// One system's numbers in one case.
#[derive(Debug, Clone)]
pub struct Row {
    /// Which system.
    pub system: System,
    /// Measured or why not.
    pub status: RowStatus,
    /// The saturating runs.
    pub runs: Vec<Run>,
    /// CPU seconds over all saturating runs.
    pub cpu_s: f64,
    /// Peak RSS (VmHWM), KiB.
    pub rss_kib: Option<u64>,
    /// The constant-rate run: offered rate and result.
    pub half: Option<(f64, Run)>,
    /// Runs that failed outright (load generator error, proxy exit).
    pub failures: u32,
    /// The TLS version it negotiated with the load generator's library, in TLS cases.
    pub tls: Option<String>,
}

impl Row {
    /// A row with no runs yet.
    pub fn new(system: System, status: RowStatus) -> Row {
        Row {
            system,
            status,
            runs: Vec::new(),
            cpu_s: 0.0,
            rss_kib: None,
            half: None,
            failures: 0,
            tls: None,
        }
    }

    /// Mean requests/s over the runs.
    pub fn rps(&self) -> f64 {
        mean(self.runs.iter().map(Run::rps))
    }

    fn mbps(&self) -> f64 {
        mean(self.runs.iter().map(Run::mbps))
    }

    fn median(&self, f: impl Fn(&Run) -> f64) -> f64 {
        let mut v: Vec<f64> = self.runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    /// p99 at saturation (median over runs), ms.
    pub fn p99(&self) -> f64 {
        self.median(|r| r.p99_ms)
    }

    fn requests(&self) -> u64 {
        self.runs.iter().map(|r| r.requests).sum()
    }

    /// Non-2xx plus socket errors over every run, the constant-rate one included.
    pub fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.errors).sum::<u64>()
            + self.half.as_ref().map_or(0, |(_, r)| r.errors)
    }

    /// CPU microseconds per request.
    pub fn cpu_us(&self) -> Option<f64> {
        let n = self.requests();
        (n > 0 && self.cpu_s > 0.0).then(|| self.cpu_s * 1e6 / n as f64)
    }

    fn detail(&self) -> String {
        self.runs
            .iter()
            .chain(self.half.iter().map(|(_, r)| r))
            .filter(|r| r.errors > 0)
            .map(|r| r.detail.clone())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = it.collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The swap-storm figures.
#[derive(Debug, Clone, Default)]
pub struct SwapResult {
    /// Config files written.
    pub swaps: usize,
    /// Swaps seen served within the limit.
    pub observed: usize,
    /// File write to new config serving, ms.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Worst.
    pub max_ms: f64,
    /// Requests sent by the load generators meanwhile.
    pub requests: u64,
    /// Their errors plus failed probes.
    pub errors: u64,
    /// What the errors were.
    pub detail: String,
    /// Load generator requests/s during the storm.
    pub rps: f64,
    /// Peak RSS of meshgate, KiB.
    pub rss_kib: u64,
}

/// One case's results.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// One line.
    pub title: String,
    /// One row per system.
    pub rows: Vec<Row>,
    /// The swap storm's own figures.
    pub swap: Option<SwapResult>,
    /// The chaos scenarios' figures.
    pub chaos: Vec<ChaosLine>,
}

/// One chaos scenario's outcome.
#[derive(Debug, Clone)]
pub struct ChaosLine {
    /// Scenario name.
    pub scenario: String,
    /// What happened, in one sentence with the numbers.
    pub figure: String,
    /// Failed requests and broken promises (must be 0).
    pub errors: u64,
}

/// The machine and run, for the header.
#[derive(Debug, Clone)]
pub struct Header {
    /// UTC date and time.
    pub date: String,
    /// CPU model.
    pub cpu: String,
    /// Online cores.
    pub cores: usize,
    /// Durations, pinning.
    pub method: String,
    /// `(system, version)`.
    pub versions: Vec<(String, String)>,
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Every error count that is not zero, one line each.
pub fn error_lines(results: &[CaseResult]) -> Vec<String> {
    let mut out = Vec::new();
    for c in results {
        for r in &c.rows {
            if r.errors() > 0 {
                out.push(format!(
                    "{} / {}: {} errors ({})",
                    c.name,
                    r.system.name(),
                    r.errors(),
                    r.detail()
                ));
            }
            if r.failures > 0 {
                out.push(format!(
                    "{} / {}: {} failed runs",
                    c.name,
                    r.system.name(),
                    r.failures
                ));
            }
        }
        for l in c.chaos.iter().filter(|l| l.errors > 0) {
            out.push(format!(
                "{} / {}: {} errors ({})",
                c.name, l.scenario, l.errors, l.figure
            ));
        }
        if let Some(s) = &c.swap {
            if s.errors > 0 || s.observed < s.swaps {
                out.push(format!(
                    "{} / meshgate: {} errors ({}), {} of {} swaps observed",
                    c.name, s.errors, s.detail, s.observed, s.swaps
                ));
            }
        }
    }
    out
}

/// The whole report in markdown.
pub fn markdown(h: &Header, results: &[CaseResult]) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# meshgate load benchmark\n");
    let _ = writeln!(
        m,
        "- date: {}\n- machine: {}, {} cores\n- method: {}",
        h.date, h.cpu, h.cores, h.method
    );
    let versions: Vec<String> = h
        .versions
        .iter()
        .map(|(s, v)| format!("{s}: `{v}`"))
        .collect();
    let _ = writeln!(m, "- versions: {}\n", versions.join("; "));
    let errs = error_lines(results);
    if errs.is_empty() {
        let _ = writeln!(m, "Errors: none (every response 2xx, no socket errors).\n");
    } else {
        let _ = writeln!(m, "**ERRORS (must be 0):**\n");
        for e in &errs {
            let _ = writeln!(m, "- **{e}**");
        }
        m.push('\n');
    }
    for c in results {
        let _ = writeln!(m, "## {}\n\n{}\n", c.name, c.title);
        if !c.chaos.is_empty() {
            let _ = writeln!(m, "| scenario / system | errors | figures |\n|---|---|---|");
            for l in &c.chaos {
                let _ = writeln!(m, "| {} | {} | {} |", l.scenario, l.errors, l.figure);
            }
            m.push('\n');
            continue;
        }
        if let Some(s) = &c.swap {
            swap_table(&mut m, s);
            continue;
        }
        let mg = c
            .rows
            .iter()
            .find(|r| r.system == System::Meshgate && !r.runs.is_empty());
        let has_half = c.rows.iter().any(|r| r.half.is_some());
        let _ = write!(
            m,
            "| system | req/s | MB/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req (s/10k req) | peak RSS MiB | errors | mg÷peer req/s | mg÷peer CPU/req |"
        );
        if has_half {
            m.push_str(" @50%: req/s | p50 ms | p99 ms | p99.9 ms |");
        }
        m.push('\n');
        let cols = if has_half { 15 } else { 11 };
        m.push('|');
        for i in 0..cols {
            m.push_str(if i == 0 { " --- |" } else { " ---: |" });
        }
        m.push('\n');
        for r in &c.rows {
            let name = r.system.name();
            if r.status != RowStatus::Measured || r.runs.is_empty() {
                let why = match &r.status {
                    RowStatus::NotApplicable => "n/a".to_owned(),
                    RowStatus::Skipped(w) => format!("skipped: {w}"),
                    RowStatus::Measured => "no successful run".to_owned(),
                };
                let _ = writeln!(m, "| {name} | {why} |{}", " |".repeat(cols - 2));
                continue;
            }
            let cpu = r.cpu_us().map_or("-".into(), |u| {
                let tag = if r.system == System::Direct {
                    " ¹"
                } else {
                    ""
                };
                format!("{} ({:.3}){tag}", fmt_num(u), u / 100.0)
            });
            let rss = r
                .rss_kib
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
            let errors = if r.errors() > 0 || r.failures > 0 {
                format!("**{} ⚠**", r.errors() + u64::from(r.failures))
            } else {
                "0".into()
            };
            let (ratio_rps, ratio_cpu) = match mg {
                Some(mg) if r.system != System::Meshgate && r.system != System::Direct => (
                    format!("{:.2}", mg.rps() / r.rps().max(1e-9)),
                    match (mg.cpu_us(), r.cpu_us()) {
                        (Some(a), Some(b)) => format!("{:.2}", a / b),
                        _ => "-".into(),
                    },
                ),
                _ => ("".into(), "".into()),
            };
            let _ = write!(
                m,
                "| {name} | {} | {} | {} | {} | {} | {cpu} | {rss} | {errors} | {ratio_rps} | {ratio_cpu} |",
                fmt_num(r.rps()),
                fmt_num(r.mbps()),
                fmt_num(r.median(|x| x.p50_ms)),
                fmt_num(r.p99()),
                fmt_num(r.median(|x| x.p999_ms)),
            );
            if has_half {
                match &r.half {
                    Some((_, h)) => {
                        let _ = write!(
                            m,
                            " {} | {} | {} | {} |",
                            fmt_num(h.rps()),
                            fmt_num(h.p50_ms),
                            fmt_num(h.p99_ms),
                            fmt_num(h.p999_ms)
                        );
                    }
                    None => m.push_str(" - | - | - | - |"),
                }
            }
            m.push('\n');
        }
        if c.rows
            .iter()
            .any(|r| r.system == System::Direct && !r.runs.is_empty())
        {
            m.push_str("\n¹ direct: CPU of the in-bench upstream thread (one HTTP exchange), not a proxy.\n");
        }
        let tls: Vec<String> = c
            .rows
            .iter()
            .filter_map(|r| Some(format!("{} {}", r.system.name(), r.tls.as_deref()?)))
            .collect();
        if !tls.is_empty() {
            let _ = writeln!(
                m,
                "\nTLS version negotiated (`openssl s_client`, the library wrk uses): {}.",
                tls.join(", ")
            );
        }
        m.push('\n');
    }
    m.push_str("mg÷peer req/s > 1: meshgate serves more; mg÷peer CPU/req < 1: meshgate spends less CPU per request.\n");
    m
}

fn swap_table(m: &mut String, s: &SwapResult) {
    let errors = if s.errors > 0 {
        format!("**{} ⚠**", s.errors)
    } else {
        "0".into()
    };
    let _ = writeln!(
        m,
        "| swaps | observed | write→serving p50 ms | p99 ms | max ms | requests meanwhile | req/s | errors | peak RSS MiB |"
    );
    let _ = writeln!(
        m,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let _ = writeln!(
        m,
        "| {} | {} | {} | {} | {} | {} | {} | {errors} | {:.1} |\n",
        s.swaps,
        s.observed,
        fmt_num(s.p50_ms),
        fmt_num(s.p99_ms),
        fmt_num(s.max_ms),
        s.requests,
        fmt_num(s.rps),
        s.rss_kib as f64 / 1024.0
    );
}

/// Draw the chart into `png` with gnuplot; `Err` says why not (e.g. not installed).
pub fn chart(results: &[CaseResult], png: &Path, work: &Path) -> Result<PathBuf, String> {
    let gnuplot = crate::procs::which("gnuplot")
        .ok_or("gnuplot not installed (apt-get install gnuplot-nox)")?;
    let cases: Vec<&CaseResult> = results
        .iter()
        .filter(|c| c.swap.is_none() && c.chaos.is_empty())
        .collect();
    if cases.is_empty() {
        return Err("no case to draw".into());
    }
    let systems: Vec<System> = System::ALL
        .into_iter()
        .filter(|s| {
            cases
                .iter()
                .any(|c| c.rows.iter().any(|r| r.system == *s && !r.runs.is_empty()))
        })
        .collect();
    let data = |f: &dyn Fn(&Row) -> f64| -> String {
        let mut d = String::from("case");
        for s in &systems {
            let _ = write!(d, " {}", s.name());
        }
        d.push('\n');
        for c in &cases {
            d.push_str(&c.name);
            for s in &systems {
                match c.rows.iter().find(|r| r.system == *s && !r.runs.is_empty()) {
                    Some(r) => {
                        let _ = write!(d, " {:.3}", f(r));
                    }
                    None => d.push_str(" -"),
                }
            }
            d.push('\n');
        }
        d
    };
    let rps_dat = work.join("chart-rps.dat");
    let p99_dat = work.join("chart-p99.dat");
    std::fs::write(&rps_dat, data(&|r| r.rps())).map_err(|e| e.to_string())?;
    std::fs::write(&p99_dat, data(&|r| r.p99())).map_err(|e| e.to_string())?;
    let n = systems.len() + 1;
    let script = format!(
        "set terminal png size 1400,1000
set output '{png}'
set datafile missing '-'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set key outside right top
set xtics rotate by -25 nomirror
set grid ytics
set multiplot layout 2,1
set title 'requests/s at saturation, per case (higher is better)'
set ylabel 'req/s'
plot for [i=2:{n}] '{rps}' using i:xtic(1) title columnheader(i)
set title 'p99 latency at saturation, ms (lower is better; log scale)'
set ylabel 'ms'
set logscale y
plot for [i=2:{n}] '{p99}' using i:xtic(1) title columnheader(i)
unset multiplot
",
        png = png.display(),
        rps = rps_dat.display(),
        p99 = p99_dat.display(),
    );
    let script_path = work.join("chart.gp");
    std::fs::write(&script_path, script).map_err(|e| e.to_string())?;
    let out = Command::new(gnuplot)
        .arg(&script_path)
        .output()
        .map_err(|e| format!("gnuplot: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gnuplot failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(png.to_owned())
}
