#!/usr/bin/env bash
# Pull-through cache benchmark: one image in CNCF Distribution (the upstream,
# Debian's docker-registry) pulled with skopeo
#   - directly from the upstream,
#   - through Berth's pull-through cache, first pull (a miss: fetched,
#     stored and served at once) and second pull (from the cache),
#   - through Distribution's own proxy mode (`proxy: remoteurl:`), first and
#     second pull,
# all on 127.0.0.1 in the same run. Prints the times, the ratios to the direct
# pull, and Berth's peak RSS (VmHWM) over the first pull.
#
# Usage: bench/pull-through.sh [-n RUNS]
#   RUNS (default 3)       best of N for every figure (each run uses a new image)
# Environment knobs (all optional):
#   LAYERS=4               layers per image
#   LAYER_MIB=64           size of each layer (random, incompressible), MiB
#   PEER_BIN=/usr/bin/docker-registry
#   BERTH_BIN=…            the berth binary [default: target/release/berth, built]
#   KEEP_TMP=1             keep the temp dir (data dirs, server logs)
#   TMPDIR                 where the temp dir goes
# Always exits 0 once the benchmark has run (it is a benchmark, not a test).

set -uo pipefail

RUNS=${RUNS:-3}
while [ $# -gt 0 ]; do
    case "$1" in
        -n|--runs) RUNS=${2:?-n needs a number}; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
case "$RUNS" in ''|*[!0-9]*|0) echo "RUNS must be a positive integer" >&2; exit 2 ;; esac
[ "$RUNS" -le 20 ] || { echo "RUNS is capped at 20" >&2; exit 2; }
LAYERS=${LAYERS:-4}
LAYER_MIB=${LAYER_MIB:-64}
PEER_BIN=${PEER_BIN:-/usr/bin/docker-registry}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
unset BERTH_CONFIG BERTH_LISTEN BERTH_DATA_DIR BERTH_PULL_THROUGH_INTERVAL

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for tool in skopeo aws curl python3; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
[ -x "$PEER_BIN" ] || die "missing $PEER_BIN (apt-get install docker-registry)"
if [ -z "${BERTH_BIN:-}" ]; then
    BERTH_BIN=$ROOT/target/release/berth
    log "building berth (cargo build --release in $ROOT)"
    (cd "$ROOT" && cargo build --release) >&2 || die "cargo build failed"
fi
[ -x "$BERTH_BIN" ] || die "no berth binary at $BERTH_BIN"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-ptc-bench.XXXXXX") || die "mktemp failed"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    [ -n "${KEEP_TMP:-}" ] && log "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url: up to 60 s (a loaded machine starts servers slowly)
    local i
    for i in $(seq 600); do
        curl -s -m 2 -o /dev/null "$1" && return 0
        sleep 0.1
    done
    die "nothing answers at $1"
}

distribution() { # name port [remoteurl]: start a Distribution, print its pid
    local dir=$TMP/$1 port=$2 remote=${3:-}
    mkdir -p "$dir/storage"
    {
        echo "version: 0.1"
        echo "log: {level: error, accesslog: {disabled: true}}"
        echo "storage: {filesystem: {rootdirectory: $dir/storage}, delete: {enabled: true}}"
        echo "http: {addr: 127.0.0.1:$port}"
        [ -n "$remote" ] && echo "proxy: {remoteurl: $remote}"
    } >"$dir/config.yml"
    "$PEER_BIN" serve "$dir/config.yml" >"$dir/log" 2>&1 &
    echo $!
}

UP_PORT=$(free_port)
PX_PORT=$(free_port)
B_PORT=$(free_port)
UP_PID=$(distribution upstream "$UP_PORT"); PIDS+=("$UP_PID")
PX_PID=$(distribution proxy "$PX_PORT" "http://127.0.0.1:$UP_PORT"); PIDS+=("$PX_PID")
wait_http "http://127.0.0.1:$UP_PORT/v2/"
wait_http "http://127.0.0.1:$PX_PORT/v2/"

export BERTH_ACCOUNT_ID=123456789012 BERTH_ROOT_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE \
    BERTH_ROOT_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY BERTH_LOG=warn
"$BERTH_BIN" serve --listen "127.0.0.1:$B_PORT" --data-dir "$TMP/berth" >"$TMP/berth.log" 2>&1 &
B_PID=$!; PIDS+=("$B_PID")
wait_http "http://127.0.0.1:$B_PORT/v2/"

export AWS_ACCESS_KEY_ID=$BERTH_ROOT_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$BERTH_ROOT_SECRET_ACCESS_KEY \
    AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_PAGER=""
