//! One request looked up in a fixed route table (`meshgate::fuzzing::ROUTE_CONFIG`); see
//! `meshgate::fuzzing::route` for the input format and the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = meshgate::fuzzing::route(data) {
        panic!("{e}");
    }
});
