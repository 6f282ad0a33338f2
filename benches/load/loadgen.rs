//! Load generators and their output: `wrk` (HTTP/1.1, saturating or paced by random think
//! times; percentiles from a Lua `done` hook) and `h2load` (HTTP/2; constant rate with
//! `--rps`; percentiles from its `--log-file`), plus a tiny blocking HTTP/1.1 client for readiness and swap probes, and a
//! TLS version probe (`openssl s_client`).
//!
//! Must not: choose connection counts or durations (see `cases`), or touch the proxies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{which, Core, Proc};

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The URL host: `127.0.0.1`, or `localhost` where the TLS SNI matters.
    pub url_host: &'static str,
    /// The port.
    pub port: u16,
    /// The Host header (HTTP/2 `:authority`).
    pub host: String,
    /// The request path.
    pub path: &'static str,
}

impl Target {
    fn url(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme, self.url_host, self.port, self.path
        )
    }
}

/// One measured run.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Completed requests.
    pub requests: u64,
    /// Measured duration.
    pub secs: f64,
    /// Bytes read by the client.
    pub bytes: u64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Non-2xx responses plus socket errors.
    pub errors: u64,
    /// What the errors were.
    pub detail: String,
}

impl Run {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        if self.secs > 0.0 {
            self.requests as f64 / self.secs
        } else {
            0.0
        }
    }

    /// Megabytes (10^6) per second read by the client.
    pub fn mbps(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 / self.secs / 1e6
        } else {
            0.0
        }
    }
}

const WRK_LUA: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LOADRESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50=%.1f p99=%.1f p999=%.1f\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

/// Paces each connection with a random think time after every response, uniform on
/// [0, 2·mean] ms (stochastically rounded, since wrk's timers count whole milliseconds, so the
/// mean stays exact). Superposed over the connections the arrivals are close to Poisson,
/// unlike `h2load --rps`, which fires every client's requests in the same instant. The seed is
/// fixed so every system sees the same sequence. `args[1]` is the mean in milliseconds.
const WRK_PACE_LUA: &str = r#"
local mean_ms = 0
init = function(args)
  mean_ms = tonumber(args[1]) or 0
  math.randomseed(9)
end
delay = function()
  local x = math.random() * 2 * mean_ms
  local d = math.floor(x)
  if math.random() < x - d then d = d + 1 end
  return d
end
"#;

/// The mean think time per connection, in ms, that offers `rate` requests/s over `conns`
/// connections (each cycle is the think time plus the response time, so the achieved rate
/// falls short by the latency's share: about 2% at 1 KiB on loopback).
pub fn pace_ms(conns: u32, rate: f64) -> f64 {
    if rate > 0.0 {
        f64::from(conns) * 1000.0 / rate
    } else {
        0.0
    }
}

/// How `wrk` offers load: saturating, or paced to a rate (see `WRK_PACE_LUA`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Every connection sends its next request as soon as the response is in.
    Saturate,
    /// Each connection waits a random think time of this mean (ms) after each response.
    Think(f64),
}

/// How `wrk` drives the target (always one thread).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wrk {
    /// Connections.
    pub conns: u32,
    /// Send `Connection: close` (a new connection per request).
    pub close: bool,
    /// Saturating or paced.
    pub pace: Pace,
}

impl Wrk {
    /// `conns` connections saturating the target.
    pub fn saturate(conns: u32, close: bool) -> Self {
        Self {
            conns,
            close,
            pace: Pace::Saturate,
        }
    }
}

/// Start `wrk` as `how` says for `secs` seconds; collect it with `wrk_collect`.
pub fn wrk_spawn(
    t: &Target,
    how: Wrk,
    secs: u64,
    core: Core,
    dir: &Path,
    tag: &str,
) -> Result<Proc, String> {
    let wrk = which("wrk").ok_or("wrk is not installed")?;
    let (name, text) = match how.pace {
        Pace::Saturate => ("report.lua", WRK_LUA.to_owned()),
        Pace::Think(_) => ("paced.lua", format!("{WRK_LUA}{WRK_PACE_LUA}")),
    };
    let script = dir.join(name);
    if !script.exists() {
        std::fs::write(&script, text).map_err(|e| format!("write {name}: {e}"))?;
    }
    let mut args = vec![
        "-t1".to_owned(),
        format!("-c{}", how.conns),
        format!("-d{secs}s"),
        "--timeout".into(),
        "10s".into(),
        "-s".into(),
        script.display().to_string(),
        "-H".into(),
        format!("Host: {}", t.host),
    ];
    if how.close {
        args.extend(["-H".into(), "Connection: close".into()]);
    }
    args.push(t.url());
    if let Pace::Think(ms) = how.pace {
        args.extend(["--".into(), format!("{ms:.3}")]);
    }
    Proc::spawn(
        "wrk",
        &wrk,
        &args,
        &[],
        core,
        &dir.join(format!("wrk-{tag}.log")),
    )
    .map_err(|e| format!("start wrk: {e}"))
}

