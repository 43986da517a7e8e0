#!/usr/bin/env bash
# Scale-out benchmark: Berth on PostgreSQL + S3 (SeaweedFS `weed mini`) side by side
# with CNCF Distribution's s3 driver on the same SeaweedFS, Berth on PostgreSQL vs
# on SQLite, one node vs several, and push throughput with GC running. One run,
# everything on 127.0.0.1.
#
# Usage: bench/scale-out.sh [-n RUNS]
#   RUNS (default 3)       best of N for every throughput number
# Environment knobs (all optional):
#   PARTS=core,redirect,engines,nodes,gc   which sections to run
#   SERVICES_ENV=FILE      use running servers (the env file tests/services/start.sh writes)
#                          instead of starting a PostgreSQL cluster and SeaweedFS of our own
#   BLOB_MIB=1024          size of the "1 GiB" blob (multiple of 16; smaller for smoke runs)
#   SMALL_COUNT=1000       small blobs pushed per run, SMALL_SIZE=1024 bytes each
#   LOAD_SECS=10           duration of each wrk / ab run
#   PUT_COUNT=2000         manifest PUTs per rate measurement (part 3), at c1 and at PUT_CONC=8
#   TAG_IMAGES=100         the many-tags repository: TAG_IMAGES images ...
#   TAG_TAGS=1000          ... with TAG_TAGS tags each (100 x 1,000 = 100,000 tags)
#   DESC_IMAGES=10000      a second repository: this many images, one tag each
#   SEED_CONC=8            connections used for seeding
#   PAGE_REPEAT=5          first and last page timed this many times (median)
#   NODES=3                nodes in the scale-out case (part 4)
#   NODE_CLIENTS=6         concurrent small-blob pushers (processes), round-robin over nodes
#   NODE_SMALL=300         small blobs per pusher
#   GC_PUSH_IMAGES=60      part 5: images per push run (one distinct layer each) ...
#   GC_PUSH_LAYER_MIB=4    ... of this size ...
#   GC_PUSH_CONC=4         ... by this many clients
#   GC_POOL=2000           unreferenced blobs present at the start of every push run
#   CHURN_IMAGES=600       small images a deleter removes during the push ...
#   CHURN_RATE=20          ... at this many per second (in both modes)
#   SQLITE_STORAGE=s3      blob storage of the SQLite deployment (parts 3, 5): s3 (the same
#                          SeaweedFS, so only the metadata engine differs) or fs
#   PEER_BIN=/usr/bin/docker-registry
#   KEEP_TMP=1             keep the temp dir (logs, every JSON result)
#   TMPDIR                 where the temp dir (1 GiB file, data dirs, spools) goes
#
# 1. core: Berth (--database-url postgres://…, --storage-url s3://BUCKET/berth/) vs
#    Distribution (storage s3: regionendpoint = SeaweedFS, path style, same credentials,
#    its own bucket, redirect disabled so that it serves the bytes itself, as Berth
#    does without --storage-redirects). 1 GiB push (monolithic, 16 x 64 MiB chunked) and
#    pull, each push on a fresh database and bucket; small-blob pushes over one
#    connection (bench/smallblobs.py); manifest GET (wrk) and HEAD (ab). Also the S3
#    ceiling: curl PUT and GET of the same file straight to SeaweedFS.
# 2. redirect: a node with --storage-redirects 15m on the same deployment: the blob GET is
#    a 307 to a presigned S3 URL; the node's berth_blob_bytes_sent_total and its
#    /proc/PID/io wchar (every byte it wrote to any fd) grow by ~0 while curl -L gets the
#    whole blob from SeaweedFS. Same pull without redirects for contrast, and
#    Distribution with its default redirect.
# 3. engines: Berth on PostgreSQL vs on SQLite (both on SeaweedFS unless SQLITE_STORAGE=fs):
#    manifest PUT rate (c1, c8), manifest GET (wrk); a repository of TAG_IMAGES x
#    TAG_TAGS tags and one of DESC_IMAGES images, seeded through /v2/ (--auth none); then
#    ListImages (maxResults 1000) and DescribeImages (maxResults 100) walked page by page
#    with SigV4-signed requests (bench/scaleout.py pages, the root key), first and last
#    page timed PAGE_REPEAT times each.
# 4. nodes: 1 node vs NODES nodes of one PG+S3 deployment (same BERTH_MASTER_KEY), no
#    load balancer: three wrk processes (manifest GET) and NODE_CLIENTS small-blob pushers,
#    spread round-robin over the nodes' ports; with 1 node they all go to its one port.
# 5. gc: push throughput (examples/gc_load.rs images, a deleter removing CHURN_RATE
#    images/s) with GC idle (A: restarted with --gc-interval 24h, so no run is due) vs running
#    continuously (B: --gc-interval 1s --gc-grace 1s, GC_POOL unreferenced blobs to
#    delete), on PG+S3 and on SQLite; every run on a freshly seeded deployment.
#    Target: B >= 0.9 A. (bench/lifecycle-gc.sh has the SQLite + filesystem version.)
# Prints markdown tables with PASS/MISS against the targets; always exits 0 once the
# benchmark has run (it is a benchmark, not a test). Not part of CI.

set -uo pipefail

RUNS=${RUNS:-3}
while [ $# -gt 0 ]; do
    case "$1" in
        -n|--runs) RUNS=${2:?-n needs a number}; shift 2 ;;
        -h|--help) sed -n '2,65p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
num_ok() { case "$1" in ''|*[!0-9]*) return 1 ;; *) [ "$1" -gt 0 ] ;; esac; }
num_ok "$RUNS" || { echo "RUNS must be a positive integer" >&2; exit 2; }
[ "$RUNS" -le 10 ] || { echo "RUNS is capped at 10" >&2; exit 2; }
PARTS=${PARTS:-core,redirect,engines,nodes,gc}
BLOB_MIB=${BLOB_MIB:-1024}
SMALL_COUNT=${SMALL_COUNT:-1000}
SMALL_SIZE=${SMALL_SIZE:-1024}
LOAD_SECS=${LOAD_SECS:-10}
PUT_COUNT=${PUT_COUNT:-2000}
PUT_CONC=${PUT_CONC:-8}
TAG_IMAGES=${TAG_IMAGES:-100}
TAG_TAGS=${TAG_TAGS:-1000}
DESC_IMAGES=${DESC_IMAGES:-10000}
SEED_CONC=${SEED_CONC:-8}
PAGE_REPEAT=${PAGE_REPEAT:-5}
NODES=${NODES:-3}
NODE_CLIENTS=${NODE_CLIENTS:-6}
NODE_SMALL=${NODE_SMALL:-300}
GC_PUSH_IMAGES=${GC_PUSH_IMAGES:-60}
GC_PUSH_LAYER_MIB=${GC_PUSH_LAYER_MIB:-4}
GC_PUSH_CONC=${GC_PUSH_CONC:-4}
GC_POOL=${GC_POOL:-2000}
CHURN_IMAGES=${CHURN_IMAGES:-600}
CHURN_RATE=${CHURN_RATE:-20}
SQLITE_STORAGE=${SQLITE_STORAGE:-s3}
PEER_BIN=${PEER_BIN:-/usr/bin/docker-registry}
for v in BLOB_MIB SMALL_COUNT SMALL_SIZE LOAD_SECS PUT_COUNT PUT_CONC TAG_IMAGES TAG_TAGS DESC_IMAGES \
         SEED_CONC PAGE_REPEAT NODES NODE_CLIENTS NODE_SMALL GC_PUSH_IMAGES GC_PUSH_LAYER_MIB \
         GC_PUSH_CONC GC_POOL CHURN_IMAGES CHURN_RATE; do
    num_ok "${!v}" || { echo "$v must be a positive integer" >&2; exit 2; }
