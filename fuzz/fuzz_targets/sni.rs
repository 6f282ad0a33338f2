//! `tls::sni::parse` on arbitrary bytes: see `meshgate::fuzzing::sni` for the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = meshgate::fuzzing::sni(data) {
        panic!("{e}");
    }
});
