//! kmock (PyPI): an in-memory Kubernetes API emulator, run as a child process on a loopback
//! port, fed with real-shaped objects through a real kube client.
//!
//! The first use installs kmock into a virtualenv under the target directory
//! (`target/py-venv`); concurrent first uses (test threads, other test processes) serialize on
//! a lock file, and later uses find the ready marker. kmock assigns no resourceVersion, so
//! every object created or patched here gets one from a counter (kube-runtime's watcher
//! refuses objects without it).
//!
//! What kmock cannot do through its Kubernetes API is reached through three control endpoints
//! of `kmock_runner.py`: store an object without a watch event, send `410 Gone` on open
//! watches, and count LIST requests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The kmock version the harness installs.
const KMOCK: &str = "kmock==0.8";

/// A running emulator; killed when dropped.
pub struct Kmock {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    client: kube::Client,
    rv: AtomicU64,
}

impl Kmock {
    /// Start an emulator on a free port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Start an emulator on `port` (0: a free one).
    pub async fn start_on(port: u16) -> Self {
        let python = tokio::task::spawn_blocking(ensure_installed).await.unwrap();
        let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kmock_runner.py");
        let mut child = Command::new(python)
            .arg(runner)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start kmock");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        super::within_for(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("read kmock port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("kmock did not print its port: {line:?}"));
        let client = kube::Client::try_from(config_for(port)).unwrap();
        Self {
            child: Some(child),
            port,
            client,
            rv: AtomicU64::new(1),
        }
    }

    /// A kube configuration pointing at this emulator.
    pub fn config(&self) -> kube::Config {
        config_for(self.port)
    }

    /// Stop the emulator (the API server goes away; its state is lost).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    fn next_rv(&self) -> String {
        self.rv.fetch_add(1, Ordering::SeqCst).to_string()
    }

    /// Create `obj` (apiVersion, kind, metadata.name and namespace required).
    pub async fn create(&self, mut obj: Value) {
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        let (api, _) = self.api(&obj);
        let dynamic: DynamicObject = serde_json::from_value(obj).unwrap();
        super::within(api.create(&PostParams::default(), &dynamic))
            .await
            .unwrap();
    }

    /// Merge-patch `obj` onto the stored object of the same kind and name (`null` removes a
    /// key; lists are replaced whole).
    pub async fn patch(&self, mut obj: Value) {
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        let (api, name) = self.api(&obj);
        super::within(api.patch(&name, &PatchParams::default(), &Patch::Merge(&obj)))
            .await
            .unwrap();
    }

    /// Delete the object `obj` names.
    pub async fn delete(&self, obj: &Value) {
        let (api, name) = self.api(obj);
        super::within(api.delete(&name, &DeleteParams::default()))
            .await
            .unwrap();
    }

    /// Store `obj` without emitting a watch event: only a relist can see it.
    pub async fn put_silently(&self, mut obj: Value) {
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        let ar = resource_of(&obj);
        let path = if ar.group.is_empty() {
            format!("{}/{}", ar.version, ar.plural)
        } else {
            format!("{}/{}/{}", ar.group, ar.version, ar.plural)
        };
        let body = json!({
            "resource": path,
            "namespace": obj["metadata"]["namespace"],
            "name": obj["metadata"]["name"],
            "object": obj,
        });
        self.control("POST", "/_meshgate/silent", Some(body)).await;
    }

    /// Send `410 Gone` on every open cluster-wide watch.
    pub async fn gone(&self) {
        self.control("POST", "/_meshgate/gone", Some(json!({})))
            .await;
    }

    /// LIST requests served so far.
    pub async fn lists(&self) -> u64 {
        let v = self.control("GET", "/_meshgate/lists", None).await;
        v["lists"].as_u64().unwrap()
    }

    async fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
            .unwrap();
        let text = super::within(self.client.request_text(req)).await.unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn api(&self, obj: &Value) -> (Api<DynamicObject>, String) {
        let ar = resource_of(obj);
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        (Api::namespaced_with(self.client.clone(), ns, &ar), name)
    }
}

fn config_for(port: u16) -> kube::Config {
    let mut cfg = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    cfg.default_namespace = "default".to_owned();
    // Fail fast on a dead emulator; a watch is re-established by the runtime anyway.
    cfg.connect_timeout = Some(Duration::from_secs(2));
    cfg
}

/// The API resource of `obj` from its apiVersion and kind.
fn resource_of(obj: &Value) -> ApiResource {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let kind = obj["kind"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "ServiceEntry" => "serviceentries".to_owned(),
        "EndpointSlice" => "endpointslices".to_owned(),
        k => format!("{}s", k.to_ascii_lowercase()),
    };
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        plural,
    }
}

/// `target/py-venv` with kmock installed; its python. Blocking; safe to call concurrently
/// from threads and processes.
fn ensure_installed() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp`: the venv goes beside it, under the target dir.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_owned();
    let venv = target.join("py-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".kmock-ready");
    if ready.exists() {
        return python;
    }
    std::fs::create_dir_all(&target).unwrap();
    let lock = target.join("py-venv.lock");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if ready.exists() {
                    return python;
                }
                // A lock left by a killed installer: take it over after a generous time.
                let stale = std::fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > Duration::from_secs(300));
                if stale {
                    let _ = std::fs::remove_file(&lock);
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {}",
                    lock.display()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot create {}: {e}", lock.display()),
        }
    }
    let result = install(&venv, &python);
    if result.is_ok() {
        std::fs::write(&ready, KMOCK).unwrap();
    }
    let _ = std::fs::remove_file(&lock);
    if let Err(e) = result {
        panic!("cannot install {KMOCK} into {}: {e}", venv.display());
    }
    python
}

fn install(venv: &Path, python: &Path) -> Result<(), String> {
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    if !python.exists() {
        run(std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv))?;
    }
    run(std::process::Command::new(python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        KMOCK,
    ]))
}
