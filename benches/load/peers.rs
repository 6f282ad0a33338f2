//! Configuration text for every system, for the same route: Host `bench.local` (`localhost`
//! behind TLS, where wrk's SNI is the URL host), path prefix `/api`, two upstream endpoints
//! weighted 3:2 round robin, keep-alive to the upstreams, one worker, no access log.
//!
//! Must not: start processes or pick ports; every input comes in a `Spec`.

use std::fmt::Write as _;
use std::path::Path;

use crate::pki::Pki;

/// The plain HTTP Host every case uses.
pub const HOST: &str = "bench.local";
/// The Host and SNI behind TLS.
pub const TLS_HOST: &str = "localhost";
/// The SNI and certificate name of the TLS upstream (origination).
pub const UPSTREAM_SNI: &str = "upstream.local";
/// Endpoint weights.
pub const WEIGHTS: [u32; 2] = [3, 2];

/// What a system must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain HTTP in (HTTP/1.1 and h2c), plain HTTP/1.1 to the upstream.
    Http,
    /// Plain HTTP, with `n` hosts in the config (`h<i>.bench.local`).
    Hosts(usize),
    /// TLS originated to the upstream (verified, SNI `upstream.local`).
    Origination,
    /// SNI passthrough to TLS upstreams.
    Passthrough,
    /// TLS terminated, plain HTTP/1.1 to the upstream.
    TlsTerm,
}

/// Everything a configuration needs.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// What to do.
    pub mode: Mode,
    /// The listening port on 127.0.0.1.
    pub listen: u16,
    /// The two upstream endpoints (plain or TLS, as the mode needs).
    pub up: [u16; 2],
    /// The run's certificates.
    pub pki: &'a Pki,
    /// A directory the system may write into.
    pub dir: &'a Path,
    /// Accept h2c (prior knowledge) on the plain port, where that needs saying.
    pub h2c: bool,
}

impl Spec<'_> {
    /// The Host header clients send.
    pub fn host(&self) -> String {
        match self.mode {
            Mode::TlsTerm | Mode::Passthrough => TLS_HOST.to_owned(),
            Mode::Hosts(n) => host_n(n * 3 / 4),
            Mode::Http | Mode::Origination => HOST.to_owned(),
        }
    }
}

/// Host number `i` of the many-hosts case.
pub fn host_n(i: usize) -> String {
    format!("h{i}.{HOST}")
}

fn hosts(spec: &Spec<'_>) -> Vec<String> {
    match spec.mode {
        Mode::Hosts(n) => (0..n).map(host_n).collect(),
        _ => vec![spec.host()],
    }
}

// === meshgate ===

