//! Snapshot build time: loading and compiling N VirtualServices (one host, three rules each:
//! a header match, a prefix match with retries, a weighted split), which is the reload
//! latency budget. `cargo bench --bench config_compile`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::PathBuf;

use meshgate::config::{self, CompileOptions, RawSet};
use meshgate::tls::server::CertsDir;
use meshgate::upstream::Registry;

fn main() {
    meshgate::tls::install_default_provider();
    divan::main();
}

fn yaml(n: usize) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc}\nspec:\n  hosts: [svc.local]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints:\n  - {address: 127.0.0.1, labels: {version: v1}}\n  - {address: 127.0.0.2, labels: {version: v2}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: svc}\nspec:\n  host: svc.local\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n---\n",
    );
    for i in 0..n {
        write!(
            y,
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs{i}}}\nspec:\n  hosts: [host{i}.example.com]\n  gateways: [gw]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n    route: [{{destination: {{host: svc.local, subset: v2}}}}]\n  - match: [{{uri: {{prefix: /api/v{i}}}}}]\n    route: [{{destination: {{host: svc.local}}}}]\n    retries: {{attempts: 3, perTryTimeout: 1s, retryOn: 5xx}}\n  - route:\n    - {{destination: {{host: svc.local, subset: v1}}, weight: 90}}\n    - {{destination: {{host: svc.local, subset: v2}}, weight: 10}}\n---\n"
        )
        .unwrap();
    }
    y
}

fn load(n: usize) -> (tempfile::TempDir, RawSet) {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("config.yaml");
    std::fs::write(&file, yaml(n)).unwrap();
    let raw = config::source::file::load(&[file]).unwrap();
    (dir, raw)
}

#[divan::bench(args = [100, 1_000, 10_000], sample_count = 5, sample_size = 1)]
fn compile(bencher: divan::Bencher, n: usize) {
    let (_dir, raw) = load(n);
    let registry = Registry::default();
    let credentials = CertsDir("certs".into());
    let opts = CompileOptions {
        workload_labels: None,
        selector: Default::default(),
        mesh_port: None,
        registry: &registry,
        credentials: &credentials,
    };
    bencher.bench(|| config::compile(divan::black_box(&raw), &opts).unwrap());
}

#[divan::bench(args = [100, 1_000, 10_000], sample_count = 5, sample_size = 1)]
fn parse_yaml(bencher: divan::Bencher, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("config.yaml");
    std::fs::write(&file, yaml(n)).unwrap();
    bencher.bench(|| config::source::file::load(std::slice::from_ref(&file)).unwrap());
}
