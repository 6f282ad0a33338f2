#!/usr/bin/env bash
# Offline image smoke test, for machines without a Docker engine or registry access.
#
# Builds an OCI image `from scratch` with buildah holding the release binary and the shared
# libraries it links, with the ENTRYPOINT, USER, WORKDIR, EXPOSE and STOPSIGNAL of
# docker/Dockerfile; exports it as an oci-archive; unpacks its root filesystem; starts the
# image's entrypoint under chroot as the image's user against a config directory; curls a
# route; stops it with SIGTERM and checks that it exits cleanly.
#
#   docker/oci-smoke.sh                      # cargo build --release --locked first
#   MESHGATE_BIN=target/release/meshgate docker/oci-smoke.sh   # use an existing binary
#   CARGO_FEATURES=kubernetes docker/oci-smoke.sh               # build with features
#
# Needs root (chroot), buildah (Debian package `buildah`), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

for tool in buildah curl python3 chroot; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install buildah curl)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "oci-smoke.sh needs root for chroot" >&2; exit 1; }

bin=${MESHGATE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --locked ${CARGO_FEATURES:+--features "$CARGO_FEATURES"}
  bin=target/release/meshgate
fi
[ -x "$bin" ] || { echo "no executable at $bin" >&2; exit 1; }

# All scratch space, buildah's own temporary files included (it defaults to /var/tmp, which
# is small on some machines), lives under target/, beside the build that already fits there.
mkdir -p target
work=$(mktemp -d "$PWD/target/oci-smoke.XXXXXX")
mkdir -p "$work/tmp"
export TMPDIR="$work/tmp"
export BUILDAH_ISOLATION=chroot
bah=(buildah --storage-driver vfs --root "$work/storage" --runroot "$work/run")
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  "${bah[@]}" rm --all >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The Dockerfile's runtime settings (the last stage), so both images agree.
dockerfile=docker/Dockerfile
last() { sed -n "s/^$1 //p" "$dockerfile" | tail -n 1; }
entrypoint=$(last ENTRYPOINT)
user=$(last USER)
workdir=$(last WORKDIR)
stopsignal=$(last STOPSIGNAL)
ports=$(last EXPOSE)

# The root filesystem: the binary, its shared libraries (as ldd resolves them), the config
# and certificate directories, and a passwd entry for the user.
# The binary is stripped of debug info, as an image should ship it: a debug test build is
# ~300 MB and the vfs storage driver copies each layer several times.
rootfs="$work/rootfs"
install -D -m 0755 "$bin" "$rootfs/usr/local/bin/meshgate"
if command -v strip >/dev/null; then strip --strip-debug "$rootfs/usr/local/bin/meshgate"; fi
for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
  install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done
install -d -m 0755 "$rootfs/etc/meshgate/certs" "$rootfs/tmp"
uid=${user%%:*}
gid=${user#*:}
echo "nonroot:x:$uid:$gid:nonroot:/home/nonroot:/sbin/nologin" >"$rootfs/etc/passwd"
echo "nonroot:x:$gid:" >"$rootfs/etc/group"

ctr=$("${bah[@]}" from scratch)
"${bah[@]}" copy "$ctr" "$rootfs/" / >/dev/null
port_args=()
for p in $ports; do port_args+=(--port "$p"); done
"${bah[@]}" config --entrypoint "$entrypoint" --cmd '' --user "$user" --workingdir "$workdir" \
  --stop-signal "$stopsignal" "${port_args[@]}" \
  --label org.opencontainers.image.title=meshgate "$ctr"
"${bah[@]}" commit --quiet --format oci "$ctr" meshgate:smoke >/dev/null
"${bah[@]}" push --quiet meshgate:smoke "oci-archive:$work/meshgate.tar:meshgate:smoke"
built=$(date +%s)
echo "oci-smoke: image built and exported ($(du -h "$work/meshgate.tar" | cut -f1)) in $((built - start))s"

# Unpack: index -> manifest -> config + layers, as a runtime would.
mkdir -p "$work/oci" "$work/unpacked"
tar -xf "$work/meshgate.tar" -C "$work/oci"
python3 - "$work/oci" "$work/unpacked" "$work/image.json" <<'EOF'
import json, os, sys, tarfile
oci, dest, out = sys.argv[1:]
blob = lambda d: os.path.join(oci, "blobs", *d.split(":"))
index = json.load(open(os.path.join(oci, "index.json")))
manifest = json.load(open(blob(index["manifests"][0]["digest"])))
for layer in manifest["layers"]:
    with tarfile.open(blob(layer["digest"])) as t:
        t.extractall(dest)
json.dump(json.load(open(blob(manifest["config"]["digest"])))["config"], open(out, "w"))
EOF

# What the image says to run, and as whom.
eval "$(python3 - "$work/image.json" <<'EOF'
import json, shlex, sys
c = json.load(open(sys.argv[1]))
print("img_entrypoint=(%s)" % " ".join(shlex.quote(a) for a in c["Entrypoint"]))
print("img_user=%s img_workdir=%s img_stop=%s" % (c["User"], c["WorkingDir"], c.get("StopSignal", "SIGTERM")))
print("img_ports=%s" % shlex.quote(" ".join(sorted(c.get("ExposedPorts", {})))))
EOF
)"
echo "oci-smoke: entrypoint ${img_entrypoint[*]}; user $img_user; workdir $img_workdir; ports $img_ports; stop $img_stop"

# A config directory as it would be mounted, with free ports for the Gateway and admin API.
read -r gw_port admin_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
root="$work/unpacked"
sed "s/number: 8080/number: $gw_port/" config/demo.yaml >"$root/etc/meshgate/demo.yaml"
# What a runtime bind-mounts into every container.
cp /etc/resolv.conf /etc/hosts "$root/etc/" 2>/dev/null || true

# chroot(1) starts in /; the entrypoint uses absolute paths, so WORKDIR does not matter here.
chroot --userspec="$img_user" "$root" "${img_entrypoint[@]}" \
  --admin "127.0.0.1:$admin_port" --drain-delay 1s --drain-timeout 5s \
  >"$work/meshgate.log" 2>&1 &
pid=$!

ready=
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$admin_port/healthz/ready" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$ready" ] || { echo "oci-smoke: meshgate did not become ready" >&2; cat "$work/meshgate.log" >&2; exit 1; }

body=$(curl -fsS -H 'Host: demo.local' "http://127.0.0.1:$gw_port/")
[ "$body" = "hello from meshgate" ] || { echo "oci-smoke: unexpected body: $body" >&2; exit 1; }
echo "oci-smoke: curl -H 'Host: demo.local' :$gw_port/ -> $body"

# The Dockerfile's HEALTHCHECK, run the same way (OCI images have no HEALTHCHECK field).
if chroot "$root" /usr/local/bin/meshgate --help | grep -q '^  healthcheck'; then
  chroot --userspec="$img_user" "$root" /usr/local/bin/meshgate healthcheck --admin "127.0.0.1:$admin_port" \
    || { echo "oci-smoke: meshgate healthcheck failed" >&2; exit 1; }
  echo "oci-smoke: meshgate healthcheck -> ok"
fi

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" = 0 ] || { echo "oci-smoke: meshgate exited $status after SIGTERM" >&2; cat "$work/meshgate.log" >&2; exit 1; }
echo "oci-smoke: ok in $(($(date +%s) - start))s (stopped cleanly on SIGTERM)"