/// Istio YAML for meshgate.
pub fn meshgate(spec: &Spec<'_>) -> String {
    let p = spec.listen;
    let pki = spec.pki;
    let mut y = String::new();
    let (protocol, tls, gw_hosts) = match spec.mode {
        Mode::TlsTerm => (
            "HTTPS",
            format!(
                "    tls: {{mode: SIMPLE, serverCertificate: \"{}\", privateKey: \"{}\"}}\n",
                pki.cert.display(),
                pki.key.display()
            ),
            format!("[\"{TLS_HOST}\"]"),
        ),
        Mode::Passthrough => (
            "TLS",
            "    tls: {mode: PASSTHROUGH}\n".to_owned(),
            format!("[\"{TLS_HOST}\"]"),
        ),
        Mode::Hosts(_) => ("HTTP", String::new(), "[\"*\"]".to_owned()),
        Mode::Http | Mode::Origination => ("HTTP", String::new(), format!("[\"{HOST}\"]")),
    };
    let _ = write!(
        y,
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: bench-gw\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {{number: {p}, name: bench, protocol: {protocol}}}\n    hosts: {gw_hosts}\n{tls}---\n"
    );
    let (svc, svc_port, svc_proto, location) = match spec.mode {
        Mode::Origination => ("upstream.tls", 443, "HTTP", "MESH_EXTERNAL"),
        Mode::Passthrough => ("upstream.tls", 443, "TLS", "MESH_EXTERNAL"),
        _ => ("upstream.bench", 80, "HTTP", "MESH_INTERNAL"),
    };
    for (i, host) in hosts(spec).iter().enumerate() {
        if spec.mode == Mode::Passthrough {
            let _ = write!(
                y,
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs-{i}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [bench-gw]\n  tls:\n  - match:\n    - port: {p}\n      sniHosts: [\"{host}\"]\n    route:\n    - destination: {{host: {svc}, port: {{number: {svc_port}}}}}\n---\n"
            );
        } else {
            let _ = write!(
                y,
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs-{i}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [bench-gw]\n  http:\n  - match: [{{uri: {{prefix: /api}}}}]\n    route:\n    - destination: {{host: {svc}, port: {{number: {svc_port}}}}}\n---\n"
            );
        }
    }
    let _ = write!(
        y,
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {}\nspec:\n  hosts: [{svc}]\n  location: {location}\n  resolution: STATIC\n  ports:\n  - {{number: {svc_port}, name: p{svc_port}, protocol: {svc_proto}}}\n  endpoints:\n",
        svc.replace('.', "-")
    );
    for (port, w) in spec.up.iter().zip(WEIGHTS) {
        let _ = writeln!(
            y,
            "  - {{address: 127.0.0.1, ports: {{p{svc_port}: {port}}}, weight: {w}}}"
        );
    }
    y.push_str("---\n");
    if spec.mode == Mode::Origination {
        let _ = write!(
            y,
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: upstream-tls\nspec:\n  host: {svc}\n  trafficPolicy:\n    tls: {{mode: SIMPLE, sni: {UPSTREAM_SNI}, caCertificates: \"{}\"}}\n---\n",
            pki.ca.display()
        );
    }
    y
}

// === nginx ===

/// nginx.conf: one process (`master_process off`), upstream keepalive.
pub fn nginx(spec: &Spec<'_>) -> String {
    let d = spec.dir.display();
    let [a, b] = spec.up;
    let [wa, wb] = WEIGHTS;
    let p = spec.listen;
    let mut c = String::new();
    if spec.mode == Mode::Passthrough {
        c.push_str("load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n");
    }
    let _ = write!(
        c,
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log error;\nworker_rlimit_nofile 65536;\nevents {{ worker_connections 16384; }}\n"
    );
    if spec.mode == Mode::Passthrough {
        let _ = write!(
            c,
            "stream {{\n  map $ssl_preread_server_name $backend {{ {TLS_HOST} pass; default reject; }}\n  upstream pass {{ server 127.0.0.1:{a} weight={wa}; server 127.0.0.1:{b} weight={wb}; }}\n  upstream reject {{ server 127.0.0.1:1; }}\n  server {{ listen 127.0.0.1:{p}; ssl_preread on; proxy_pass $backend; }}\n}}\n"
        );
        return c;
    }
    let _ = write!(
        c,
        "http {{\n  access_log off;\n  keepalive_requests 10000000;\n  server_names_hash_max_size 65536;\n  server_names_hash_bucket_size 64;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  proxy_http_version 1.1;\n  proxy_set_header Connection \"\";\n"
    );
    let (scheme, tls_server) = if spec.mode == Mode::Origination {
        (
            "https",
            format!(
                "  proxy_ssl_server_name on;\n  proxy_ssl_name {UPSTREAM_SNI};\n  proxy_ssl_verify on;\n  proxy_ssl_trusted_certificate {};\n  proxy_ssl_session_reuse on;\n  proxy_ssl_protocols TLSv1.2 TLSv1.3;\n",
                spec.pki.ca.display()
            ),
        )
    } else {
        ("http", String::new())
    };
    c.push_str(&tls_server);
    let _ = write!(
        c,
        "  upstream up {{\n    server 127.0.0.1:{a} weight={wa};\n    server 127.0.0.1:{b} weight={wb};\n    keepalive 256;\n    keepalive_requests 10000000;\n  }}\n"
    );
    // nginx before 1.23.4 (Debian 12 ships 1.22) leaves TLS 1.3 out of its default
    // `ssl_protocols` (and `proxy_ssl_protocols`, set above); every other system speaks TLS 1.3, and a TLS 1.2 resumption skips
    // the key exchange that a TLS 1.3 one does, so the handshake rows would not compare.
    let listen = match spec.mode {
        Mode::TlsTerm => format!(
            "listen 127.0.0.1:{p} ssl;\n    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_certificate {};\n    ssl_certificate_key {};",
            spec.pki.cert.display(),
            spec.pki.key.display()
        ),
        _ if spec.h2c => format!("listen 127.0.0.1:{p} http2;"),
        _ => format!("listen 127.0.0.1:{p};"),
    };
    for h in hosts(spec) {
        let _ = write!(
            c,
            "  server {{\n    {listen}\n    server_name {h};\n    location /api {{ proxy_pass {scheme}://up; }}\n    location / {{ return 404; }}\n  }}\n"
        );
    }
    c.push_str("}\n");
    c
}

// === haproxy ===

/// haproxy.cfg: `nbthread 1`, round robin, `http-reuse always`.
pub fn haproxy(spec: &Spec<'_>) -> String {
    let [a, b] = spec.up;
    let [wa, wb] = WEIGHTS;
    let p = spec.listen;
    // 10,000 idle connections plus a few: haproxy wants two descriptors per connection and
    // refuses to start when the hard limit (20,000 on the CI machine) is below that, unless
    // told not to be strict; idle client connections need one each.
    let mut c = String::from(
        "global\n  nbthread 1\n  maxconn 10010\n  no strict-limits\n  tune.ssl.default-dh-param 2048\ndefaults\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n",
    );
    if spec.mode == Mode::Passthrough {
        let _ = write!(
            c,
            "frontend fe\n  mode tcp\n  bind 127.0.0.1:{p}\n  tcp-request inspect-delay 5s\n  tcp-request content accept if {{ req_ssl_hello_type 1 }}\n  use_backend be if {{ req_ssl_sni -i {TLS_HOST} }}\nbackend be\n  mode tcp\n  balance roundrobin\n  server s1 127.0.0.1:{a} weight {wa}\n  server s2 127.0.0.1:{b} weight {wb}\n"
        );
        return c;
    }
    let bind = match spec.mode {
        Mode::TlsTerm => format!(
            "bind 127.0.0.1:{p} ssl crt {} alpn h2,http/1.1",
            spec.pki.combined.display()
        ),
        _ if spec.h2c => format!("bind 127.0.0.1:{p} proto h2"),
        _ => format!("bind 127.0.0.1:{p}"),
    };
    let host_acl = match spec.mode {
        Mode::Hosts(_) => {
            let file = spec.dir.join("hosts.lst");
            let _ = std::fs::write(&file, hosts(spec).join("\n") + "\n");
            format!("acl h hdr(host),lower -f {}", file.display())
        }
        _ => format!("acl h hdr(host) -i {}", spec.host()),
    };
    let server_opts = if spec.mode == Mode::Origination {
        format!(
            " ssl verify required ca-file {} sni str({UPSTREAM_SNI}) verifyhost {UPSTREAM_SNI}",
            spec.pki.ca.display()
        )
    } else {
        String::new()
    };
    let _ = write!(
        c,
        "frontend fe\n  mode http\n  option http-keep-alive\n  {bind}\n  {host_acl}\n  acl api path_beg /api\n  use_backend be if h api\nbackend be\n  mode http\n  option http-keep-alive\n  http-reuse always\n  balance roundrobin\n  server s1 127.0.0.1:{a} weight {wa}{server_opts}\n  server s2 127.0.0.1:{b} weight {wb}{server_opts}\n"
    );
    c
}

// === Envoy ===

/// Envoy bootstrap YAML (static listener and cluster; run with `--concurrency 1`).
pub fn envoy(spec: &Spec<'_>) -> String {
    let [a, b] = spec.up;
    let [wa, wb] = WEIGHTS;
    let p = spec.listen;
    let mut vhosts = String::new();
    for (i, h) in hosts(spec).iter().enumerate() {
        let _ = writeln!(
            vhosts,
            "            - {{name: v{i}, domains: [\"{h}\", \"{h}:*\"], routes: [{{match: {{prefix: /api}}, route: {{cluster: up}}}}]}}"
        );
    }
    let downstream_tls = if spec.mode == Mode::TlsTerm {
        format!(
            "      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          common_tls_context:\n            alpn_protocols: [h2, http/1.1]\n            tls_certificates:\n            - certificate_chain: {{filename: \"{}\"}}\n              private_key: {{filename: \"{}\"}}\n",
            spec.pki.cert.display(),
            spec.pki.key.display()
        )
    } else {
        String::new()
    };
    let upstream_tls = if spec.mode == Mode::Origination {
        format!(
            "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: {UPSTREAM_SNI}\n        common_tls_context:\n          validation_context:\n            trusted_ca: {{filename: \"{}\"}}\n            match_typed_subject_alt_names:\n            - san_type: DNS\n              matcher: {{exact: {UPSTREAM_SNI}}}\n",
            spec.pki.ca.display()
        )
    } else {
        String::new()
    };
    format!(
        "static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          route_config:
            name: bench
            virtual_hosts:
{vhosts}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{downstream_tls}  clusters:
  - name: up
    type: STATIC
    connect_timeout: 5s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {a}}}}}}}
          load_balancing_weight: {wa}
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {b}}}}}}}
          load_balancing_weight: {wb}
{upstream_tls}"
    )
}

