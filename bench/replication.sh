#!/usr/bin/env bash
# Replication benchmark: two Berth deployments on 127.0.0.1 (release build, embedded
# backend: SQLite + files), a source in us-east-1 whose [[peers]] entry is the
# destination, a deployment of its own in eu-west-1; and the source's own second
# account (same deployment, in process, no bytes copied). One run, side by side with
# the client pushing the same images to the destination itself.
#
# Usage: bench/replication.sh
# Environment knobs (all optional):
#   SMALL_COUNT=1000   small images per lag run (config + one SMALL_SIZE-byte layer each)
#   SMALL_SIZE=1024
#   SPACED=50          images pushed one every SPACED_GAP_MS=250 ms (the lag with nothing queued)
#   BACKLOG=1000       images pushed while the destination is stopped
#   BIG_MIB=1024       the "1 GiB" image's one layer
#   BERTH_BIN=PATH     run this binary, not a fresh release build (smoke runs only)
#   KEEP_TMP=1         keep the temp dir (logs, every JSON result)
#   TMPDIR             where the temp dir (the big file, four data directories) goes
#
# What is measured ("pullable": the destination's GET /v2/<repo>/manifests/<tag> answers
# 200, polled every 5 ms, 20 ms for the big image; "acknowledged": the source's manifest
# PUT returned; bench/replication.py has the details):
# 1. peer lag: SMALL_COUNT images pushed one after another to the source (one keep-alive
#    connection, as `docker push` / crane would), each image's lag acknowledged ->
#    pullable at the destination: median, p95, max; and the time until the last is
#    pullable. Baseline: the same pusher pushing the same kind of images straight to the
#    destination (per-image push time, total). Then SPACED images one at a time (the
#    pusher waits SPACED_GAP_MS after each): the lag of an image with nothing queued.
# 2. big: one image with a BIG_MIB layer: push time to the source, lag, MB/s. Baselines:
#    the same file pushed straight to the destination, and `skopeo copy` of the image from
#    the source to the destination.
# 3. backlog: the destination stopped (SIGTERM), BACKLOG images pushed to the source,
#    the destination started again: time from its start until every image is listed
#    there (ListImages every 100 ms), images/s; then every status checked COMPLETE.
# 4. cross-account: as 1, to the source deployment's account 222222222222 (a registry
#    policy there allows the source account), in process; and SPACED one at a time.
# Prints a markdown table; always exits 0 once the benchmark has run (it is a benchmark,
# not a test). Not part of CI.

set -uo pipefail

case "${1:-}" in -h|--help) sed -n '2,33p' "$0"; exit 0 ;; esac
SMALL_COUNT=${SMALL_COUNT:-1000}
SMALL_SIZE=${SMALL_SIZE:-1024}
SPACED=${SPACED:-50}
SPACED_GAP_MS=${SPACED_GAP_MS:-250}
BACKLOG=${BACKLOG:-1000}
BIG_MIB=${BIG_MIB:-1024}
for v in SMALL_COUNT SMALL_SIZE SPACED SPACED_GAP_MS BACKLOG BIG_MIB; do
    case "${!v}" in ''|*[!0-9]*|0) echo "$v must be a positive integer" >&2; exit 2 ;; esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BUILD=1
if [ -n "${BERTH_BIN:-}" ]; then BUILD=0; else BERTH_BIN=$TARGET_DIR/release/berth; fi
ACCOUNT=123456789012
OTHER=222222222222
AKID=AKIAIOSFODNN7EXAMPLE
SECRET=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
DEST_REGION=eu-west-1
# Never let the caller's Berth or AWS settings leak into the benchmarked servers.
unset BERTH_CONFIG BERTH_LISTEN BERTH_DATA_DIR BERTH_AUTH BERTH_REGION BERTH_DATABASE_URL \
      BERTH_STORAGE_URL BERTH_REGISTRY_HOST BERTH_MASTER_KEY BERTH_MASTER_KEY_FILE \
      AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_CA_BUNDLE
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export BERTH_BENCH_AKID=$AKID BERTH_BENCH_SECRET=$SECRET

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for tool in curl python3 cargo skopeo awk; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
python3 -c 'import boto3, botocore' 2>/dev/null || die "missing boto3 (pip install boto3)"

T_START=$EPOCHREALTIME
if [ "$BUILD" = 1 ]; then
    log "building berth (cargo build --release --bin berth, target $TARGET_DIR)"
    (cd "$ROOT" && cargo build --release --bin berth) >&2 || die "cargo build failed"
