#!/usr/bin/env python3
"""Regenerate the seed corpora in fuzz/corpus/ (run from anywhere; needs python3 and openssl).

The committed corpora are what this wrote plus what the fuzzers added (minimised with
`cargo fuzz cmin`); re-running it only adds or overwrites the `seed-*` files.

- sni: ClientHellos from OpenSSL (Python's ssl module over a memory BIO, and `openssl
  s_client` captured by a local socket), some re-split across several records, and a few
  non-TLS starts.
- config: every YAML file under config/ and tests/fixtures/seed-examples/, and the two
  configs compiled by src/fuzzing.rs.
- route: requests in the line format of `meshgate::fuzzing::route`.
- framing, http1: a split-selector byte, then HTTP/1 connection bytes (cases from
  tests/hardening.rs among them).
"""

import pathlib
import re
import socket
import ssl
import subprocess
import threading

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


# --- sni -------------------------------------------------------------------------------------


def python_hello(sni, alpn=None, maximum=None, minimum=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if maximum:
        ctx.maximum_version = maximum
    if minimum:
        ctx.minimum_version = minimum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def s_client_hello(args):
    """The first flight of `openssl s_client` with `args`, read by a local listener."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = {}

    def accept():
        conn, _ = srv.accept()
        conn.settimeout(2)
        buf = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[3:5], "big"):
                    break
        except OSError:
            pass
        got["hello"] = buf
        conn.close()

    t = threading.Thread(target=accept)
    t.start()
    subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=b"",
        capture_output=True,
        timeout=10,
    )
    t.join(5)
    srv.close()
    return got.get("hello", b"")


def resplit(hello, sizes):
    """The handshake message of a one-record `hello`, re-split into records of `sizes`."""
    body = hello[5:]
    out, at = b"", 0
    for n in sizes + [len(body)]:
        part = body[at : at + n]
        if not part:
            break
        out += b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
        at += len(part)
    return out


def sni_seeds():
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    hellos = {
        "py-sni-alpn": python_hello("api.example.com", ["h2", "http/1.1"]),
        "py-no-sni": python_hello(None),
        "py-tls12-upper": python_hello("Shop.Example.COM", maximum=v12),
        "py-tls13-grpc": python_hello("a.b.c.example.org", ["grpc-exp", "h2"], minimum=v13),
        "py-ip-literal": python_hello("10.0.0.1"),
        "s_client-default": s_client_hello(["-servername", "app.test"]),
        "s_client-tls12-alpn": s_client_hello(
            ["-servername", "x.example.com", "-tls1_2", "-alpn", "http/1.1"]
        ),
        "s_client-noservername": s_client_hello(["-noservername"]),
    }
    for name, h in hellos.items():
        assert h and h[0] == 0x16, name
        write("sni", name, h)
    base = hellos["py-sni-alpn"]
    write("sni", "split-2", resplit(base, [40]))
    write("sni", "split-3-tiny", resplit(base, [1, 3]))
    write("sni", "split-many", resplit(base, [16] * 20))
    write("sni", "truncated", base[: len(base) // 2])
    # A hello that declares 16000 bytes and arrives one byte per record: parse must give up
    # at MAX_HELLO (16 KiB) instead of asking for more.
    big = b"\x16\x03\x01\x00\x04\x01\x00\x3e\x80" + b"\x16\x03\x01\x00\x01\x00" * 2800
    write("sni", "one-byte-records", big)
    write("sni", "http", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    write("sni", "sslv2", b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10")
    write("sni", "server-hello", b"\x16\x03\x03\x00\x04\x02\x00\x00\x00")


# --- config ----------------------------------------------------------------------------------


def config_seeds():
    files = sorted(ROOT.glob("config/**/*.yaml")) + sorted(
        (ROOT / "tests/fixtures/seed-examples").glob("*.yaml")
    )
    for f in files:
        rel = f.relative_to(ROOT).as_posix().replace("/", "_")
        write("config", rel, f.read_bytes())
    src = (ROOT / "src/fuzzing.rs").read_text()
    for name in ["ROUTE_CONFIG", "HTTP1_CONFIG"]:
        m = re.search(rf'pub const {name}: &str = r#"(.*?)"#;', src, re.S)
        write("config", name.lower(), m.group(1).encode())
    small = {
        "empty-docs": "---\n---\n",
        "bad-yaml": "kind: [\n",
        "not-istio": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        "bad-version": "apiVersion: networking.istio.io/v9\nkind: Gateway\nmetadata: {name: g}\n",
        "type-error": "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: heavy\n",
        "https-credential": "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: c}\n  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [b.example.com]\n    tls: {mode: PASSTHROUGH}\n",
        "tcp-tls-routes": "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 9000, name: tcp, protocol: TCP}\n    hosts: ['*']\n  - port: {number: 9443, name: tls, protocol: TLS}\n    hosts: ['*.example.com']\n    tls: {mode: PASSTHROUGH}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: l4}\nspec:\n  hosts: ['*.example.com']\n  gateways: [g]\n  tcp:\n  - route: [{destination: {host: db.svc, port: {number: 5432}}}]\n  tls:\n  - match: [{sniHosts: [a.example.com]}]\n    route: [{destination: {host: a.svc, port: {number: 443}}, weight: 60}, {destination: {host: b.svc, port: {number: 443}}, weight: 40}]\n",
        "mesh-delegate": "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: root}\nspec:\n  hosts: [svc.local]\n  gateways: [mesh]\n  http:\n  - match: [{uri: {prefix: /a}}]\n    delegate: {name: child}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: child}\nspec:\n  http:\n  - rewrite: {uri: /b}\n    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}\n    timeout: 10s\n    route: [{destination: {host: svc.local}}]\n",
    }
    for name, text in small.items():
        write("config", name, text.encode())


# --- route -----------------------------------------------------------------------------------


def route_seeds():
    reqs = {
        "root": "GET\n/\n8080\nhost: shop.example.com",
        "login": "POST\n/login\n8080\nhost: shop.example.com",
        "api-users": "GET\n/api/v1/users/7\n8080\nhost: shop.example.com\nx-version: 1\nx-user: jason",
        "static-case": "GET\n/STATIC/app.js\n8080\nhost: shop.example.com",
        "static": "GET\n/static/app.js\n8080\nhost: shop.example.com",
        "img": "GET\n/img/logo.png\n8080\nhost: shop.example.com",
        "search": "GET\n/search?debug=1&q=x\n8080\nhost: shop.example.com",
        "page-mixed-host": "GET\n/list?page=2\n8080\nhost: Shop.Example.com",
        "admin-port": "GET\n/admin/users\n9090\nhost: shop.example.com:9090",
        "items": "PATCH\n/items/3\n8080\nhost: shop.example.com",
        "private": "GET\n/private/jason\n8080\nhost: shop.example.com\nx-user: bob",
        "two-blocks": "GET\n/b\n8080\nhost: shop.example.com:8080",
        "tenant": "GET\n/x\n8080\nhost: shop.example.com\nx-tenant: acme",
        "late": "GET\n/late\n8080\nhost: shop.example.com",
        "absolute": "GET\nhttp://a.example.com/old/x\n8080",
        "legacy": "GET\n/legacy/page\n8080\nhost: b.example.com\naccept: text/html",
        "health": "GET\n/healthz\n8080\nhost: other.test",
        "dot-segments": "GET\n/a/../api/v1/x\n8080\nhost: shop.example.com\nx-version: 1",
        "encoded-dots": "GET\n/static/%2e%2e/admin\n9090\nhost: shop.example.com",
        "connect": "CONNECT\nshop.example.com:443\n8080\nhost: shop.example.com:443",
        "repeated-header": "GET\n/api/v1\n8080\nhost: shop.example.com\nx-version: 1\nx-version: 1",
    }
    for name, text in reqs.items():
        write("route", name, text.encode())


# --- framing / http1 -------------------------------------------------------------------------

HOST = "app.test"


def get(path, headers="", host=HOST):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode()


def post(headers, body, path="/direct"):
    return f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n".encode() + body


def http_seeds():
    cases = {
        "get": (0, get("/direct")),
        "pipelined": (
            128,
            get("/admin/x") + post("Content-Length: 5\r\n", b"hello") + get("/old/y") + get("/z"),
        ),
        "post-length": (200, post("Content-Length: 5\r\n", b"hello")),
        "post-chunked": (
            90,
            post("Transfer-Encoding: chunked\r\n", b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"),
        ),
        "http10": (0, f"POST /direct HTTP/1.0\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello".encode()),
        "cl-te": (
            60,
            post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + get("/admin/smuggled")),
        ),
        "double-cl": (0, post("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!")),
        "cl-list": (255, post("Content-Length: 5, 5\r\n", b"hello")),
        "te-gzip-chunked": (0, post("Transfer-Encoding: gzip, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n")),
        "bare-lf-size": (0, post("Transfer-Encoding: chunked\r\n", b"5\nhello\r\n0\r\n\r\n")),
        "bare-lf-trailer": (230, post("Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n")),
        "chunk-smuggle": (
            0,
            post("Transfer-Encoding: chunked\r\n", b"1\r\nh" + get("/admin/smuggled") + b"0\r\n\r\n"),
        ),
        "expect-continue": (0, post("Content-Length: 5\r\nExpect: 100-continue\r\n", b"hello")),
        "folded": (0, get("/direct", "X-Folded: a\r\n b\r\n")),
        "preflight": (
            0,
            f"OPTIONS /cors HTTP/1.1\r\nHost: {HOST}\r\nOrigin: https://a.example\r\n"
            "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x-user\r\n\r\n".encode(),
        ),
        "fault": (0, get("/fault")),
        "redirect": (0, get("/old/page?x=1")),
        "absolute-form": (0, b"GET http://app.test/v1/a HTTP/1.1\r\nX-User: jason\r\n\r\n"),
        "upgrade": (0, get("/ws", "Upgrade: websocket\r\nConnection: upgrade\r\n") + b"\x81\x05hello"),
        "connect": (0, b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n"),
        "h2-preface": (
            0,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]),
        ),
        "long-target": (0, get("/" + "a" * 600)),
        "head": (0, f"HEAD /direct HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode() + get("/empty")),
        "https-redirect": (0, get("/login", host="secure.test")),
        "missing-host": (0, b"GET /direct HTTP/1.1\r\n\r\n"),
        "two-hosts": (0, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        "dot-segments": (0, get("/public/../admin/x")),
        "nul-in-value": (0, get("/direct", "X-A: a\0b\r\n")),
        "partial-head": (100, b"GET /direct HTTP/1.1\r\nHost: app"),
    }
    for name, (sel, data) in cases.items():
        write("framing", name, bytes([sel]) + data)
        write("http1", name, bytes([sel]) + data)


if __name__ == "__main__":
    sni_seeds()
    config_seeds()
    route_seeds()
    http_seeds()
    for t in sorted(CORPUS.iterdir()):
        files = list(t.iterdir())
        print(f"{t.name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")
