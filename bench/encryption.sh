#!/usr/bin/env bash
# Encryption-at-rest benchmark: what sealing every blob costs. Three servers
# on 127.0.0.1 with the same workload, in one run:
#   berth          this checkout (every blob sealed, AES-256-GCM in 64 KiB segments)
#   berth-plain    the last release before encryption (commit 2753090), plaintext
#   distribution   CNCF Distribution (Debian's docker-registry), plaintext files
#
# Usage: bench/encryption.sh
# Environment knobs (all optional):
#   RUNS=3                 best of N for every number
#   BLOB_MIB=512           size of the pushed / pulled blob (multiple of 16)
#   RANGES=400             random 1 MiB range reads per run
#   BERTH_BIN=...          a pre-built release of this checkout (skips the build)
#   PLAIN_BIN=...          a pre-built berth without encryption (skips the build)
#   CARGO_TARGET_DIR       where both release builds go (default target/)
#   PEER_BIN=/usr/bin/docker-registry
#
# Measures push (one PUT, and 16 PATCH chunks), pull, and range reads (each a
# GET of a random 1 MiB range over one keep-alive connection), in MiB/s.
# Targets: encryption costs push and pull under 15% (berth / berth-plain >=
# 0.85), and sealed Berth beats Distribution plain (berth / distribution >= 1).
# A benchmark, not a test: always exits 0 once it has run.

set -uo pipefail
RUNS=${RUNS:-3}
BLOB_MIB=${BLOB_MIB:-512}
RANGES=${RANGES:-400}
PEER_BIN=${PEER_BIN:-/usr/bin/docker-registry}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
unset BERTH_CONFIG BERTH_LISTEN BERTH_DATA_DIR
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }
[ -x "$PEER_BIN" ] || die "missing $PEER_BIN (apt-get install docker-registry)"
for t in curl python3 sha256sum; do command -v $t >/dev/null || die "missing $t"; done

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${BERTH_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --bin berth) >&2 || die "build failed"
    BERTH_BIN=$TARGET/release/berth
fi
if [ -z "${PLAIN_BIN:-}" ]; then
    PLAIN_SRC=$TARGET/bench-plain-src
    [ -d "$PLAIN_SRC" ] || git -C "$ROOT" worktree add --detach "$PLAIN_SRC" 2753090 >&2 || die "worktree"
    (cd "$PLAIN_SRC" && CARGO_TARGET_DIR=$TARGET/bench-plain cargo build --release --bin berth) >&2 || die "plain build failed"
    PLAIN_BIN=$TARGET/bench-plain/release/berth
fi

TMP=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
head -c $((BLOB_MIB << 20)) /dev/urandom > "$TMP/blob"
DIGEST=sha256:$(sha256sum "$TMP/blob" | cut -d' ' -f1)
split -n 16 -d "$TMP/blob" "$TMP/chunk."

start() { # start NAME -> sets PORT, PID
    local name=$1 dir=$TMP/data-$name
    PORT=$(free_port); rm -rf "$dir"; mkdir -p "$dir"
    case $name in
        distribution)
            cat > "$dir/config.yml" <<EOF
version: 0.1
storage:
  filesystem: { rootdirectory: $dir/root }
  delete: { enabled: true }
http: { addr: 127.0.0.1:$PORT }
log: { level: error, accesslog: { disabled: true } }
EOF
            "$PEER_BIN" serve "$dir/config.yml" >"$dir.log" 2>&1 & ;;
        berth) BERTH_LOG=error "$BERTH_BIN" serve --auth none --listen 127.0.0.1:$PORT --data-dir "$dir" >"$dir.log" 2>&1 & ;;
        berth-plain) BERTH_LOG=error "$PLAIN_BIN" serve --auth none --listen 127.0.0.1:$PORT --data-dir "$dir" >"$dir.log" 2>&1 & ;;
    esac
    PID=$!
    for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$PORT/v2/" && return; sleep 0.05; done
    die "$name did not start"
}
mibs() { python3 -c "print(round($BLOB_MIB / $1, 1))"; }
now() { date +%s.%N; }
location() { # POST an upload; print its absolute Location
    curl -s -D - -o /dev/null -X POST "http://127.0.0.1:$PORT/v2/bench/$1/blobs/uploads/" \
        | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}' \
        | sed "s#^/#http://127.0.0.1:$PORT/#"
}
sep() { case $1 in *\?*) echo "&";; *) echo "?";; esac; }

