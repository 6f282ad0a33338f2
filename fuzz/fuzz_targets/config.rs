//! Arbitrary YAML through the file source's parser, `config::compile` and `meshgate
//! validate`'s analyzer; see `meshgate::fuzzing::config`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshgate::fuzzing::FuzzCredentials;

/// One certificate for every path a config names, generated once per process.
fn credentials() -> &'static FuzzCredentials {
    static CREDS: OnceLock<FuzzCredentials> = OnceLock::new();
    CREDS.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec![
            "example.com".to_owned(),
            "*.example.com".to_owned(),
        ])
        .expect("self-signed certificate");
        FuzzCredentials {
            cert: ck.cert.pem().into_bytes(),
            key: ck.signing_key.serialize_pem().into_bytes(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if let Err(e) = meshgate::fuzzing::config(data, credentials()) {
        panic!("{e}");
    }
});
