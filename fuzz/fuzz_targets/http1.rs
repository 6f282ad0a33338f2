//! One downstream HTTP/1 connection served by the real server and proxy code over an
//! in-memory duplex; see `meshgate::fuzzing::http1` for the input format and invariants.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use meshgate::fuzzing::Http1Gateway;
use tokio::runtime::Runtime;

/// Longest a connection may stay open after the client closed its write side. The clock is
/// paused (it jumps ahead whenever every task waits), so this costs no wall time; a loop
/// that never yields is caught by libFuzzer's `-timeout` instead.
const LIMIT: Duration = Duration::from_secs(10);

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    })
}

fn gateway() -> &'static Http1Gateway {
    static GW: OnceLock<Http1Gateway> = OnceLock::new();
    GW.get_or_init(|| {
        runtime()
            .block_on(async { Http1Gateway::new() })
            .expect("HTTP1_CONFIG compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let gw = gateway();
    if let Err(e) = runtime().block_on(meshgate::fuzzing::http1(gw, data, LIMIT)) {
        panic!("{e}");
    }
});
