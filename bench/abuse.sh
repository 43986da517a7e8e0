#!/usr/bin/env bash
# The security review's attacks, run against Berth at HEAD and (optionally) a
# second build side by side: what each costs the server (memory, reachability
# of /healthz, a well-behaved request's latency). A benchmark, not a test
# (tests/abuse_soak.rs and tests/http_limits.rs are the tests).
#
# Usage: bench/abuse.sh [OTHER_BERTH_BINARY]
#   OTHER_BERTH_BINARY   e.g. a build of an earlier commit, run with the same workloads
# Environment knobs (all optional):
#   ATTACKS="body h2body idle trickle stall heads methods sessions layers"
#   HEADS=100000 METHODS=50000 TRICKLE=2000 TRICKLE_SECS=40 SESSIONS=5000 LAYERS=75000
#
# Every server runs in ECR mode on a fresh data dir, with default settings,
# under `ulimit -n 512` (as in the review). Prints one JSON line per attack
# and server, then a table.

set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ATTACKS=${ATTACKS:-"body h2body idle trickle stall heads methods sessions layers"}
HEADS=${HEADS:-100000}; METHODS=${METHODS:-50000}; TRICKLE=${TRICKLE:-2000}
TRICKLE_SECS=${TRICKLE_SECS:-40}; SESSIONS=${SESSIONS:-5000}; LAYERS=${LAYERS:-75000}
export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
export AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset BERTH_CONFIG BERTH_LISTEN BERTH_DATA_DIR

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
for tool in aws curl python3; do command -v $tool >/dev/null || { log "missing $tool"; exit 1; }; done
(cd "$ROOT" && cargo build --release --bin berth --example abuse) >&2 || exit 1
HEAD_BIN=$ROOT/target/release/berth
ABUSE=$ROOT/target/release/examples/abuse
TMP=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT
RESULTS=$TMP/results.jsonl

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run_attack LABEL BINARY ATTACK: a fresh server, the setup the attack needs, the attack.
run_attack() {
    local label=$1 bin=$2 attack=$3 port dir pid token big
    port=$(free_port); dir=$TMP/$label-$attack
    ( ulimit -n 512; BERTH_ACCOUNT_ID=123456789012 BERTH_ROOT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID \
      BERTH_ROOT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY BERTH_LOG=error \
      exec "$bin" serve --listen 127.0.0.1:$port --data-dir "$dir" ) >"$dir.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    local E="--endpoint-url http://127.0.0.1:$port"
    for r in abuse/target abuse/sessions abuse/layers abuse/other; do
        aws ecr create-repository --repository-name $r $E >/dev/null || log "create $r failed"
    done
    token=$(aws ecr get-login-password $E)
    local extra=()
    case $attack in
        body) extra=(--conns 80 --mib 29) ;;
        h2body) extra=(--streams 20 --mib 29) ;;
        idle) extra=(--conns 600) ;;
        trickle) extra=(--conns "$TRICKLE" --every 5 --secs "$TRICKLE_SECS") ;;
        stall)
            head -c $((16 << 20)) /dev/urandom > "$TMP/big"
            big=sha256:$(sha256sum "$TMP/big" | cut -d' ' -f1)
            curl -sf -u "AWS:$token" --data-binary @"$TMP/big" -H 'Content-Type: application/octet-stream' \
                "http://127.0.0.1:$port/v2/abuse/target/blobs/uploads/?digest=$big" >/dev/null || log "blob push failed"
            extra=(--conns 100 --path "/v2/abuse/target/blobs/$big" --token "$token") ;;
        heads) extra=(--count "$HEADS" --token "$token") ;;
        methods) extra=(--count "$METHODS" --len 1000) ;;
        sessions) extra=(--count "$SESSIONS" --repo abuse/sessions --token "$token") ;;
        layers) extra=(--count "$LAYERS" --repo abuse/layers --other-repo abuse/other --token "$token") ;;
    esac
    log "$label: $attack"
    local out
    out=$("$ABUSE" --addr 127.0.0.1:$port --pid $pid $attack "${extra[@]}" 2>>"$dir.log")
    echo "{\"server\":\"$label\",\"result\":$out}" | tee -a "$RESULTS"
    kill $pid 2>/dev/null; wait $pid 2>/dev/null
}

for attack in $ATTACKS; do
    run_attack head "$HEAD_BIN" "$attack"
    [ $# -ge 1 ] && run_attack other "$1" "$attack"
done

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["rss_before_mib", "rss_during_mib", "rss_after_mib", "rss_mib", "healthz_during", "healthz",
        "healthz_reachable_of_5", "still_open", "still_served_after_90s", "metrics_page_bytes",
        "opened", "refused_429", "put_status", "put_secs", "slowest_other_push_secs", "secs"]
print(f"{'attack':10} {'server':6} " + " ".join(f"{k}" for k in ["result"]))
for r in rows:
    res = r["result"]
    parts = [f"{k}={round(v, 1) if isinstance(v, float) else v}" for k, v in res.items() if k in keys]
    print(f"{res['attack']:10} {r['server']:6} " + " ".join(parts))
PY
