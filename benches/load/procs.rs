//! Child processes: spawn (pinned to a core with `taskset` when asked), wait until a port
//! answers, and kill. Every child is owned by a `Proc` guard whose `Drop` kills it and its
//! descendants, so a panic unwinding through `main` leaves nothing behind; a Ctrl-C handler
//! kills every registered child before exiting.
//!
//! Must not: measure anything (see `sample`) or know any peer's configuration (see `peers`).

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sample;

/// Pids of every live child, for the Ctrl-C handler.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kill every registered child (and its descendants) when the user presses Ctrl-C or the
/// process gets SIGTERM, then exit 130.
pub fn install_signal_handler() {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        let pids: Vec<u32> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
        for pid in pids {
            kill_tree(pid);
        }
        eprintln!("load: interrupted, children killed");
        std::process::exit(130);
    });
}

/// SIGKILL `pid` and all its descendants (children first are found before the parent dies).
fn kill_tree(pid: u32) {
    let tree = sample::tree(pid);
    for p in tree.iter().rev() {
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Where a child runs.
#[derive(Debug, Clone, Copy)]
pub enum Core {
    /// Anywhere.
    Any,
    /// On this CPU only (`taskset -c N`).
    Pin(usize),
}

/// A running child process, killed with its descendants on drop.
#[derive(Debug)]
pub struct Proc {
    /// Short name for messages.
    pub name: String,
    /// Its pid (taskset execs, so this is the program's own pid).
    pub pid: u32,
    child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Proc {
    /// Start `program args..` on `core` with `env`, stdout and stderr to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        core: Core,
        log: &Path,
    ) -> std::io::Result<Proc> {
        let mut cmd = match core {
            Core::Any => Command::new(program),
            Core::Pin(n) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(n.to_string()).arg(program);
                c
            }
        };
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()?;
        let pid = child.id();
        if let Ok(mut l) = LIVE.lock() {
            l.push(pid);
        }
        Ok(Proc {
            name: name.to_owned(),
            pid,
            child,
            log: log.to_owned(),
        })
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait for it to exit on its own, up to `limit`; kill it after that.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Send SIGINT (wrk then prints its summary and exits).
    pub fn interrupt(&self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status();
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Wait until `addr` accepts TCP connections (and the process is still alive).
    pub fn wait_port(&mut self, addr: SocketAddr, limit: Duration) -> Result<(), String> {
        let until = Instant::now() + limit;
        loop {
            if let Some(s) = self.exited() {
                return Err(format!(
                    "{} exited ({s}) before listening:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!(
                    "{} did not listen on {addr} within {limit:?}:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            kill_tree(self.pid);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Ok(mut l) = LIVE.lock() {
            l.retain(|p| *p != self.pid);
        }
    }
}

/// Pin the calling thread to `core` (`taskset -p`, no unsafe needed).
pub fn pin_current_thread(core: usize) {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()));
    if let Some(tid) = tid {
        let _ = Command::new("taskset")
            .args(["-p", "-c", &core.to_string(), &tid])
            .stdout(Stdio::null())
            .status();
    }
}

/// The id of the calling thread.
pub fn current_tid() -> Option<u32> {
    std::fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// A program on PATH (or at an absolute path), if it is there.
pub fn which(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

/// A free loopback port (bound and released; fine on a quiet machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
