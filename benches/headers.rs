//! Per-request header work on the hot path: hop-by-hop stripping of a typical upstream
//! response and `x-forwarded-for` on a request, with allocations counted (`AllocProfiler`).
//!
//! Run with `cargo bench --bench headers`.

use std::net::IpAddr;

use divan::{black_box, Bencher};
use http::{HeaderMap, HeaderValue};
use meshgate::http::headers;

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

/// A typical HTTP/1.1 response head from a keep-alive backend.
fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("text/plain"));
    h.insert("content-length", HeaderValue::from_static("1024"));
    h.insert("connection", HeaderValue::from_static("keep-alive"));
    h.insert(
        "date",
        HeaderValue::from_static("Sun, 22 Nov 2026 06:00:00 GMT"),
    );
    h
}

#[divan::bench]
fn strip_hop_by_hop_keep_alive(b: Bencher) {
    b.with_inputs(response_headers).bench_local_values(|mut h| {
        headers::strip_hop_by_hop(&mut h);
        black_box(h)
    });
}

#[divan::bench]
fn set_forwarded_first_hop(b: Bencher) {
    let ip: IpAddr = "10.1.2.3".parse().unwrap_or(IpAddr::from([10, 1, 2, 3]));
    let element = headers::forwarded_for(ip);
    b.with_inputs(HeaderMap::new).bench_local_values(|mut h| {
        headers::set_forwarded(&mut h, &element, "http");
        black_box(h)
    });
}