done
[ $((BLOB_MIB % 16)) = 0 ] && [ "$BLOB_MIB" -ge 16 ] || { echo "BLOB_MIB must be a multiple of 16" >&2; exit 2; }
[ "$TAG_IMAGES" -le 999 ] && [ "$TAG_TAGS" -le 9999 ] && [ "$DESC_IMAGES" -le 99999 ] && [ "$PUT_COUNT" -le 99999 ] \
    || { echo "TAG_IMAGES <= 999, TAG_TAGS <= 9999, DESC_IMAGES and PUT_COUNT <= 99999" >&2; exit 2; }
case "$SQLITE_STORAGE" in s3|fs) ;; *) echo "SQLITE_STORAGE must be s3 or fs" >&2; exit 2 ;; esac
part() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BERTH_BIN=$TARGET_DIR/release/berth
GC_LOAD=$TARGET_DIR/release/examples/gc_load
AKID=AKIAIOSFODNN7EXAMPLE
SECRET=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
# Never let the caller's Berth or AWS settings leak into the benchmarked servers.
unset BERTH_CONFIG BERTH_LISTEN BERTH_DATA_DIR BERTH_UPLOAD_MAX_AGE BERTH_AUTH \
      BERTH_UPLOAD_REAP_INTERVAL BERTH_MAX_MANIFEST_BYTES BERTH_REGION BERTH_DATABASE_URL \
      BERTH_STORAGE_URL BERTH_STORAGE_REDIRECTS BERTH_REGISTRY_HOST BERTH_MASTER_KEY \
      BERTH_MASTER_KEY_FILE BERTH_GC_INTERVAL BERTH_GC_GRACE BERTH_LIFECYCLE_INTERVAL \
      AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3
# Distribution's AWS SDK refuses to start when a CA bundle is configured for a plain
# http endpoint ("LoadCustomCABundleError"); neither server needs one here.
unset AWS_CA_BUNDLE
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for tool in curl wrk ab psql python3 awk openssl cargo timeout; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install wrk apache2-utils curl postgresql-client)"
done
if part core || part redirect; then
    [ -x "$PEER_BIN" ] || die "missing $PEER_BIN (apt-get install docker-registry)"
fi
python3 -c 'import boto3, botocore' 2>/dev/null || die "missing boto3 (pip install boto3)"

T_START=$EPOCHREALTIME
log "building berth and gc_load (cargo build --release --bin berth --example gc_load, target $TARGET_DIR)"
(cd "$ROOT" && cargo build --release --bin berth --example gc_load) >&2 || die "cargo build failed"
[ -x "$BERTH_BIN" ] && [ -x "$GC_LOAD" ] || die "missing binaries after the build"
T_BUILT=$EPOCHREALTIME

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-scale-bench.XXXXXX") || die "mktemp failed"
chmod 755 "$TMP"
declare -A NODE_PID NODE_PORT
PEER_PID=""
OWN_SERVICES=""
BUCKETS=()      # buckets we created and have not removed yet
DATABASES=()    # likewise, PostgreSQL databases