ecr() { aws ecr "$@" --endpoint-url "http://127.0.0.1:$B_PORT" --output json; }
# A URL goes in as JSON: the aws CLI (v1) would fetch a parameter starting with http://.
ecr create-pull-through-cache-rule --cli-input-json \
    "{\"ecrRepositoryPrefix\": \"ptc\", \"upstreamRegistryUrl\": \"http://127.0.0.1:$UP_PORT\"}" >/dev/null \
    || die "CreatePullThroughCacheRule failed"
TOKEN=$(aws ecr get-login-password --endpoint-url "http://127.0.0.1:$B_PORT")
[ -n "$TOKEN" ] || die "no registry token"

make_image() { # run: push bench/img-RUN:v1 to the upstream
    local layout=$TMP/layout-$1
    python3 - "$layout" "$LAYERS" "$LAYER_MIB" <<'EOF' || die "building the image failed"
import hashlib, json, os, sys
layout, layers, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blobs = os.path.join(layout, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
def put(b):
    h = hashlib.sha256(b).hexdigest()
    open(os.path.join(blobs, h), "wb").write(b)
    return {"digest": "sha256:" + h, "size": len(b)}
ls = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **put(os.urandom(mib << 20))} for _ in range(layers)]
cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in ls]}}).encode()
m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(cfg)}, "layers": ls}).encode()
top = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(m),
       "annotations": {"org.opencontainers.image.ref.name": "v1"}}
open(os.path.join(layout, "oci-layout"), "w").write('{"imageLayoutVersion": "1.0.0"}')
open(os.path.join(layout, "index.json"), "w").write(json.dumps({"schemaVersion": 2, "manifests": [top]}))
EOF
    skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$layout:v1" \
        "docker://127.0.0.1:$UP_PORT/bench/img-$1:v1" || die "pushing to the upstream failed"
    rm -rf "$layout"
}

pull() { # src creds... : seconds for a skopeo copy into a fresh dir
    local src=$1; shift
    local dest=$TMP/pulled t0 t1
    rm -rf "$dest"
    t0=$(date +%s.%N)
    skopeo copy --quiet --src-tls-verify=false "$@" "docker://$src" "dir:$dest" >&2 || die "pull of $src failed"
    t1=$(date +%s.%N)
    rm -rf "$dest"
    echo "$t1 - $t0" | bc -l 2>/dev/null || python3 -c "print($t1 - $t0)"
}

rss_peak() { awk '/VmHWM/ {print $2}' "/proc/$B_PID/status"; }

best() { printf '%s\n' "$@" | sort -g | head -1; }

declare -a DIRECT BFIRST BSECOND PFIRST PSECOND
MIB=$((LAYERS * LAYER_MIB))
for run in $(seq "$RUNS"); do
    log "run $run/$RUNS: a ${LAYERS}x${LAYER_MIB} MiB image"
    make_image "$run"
    img=bench/img-$run:v1
    DIRECT+=("$(pull "127.0.0.1:$UP_PORT/$img")")
    BFIRST+=("$(pull "127.0.0.1:$B_PORT/ptc/$img" --src-creds "AWS:$TOKEN")")
    BSECOND+=("$(pull "127.0.0.1:$B_PORT/ptc/$img" --src-creds "AWS:$TOKEN")")
    PFIRST+=("$(pull "127.0.0.1:$PX_PORT/$img")")
    PSECOND+=("$(pull "127.0.0.1:$PX_PORT/$img")")
done
RSS_KIB=$(rss_peak)

python3 - "$MIB" "$RSS_KIB" "$(best "${DIRECT[@]}")" "$(best "${BFIRST[@]}")" "$(best "${BSECOND[@]}")" \
    "$(best "${PFIRST[@]}")" "$(best "${PSECOND[@]}")" "$RUNS" <<'EOF'
import sys
mib, rss = int(sys.argv[1]), int(sys.argv[2] or 0)
direct, bfirst, bsecond, pfirst, psecond = map(float, sys.argv[3:8])
runs = sys.argv[8]
print(f"pull-through benchmark: one {mib} MiB image, skopeo copy to dir:, best of {runs}")
print(f"{'pull':44} {'seconds':>8} {'MiB/s':>8} {'vs direct':>10}")
for name, t in [
    ("direct from the upstream (Distribution)", direct),
    ("Berth, first pull (miss: fetch + store)", bfirst),
    ("Berth, second pull (cached)", bsecond),
    ("Distribution proxy mode, first pull", pfirst),
    ("Distribution proxy mode, second pull", psecond),
]:
    print(f"{name:44} {t:8.2f} {mib / t:8.1f} {t / direct:9.2f}x")
print(f"Berth first pull / Distribution proxy first pull: {bfirst / pfirst:.2f}x")
print(f"Berth peak RSS (VmHWM) over the run: {rss / 1024:.0f} MiB")
EOF