// === Caddy ===

/// Caddyfile: admin and automatic HTTPS off, `weighted_round_robin`.
pub fn caddy(spec: &Spec<'_>) -> String {
    let [a, b] = spec.up;
    let [wa, wb] = WEIGHTS;
    let p = spec.listen;
    let protocols = if spec.h2c { "h1 h2c" } else { "h1" };
    let (scheme, tls) = match spec.mode {
        Mode::TlsTerm => (
            "https",
            format!(
                "\ttls {} {}\n",
                spec.pki.cert.display(),
                spec.pki.key.display()
            ),
        ),
        _ => ("http", String::new()),
    };
    let sites: Vec<String> = hosts(spec)
        .iter()
        .map(|h| format!("{scheme}://{h}:{p}"))
        .collect();
    format!(
        "{{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n\tlog {{\n\t\toutput discard\n\t}}\n\tservers {{\n\t\tprotocols {protocols}\n\t}}\n}}\n{} {{\n\tbind 127.0.0.1\n{tls}\thandle /api* {{\n\t\treverse_proxy 127.0.0.1:{a} 127.0.0.1:{b} {{\n\t\t\tlb_policy weighted_round_robin {wa} {wb}\n\t\t}}\n\t}}\n}}\n",
        sites.join(", ")
    )
}
