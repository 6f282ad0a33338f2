//! Start meshgate in-process from YAML: every listener on an ephemeral loopback port, the
//! admin API on another; `port(8080)` gives the address serving Gateway port 8080.

use std::net::SocketAddr;
use std::path::PathBuf;

use meshgate::config::Bootstrap;
use meshgate::Running;

use super::upstream::UpstreamHandle;

/// A running gateway and the temp dir holding its config.
pub struct TestGateway {
    pub running: Running,
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    /// Start from one YAML text.
    pub async fn start(yaml: &str) -> Self {
        Self::start_with(yaml, |_| {}).await
    }

    /// Start from one YAML text, adjusting the bootstrap first.
    pub async fn start_with(yaml: &str, adjust: impl FnOnce(&mut Bootstrap)) -> Self {
        Self::try_start_with(yaml, adjust)
            .await
            .unwrap_or_else(|e| panic!("gateway failed to start: {e}"))
    }

    /// Start, returning the start error.
    pub async fn try_start_with(
        yaml: &str,
        adjust: impl FnOnce(&mut Bootstrap),
    ) -> Result<Self, meshgate::StartError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, yaml).unwrap();
        let mut boot = Bootstrap {
            config_paths: vec![file],
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            bind_address: "127.0.0.1".parse().unwrap(),
            ephemeral_ports: true,
            drain_delay: std::time::Duration::ZERO,
            ..Bootstrap::default()
        };
        adjust(&mut boot);
        let running = meshgate::start(boot).await?;
        Ok(Self { running, dir })
    }

    /// Start, expecting a configuration error; returns its text.
    pub async fn start_err(yaml: &str) -> String {
        match Self::try_start_with(yaml, |_| {}).await {
            Ok(_) => panic!("the gateway started, but the config is invalid:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    /// Where Gateway port `p` is served.
    pub fn port(&self, p: u16) -> SocketAddr {
        self.running
            .listener(p)
            .unwrap_or_else(|| panic!("no listener for port {p}"))
    }

    /// The admin API address.
    pub fn admin(&self) -> SocketAddr {
        self.running.admin_addr
    }

    /// Replace the config file and reload; the new generation or the errors.
    pub async fn reload_with(&self, yaml: &str) -> Result<u64, Vec<String>> {
        std::fs::write(self.config_file(), yaml).unwrap();
        super::within(self.running.reload()).await
    }

    /// The config file path.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }
}

/// YAML for a Gateway `name` with one HTTP server on `port` for `hosts`.
pub fn http_gateway(name: &str, port: u16, hosts: &[&str]) -> String {
    let hosts: String = hosts.iter().map(|h| format!("    - \"{h}\"\n")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port:\n      number: {port}\n      name: http\n      protocol: HTTP\n    hosts:\n{hosts}---\n"
    )
}

/// YAML for a STATIC ServiceEntry `host` on `port` (protocol `proto`) whose endpoints are the
/// given upstreams, each with labels `version: <label>`.
pub fn service_entry(
    host: &str,
    port: u16,
    proto: &str,
    endpoints: &[(&UpstreamHandle, &str)],
) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(u, v)| {
            format!(
                "  - address: 127.0.0.1\n    ports:\n      http: {}\n    labels:\n      version: {v}\n",
                u.port()
            )
        })
        .collect();
    let name = host.replace('.', "-");
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\nspec:\n  hosts:\n  - {host}\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - number: {port}\n    name: http\n    protocol: {proto}\n  endpoints:\n{eps}---\n"
    )
}