RESULTS=$TMP/results
for name in berth berth-plain distribution; do
    for run in $(seq "$RUNS"); do
        start "$name"
        # Push: one PUT.
        loc=$(location mono); t0=$(now)
        curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$TMP/blob" \
            "$loc$(sep "$loc")digest=$DIGEST" -o /dev/null || log "$name: monolithic push failed"
        t1=$(now); echo "$name push $(mibs "$(echo "$t1 - $t0" | bc -l)")" >> "$RESULTS"
        # Push: 16 chunks.
        loc=$(location chunked); t0=$(now); off=0
        for c in "$TMP"/chunk.*; do
            n=$(stat -c %s "$c")
            hdrs=$(curl -sf -D - -o /dev/null -X PATCH -H 'Content-Type: application/octet-stream' \
                -H "Content-Range: $off-$((off + n - 1))" --data-binary @"$c" "$loc") || log "$name: chunk failed"
            loc=$(printf '%s' "$hdrs" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}' \
                | sed "s#^/#http://127.0.0.1:$PORT/#")
            off=$((off + n))
        done
        curl -sf -X PUT "$loc$(sep "$loc")digest=$DIGEST" -o /dev/null || log "$name: chunked commit failed"
        t1=$(now); echo "$name chunked-push $(mibs "$(echo "$t1 - $t0" | bc -l)")" >> "$RESULTS"
        # Pull (timed to /dev/null: hashing on the client would be the
        # bottleneck), then once more, untimed, compared by digest.
        t0=$(now)
        curl -sf -o /dev/null "http://127.0.0.1:$PORT/v2/bench/mono/blobs/$DIGEST" || log "$name: pull failed"
        t1=$(now)
        echo "$name pull $(mibs "$(echo "$t1 - $t0" | bc -l)")" >> "$RESULTS"
        got=$(curl -sf "http://127.0.0.1:$PORT/v2/bench/chunked/blobs/$DIGEST" | sha256sum | cut -d' ' -f1)
        [ "sha256:$got" = "$DIGEST" ] || log "$name: pulled bytes differ"
        # Range reads.
        python3 - "$PORT" "$DIGEST" "$BLOB_MIB" "$RANGES" "$TMP/blob" "$name" >> "$RESULTS" <<'EOF'
import http.client, random, sys, time
port, digest, mib, n, path, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
size = mib << 20
random.seed(1)
data = open(path, "rb")
conn = http.client.HTTPConnection("127.0.0.1", int(port))
ranges = [random.randrange(0, size - (1 << 20)) for _ in range(n)]
t0 = time.time()
for i, a in enumerate(ranges):
    conn.request("GET", f"/v2/bench/mono/blobs/{digest}", headers={"Range": f"bytes={a}-{a + (1 << 20) - 1}"})
    r = conn.getresponse(); body = r.read()
    if i % 50 == 0:
        data.seek(a)
        assert r.status == 206 and body == data.read(1 << 20), (name, r.status, a)
dt = time.time() - t0
print(f"{name} range {round(n / dt / 1.0, 1)}")
EOF
        kill "$PID"; wait "$PID" 2>/dev/null
    done
done

python3 - "$RESULTS" <<'EOF'
import collections, sys
best = collections.defaultdict(float)
for line in open(sys.argv[1]):
    name, metric, v = line.split()
    best[(name, metric)] = max(best[(name, metric)], float(v))
units = {"push": "MiB/s", "chunked-push": "MiB/s", "pull": "MiB/s", "range": "ranges/s (1 MiB)"}
print(f"{'metric':<14}{'berth':>10}{'berth-plain':>13}{'distribution':>14}{'vs plain':>10}{'vs distribution':>17}  result")
for m in ["push", "chunked-push", "pull", "range"]:
    b, p, d = best[("berth", m)], best[("berth-plain", m)], best[("distribution", m)]
    rp, rd = (b / p if p else 0), (b / d if d else 0)
    ok = rd >= 1 and (m == "range" or rp >= 0.85)
    print(f"{m:<14}{b:>10}{p:>13}{d:>14}{rp:>10.2f}{rd:>17.2f}  {'PASS' if ok else 'MISS'}  ({units[m]})")
EOF
