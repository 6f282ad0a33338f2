//! nginx as a real peer: started from a config on a free loopback port, in its own temp
//! dir, and killed when dropped. Needs the Debian package `nginx` (installed with apt-get
//! when missing, as the other tests that need a Debian package do).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx.
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start nginx with the main-context lines `main` (e.g. `load_module`) and the
/// `http`/`stream` blocks `blocks(port, dir)` makes for the free `port` it should listen on;
/// returns once the port accepts connections.
pub fn start(main: &str, blocks: impl FnOnce(u16, &Path) -> String) -> Nginx {
    super::ensure_debian_package("nginx", "-v", "nginx");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.path().display();
    let conf = format!(
        "{main}
daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
{}",
        blocks(port, dir.path())
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < until, "nginx did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx {
        child,
        addr,
        _dir: dir,
    }
}
