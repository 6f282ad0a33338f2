//! The HTTP/1 framing guard (`http::framing::Framing::scan`) on one connection's bytes, read
//! whole and split in two; see `meshgate::fuzzing::framing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = meshgate::fuzzing::framing(data) {
        panic!("{e}");
    }
});