fi
[ -x "$BERTH_BIN" ] || die "missing $BERTH_BIN after the build"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-repl-bench.XXXXXX") || die "mktemp failed"
declare -A PID PORT
cleanup() {
    local n
    for n in "${!PID[@]}"; do stop "$n"; done
    if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
stop() { # name: TERM, wait up to 10 s, then KILL
    local pid=${PID[$1]:-} i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null && log "$1 did not exit within 10 s of SIGTERM; killed"
    wait "$pid" 2>/dev/null
    unset "PID[$1]"
}
start() { # name args...: berth serve on PORT[name] with data in $TMP/name, ECR mode
    local name=$1 i code=000; shift
    BERTH_ACCOUNT_ID=$ACCOUNT BERTH_ROOT_ACCESS_KEY_ID=$AKID BERTH_ROOT_SECRET_ACCESS_KEY=$SECRET \
    BERTH_LOG=warn "$BERTH_BIN" serve --listen "127.0.0.1:${PORT[$name]}" --data-dir "$TMP/$name" "$@" \
        >>"$TMP/$name.log" 2>&1 &
    PID[$name]=$!
    for i in $(seq 300); do
        kill -0 "${PID[$name]}" 2>/dev/null || die "$name exited (see $TMP/$name.log: $(tail -c 300 "$TMP/$name.log"))"
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:${PORT[$name]}/v2/")
        [ "$code" != 000 ] && return 0
        sleep 0.05
    done
    die "$name did not answer within 15 s"
}
py() { python3 "$BENCH/replication.py" "$@"; }
json() { # file key
    python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); print(v.get(sys.argv[2]))' "$1" "$2"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

PORT[dest]=$(free_port)
PORT[source]=$(free_port)
SRC=http://127.0.0.1:${PORT[source]}
DST=http://127.0.0.1:${PORT[dest]}
cat >"$TMP/source.toml" <<EOF
[[peers]]
region = "$DEST_REGION"
endpoint = "$DST"
access_key_id = "$AKID"
secret_access_key_env = "BERTH_BENCH_SECRET"
EOF
start dest --region "$DEST_REGION"
start source --config "$TMP/source.toml"
log "source $SRC (us-east-1, [[peers]] $DEST_REGION), destination $DST ($DEST_REGION)"

OTHER_KEYS=$("$BERTH_BIN" iam --data-dir "$TMP/source" create-account --account-id $OTHER) \
    || die "berth iam create-account failed"
OTHER_AKID=$(echo "$OTHER_KEYS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["AccessKeyId"])')
OTHER_SECRET=$(echo "$OTHER_KEYS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["SecretAccessKey"])')
as_other() { BERTH_BENCH_DST_AKID=$OTHER_AKID BERTH_BENCH_DST_SECRET=$OTHER_SECRET "$@"; }
as_other py setup "$SRC" us-east-1 dst "$(cat <<EOF
{"registry_policy": {"Version": "2012-10-17", "Statement": [{"Sid": "ReplicationFrom",
  "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::$ACCOUNT:root"},
  "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
  "Resource": "arn:aws:ecr:us-east-1:$OTHER:repository/*"}]}}
EOF
)" >/dev/null || die "the registry policy of $OTHER"
py setup "$SRC" us-east-1 src "$(cat <<EOF
{"repositories": ["peer/small", "peer/spaced", "peer/big", "backlog/small", "xacct/small", "xacct/spaced"],
 "rules": [
  {"destinations": [{"region": "$DEST_REGION", "registryId": "$ACCOUNT"}],
   "repositoryFilters": [{"filter": "peer/", "filterType": "PREFIX_MATCH"},
                         {"filter": "backlog/", "filterType": "PREFIX_MATCH"}]},
  {"destinations": [{"region": "us-east-1", "registryId": "$OTHER"}],
   "repositoryFilters": [{"filter": "xacct/", "filterType": "PREFIX_MATCH"}]}]}
EOF
)" >/dev/null || die "the replication configuration"
py setup "$DST" "$DEST_REGION" src '{"repositories": ["direct/small", "direct/big", "copy/big"]}' >/dev/null \
    || die "the destination's repositories"

# ---------------------------------------------------------------- 1. peer lag
log "1. $SMALL_COUNT small images to the source, lag to the peer"
py lag "$SRC" us-east-1 "$DST" "$DEST_REGION" peer/small "$SMALL_COUNT" "$SMALL_SIZE" \
    >"$TMP/peer.json" || die "the peer lag run"