/// Wait for a `wrk` started by `wrk_spawn` (at most `limit`) and parse its summary.
pub fn wrk_collect(mut p: Proc, limit: Duration) -> Result<Run, String> {
    if p.wait_for(limit).is_none() {
        return Err("wrk did not finish in time".into());
    }
    let text = std::fs::read_to_string(&p.log).unwrap_or_default();
    parse_wrk(&text).ok_or_else(|| format!("no wrk summary:\n{}", p.log_tail()))
}

/// Run `wrk` paced to about `rate` requests/s (see `WRK_PACE_LUA`) and parse its summary.
pub fn wrk_paced(
    t: &Target,
    conns: u32,
    rate: f64,
    secs: u64,
    core: Core,
    dir: &Path,
) -> Result<Run, String> {
    let how = Wrk {
        conns,
        close: false,
        pace: Pace::Think(pace_ms(conns, rate)),
    };
    let p = wrk_spawn(t, how, secs, core, dir, "paced")?;
    wrk_collect(p, Duration::from_secs(secs + 30))
}

/// Run `wrk` for `secs` seconds and parse its summary.
pub fn wrk(
    t: &Target,
    conns: u32,
    close: bool,
    secs: u64,
    core: Core,
    dir: &Path,
) -> Result<Run, String> {
    let p = wrk_spawn(t, Wrk::saturate(conns, close), secs, core, dir, "run")?;
    wrk_collect(p, Duration::from_secs(secs + 30))
}

fn parse_wrk(text: &str) -> Option<Run> {
    let line = text.lines().find(|l| l.starts_with("LOADRESULT "))?;
    let kv: Vec<(&str, f64)> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k, v.parse().ok()?))
        })
        .collect();
    let get = |k: &str| {
        kv.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| *v)
            .unwrap_or(0.0)
    };
    let (connect, read, write, status, timeout) = (
        get("connect"),
        get("read"),
        get("write"),
        get("status"),
        get("timeout"),
    );
    let errors = (connect + read + write + status + timeout) as u64;
    let detail = if errors > 0 {
        format!("connect {connect}, read {read}, write {write}, status>=400 {status}, timeout {timeout}")
    } else {
        String::new()
    };
    Some(Run {
        requests: get("requests") as u64,
        secs: get("duration_us") / 1e6,
        bytes: get("bytes") as u64,
        p50_ms: get("p50") / 1e3,
        p99_ms: get("p99") / 1e3,
        p999_ms: get("p999") / 1e3,
        errors,
        detail,
    })
}

/// How `h2load` drives the target.
#[derive(Debug, Clone, Copy)]
pub struct H2Load {
    /// Connections.
    pub clients: u32,
    /// Concurrent streams per connection.
    pub streams: u32,
    /// Total requests per second, spread over the clients; `None` saturates.
    pub rate: Option<f64>,
}

/// Run `h2load` for `secs` seconds; latency percentiles come from its per-request log.
pub fn h2load(t: &Target, how: H2Load, secs: u64, core: Core, dir: &Path) -> Result<Run, String> {
    let bin = which("h2load").ok_or("h2load is not installed (nghttp2-client)")?;
    let log: PathBuf = dir.join("h2load-requests.tsv");
    let _ = std::fs::remove_file(&log);
    let mut args = vec![
        "-t1".to_owned(),
        format!("-c{}", how.clients),
        format!("-m{}", how.streams),
        "-D".into(),
        secs.to_string(),
        format!("--log-file={}", log.display()),
        // h2load 1.52 ignores `host:`; `:authority:` sets Host for HTTP/1.1 too.
        "-H".into(),
        format!(":authority: {}", t.host),
    ];
    if let Some(r) = how.rate {
        let per_client = (r / f64::from(how.clients)).max(1.0);
        args.push(format!("--rps={per_client:.0}"));
    }
    args.push(t.url());
    let mut p = Proc::spawn("h2load", &bin, &args, &[], core, &dir.join("h2load.log"))
        .map_err(|e| format!("start h2load: {e}"))?;
    if p.wait_for(Duration::from_secs(secs + 30)).is_none() {
        return Err("h2load did not finish in time".into());
    }
    let text = std::fs::read_to_string(&p.log).unwrap_or_default();
    let mut run =
        parse_h2load(&text).ok_or_else(|| format!("no h2load summary:\n{}", p.log_tail()))?;
    let mut lat: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    lat.sort_unstable();
    let pct = |q: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1e3
    };
    run.p50_ms = pct(0.50);
    run.p99_ms = pct(0.99);
    run.p999_ms = pct(0.999);
    Ok(run)
}