stop_pid() { # pid: TERM, wait up to 10 s, then KILL
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null && log "pid $pid did not exit within 10 s of SIGTERM; killed"
    wait "$pid" 2>/dev/null
    return 0
}
stop_nodes() { local id; for id in "${!NODE_PID[@]}"; do stop_pid "${NODE_PID[$id]}"; unset "NODE_PID[$id]"; done; }
cleanup() {
    stop_nodes
    stop_pid "$PEER_PID"; PEER_PID=""
    if [ -n "${S3_ENDPOINT:-}" ]; then
        local b d
        for b in "${BUCKETS[@]}"; do s3 rmbucket "$b" >/dev/null 2>&1; done
        for d in "${DATABASES[@]}"; do psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1; done
    fi
    if [ -n "$OWN_SERVICES" ]; then
        # stop.sh signals the shell in the pid file; weed, in its own session, would
        # outlive it (and write into the directory stop.sh removes): stop weed first.
        [ -n "${WEED_PID:-}" ] && stop_pid "$WEED_PID"
        BERTH_TEST_SERVICES=$OWN_SERVICES bash "$ROOT/tests/services/stop.sh"
    fi
    if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- PostgreSQL and S3
if [ -n "${SERVICES_ENV:-}" ]; then
    [ -f "$SERVICES_ENV" ] || die "SERVICES_ENV=$SERVICES_ENV does not exist"
    SVC=$SERVICES_ENV
else
    log "starting PostgreSQL and SeaweedFS (tests/services/start.sh)"
    SVC=$TMP/services.env
    OWN_SERVICES=$SVC
    # start.sh leaves a shell holding its stdout while SeaweedFS runs: to a file, not a pipe.
    BERTH_TEST_SERVICES=$SVC bash "$ROOT/tests/services/start.sh" >"$TMP/services.log" 2>&1 \
        || die "tests/services/start.sh failed: $(tail -c 300 "$TMP/services.log")"
fi
svc() { awk -F= -v k="$1" '$1 == k { sub(/^[^=]*=/, ""); print; exit }' "$SVC"; }
PG_URL=$(svc BERTH_TEST_POSTGRES)
S3_ENDPOINT=$(svc BERTH_TEST_S3_ENDPOINT)
S3_KEY=$(svc BERTH_TEST_S3_ACCESS_KEY)
S3_SECRET=$(svc BERTH_TEST_S3_SECRET_KEY)
SVC_DIR=$(svc BERTH_TEST_SERVICES_DIR)
[ -n "$PG_URL" ] && [ -n "$S3_ENDPOINT" ] && [ -n "$S3_KEY" ] || die "$SVC lacks the PostgreSQL or S3 settings"
case "$S3_ENDPOINT" in http://127.0.0.1:*) ;; *) die "S3 endpoint $S3_ENDPOINT is not on loopback" ;; esac
export AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET AWS_REGION=us-east-1
# The pid file names the shell that started `setsid weed` (its parent), not weed itself.
WEED_PID=$(cat "$SVC_DIR/s3/pid" 2>/dev/null)
WEED_PID=$(pgrep -P "${WEED_PID:-0}" -x weed 2>/dev/null | head -1 || true)
[ -n "$WEED_PID" ] || WEED_PID=$(cat "$SVC_DIR/s3/pid" 2>/dev/null)
psql "$PG_URL" -qAtc 'SELECT 1' >/dev/null 2>&1 || die "PostgreSQL at $PG_URL does not answer"
PG_VERSION=$(psql "$PG_URL" -qAtc 'SHOW server_version' 2>/dev/null)
PG_FSYNC=$(psql "$PG_URL" -qAtc 'SHOW fsync' 2>/dev/null)/$(psql "$PG_URL" -qAtc 'SHOW synchronous_commit' 2>/dev/null)
WEED_VERSION=$(weed version 2>/dev/null | head -1 | awk '{print $3}')
log "PostgreSQL $PG_VERSION at ${PG_URL%%/postgres}, SeaweedFS ${WEED_VERSION:-?} at $S3_ENDPOINT"

s3() { python3 "$BENCH/scaleout.py" s3 "$1" "$S3_ENDPOINT" "$2"; }
SEQ=0
NAME_BASE=$(basename "$TMP" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
# These set globals (NEW_BUCKET, NEW_DB) rather than print: the lists of what to
# remove at exit must be updated in this shell, not in a $(...) subshell.
new_bucket() { # tag -> NEW_BUCKET (created)
    SEQ=$((SEQ + 1)); NEW_BUCKET=bench-$NAME_BASE-$1-$SEQ
    s3 mkbucket "$NEW_BUCKET" >/dev/null 2>"$TMP/s3.err" || die "creating bucket $NEW_BUCKET: $(tail -c 300 "$TMP/s3.err")"
    BUCKETS+=("$NEW_BUCKET")
}
drop_bucket() { # name: remove it and everything in it (frees SeaweedFS's volumes at once)
    local b=$1 keep=() x
    s3 rmbucket "$b" >/dev/null 2>"$TMP/s3.err" || log "removing bucket $b: $(tail -c 200 "$TMP/s3.err")"
    for x in "${BUCKETS[@]}"; do [ "$x" = "$b" ] || keep+=("$x"); done
    BUCKETS=("${keep[@]}")
}
new_db() { # tag -> NEW_DB (URL of a new database)
    SEQ=$((SEQ + 1))
    local d; d=$(echo "bench_${NAME_BASE}_$1_$SEQ" | tr -- '-' '_')
    psql "$PG_URL" -qc "CREATE DATABASE $d" >/dev/null 2>"$TMP/pg.err" || die "CREATE DATABASE $d: $(cat "$TMP/pg.err")"
    DATABASES+=("$d"); NEW_DB=${PG_URL%/*}/$d
}
drop_db() { # url
    local d=${1##*/} keep=() x
    psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1
    for x in "${DATABASES[@]}"; do [ "$x" = "$d" ] || keep+=("$x"); done
    DATABASES=("${keep[@]}")
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_up() { # name pid url: poll for up to 60 s until /v2/ answers
    local name=$1 pid=$2 url=$3 i code=000
    for i in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup (see $TMP/$name.log: $(tail -c 300 "$TMP/$name.log"))"
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url")
        [ "$code" != 000 ] && return 0
        sleep 0.1
    done
    die "$name did not answer $url within 60 s"
}

# A deployment: DEP_ARGS (store flags), DEP_KEY (master key), DEP_BUCKET, DEP_DB.
DEP_ARGS=(); DEP_KEY=""; DEP_BUCKET=""; DEP_DB=""; DEP_DIR=""
new_deployment() { # engine (pg|sqlite) tag: fresh database (or SQLite file) and bucket
    local engine=$1 tag=$2
    DEP_KEY=$(openssl rand -hex 32)
    DEP_DIR=$TMP/dep-$tag-$((SEQ + 1))
    mkdir -p "$DEP_DIR"
    DEP_BUCKET=""; DEP_DB=""; DEP_ARGS=()
    if [ "$engine" = pg ]; then
        new_db "$tag"; DEP_DB=$NEW_DB
        DEP_ARGS+=(--database-url "$DEP_DB")
    else
        DEP_ARGS+=(--database-url "sqlite://$DEP_DIR/metadata.db?mode=rwc")
    fi
    if [ "$engine" = pg ] || [ "$SQLITE_STORAGE" = s3 ]; then
        new_bucket "$tag"; DEP_BUCKET=$NEW_BUCKET
        DEP_ARGS+=(--storage-url "s3://$DEP_BUCKET/berth/")
    else
        DEP_ARGS+=(--storage-url "file://$DEP_DIR/storage")
    fi
}
drop_deployment() {
    stop_nodes
    [ -n "$DEP_BUCKET" ] && drop_bucket "$DEP_BUCKET"
    [ -n "$DEP_DB" ] && drop_db "$DEP_DB"
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$DEP_DIR"
    DEP_BUCKET=""; DEP_DB=""
}
start_node() { # id [serve args...]: a node of the current deployment (own data dir and port)
    local id=$1; shift
    [ -z "${NODE_PID[$id]:-}" ] || die "node $id is already running"
    local port; port=$(free_port)
    mkdir -p "$DEP_DIR/node$id"
    BERTH_LOG=warn BERTH_MASTER_KEY=$DEP_KEY BERTH_ACCOUNT_ID=123456789012 \
        BERTH_ROOT_ACCESS_KEY_ID=$AKID BERTH_ROOT_SECRET_ACCESS_KEY=$SECRET \
        AWS_ENDPOINT_URL_S3=$S3_ENDPOINT \
        "$BERTH_BIN" serve --auth none --listen "127.0.0.1:$port" --data-dir "$DEP_DIR/node$id" \
        "${DEP_ARGS[@]}" "$@" >>"$TMP/berth.log" 2>&1 &
    NODE_PID[$id]=$!
    NODE_PORT[$id]=$port
    wait_up berth "${NODE_PID[$id]}" "http://127.0.0.1:$port/v2/"
}
stop_node() { stop_pid "${NODE_PID[$1]:-}"; unset "NODE_PID[$1]"; }
node_url() { echo "http://127.0.0.1:${NODE_PORT[$1]}"; }

PEER_PORT=""; PEER_BUCKET=""
start_peer() { # redirect: true|false (Distribution's redirect to presigned S3 URLs)
    local redirect_disable=true
    [ "$1" = true ] && redirect_disable=false
    new_bucket dist; PEER_BUCKET=$NEW_BUCKET
    PEER_PORT=$(free_port)
    cat >"$TMP/peer-config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: $S3_KEY
    secretkey: $S3_SECRET
    region: us-east-1
    regionendpoint: $S3_ENDPOINT
    forcepathstyle: true
    secure: false
    v4auth: true
    bucket: $PEER_BUCKET
    rootdirectory: /distribution
  delete:
    enabled: true
  redirect:
    disable: $redirect_disable
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$PEER_PORT
  secret: $(openssl rand -hex 16)
EOF
    "$PEER_BIN" serve "$TMP/peer-config.yml" >>"$TMP/peer.log" 2>&1 &
    PEER_PID=$!
    wait_up peer "$PEER_PID" "http://127.0.0.1:$PEER_PORT/v2/"
}
stop_peer() {
    stop_pid "$PEER_PID"; PEER_PID=""
    [ -n "$PEER_BUCKET" ] && drop_bucket "$PEER_BUCKET"
    PEER_BUCKET=""
}

calc() { awk "BEGIN { printf \"%.1f\", $* }"; }
calc2() { awk "BEGIN { printf \"%.2f\", $* }"; }
now() { echo "$EPOCHREALTIME"; }
jget() { # file key [key...]: a (nested) field of a JSON file; empty if null or missing
    python3 -c 'import json,sys
try:
    v = json.load(open(sys.argv[1]))
    for k in sys.argv[2:]:
        v = v[int(k)] if isinstance(v, list) else v.get(k)
except Exception:
    v = None
print("" if v is None else v)' "$@"
}
cpu_secs() { # pid: user+system CPU seconds so far (all threads)
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null
}
hwm_mib() { awk '/^VmHWM:/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null; }
wchar() { awk '/^wchar:/ {print $2}' "/proc/$1/io" 2>/dev/null; }
metric() { # url name: one sample of a node's /metrics (empty if absent)
    curl -s -m 5 "$1/metrics" | awk -v n="$2" '$1 == n { print $2; exit }'
}

declare -A BEST INFO ALL
NOTES=()
note() { NOTES+=("$*"); log "NOTE: $*"; }
keep_max() { # key value
    local cur=${BEST[$1]:-}
    [ -n "$2" ] || return 0
    if [ -z "$cur" ] || awk "BEGIN { exit !($2 > $cur) }"; then BEST[$1]=$2; fi
}
keep_min() {
    local cur=${BEST[$1]:-}
    [ -n "$2" ] || return 0
    if [ -z "$cur" ] || awk "BEGIN { exit !($2 < $cur) }"; then BEST[$1]=$2; fi
}
push_all() { ALL[$1]="${ALL[$1]:-} $2"; }

# ---------------------------------------------------------------- /v2/ primitives
abs_url() { # base location
    case "$2" in
        http://127.0.0.1:*) echo "$2" ;;
        http://*|https://*) die "a non-loopback Location: $2" ;;
        *) echo "$1$2" ;;
    esac
}
add_digest() { case "$1" in *\?*) echo "$1&digest=$2" ;; *) echo "$1?digest=$2" ;; esac; }
start_upload() { # base repo -> absolute upload URL
    local base=$1 repo=$2 out code loc
    out=$(curl -s -o "$TMP/resp" -m 60 -X POST -H 'Content-Length: 0' \
        -w '%{http_code} %header{location}' "$base/v2/$repo/blobs/uploads/")
    code=${out%% *}; loc=${out#* }
    if [ "$code" != 202 ] || [ -z "$loc" ]; then
        note "$base: POST /v2/$repo/blobs/uploads/ -> HTTP $code $(head -c 200 "$TMP/resp")"
        return 1
    fi
    abs_url "$base" "$loc"
}
push_mono() { # base repo -> seconds
    local base=$1 repo=$2 t0 t1 url code
    t0=$(now)
    url=$(start_upload "$base" "$repo") || return 1
    code=$(curl -s -o "$TMP/resp" -m 1200 -X PUT -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' -T "$BLOB" \
        -w '%{http_code}' "$(add_digest "$url" "$DIGEST")")
    t1=$(now)
    [ "$code" = 201 ] || { note "$base: monolithic PUT -> HTTP $code $(head -c 200 "$TMP/resp")"; return 1; }
    calc2 "$t1 - $t0"
}
push_chunked() { # base repo -> seconds
    local base=$1 repo=$2 t0 t1 url out code loc i first last
    t0=$(now)
    url=$(start_upload "$base" "$repo") || return 1
    for i in $(seq 0 $((CHUNKS - 1))); do
        first=$((i * CHUNK_BYTES)); last=$((first + CHUNK_BYTES - 1))
        out=$(curl -s -o "$TMP/resp" -m 600 -X PATCH -H 'Expect:' \
            -H 'Content-Type: application/octet-stream' -H "Content-Range: $first-$last" \
            -T "$TMP/chunk.$i" -w '%{http_code} %header{location}' "$url")
        code=${out%% *}; loc=${out#* }
        if [ "$code" != 202 ] || [ -z "$loc" ]; then
            note "$base: PATCH chunk $i -> HTTP $code $(head -c 200 "$TMP/resp")"; return 1
        fi
        url=$(abs_url "$base" "$loc")
    done
    code=$(curl -s -o "$TMP/resp" -m 1200 -X PUT -H 'Content-Type: application/octet-stream' \
        --data-binary '' -w '%{http_code}' "$(add_digest "$url" "$DIGEST")")
    t1=$(now)
    [ "$code" = 201 ] || { note "$base: final chunked PUT -> HTTP $code $(head -c 200 "$TMP/resp")"; return 1; }
    calc2 "$t1 - $t0"
}
pull() { # base repo [curl args...] -> "seconds redirects"
    local base=$1 repo=$2 out code size secs nred; shift 2
    out=$(curl -s -o /dev/null -m 600 "$@" -w '%{http_code} %{size_download} %{time_total} %{num_redirects}' \
        "$base/v2/$repo/blobs/$DIGEST")
    read -r code size secs nred <<<"$out"
    if [ "$code" != 200 ] || [ "$size" != "$BLOB_BYTES" ]; then
        note "$base: GET blob -> HTTP $code, $size bytes"; return 1
    fi
    echo "$secs $nred"
}
s3_curl() { curl -s --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:$S3_SECRET" "$@"; }
ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json'
wrk_rps() { # conns url...: one wrk per url at the same time (-t1, conns each), summed req/s; "" on errors
    local conns=$1; shift
    local i=0 u pids=() total=0 rps bad sock
    for u in "$@"; do
        wrk -t1 -c"$conns" -d"${LOAD_SECS}s" --timeout 10s -H "Accept: $ACCEPT" "$u" >"$TMP/wrk.$i" 2>&1 &
        pids+=($!); i=$((i + 1))
    done
    for p in "${pids[@]}"; do wait "$p"; done
    for i in $(seq 0 $(($# - 1))); do
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk.$i")
        bad=$(awk -F: '/Non-2xx or 3xx/ {gsub(/ /,"",$2); print $2}' "$TMP/wrk.$i")
        sock=$(grep -m1 'Socket errors' "$TMP/wrk.$i")
        if [ -z "$rps" ] || [ -n "$bad" ] || [ -n "$sock" ]; then
            note "wrk $(sed -n 1p "$TMP/wrk.$i" | cut -c1-80): ${bad:-0} non-2xx; ${sock:-no socket errors}; rps ${rps:-none}"
            echo ""; return 0
        fi
        total=$(calc2 "$total + $rps")
    done
    echo "$total"
}
ab_rps() { # url: manifest HEAD req/s
    local out rps bad failed
    out=$(ab -k -i -c32 -t "$LOAD_SECS" -n 1000000 -s 10 \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$1" 2>&1)
    rps=$(awk '/^Requests per second:/ {print $4}' <<<"$out")
    bad=$(awk -F: '/^Non-2xx responses/ {gsub(/ /,"",$2); print $2}' <<<"$out")
    failed=$(awk -F: '/^Failed requests/ {gsub(/ /,"",$2); print $2}' <<<"$out")
    if [ -n "$bad" ] || [ "${failed:-0}" != 0 ] || [ -z "$rps" ]; then
        note "ab HEAD $1: ${bad:-0} non-2xx, ${failed:-?} failed"; echo ""; return 0
    fi
    echo "$rps"
}
small_push() { # base repo -> blobs/s (one connection, bench/smallblobs.py)
    local out rate secs errs
    out=$(python3 "$BENCH/smallblobs.py" push "${1#http://}" "$2" "$SMALL_COUNT" "$SMALL_SIZE" 2>"$TMP/small.err") \
        || { note "$1: smallblobs.py failed: $(head -c 300 "$TMP/small.err")"; return 1; }
    read -r rate secs errs <<<"$out"
    [ "$errs" = 0 ] || { note "$1: $errs of $SMALL_COUNT small pushes failed: $(head -c 300 "$TMP/small.err")"; return 1; }
    echo "$rate"
}

# ---------------------------------------------------------------- inputs
BLOB_BYTES=$((BLOB_MIB * 1024 * 1024))
CHUNKS=16
CHUNK_MIB=$((BLOB_MIB / CHUNKS))
CHUNK_BYTES=$((CHUNK_MIB * 1024 * 1024))
if [ "$BLOB_MIB" = 1024 ]; then SZ="1 GiB"; else SZ="$BLOB_MIB MiB"; fi
if part core || part redirect; then
    BLOB=$TMP/blob
    log "creating a $BLOB_MIB MiB random file and $CHUNKS chunks of it"
    head -c "$BLOB_BYTES" /dev/urandom >"$BLOB" || die "could not create $BLOB"
    for i in $(seq 0 $((CHUNKS - 1))); do
        dd if="$BLOB" of="$TMP/chunk.$i" bs=1M skip=$((i * CHUNK_MIB)) count=$CHUNK_MIB status=none || die "dd chunk $i"
    done
    DIGEST=sha256:$(openssl dgst -sha256 -r "$BLOB" | awk '{print $1}')
fi

# ================================================================= 1. core
T1=$(now)
if part core; then
    # The S3 ceiling: the same file straight into SeaweedFS and back (one PUT, one GET).
    for r in $(seq "$RUNS"); do
        new_bucket raw; b=$NEW_BUCKET
        log "run $r/$RUNS S3 ceiling: curl PUT + GET of the $SZ file to SeaweedFS"
        out=$(s3_curl -o "$TMP/resp" -m 1200 -T "$BLOB" -w '%{http_code} %{time_total}' "$S3_ENDPOINT/$b/blob")
        read -r code secs <<<"$out"
        if [ "$code" = 200 ]; then keep_max raw.put "$(calc "$BLOB_MIB / $secs")"
        else note "S3 PUT of the blob: HTTP $code $(head -c 200 "$TMP/resp")"; fi
        out=$(s3_curl -o /dev/null -m 1200 -w '%{http_code} %{size_download} %{time_total}' "$S3_ENDPOINT/$b/blob")
        read -r code size secs <<<"$out"
        if [ "$code" = 200 ] && [ "$size" = "$BLOB_BYTES" ]; then keep_max raw.get "$(calc "$BLOB_MIB / $secs")"
        else note "S3 GET of the blob: HTTP $code, $size bytes"; fi
        drop_bucket "$b"
    done

    for r in $(seq "$RUNS"); do
        for s in berth peer; do
            for mode in mono chunked; do
                log "run $r/$RUNS $s: $SZ $mode push$([ $mode = mono ] && echo ' + pull')"
                if [ $s = berth ]; then
                    new_deployment pg core; start_node 1; base=$(node_url 1); pid=${NODE_PID[1]}
                else
                    start_peer false; base=http://127.0.0.1:$PEER_PORT; pid=$PEER_PID
                fi
                c0=$(cpu_secs "$pid"); w0=$(cpu_secs "$WEED_PID")
                if secs=$(push_$mode "$base" "bench/$mode$r"); then
                    c1=$(cpu_secs "$pid"); w1=$(cpu_secs "$WEED_PID")
                    keep_max "$s.$mode" "$(calc "$BLOB_MIB / $secs")"
                    push_all "$s.$mode" "$(calc "$BLOB_MIB / $secs")"
                    keep_max "$s.rss_$mode" "$(hwm_mib "$pid")"
                    INFO[$s.cpu_$mode.$r]="$(calc2 "$c1 - $c0") $(calc2 "${w1:-0} - ${w0:-0}") $secs"
                    if [ $mode = mono ] && out=$(pull "$base" "bench/$mode$r"); then
                        read -r secs _ <<<"$out"
                        keep_max "$s.pull" "$(calc "$BLOB_MIB / $secs")"
                        push_all "$s.pull" "$(calc "$BLOB_MIB / $secs")"
                    fi
                fi
                if [ $s = berth ]; then drop_deployment; else stop_peer; fi
            done
        done
    done

    log "core: small blobs and manifests (fresh Berth deployment and Distribution bucket)"
    new_deployment pg core-small; start_node 1; BB=$(node_url 1)
    start_peer false; PB=http://127.0.0.1:$PEER_PORT
    for s in berth peer; do
        base=$BB; [ $s = peer ] && base=$PB
        python3 "$BENCH/smallblobs.py" manifest "${base#http://}" bench/app v1 >/dev/null 2>"$TMP/m.err" \
            || note "$s: manifest push failed: $(head -c 300 "$TMP/m.err")"
    done
    for r in $(seq "$RUNS"); do
        for s in berth peer; do
            base=$BB; [ $s = peer ] && base=$PB
            log "run $r/$RUNS $s: $SMALL_COUNT x $SMALL_SIZE B blob pushes on one connection"
            rate=$(small_push "$base" "bench/small$r") && { keep_max "$s.small" "$rate"; push_all "$s.small" "$rate"; }
            log "run $r/$RUNS $s: manifest GET (wrk -t1 -c32) and HEAD (ab -k -c32)"
            keep_max "$s.mget" "$(wrk_rps 32 "$base/v2/bench/app/manifests/v1")"
            keep_max "$s.mhead" "$(ab_rps "$base/v2/bench/app/manifests/v1")"
        done
    done
    stop_peer
    drop_deployment
fi

# ================================================================= 2. redirect
T2=$(now)
if part redirect; then
    log "redirect: $SZ pushed to node 1 (proxying); node 2 of the same deployment with --storage-redirects 15m"
    new_deployment pg redirect
    start_node 1
    start_node 2 --storage-redirects 15m
    P=$(node_url 1); R=$(node_url 2)
    push_mono "$P" bench/big >/dev/null || note "redirect: the push failed"
    out=$(curl -s -o /dev/null -m 30 -w '%{http_code} %{redirect_url}' "$R/v2/bench/big/blobs/$DIGEST")
    INFO[redir.code]=${out%% *}
    loc=${out#* }
    case "$loc" in "$S3_ENDPOINT"/*) INFO[redir.loc]="$S3_ENDPOINT/…${loc: -40}" ;;
        *) INFO[redir.loc]="$loc"; note "redirect: Location is not on the S3 endpoint: ${loc:0:120}" ;; esac
    INFO[redir.expires]=$(grep -o 'X-Amz-Expires=[0-9]*' <<<"$loc" | cut -d= -f2)
    for r in $(seq "$RUNS"); do
        for n in 1 2; do
            u=$(node_url $n); pid=${NODE_PID[$n]}
            s0=$(metric "$u" berth_blob_bytes_sent_total); w0=$(wchar "$pid"); c0=$(cpu_secs "$pid")
            if out=$(pull "$u" bench/big -L); then
                read -r secs nred <<<"$out"
                s1=$(metric "$u" berth_blob_bytes_sent_total); w1=$(wchar "$pid"); c1=$(cpu_secs "$pid")
                keep_max "redir.$n.pull" "$(calc "$BLOB_MIB / $secs")"
                INFO[redir.$n.sent]=$(( ${s1:-0} - ${s0:-0} ))
                INFO[redir.$n.wchar]=$(( ${w1:-0} - ${w0:-0} ))
                INFO[redir.$n.cpu]=$(calc2 "$c1 - $c0")
                INFO[redir.$n.nred]=$nred
            fi
        done
    done
    drop_deployment
    log "redirect: Distribution with its default redirect (presigned S3 URLs)"
    start_peer true
    PB=http://127.0.0.1:$PEER_PORT
    if push_mono "$PB" bench/big >/dev/null; then
        out=$(curl -s -o /dev/null -m 30 -w '%{http_code}' "$PB/v2/bench/big/blobs/$DIGEST")
        INFO[redir.peer.code]=$out
        for r in $(seq "$RUNS"); do
            if out=$(pull "$PB" bench/big -L); then
                read -r secs nred <<<"$out"
                keep_max redir.peer.pull "$(calc "$BLOB_MIB / $secs")"
                INFO[redir.peer.nred]=$nred
            fi
        done
    fi
    stop_peer
fi

# ================================================================= 3. engines
T3=$(now)
ENGINES=(pg sqlite)
pages() { # key url repo op max expect
    local key=$1 url=$2 repo=$3 op=$4 max=$5 expect=$6 f=$TMP/pages.$1.json
    log "  $op maxResults=$max on $repo (expect $expect items)"
    if BERTH_BENCH_AKID=$AKID BERTH_BENCH_SECRET=$SECRET python3 "$BENCH/scaleout.py" pages "$url" "$repo" "$op" \
        "$max" "$PAGE_REPEAT" "$expect" >"$f" 2>"$TMP/pages.err"; then
        [ "$(jget "$f" items)" = "$expect" ] || note "$key: $op walked $(jget "$f" items) items, expected $expect"
        [ -s "$TMP/pages.err" ] && note "$key: $(head -c 200 "$TMP/pages.err")"
    else
        note "$key: $op failed: $(tail -c 300 "$TMP/pages.err")"
    fi
}
if part engines; then
    for e in "${ENGINES[@]}"; do
        log "engines: $e"
        new_deployment "$e" "eng-$e"
        start_node 1
        u=$(node_url 1); hp=${u#http://}
        for r in $(seq "$RUNS"); do
            for c in 1 "$PUT_CONC"; do
                log "run $r/$RUNS $e: $PUT_COUNT manifest PUTs, c$c"
                f=$TMP/put.$e.$c.$r.json
                python3 "$BENCH/scaleout.py" manifests "$hp" "put/c$c-r$r" "$PUT_COUNT" "$c" >"$f" 2>"$TMP/put.err" \
                    || note "$e: manifests c$c failed: $(tail -c 300 "$TMP/put.err")"
                if [ "$(jget "$f" errors)" = 0 ]; then keep_max "$e.put$c" "$(jget "$f" per_s)"; push_all "$e.put$c" "$(jget "$f" per_s)"
                else note "$e: manifest PUT c$c: $(jget "$f" errors) errors, first: $(jget "$f" first_error)"; fi
            done
            log "run $r/$RUNS $e: manifest GET (wrk -t1 -c32)"
            keep_max "$e.mget" "$(wrk_rps 32 "$u/v2/put/c1-r1/manifests/m00000")"
        done
        log "$e: seeding $TAG_IMAGES images x $TAG_TAGS tags into tags/big ($SEED_CONC connections)"
        f=$TMP/seed.tags.$e.json
        python3 "$BENCH/scaleout.py" tags "$hp" tags/big "$TAG_IMAGES" "$TAG_TAGS" "$SEED_CONC" >"$f" 2>"$TMP/seed.err" \
            || note "$e: tag seeding failed: $(tail -c 300 "$TMP/seed.err")"
        [ "$(jget "$f" errors)" = 0 ] || note "$e: tag seeding: $(jget "$f" errors) errors, first: $(jget "$f" first_error)"
        INFO[$e.seedtags]="$(jget "$f" ok) in $(jget "$f" secs) s ($(jget "$f" per_s)/s)"
        BEST[$e.tagput]=$(jget "$f" per_s)
        log "$e: seeding $DESC_IMAGES images into desc/many"
        f=$TMP/seed.desc.$e.json
        python3 "$BENCH/scaleout.py" manifests "$hp" desc/many "$DESC_IMAGES" "$SEED_CONC" >"$f" 2>"$TMP/seed.err" \
            || note "$e: image seeding failed: $(tail -c 300 "$TMP/seed.err")"
        [ "$(jget "$f" errors)" = 0 ] || note "$e: image seeding: $(jget "$f" errors) errors, first: $(jget "$f" first_error)"
        INFO[$e.seeddesc]="$(jget "$f" ok) in $(jget "$f" secs) s ($(jget "$f" per_s)/s)"
        NT=$((TAG_IMAGES * TAG_TAGS))
        pages "$e.li.tags" "$u" tags/big ListImages 1000 "$NT"
        pages "$e.di.tags" "$u" tags/big DescribeImages 100 "$TAG_IMAGES"
        pages "$e.li.desc" "$u" desc/many ListImages 1000 "$DESC_IMAGES"
        pages "$e.di.desc" "$u" desc/many DescribeImages 100 "$DESC_IMAGES"
        if [ "$e" = pg ]; then
            INFO[pg.dbsize]=$(psql "$DEP_DB" -qAtc 'SELECT pg_size_pretty(pg_database_size(current_database()))' 2>/dev/null)
        else
            INFO[sqlite.dbsize]=$(du -sh "$DEP_DIR/metadata.db" 2>/dev/null | awk '{print $1}')
        fi
        drop_deployment
    done
fi

# ================================================================= 4. nodes
T4=$(now)
if part nodes; then
    new_deployment pg nodes
    start_node 1
    python3 "$BENCH/smallblobs.py" manifest "127.0.0.1:${NODE_PORT[1]}" bench/app v1 >/dev/null 2>"$TMP/m.err" \
        || note "nodes: manifest push failed: $(head -c 300 "$TMP/m.err")"
    nodes_round() { # n run: manifest GET and small-blob pushes over nodes 1..n
        local n=$1 r=$2 urls=() i hps t f ok tot t0 t1 pids=()
        for i in 1 2 3; do urls+=("$(node_url $(( (i - 1) % n + 1 )))/v2/bench/app/manifests/v1"); done
        log "run $r/$RUNS nodes=$n: manifest GET, 3 x wrk -t1 -c11 round-robin"
        keep_max "nodes$n.mget" "$(wrk_rps 11 "${urls[@]}")"
        log "run $r/$RUNS nodes=$n: $NODE_CLIENTS pushers x $NODE_SMALL small blobs, round-robin"
        t=$(awk "BEGIN { printf \"%.3f\", $(date +%s.%N) + 1.5 + $NODE_CLIENTS * $NODE_SMALL * $SMALL_SIZE / 2e8 }")
        for i in $(seq "$NODE_CLIENTS"); do
            python3 "$BENCH/scaleout.py" smallpush "127.0.0.1:${NODE_PORT[$(( (i - 1) % n + 1 ))]}" \
                "nodes/n$n-r$r-c$i" "$NODE_SMALL" "$SMALL_SIZE" "$t" >"$TMP/np.$i.json" 2>"$TMP/np.$i.err" &
            pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p"; done
        tot=0; t0=""; t1=""
        for i in $(seq "$NODE_CLIENTS"); do
            f=$TMP/np.$i.json
            ok=$(jget "$f" ok); [ -n "$ok" ] || { note "nodes=$n pusher $i failed: $(tail -c 200 "$TMP/np.$i.err")"; return; }
            [ "$(jget "$f" errors)" = 0 ] || note "nodes=$n pusher $i: $(jget "$f" errors) errors, first: $(jget "$f" first_error)"
            tot=$((tot + ok))
            t0=$(awk -v a="$t0" -v b="$(jget "$f" t0)" 'BEGIN { print (a == "" || b < a) ? b : a }')
            t1=$(awk -v a="$t1" -v b="$(jget "$f" t1)" 'BEGIN { print (a == "" || b > a) ? b : a }')
        done
        keep_max "nodes$n.small" "$(calc "$tot / ($t1 - $t0)")"
        push_all "nodes$n.small" "$(calc "$tot / ($t1 - $t0)")"
    }
    for r in $(seq "$RUNS"); do
        for i in $(seq 2 "$NODES"); do stop_node "$i"; done
        nodes_round 1 "$r"
        for i in $(seq 2 "$NODES"); do start_node "$i"; done
        nodes_round "$NODES" "$r"
    done
    drop_deployment
fi

# ================================================================= 5. gc
T5=$(now)
if part gc; then
    gcl() { local url=$1; shift; timeout 1800 "$GC_LOAD" --endpoint "$url" "$@"; }
    wait_gc_idle() { # url: until no GC run is in progress (up to 300 s). A restarted node
        # keeps the queued GC job's due time (24 h after the seeding node's first run),
        # so in A nothing runs at all; this only guards against a run left over.
        local i running
        for i in $(seq 3000); do
            running=$(metric "$1" berth_gc_running)
            [ "${running:-1}" = 0 ] && return 0
            sleep 0.1
        done
        note "gc: a GC run still in progress 300 s after start (running=${running:-?})"
    }
    gc_run() { # engine mode run
        local e=$1 mode=$2 r=$3 u out=$TMP/gc.$1.$2.$3.json c0 c1 d0 d1 n0 n1 mibs errs
        log "run $r/$RUNS gc $e $mode: seeding $GC_POOL unreferenced blobs and $CHURN_IMAGES small images"
        new_deployment "$e" "gc-$e"
        start_node 1 --gc-interval 24h --gc-grace 24h
        u=$(node_url 1)
        gcl "$u" blobs --repo pool/garbage --count "$GC_POOL" --size 512 --concurrency 16 --mode post \
            >"$TMP/gc.seed.json" 2>"$TMP/gc.err" || note "gc $e: pool seeding failed: $(tail -c 300 "$TMP/gc.err")"
        [ "$(jget "$TMP/gc.seed.json" errors)" = 0 ] || note "gc $e: pool seeding errors: $(jget "$TMP/gc.seed.json" first_error)"
        gcl "$u" small-images --repo churn/victims --count "$CHURN_IMAGES" --concurrency 16 \
            >"$TMP/gc.seed2.json" 2>"$TMP/gc.err" || note "gc $e: victim seeding failed: $(tail -c 300 "$TMP/gc.err")"
        [ "$(jget "$TMP/gc.seed2.json" errors)" = 0 ] || note "gc $e: victim seeding errors: $(jget "$TMP/gc.seed2.json" first_error)"
        stop_node 1
        if [ "$mode" = A ]; then
            start_node 1 --gc-interval 24h --gc-grace 24h
            u=$(node_url 1)
            wait_gc_idle "$u"
        else
            start_node 1 --gc-interval 1s --gc-grace 1s
            u=$(node_url 1)
        fi
        c0=$(cpu_secs "${NODE_PID[1]}"); d0=$(metric "$u" berth_gc_blobs_deleted_total); n0=$(metric "$u" berth_gc_runs_total)
        log "run $r/$RUNS gc $e $mode: push $GC_PUSH_IMAGES x $GC_PUSH_LAYER_MIB MiB, c$GC_PUSH_CONC, deleter $CHURN_RATE/s"
        gcl "$u" images --repo push/app --count "$GC_PUSH_IMAGES" --layer-size $((GC_PUSH_LAYER_MIB << 20)) \
            --concurrency "$GC_PUSH_CONC" --churn-repo churn/victims --churn-count "$CHURN_IMAGES" \
            --churn-rate "$CHURN_RATE" >"$out" 2>"$TMP/gc.err" || note "gc $e $mode: generator failed: $(tail -c 300 "$TMP/gc.err")"
        c1=$(cpu_secs "${NODE_PID[1]}"); d1=$(metric "$u" berth_gc_blobs_deleted_total); n1=$(metric "$u" berth_gc_runs_total)
        drop_deployment
        errs=$(jget "$out" errors)
        [ "${errs:-1}" = 0 ] || note "gc $e $mode run $r: ${errs:-?} errors, first: $(jget "$out" first_error)"
        [ "$(jget "$out" churn_errors)" = 0 ] || note "gc $e $mode run $r: deleter errors, first: $(jget "$out" churn_first_error)"
        [ "$(jget "$out" churn_exhausted)" != True ] || note "gc $e $mode run $r: the deleter ran out of images (raise CHURN_IMAGES)"
        mibs=$(jget "$out" mib_per_s)
        if [ "${errs:-1}" = 0 ] && [ -n "$mibs" ]; then
            push_all "gc.$e.$mode" "$mibs"
            local cur=${BEST[gc.$e.$mode]:-}
            if [ -z "$cur" ] || awk "BEGIN { exit !($mibs > $cur) }"; then
                BEST[gc.$e.$mode]=$mibs
                INFO[gc.$e.$mode.cpu]=$(calc "${c1:-0} - ${c0:-0}")
                INFO[gc.$e.$mode.del]=$(( ${d1:-0} - ${d0:-0} ))
                INFO[gc.$e.$mode.runs]=$(( ${n1:-0} - ${n0:-0} ))
                INFO[gc.$e.$mode.churn]=$(jget "$out" churn_deleted)
            fi
        fi
    }
    for r in $(seq "$RUNS"); do
        for e in "${ENGINES[@]}"; do
            gc_run "$e" A "$r"
            gc_run "$e" B "$r"
        done
    done
fi
T_END=$(now)

# ================================================================= tables
v() { echo "${BEST[$1]:-}"; }
ratio() { if [ -n "$1" ] && [ -n "$2" ] && awk "BEGIN { exit !($2 > 0) }"; then awk "BEGIN { printf \"%.2fx\", $1 / $2 }"; else echo "-"; fi; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo MISS; fi; }
pass_ratio() { [ -n "$1" ] && [ -n "$2" ] && verdict "$1 >= $3 * $2" || echo "MISS (no data)"; }
row() { local out="|" x; for x in "$@"; do out+=" $x |"; done; echo "$out"; }
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
secs() { awk "BEGIN { printf \"%.0f\", $2 - $1 }"; }
pg() { jget "$TMP/pages.$1.json" "$2"; }

echo
echo "## Scale-out benchmark: berth $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), load average at the end $(cut -d' ' -f1-3 /proc/loadavg); best of $RUNS."
echo "PostgreSQL $PG_VERSION (fsync/synchronous_commit $PG_FSYNC), SeaweedFS ${WEED_VERSION:-?} (\`weed mini\`), Distribution $("$PEER_BIN" --version 2>/dev/null | awk '{print $NF}'); all on 127.0.0.1."
if part core; then
    echo
    echo "### 1. Berth (PostgreSQL + S3) vs Distribution (s3 driver), same SeaweedFS"
    echo
    row metric berth distribution ratio target result
    row --- ---: ---: ---: --- ---
    BM=$(v berth.mono); PM=$(v peer.mono); BC=$(v berth.chunked); PC=$(v peer.chunked)
    BP=$(v berth.pull); PP=$(v peer.pull); BS=$(v berth.small); PS=$(v peer.small)
    BG=$(v berth.mget); PG=$(v peer.mget); BH=$(v berth.mhead); PH=$(v peer.mhead)
    row "push $SZ monolithic (MiB/s)" "${BM:--}" "${PM:--}" "$(ratio "$BM" "$PM")" ">= 3x" "$(pass_ratio "$BM" "$PM" 3)"
    row "push $SZ chunked 16 x $CHUNK_MIB MiB (MiB/s)" "${BC:--}" "${PC:--}" "$(ratio "$BC" "$PC")" ">= 3x" "$(pass_ratio "$BC" "$PC" 3)"
    row "pull $SZ, served by the registry (MiB/s)" "${BP:--}" "${PP:--}" "$(ratio "$BP" "$PP")" "-" "-"
    row "small blob push ${SMALL_COUNT} x ${SMALL_SIZE} B, 1 connection (blobs/s)" "${BS:--}" "${PS:--}" "$(ratio "$BS" "$PS")" "-" "-"
    row "manifest GET, wrk c32 (req/s)" "${BG:--}" "${PG:--}" "$(ratio "$BG" "$PG")" ">= 3x" "$(pass_ratio "$BG" "$PG" 3)"
    row "manifest HEAD, ab -k c32 (req/s)" "${BH:--}" "${PH:--}" "$(ratio "$BH" "$PH")" "-" "-"
    row "peak RSS during the mono / chunked push (MiB)" "$(v berth.rss_mono) / $(v berth.rss_chunked)" "$(v peer.rss_mono) / $(v peer.rss_chunked)" "-" "-" "-"
    cpu_line() { # server: "server CPU s / weed CPU s / wall s" of the best-looking run (run 1)
        local s=$1 m x
        for m in mono chunked; do
            x=${INFO[$s.cpu_$m.1]:-}
            [ -n "$x" ] && printf '%s: %s; ' "$m" "$(awk '{ printf "%.1f / %.1f / %.1f", $1, $2, $3 }' <<<"$x")"
        done
    }
    row "push CPU s, server / SeaweedFS / wall (run 1)" "$(cpu_line berth)" "$(cpu_line peer)" "-" "-" "-"
    echo
    echo "S3 ceiling (curl straight to SeaweedFS, same file): PUT $(v raw.put) MiB/s, GET $(v raw.get) MiB/s." \
         "All runs (MiB/s): berth mono${ALL[berth.mono]:- -}, chunked${ALL[berth.chunked]:- -}, pull${ALL[berth.pull]:- -};" \
         "distribution mono${ALL[peer.mono]:- -}, chunked${ALL[peer.chunked]:- -}, pull${ALL[peer.pull]:- -}." \
         "Small blobs/s: berth${ALL[berth.small]:- -}; distribution${ALL[peer.small]:- -}."
fi
if part redirect; then
    echo
    echo "### 2. Blob pull with \`--storage-redirects 15m\` ($SZ, curl -L)"
    echo
    row "" "node with redirects" "node without" "distribution (redirect on)"
    row --- ---: ---: ---:
    row "first response" "${INFO[redir.code]:-?} (X-Amz-Expires=${INFO[redir.expires]:-?})" "200" "${INFO[redir.peer.code]:-?}"
    row "redirects followed" "${INFO[redir.2.nred]:-?}" "${INFO[redir.1.nred]:-?}" "${INFO[redir.peer.nred]:-?}"
    row "pull (MiB/s)" "$(v redir.2.pull)" "$(v redir.1.pull)" "$(v redir.peer.pull)"
    row "berth_blob_bytes_sent_total delta (bytes)" "${INFO[redir.2.sent]:-?}" "${INFO[redir.1.sent]:-?}" "-"
    row "node's /proc/PID/io wchar delta (bytes)" "${INFO[redir.2.wchar]:-?}" "${INFO[redir.1.wchar]:-?}" "-"
    row "node CPU during the pull (s)" "${INFO[redir.2.cpu]:-?}" "${INFO[redir.1.cpu]:-?}" "-"
    echo
    echo "Location: ${INFO[redir.loc]:-?}. Counters are of the last run; the client got all $BLOB_BYTES bytes every time."
fi
if part engines; then
    echo
    echo "### 3. Berth on PostgreSQL vs on SQLite (blobs on $([ "$SQLITE_STORAGE" = s3 ] && echo 'SeaweedFS for both' || echo 'S3 / the filesystem'))"
    echo
    row metric postgresql sqlite "pg / sqlite"
    row --- ---: ---: ---:
    for k in put1 "put$PUT_CONC" mget tagput; do
        case $k in
            put1) lab="manifest PUT, $PUT_COUNT distinct, c1 (/s)" ;;
            mget) lab="manifest GET, wrk c32 (req/s)" ;;
            tagput) lab="tag PUT (seeding $TAG_IMAGES x $TAG_TAGS, c$SEED_CONC) (/s)" ;;
            *) lab="manifest PUT, $PUT_COUNT distinct, c$PUT_CONC (/s)" ;;
        esac
        row "$lab" "$(v pg.$k)" "$(v sqlite.$k)" "$(ratio "$(v pg.$k)" "$(v sqlite.$k)")"
    done
    for spec in "li.tags:ListImages(maxResults=1000), $((TAG_IMAGES * TAG_TAGS)) tags on $TAG_IMAGES images" \
                "di.tags:DescribeImages(maxResults=100), same repository" \
                "li.desc:ListImages(maxResults=1000), $DESC_IMAGES images x 1 tag" \
                "di.desc:DescribeImages(maxResults=100), $DESC_IMAGES images x 1 tag"; do
        k=${spec%%:*}; lab=${spec#*:}
        row "$lab: pages" "$(pg pg.$k pages)" "$(pg sqlite.$k pages)" "-"
        row "  first page (ms, median of $PAGE_REPEAT)" "$(pg pg.$k first_ms)" "$(pg sqlite.$k first_ms)" "$(ratio "$(pg pg.$k first_ms)" "$(pg sqlite.$k first_ms)")"
        row "  last page (ms, median of $PAGE_REPEAT)" "$(pg pg.$k last_ms)" "$(pg sqlite.$k last_ms)" "$(ratio "$(pg pg.$k last_ms)" "$(pg sqlite.$k last_ms)")"
        row "  whole walk (s); slowest page (ms, #)" "$(pg pg.$k walk_s); $(pg pg.$k max_ms) (#$(pg pg.$k max_page))" "$(pg sqlite.$k walk_s); $(pg sqlite.$k max_ms) (#$(pg sqlite.$k max_page))" "-"
    done
    echo
    echo "Seeding: PostgreSQL tags ${INFO[pg.seedtags]:-?}, images ${INFO[pg.seeddesc]:-?}; SQLite tags ${INFO[sqlite.seedtags]:-?}, images ${INFO[sqlite.seeddesc]:-?}." \
         "Metadata size: PostgreSQL ${INFO[pg.dbsize]:-?}, SQLite ${INFO[sqlite.dbsize]:-?}." \
         "First-page response: ListImages $(pg pg.li.tags first_bytes) B, DescribeImages $(pg pg.di.tags first_bytes) B (many-tags repository)."
fi
if part nodes; then
    echo
    echo "### 4. One node vs $NODES nodes (PostgreSQL + S3, clients round-robin over the ports, no load balancer)"
    echo
    row metric "$NODES nodes" "1 node" ratio
    row --- ---: ---: ---:
    row "manifest GET, 3 x wrk -t1 -c11 (req/s)" "$(v nodes$NODES.mget)" "$(v nodes1.mget)" "$(ratio "$(v nodes$NODES.mget)" "$(v nodes1.mget)")"
    row "small blob push, $NODE_CLIENTS clients x $NODE_SMALL (blobs/s)" "$(v nodes$NODES.small)" "$(v nodes1.small)" "$(ratio "$(v nodes$NODES.small)" "$(v nodes1.small)")"
    echo
    echo "All runs (blobs/s): $NODES nodes${ALL[nodes$NODES.small]:- -}; 1 node${ALL[nodes1.small]:- -}."
fi
if part gc; then
    echo
    echo "### 5. Push with GC idle (A) vs running every second (B)"
    echo
    row metric postgresql sqlite target result
    row --- ---: ---: --- ---
    gcv() { local a b; a=$(v gc.$1.A); b=$(v gc.$1.B); [ -n "$a" ] && [ -n "$b" ] && echo "$(ratio "$b" "$a") ($(calc "100 * (1 - $b / $a)")% loss)" || echo "-"; }
    gcr() { local a b; a=$(v gc.$1.A); b=$(v gc.$1.B); [ -n "$a" ] && [ -n "$b" ] && verdict "$b >= 0.9 * $a" || echo "MISS (no data)"; }
    row "push ${GC_PUSH_IMAGES} x ${GC_PUSH_LAYER_MIB} MiB, c$GC_PUSH_CONC, A: GC idle (MiB/s)" "$(v gc.pg.A)" "$(v gc.sqlite.A)" "-" "-"
    row "B: --gc-interval 1s --gc-grace 1s (MiB/s)" "$(v gc.pg.B)" "$(v gc.sqlite.B)" "-" "-"
    row "B / A" "$(gcv pg)" "$(gcv sqlite)" "loss < 10%" "$(gcr pg) / $(gcr sqlite)"
    row "medians A; B (MiB/s)" "$(median <<<"${ALL[gc.pg.A]:-}"); $(median <<<"${ALL[gc.pg.B]:-}")" "$(median <<<"${ALL[gc.sqlite.A]:-}"); $(median <<<"${ALL[gc.sqlite.B]:-}")" "-" "-"
    row "GC runs; blobs deleted in B's best window" "${INFO[gc.pg.B.runs]:-?}; ${INFO[gc.pg.B.del]:-?}" "${INFO[gc.sqlite.B.runs]:-?}; ${INFO[gc.sqlite.B.del]:-?}" "-" "-"
    row "server CPU s in the best window (A; B)" "${INFO[gc.pg.A.cpu]:-?}; ${INFO[gc.pg.B.cpu]:-?}" "${INFO[gc.sqlite.A.cpu]:-?}; ${INFO[gc.sqlite.B.cpu]:-?}" "-" "-"
    echo
    echo "All runs (MiB/s): PostgreSQL A${ALL[gc.pg.A]:- -}, B${ALL[gc.pg.B]:- -}; SQLite A${ALL[gc.sqlite.A]:- -}, B${ALL[gc.sqlite.B]:- -}." \
         "Each run: $GC_POOL unreferenced 512 B blobs and $CHURN_IMAGES small images seeded first (not timed); SQLite blobs on $SQLITE_STORAGE."
fi
echo
echo "Wall time: build $(secs "$T_START" "$T_BUILT") s, core $(secs "$T1" "$T2") s, redirect $(secs "$T2" "$T3") s, engines $(secs "$T3" "$T4") s, nodes $(secs "$T4" "$T5") s, gc $(secs "$T5" "$T_END") s."
if [ ${#NOTES[@]} -gt 0 ]; then
    echo
    echo "Notes:"
    printf -- '- %s\n' "${NOTES[@]}"
fi
for s in berth peer; do
    [ -f "$TMP/$s.log" ] || continue
    n=$(grep -ciE 'error|warn|panic' "$TMP/$s.log" 2>/dev/null); n=${n:-0}
    if [ "$n" != 0 ]; then
        echo
        echo "$s log: $n error/warn lines, last ones:"
        grep -iE 'error|warn|panic' "$TMP/$s.log" | tail -n 3 | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-240 | sed 's/^/    /'
    fi
done
exit 0