log "   $(cat "$TMP/peer.json")"
log "   baseline: the same push straight to the destination"
py push "$DST" "$DEST_REGION" direct/small "$SMALL_COUNT" "$SMALL_SIZE" >"$TMP/direct.json" || die "the direct push"
log "   $(cat "$TMP/direct.json")"
log "   $SPACED images one every $SPACED_GAP_MS ms"
py lag "$SRC" us-east-1 "$DST" "$DEST_REGION" peer/spaced "$SPACED" "$SMALL_SIZE" 5 "$SPACED_GAP_MS" \
    >"$TMP/spaced.json" || die "the spaced peer run"
log "   $(cat "$TMP/spaced.json")"

# ---------------------------------------------------------------- 2. big
log "2. one ${BIG_MIB} MiB image"
head -c $((BIG_MIB << 20)) /dev/urandom >"$TMP/big.bin" || die "writing the big file"
py big "$SRC" us-east-1 "$DST" "$DEST_REGION" peer/big v1 "$TMP/big.bin" \
    >"$TMP/big.json" || die "the big run"
log "   $(cat "$TMP/big.json")"
py big "$DST" "$DEST_REGION" "$DST" "$DEST_REGION" direct/big v1 "$TMP/big.bin" >"$TMP/bigdirect.json" \
    || die "the big direct push"
log "   direct push to the destination: $(cat "$TMP/bigdirect.json")"
rm -f "$TMP/big.bin"
SRC_PW=$(py password "$SRC" us-east-1) && DST_PW=$(py password "$DST" "$DEST_REGION") \
    || die "the registry passwords"
T0=$EPOCHREALTIME
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false \
    --src-creds "AWS:$SRC_PW" --dest-creds "AWS:$DST_PW" \
    "docker://127.0.0.1:${PORT[source]}/peer/big:v1" "docker://127.0.0.1:${PORT[dest]}/copy/big:v1" \
    >"$TMP/skopeo.log" 2>&1 || die "skopeo copy: $(tail -c 300 "$TMP/skopeo.log")"
SKOPEO_S=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
log "   skopeo copy source -> destination: $SKOPEO_S s"

