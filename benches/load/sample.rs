//! CPU time and resident memory of a proxy, read from /proc: `utime + stime` of
//! `/proc/PID/stat` summed over the process and its descendants (nginx, haproxy and friends
//! may fork), `VmHWM` (peak RSS) of `/proc/PID/status`, and the CPU time of one thread of
//! this process (the in-bench upstream, for the `direct` row).
//!
//! Must not: start or stop processes.

use std::process::Command;
use std::sync::OnceLock;

/// What a CPU sample covers.
#[derive(Debug, Clone, Copy)]
pub enum Subject {
    /// A process and its descendants.
    Tree(u32),
    /// One thread of this process.
    Thread(u32),
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when unknown).
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The fields of a stat line after the `(comm)`, so index 0 is field 3 (`state`).
fn stat_fields(text: &str) -> Option<Vec<&str>> {
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// `utime + stime` in ticks from a stat file.
fn ticks(path: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    let Some(f) = stat_fields(&text) else {
        return 0;
    };
    // utime is field 14, stime field 15.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// `pid` and all its descendants, parents before children.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            if let Some(pp) =
                stat_fields(&text).and_then(|f| f.get(1).and_then(|v| v.parse::<u32>().ok()))
            {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == cur)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// CPU seconds used so far by `s`.
pub fn cpu_seconds(s: Subject) -> f64 {
    let t: u64 = match s {
        Subject::Tree(pid) => tree(pid)
            .iter()
            .map(|p| ticks(&format!("/proc/{p}/stat")))
            .sum(),
        Subject::Thread(tid) => ticks(&format!("/proc/self/task/{tid}/stat")),
    };
    t as f64 / clk_tck()
}

/// A `kB` line of a status file.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident set (VmHWM) of `pid` and its descendants, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    tree(pid).iter().map(|p| status_kib(*p, "VmHWM:")).sum()
}
