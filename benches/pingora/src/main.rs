//! The bench's Pingora system: the same route as every other peer (Host `bench.local`, or
//! `h<i>.bench.local` for i < --hosts, path prefix `/api`, two upstream endpoints weighted
//! 3:2 round robin, keep-alive to the upstreams, one worker thread, no access log), written
//! the way a Pingora user would: a `ProxyHttp` whose `request_filter` answers 404 and
//! whose `upstream_peer` picks the endpoint.
//!
//! Usage: pingora-bench --listen PORT --up PORT_A,PORT_B [--hosts N] [--h2c]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

const HOST: &str = "bench.local";
/// Endpoint 0 three times, endpoint 1 twice: weights 3:2.
const WHEEL: [usize; 5] = [0, 1, 0, 1, 0];

struct Bench {
    hosts: HashSet<String>,
    up: [u16; 2],
    next: AtomicUsize,
}

impl Bench {
    fn routed(&self, session: &Session) -> bool {
        let req = session.req_header();
        let host = req
            .uri
            .host()
            .or_else(|| req.headers.get("host").and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        self.hosts.contains(host) && req.uri.path().starts_with("/api")
    }
}

#[async_trait]
impl ProxyHttp for Bench {
    type CTX = ();
    fn new_ctx(&self) -> Self::CTX {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        if self.routed(session) {
            return Ok(false);
        }
        session.respond_error(404).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let i = WHEEL[self.next.fetch_add(1, Ordering::Relaxed) % WHEEL.len()];
        let addr = ("127.0.0.1", self.up[i]);
        Ok(Box::new(HttpPeer::new(addr, false, String::new())))
    }
}

fn usage(why: &str) -> ! {
    eprintln!("pingora-bench: {why}\nusage: pingora-bench --listen PORT --up PORT_A,PORT_B [--hosts N] [--h2c]");
    std::process::exit(2)
}

fn main() {
    let mut listen = None;
    let mut up = None;
    let mut n_hosts = 0usize;
    let mut h2c = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--listen" => listen = value().parse::<u16>().ok(),
            "--up" => {
                let v = value();
                let ports: Vec<u16> = v.split(',').filter_map(|p| p.parse().ok()).collect();
                up = <[u16; 2]>::try_from(ports).ok();
            }
            "--hosts" => n_hosts = value().parse().unwrap_or_else(|_| usage("bad --hosts")),
            "--h2c" => h2c = true,
            "--version" => {
                println!("pingora-proxy 0.9 (meshgate-bench-pingora)");
                return;
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let listen = listen.unwrap_or_else(|| usage("--listen PORT is required"));
    let up = up.unwrap_or_else(|| usage("--up PORT_A,PORT_B is required"));
    let hosts = if n_hosts == 0 {
        HashSet::from([HOST.to_owned()])
    } else {
        (0..n_hosts).map(|i| format!("h{i}.{HOST}")).collect()
    };

    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(
        &server.configuration,
        Bench {
            hosts,
            up,
            next: AtomicUsize::new(0),
        },
    );
    if h2c {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        if let Some(app) = proxy.app_logic_mut() {
            app.server_options = Some(options);
        }
    }
    proxy.add_tcp(&format!("127.0.0.1:{listen}"));
    server.add_service(proxy);
    server.run_forever();
}