# ---------------------------------------------------------------- 3. backlog
log "3. the destination stopped, $BACKLOG images pushed, the destination started"
stop dest
T_DOWN=$EPOCHREALTIME
py push "$SRC" us-east-1 backlog/small "$BACKLOG" "$SMALL_SIZE" >"$TMP/backlog-push.json" || die "the backlog push"
log "   $(cat "$TMP/backlog-push.json")"
py statuses "$SRC" us-east-1 backlog/small >"$TMP/backlog-down.json"
log "   while down: $(cat "$TMP/backlog-down.json")"
DOWN_S=$(awk -v a="$T_DOWN" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
T_UP=$EPOCHREALTIME
start dest --region "$DEST_REGION"
py arrivals "$DST" "$DEST_REGION" backlog/small "$BACKLOG" 900 >"$TMP/backlog.json" || die "the arrivals"
ARRIVALS_OFFSET=$(awk -v a="$T_UP" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
log "   $(cat "$TMP/backlog.json") (the destination up $ARRIVALS_OFFSET s ago)"
for i in $(seq 30); do
    py statuses "$SRC" us-east-1 backlog/small >"$TMP/backlog-after.json"
    grep -q "\"COMPLETE\": $BACKLOG}" "$TMP/backlog-after.json" && break
    sleep 1
done
COMPLETE_S=$(awk -v a="$T_UP" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
log "   statuses: $(cat "$TMP/backlog-after.json") ($COMPLETE_S s after the start, checking included)"

# ---------------------------------------------------------------- 4. cross-account
log "4. $SMALL_COUNT small images, lag to account $OTHER of the same deployment"
as_other py lag "$SRC" us-east-1 "$SRC@$OTHER" us-east-1 xacct/small "$SMALL_COUNT" "$SMALL_SIZE" >"$TMP/xacct.json" \
    || die "the cross-account run"
log "   $(cat "$TMP/xacct.json")"
as_other py lag "$SRC" us-east-1 "$SRC@$OTHER" us-east-1 xacct/spaced "$SPACED" "$SMALL_SIZE" 5 "$SPACED_GAP_MS" \
    >"$TMP/xspaced.json" || die "the spaced cross-account run"
log "   $SPACED one at a time: $(cat "$TMP/xspaced.json")"
METRICS=$(curl -s "$SRC/metrics" | grep -E '^berth_replication_(deliveries|pending|failed)' | head -20)

# ---------------------------------------------------------------- report
j() { json "$TMP/$1.json" "$2"; }
START_OFFSET=$(awk -v t="$ARRIVALS_OFFSET" -v a="$(j backlog all_s)" 'BEGIN { printf "%.3f", t - a }')
ALL_S=$(awk -v o="$START_OFFSET" -v a="$(j backlog all_s)" 'BEGIN { printf "%.2f", o + a }')
FIRST_S=$(awk -v o="$START_OFFSET" -v a="$(j backlog first_s)" 'BEGIN { printf "%.2f", o + a }')
echo
echo "## Replication ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r); small images: config + one ${SMALL_SIZE}-byte layer)"
echo
echo "| measure | value | baseline (the client pushing to the destination itself) | ratio |"
echo "|---|---|---|---|"
echo "| peer: $SMALL_COUNT images pushed to the source, s | $(j peer push_s) | $(j direct push_s) pushed to the destination | $(ratio "$(j peer push_s)" "$(j direct push_s)") |"
echo "| peer: per-image push, median / p95 ms | $(j peer push_ms_median) / $(j peer push_ms_p95) | $(j direct push_ms_median) / $(j direct push_ms_p95) | |"
echo "| peer: lag acknowledged -> pullable, median ms | $(j peer lag_ms_median) | push median $(j direct push_ms_median) | $(ratio "$(j peer lag_ms_median)" "$(j direct push_ms_median)") |"
echo "| peer: lag p95 / max ms | $(j peer lag_ms_p95) / $(j peer lag_ms_max) | | $(ratio "$(j peer lag_ms_p95)" "$(j direct push_ms_median)") / $(ratio "$(j peer lag_ms_max)" "$(j direct push_ms_median)") |"
echo "| peer: first push -> last image pullable, s | $(j peer last_pullable_s) | $(j direct push_s) | $(ratio "$(j peer last_pullable_s)" "$(j direct push_s)") |"
echo "| peer, one image at a time ($SPACED, every $SPACED_GAP_MS ms): lag median / p95 / max ms | $(j spaced lag_ms_median) / $(j spaced lag_ms_p95) / $(j spaced lag_ms_max) | push median $(j spaced push_ms_median) | $(ratio "$(j spaced lag_ms_median)" "$(j spaced push_ms_median)") |"
echo "| big ($BIG_MIB MiB): push to the source, s | $(j big push_s) | $(j bigdirect push_s) to the destination | $(ratio "$(j big push_s)" "$(j bigdirect push_s)") |"
echo "| big: lag acknowledged -> pullable, s (MB/s) | $(j big lag_s) ($(j big lag_mb_s)) | push $(j bigdirect push_s); skopeo copy $SKOPEO_S | $(ratio "$(j big lag_s)" "$(j bigdirect push_s)"); $(ratio "$(j big lag_s)" "$SKOPEO_S") |"
echo "| backlog: $BACKLOG images pushed while the destination was down ($DOWN_S s), s | $(j backlog-push push_s) | | |"
echo "| backlog: destination start -> first / all listed there, s | $FIRST_S / $ALL_S | $(j direct push_s) (pushing $SMALL_COUNT) | $(ratio "$ALL_S" "$(j direct push_s)") |"
echo "| backlog: images/s from the start; between first and last | $(awk -v n="$BACKLOG" -v a="$ALL_S" 'BEGIN { printf "%.0f", n / a }'); $(awk -v n="$BACKLOG" -v a="$ALL_S" -v f="$FIRST_S" 'BEGIN { if (a > f) printf "%.0f", n / (a - f); else print "-" }') | $(awk -v n="$SMALL_COUNT" -v a="$(j direct push_s)" 'BEGIN { printf "%.0f", n / a }') pushed/s | |"
echo "| cross-account (in process): lag median / p95 / max ms | $(j xacct lag_ms_median) / $(j xacct lag_ms_p95) / $(j xacct lag_ms_max) | push median $(j xacct push_ms_median) | $(ratio "$(j xacct lag_ms_median)" "$(j xacct push_ms_median)") |"
echo "| cross-account, one at a time: lag median / p95 / max ms | $(j xspaced lag_ms_median) / $(j xspaced lag_ms_p95) / $(j xspaced lag_ms_max) | push median $(j xspaced push_ms_median) | $(ratio "$(j xspaced lag_ms_median)" "$(j xspaced push_ms_median)") |"
echo "| cross-account: first push -> last image pullable, s | $(j xacct last_pullable_s) | pushed in $(j xacct push_s) | $(ratio "$(j xacct last_pullable_s)" "$(j xacct push_s)") |"
echo
echo "Statuses while the destination was down: $(j backlog-down by_status); after: $(j backlog-after by_status)."
echo "Errors: peer $(j peer errors), direct $(j direct errors), cross-account $(j xacct errors); never pullable: peer $(j peer never_pullable), cross-account $(j xacct never_pullable)."
echo
echo '```'
echo "$METRICS"
echo '```'
log "done in $(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"