/// The numbers before each `word` in a comma-separated h2load line.
fn field(line: &str, word: &str) -> f64 {
    line.split(',')
        .find_map(|part| {
            let mut it = part.split_whitespace();
            let n = it.next()?;
            let w = it.next()?;
            (w == word).then(|| n.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

fn parse_h2load(text: &str) -> Option<Run> {
    let finished = text.lines().find(|l| l.starts_with("finished in "))?;
    let t = finished
        .trim_start_matches("finished in ")
        .split(',')
        .next()?
        .trim();
    let secs = if let Some(ms) = t.strip_suffix("ms") {
        ms.parse::<f64>().ok()? / 1e3
    } else {
        t.strip_suffix('s')?.parse::<f64>().ok()?
    };
    let req = text
        .lines()
        .find(|l| l.starts_with("requests: "))?
        .trim_start_matches("requests: ");
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes: "))?
        .trim_start_matches("status codes: ");
    let traffic = text.lines().find(|l| l.starts_with("traffic: "))?;
    let bytes = traffic
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .unwrap_or(0);
    let done = field(req, "done");
    let (failed, errored, timeout) = (
        field(req, "failed"),
        field(req, "errored"),
        field(req, "timeout"),
    );
    let non2xx = field(codes, "3xx") + field(codes, "4xx") + field(codes, "5xx");
    // `failed` already counts 4xx/5xx and the `errored` (and `timeout`) requests.
    let errors = (failed + field(codes, "3xx")) as u64;
    let detail = if errors > 0 {
        format!("failed {failed}, errored {errored}, timeout {timeout}, non-2xx {non2xx}")
    } else {
        String::new()
    };
    Some(Run {
        requests: field(codes, "2xx").min(done) as u64,
        secs,
        bytes,
        errors,
        detail,
        ..Run::default()
    })
}

/// A blocking HTTP/1.1 keep-alive connection for probes (not for load).
#[derive(Debug)]
pub struct Probe {
    stream: TcpStream,
}

/// Status and lower-cased headers of a probe response.
#[derive(Debug, Clone)]
pub struct ProbeReply {
    /// Status code.
    pub status: u16,
    /// `(name, value)`, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl ProbeReply {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Probe {
    /// Connect to `addr`.
    pub fn connect(addr: SocketAddr) -> Result<Probe, String> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        Ok(Probe { stream })
    }

    /// GET `path` with `Host: host`, reading the whole response.
    pub fn get(&mut self, host: &str, path: &str) -> Result<ProbeReply, String> {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: meshgate-bench\r\n\r\n");
        self.stream
            .write_all(req.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 16384];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before the response head".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or("bad status line")?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            })
            .collect();
        let reply = ProbeReply { status, headers };
        let mut body = buf[head_end..].to_vec();
        if let Some(len) = reply
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            while body.len() < len {
                let n = self
                    .stream
                    .read(&mut chunk)
                    .map_err(|e| format!("read body: {e}"))?;
                if n == 0 {
                    return Err("connection closed in the body".into());
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            while !body.ends_with(b"0\r\n\r\n") {
                let n = self
                    .stream
                    .read(&mut chunk)
                    .map_err(|e| format!("read body: {e}"))?;
                if n == 0 {
                    return Err("connection closed in the body".into());
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        Ok(reply)
    }
}

/// Probe until `GET path` with `Host: host` answers 200, up to `limit`.
pub fn wait_ok(addr: SocketAddr, host: &str, path: &str, limit: Duration) -> Result<(), String> {
    let until = std::time::Instant::now() + limit;
    let mut last = String::new();
    while std::time::Instant::now() < until {
        match Probe::connect(addr).and_then(|mut p| p.get(host, path)) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => last = format!("status {}", r.status),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{addr} never answered 200 for {host}{path}: {last}"
    ))
}

/// The TLS version a handshake with `addr` for `sni` settles on, as `openssl s_client` (the
/// library wrk links) reports it, e.g. `TLSv1.3`; `None` if openssl is missing or the handshake
/// fails or takes over 10 s.
pub fn tls_version(addr: SocketAddr, sni: &str) -> Option<String> {
    let mut child = Command::new(which("openssl")?)
        .args([
            "s_client",
            "-brief",
            "-connect",
            &addr.to_string(),
            "-servername",
            sni,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let until = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok()?.is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().ok()?;
    let text = [out.stderr, out.stdout].concat();
    String::from_utf8_lossy(&text).lines().find_map(|l| {
        l.strip_prefix("Protocol version:")
            .map(|v| v.trim().to_owned())
    })
}
