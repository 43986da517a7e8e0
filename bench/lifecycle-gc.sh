#!/usr/bin/env bash
# Lifecycle and garbage-collection benchmark: Berth's lifecycle evaluation at
# scale, Berth's online GC vs CNCF Distribution's offline garbage-collect on the
# same unreferenced blobs, and Berth's push throughput with and without GC
# running. Everything on 127.0.0.1, one run.
#
# Usage: bench/lifecycle-gc.sh [-n RUNS]
#   RUNS (default 3)       best of N for every number (destructive steps are
#                          repeated on a fresh copy of the seeded data directory)
# Environment knobs (all optional):
#   PARTS=lifecycle,gc,push  which sections to run
#   LC_IMAGES=20000        images in the one large repository (policy: keep LC_KEEP_BIG)
#   LC_KEEP_BIG=100        its imageCountMoreThan
#   LC_REPOS=1000          repositories in the many-repositories case ...
#   LC_REPO_IMAGES=100     ... with this many images each (policy: keep LC_KEEP_SMALL)
#   LC_KEEP_SMALL=10       their imageCountMoreThan
#   LC_RUNS=RUNS           lifecycle runs, best of (each restores a copy of the seeded data)
#   CLI_TIMEOUT=1200       seconds allowed for each timed berth / docker-registry command
#   GC_BLOBS=100000        unreferenced blobs pushed to both servers (2000 for a smoke run)
#   GC_BLOB_SIZE=512       bytes per blob
#   GC_RUNS=1              GC runs, best of (each further run restores copies of both
#                          data directories; seeding dominates, so 1 by default)
#   PUSH_IMAGES=300        images per push run (one distinct layer each, + config + manifest)
#   PUSH_LAYER_MIB=4       layer size
#   PUSH_CONC=4            concurrent pushing clients
#   GC_POOL=50000          unreferenced blobs present in the push runs (GC's work in run B)
#   CHURN_IMAGES=2000      small images a background deleter removes during each push run ...
#   CHURN_RATE=50          ... at this many DELETEs per second (in both A and B)
#   SEED_CONC=16           connections used for seeding
#   PEER_BIN=/usr/bin/docker-registry
#   KEEP_TMP=1             keep the temp dir (data dirs, logs, every JSON result)
#   TMPDIR                 where the temp dir goes
#
# 1. Lifecycle (Berth, --auth ecr): repositories, blobs and policies through the ECR
#    API (examples/ecr_load.rs lifecycle-setup), an untimed `berth lifecycle run` on
#    the empty repositories (so the server's scheduler has nothing due), then
#    PutImage seeding (lifecycle-seed). Timed, beside the running server:
#    `berth lifecycle preview` of the large repository, `berth lifecycle run
#    --repository-name` of it, then `berth lifecycle run` over every repository.
#    Expiry counts are checked against the policies and ListImages afterwards. No
#    peer implements ECR lifecycle policies: absolute numbers only.
# 2. GC: GC_BLOBS distinct blobs no manifest references, pushed to Berth (--auth none,
#    monolithic POST ?digest=) and to Distribution (POST + PUT ?digest=), both
#    seeded at the same time (not counted). Timed: `berth gc run --gc-grace 1s`
#    beside the running server (online), and `docker-registry garbage-collect` with
#    Distribution stopped (its GC is offline). Checked: blobs_deleted == GC_BLOBS and
#    no blob file left.
# 3. Push with and without GC (Berth, --auth none): PUSH_IMAGES images with
#    PUSH_CONC clients (examples/gc_load.rs images) on a copy of a data directory
#    holding GC_POOL unreferenced blobs and CHURN_IMAGES small images; a deleter
#    removes CHURN_RATE of those images per second while the push runs. A: server
#    with --gc-interval 24h (its start-up collection, which deletes nothing, is
#    awaited first); B: --gc-interval 1s --gc-grace 1s, push started while the
#    start-up collection is deleting the pool. Target: B >= 0.9 A.
# Prints a table with PASS/MISS against the targets; always exits 0 once the
# benchmark has run (it is a benchmark, not a test).

set -uo pipefail

RUNS=${RUNS:-3}
while [ $# -gt 0 ]; do
    case "$1" in
        -n|--runs) RUNS=${2:?-n needs a number}; shift 2 ;;
        -h|--help) sed -n '2,56p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
num_ok() { case "$1" in ''|*[!0-9]*) return 1 ;; *) [ "$1" -gt 0 ] ;; esac; }
num_ok "$RUNS" || { echo "RUNS must be a positive integer" >&2; exit 2; }
[ "$RUNS" -le 10 ] || { echo "RUNS is capped at 10" >&2; exit 2; }
PARTS=${PARTS:-lifecycle,gc,push}
LC_IMAGES=${LC_IMAGES:-20000}
LC_KEEP_BIG=${LC_KEEP_BIG:-100}
LC_REPOS=${LC_REPOS:-1000}
LC_REPO_IMAGES=${LC_REPO_IMAGES:-100}
LC_KEEP_SMALL=${LC_KEEP_SMALL:-10}
GC_BLOBS=${GC_BLOBS:-100000}
GC_BLOB_SIZE=${GC_BLOB_SIZE:-512}
GC_RUNS=${GC_RUNS:-1}
LC_RUNS=${LC_RUNS:-$RUNS}
CLI_TIMEOUT=${CLI_TIMEOUT:-1200}
PUSH_IMAGES=${PUSH_IMAGES:-300}
PUSH_LAYER_MIB=${PUSH_LAYER_MIB:-4}
PUSH_CONC=${PUSH_CONC:-4}
GC_POOL=${GC_POOL:-50000}
CHURN_IMAGES=${CHURN_IMAGES:-2000}
CHURN_RATE=${CHURN_RATE:-50}
SEED_CONC=${SEED_CONC:-16}
PEER_BIN=${PEER_BIN:-/usr/bin/docker-registry}
for v in LC_IMAGES LC_KEEP_BIG LC_REPOS LC_REPO_IMAGES LC_KEEP_SMALL GC_BLOBS GC_BLOB_SIZE \
         GC_RUNS LC_RUNS CLI_TIMEOUT PUSH_IMAGES PUSH_LAYER_MIB PUSH_CONC GC_POOL CHURN_IMAGES CHURN_RATE SEED_CONC; do
    num_ok "${!v}" || { echo "$v must be a positive integer" >&2; exit 2; }
done
[ "$LC_IMAGES" -le 99999 ] && [ "$LC_REPO_IMAGES" -le 99999 ] && [ "$LC_REPOS" -le 99999 ] \
    || { echo "LC_IMAGES, LC_REPOS and LC_REPO_IMAGES are capped at 99999" >&2; exit 2; }
[ "$GC_BLOBS" -le 1000000 ] && [ "$GC_POOL" -le 1000000 ] || { echo "GC_BLOBS/GC_POOL are capped at 1000000" >&2; exit 2; }
[ "$GC_RUNS" -le 10 ] && [ "$LC_RUNS" -le 10 ] || { echo "GC_RUNS and LC_RUNS are capped at 10" >&2; exit 2; }
[ "$GC_BLOB_SIZE" -ge 64 ] || { echo "GC_BLOB_SIZE must be at least 64" >&2; exit 2; }
part() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BERTH_BIN=$ROOT/target/release/berth
ECR_LOAD=$ROOT/target/release/examples/ecr_load
GC_LOAD=$ROOT/target/release/examples/gc_load
ACCOUNT=123456789012
AKID=AKIAIOSFODNN7EXAMPLE
SECRET=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
# Never let the caller's Berth settings leak into the benchmarked servers or the CLI.
unset BERTH_CONFIG BERTH_LISTEN BERTH_DATA_DIR BERTH_UPLOAD_MAX_AGE BERTH_AUTH \
      BERTH_UPLOAD_REAP_INTERVAL BERTH_MAX_MANIFEST_BYTES BERTH_REGION \
      BERTH_REGISTRY_HOST BERTH_MASTER_KEY BERTH_GC_INTERVAL BERTH_GC_GRACE \
      BERTH_LIFECYCLE_INTERVAL
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for tool in curl python3 awk cp find timeout cargo sync; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
if part gc; then [ -x "$PEER_BIN" ] || die "missing $PEER_BIN (apt-get install docker-registry)"; fi

T_START=$EPOCHREALTIME
log "building berth and the load generators (cargo build --release --bin berth --example ecr_load --example gc_load)"
(cd "$ROOT" && cargo build --release --bin berth --example ecr_load --example gc_load) >&2 \
    || die "cargo build failed"
[ -x "$BERTH_BIN" ] && [ -x "$ECR_LOAD" ] && [ -x "$GC_LOAD" ] || die "missing binaries after the build"
T_BUILT=$EPOCHREALTIME

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-lcgc-bench.XXXXXX") || die "mktemp failed"
BERTH_PID=""
PEER_PID=""
SEED_PID=""

stop_pid() { # pid: TERM, wait up to 10 s, then KILL (and say so)
    local pid=$1 i cmd
    [ -n "$pid" ] || return 0
    cmd=$(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-70)
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -KILL "$pid" 2>/dev/null; then
        declare -F note >/dev/null && note "pid $pid ($cmd) did not exit within 10 s of SIGTERM; killed"
    fi
    wait "$pid" 2>/dev/null
    return 0
}
cleanup() {
    stop_pid "$SEED_PID"; SEED_PID=""
    stop_pid "$BERTH_PID"; BERTH_PID=""
    stop_pid "$PEER_PID"; PEER_PID=""
    if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
BERTH_PORT=$(free_port)
PEER_PORT=$(free_port)
while [ "$PEER_PORT" = "$BERTH_PORT" ]; do PEER_PORT=$(free_port); done
BERTH_URL=http://127.0.0.1:$BERTH_PORT
PEER_URL=http://127.0.0.1:$PEER_PORT

wait_up() { # name pid url: poll for up to 60 s until the server answers at all
    local name=$1 pid=$2 url=$3 i code=000
    for i in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup (see $TMP/$name.log)"
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url")
        [ "$code" != 000 ] && return 0
        sleep 0.1
    done
    die "$name did not answer $url within 60 s"
}
start_berth() { # data-dir [serve args...]
    local dir=$1; shift
    [ -z "$BERTH_PID" ] || die "start_berth: a server is already running"
    BERTH_LOG=warn BERTH_ACCOUNT_ID=$ACCOUNT BERTH_ROOT_ACCESS_KEY_ID=$AKID \
        BERTH_ROOT_SECRET_ACCESS_KEY=$SECRET \
        "$BERTH_BIN" serve --listen "127.0.0.1:$BERTH_PORT" --data-dir "$dir" "$@" \
        >>"$TMP/berth.log" 2>&1 &
    BERTH_PID=$!
    wait_up berth "$BERTH_PID" "$BERTH_URL/v2/"
}
stop_berth() { stop_pid "$BERTH_PID"; BERTH_PID=""; }

mkdir -p "$TMP/peer-data"
cat >"$TMP/peer-config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/peer-data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$PEER_PORT
  secret: $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
EOF
start_peer() {
    "$PEER_BIN" serve "$TMP/peer-config.yml" >>"$TMP/peer.log" 2>&1 &
    PEER_PID=$!
    wait_up peer "$PEER_PID" "$PEER_URL/v2/"
}

# The berth CLI on a data directory, beside the running server (warn-level logs:
# an expiry is logged per image at info level).
berth_cli() { BERTH_LOG=warn timeout "$CLI_TIMEOUT" "$BERTH_BIN" "$@"; }
failed() { # what rc stderr-file: a note for a failed timed command
    if [ "$2" = 124 ]; then note "$1: timed out after $CLI_TIMEOUT s (CLI_TIMEOUT)"
    else note "$1: exit $2: $(tail -c 300 "$3")"; fi
}
ecr() { timeout 1800 "$ECR_LOAD" --endpoint "$BERTH_URL" --access-key-id "$AKID" \
            --secret-access-key "$SECRET" --region us-east-1 "$@"; }
gcl() { local url=$1; shift; timeout 1800 "$GC_LOAD" --endpoint "$url" "$@"; }

cpu_secs() { # pid: user+system CPU seconds so far (all threads)
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null
}
metric() { # name: one sample of Berth's /metrics (empty if absent)
    curl -s -m 5 "$BERTH_URL/metrics" | awk -v n="$1" '$1 == n { print $2; exit }'
}
wait_gc_idle() { # wait (up to 600 s) until the server completed a GC run and none is running
    local i runs running
    for i in $(seq 6000); do
        runs=$(metric berth_gc_runs_total); running=$(metric berth_gc_running)
        [ "${runs:-0}" -ge 1 ] && [ "${running:-1}" = 0 ] && return 0
        sleep 0.1
    done
    note "berth: no completed GC run 600 s after start (runs=${runs:-?} running=${running:-?})"
    return 1
}

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
calc() { awk "BEGIN { printf \"%.1f\", $* }"; }
calc3() { awk "BEGIN { printf \"%.3f\", $* }"; }
now() { echo "$EPOCHREALTIME"; }
count_files() { find "$1" -type f 2>/dev/null | wc -l; }
restore() { # template dir: replace dir with a copy of template
    rm -rf "$2" && cp -a "$1" "$2" || die "copying $1 to $2 failed"
    sync
}

declare -A BEST   # key -> best value over runs (lowest for times)
declare -A INFO   # key -> free text for the table
declare -A ALL    # key -> every run's value, space-separated
NOTES=()
note() { NOTES+=("$*"); log "NOTE: $*"; }
keep_min() { # key value
    local cur=${BEST[$1]:-}
    [ -n "$2" ] || return 0
    if [ -z "$cur" ] || awk "BEGIN { exit !($2 < $cur) }"; then BEST[$1]=$2; fi
}
keep_max() {
    local cur=${BEST[$1]:-}
    [ -n "$2" ] || return 0
    if [ -z "$cur" ] || awk "BEGIN { exit !($2 > $cur) }"; then BEST[$1]=$2; fi
}
seed_ok() { # info-key label json-file expected-ok: INFO[key]="N in S s (R/s)"; notes errors
    local ok errs
    ok=$(jget "$3" ok); errs=$(jget "$3" errors)
    [ "${errs:-1}" = 0 ] && [ "${ok:-0}" = "$4" ] \
        || note "$2: ${ok:-?} of $4 ok, ${errs:-?} errors, first: $(jget "$3" first_error)"
    INFO[$1]="${ok:-?} in $(jget "$3" secs) s ($(jget "$3" per_s)/s)"
}

# ================================================================= 1. lifecycle
policy() { # countNumber
    printf '{"rules":[{"rulePriority":1,"description":"keep the newest %s","selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":%s},"action":{"type":"expire"}}]}' "$1" "$1"
}
lc_summary() { # json file of `berth lifecycle run`: "<evaluations> <expired>"
    python3 -c 'import json,sys
try:
    e = json.load(open(sys.argv[1]))["evaluations"]
    print(len(e), sum(len(x["expired"]) for x in e))
except Exception as x:
    print("? ?")' "$1"
}
BIG=bench/big-00000
LC_SERVE=(--gc-interval 24h --lifecycle-interval 24h)
if part lifecycle; then
    T0=$(now)
    LCD=$TMP/lc-data
    mkdir -p "$LCD"
    start_berth "$LCD" "${LC_SERVE[@]}"
    log "lifecycle: CreateRepository + blobs + PutLifecyclePolicy: $BIG (keep $LC_KEEP_BIG), $LC_REPOS x bench/many-NNNNN (keep $LC_KEEP_SMALL)"
    ecr lifecycle-setup --prefix bench/big- --repos 1 --policy "$(policy "$LC_KEEP_BIG")" \
        >"$TMP/lc.setup.big.json" 2>"$TMP/lc.err" || note "lifecycle-setup (big) failed: $(head -c 300 "$TMP/lc.err")"
    ecr lifecycle-setup --prefix bench/many- --repos "$LC_REPOS" --policy "$(policy "$LC_KEEP_SMALL")" \
        --concurrency "$SEED_CONC" >"$TMP/lc.setup.many.json" 2>"$TMP/lc.err" \
        || note "lifecycle-setup (many) failed: $(head -c 300 "$TMP/lc.err")"
    seed_ok lc.setup.big "lifecycle-setup big" "$TMP/lc.setup.big.json" 1
    seed_ok lc.setup "lifecycle-setup many" "$TMP/lc.setup.many.json" "$LC_REPOS"
    # Evaluate the new policies once while the repositories are empty (untimed): the
    # server's scheduler then has nothing due for 24 h and cannot race the timed runs,
    # whether or not it acts on a policy as soon as it is put.
    berth_cli lifecycle run --data-dir "$LCD" >"$TMP/lc.prime.json" 2>"$TMP/lc.prime.err" \
        || note "priming lifecycle run failed: $(head -c 300 "$TMP/lc.prime.err")"
    read -r ev ex <<<"$(lc_summary "$TMP/lc.prime.json")"
    # (The server may have claimed some of them first; either way they are evaluated.)
    [ "$ex" = 0 ] || note "priming lifecycle run: expected 0 expiries on empty repositories, got $ex"
    log "lifecycle: seeding $LC_IMAGES images into $BIG"
    ecr lifecycle-seed --prefix bench/big- --repos 1 --images "$LC_IMAGES" --concurrency "$SEED_CONC" \
        >"$TMP/lc.seed.big.json" 2>"$TMP/lc.err" || note "lifecycle-seed (big) failed: $(head -c 300 "$TMP/lc.err")"
    seed_ok lc.seed.big "lifecycle-seed big" "$TMP/lc.seed.big.json" "$LC_IMAGES"
    log "lifecycle: seeding $LC_REPOS x $LC_REPO_IMAGES images"
    ecr lifecycle-seed --prefix bench/many- --repos "$LC_REPOS" --images "$LC_REPO_IMAGES" \
        --concurrency "$SEED_CONC" >"$TMP/lc.seed.many.json" 2>"$TMP/lc.err" \
        || note "lifecycle-seed (many) failed: $(head -c 300 "$TMP/lc.err")"
    seed_ok lc.seed.many "lifecycle-seed many" "$TMP/lc.seed.many.json" $((LC_REPOS * LC_REPO_IMAGES))
    ecr count-images --prefix bench/big- --repos 1 >"$TMP/lc.count0.big.json" 2>/dev/null
    ecr count-images --prefix bench/many- --repos "$LC_REPOS" --concurrency "$SEED_CONC" >"$TMP/lc.count0.many.json" 2>/dev/null
    n=$(jget "$TMP/lc.count0.big.json" images); m=$(jget "$TMP/lc.count0.many.json" images)
    [ "$n" = "$LC_IMAGES" ] || note "before: ListImages counts ${n:-?} images in $BIG, expected $LC_IMAGES"
    [ "$m" = $((LC_REPOS * LC_REPO_IMAGES)) ] || note "before: ListImages counts ${m:-?} images in bench/many-*, expected $((LC_REPOS * LC_REPO_IMAGES))"
    stop_berth
    cp -a "$LCD" "$TMP/lc-template" || die "copying the lifecycle data directory failed"
    T_LC_SEEDED=$(now)
    INFO[lc.seedtime]=$(awk "BEGIN { printf \"%.0f\", $T_LC_SEEDED - $T0 }")

    EXP_BIG=$(( LC_IMAGES > LC_KEEP_BIG ? LC_IMAGES - LC_KEEP_BIG : 0 ))
    PER_SMALL=$(( LC_REPO_IMAGES > LC_KEEP_SMALL ? LC_REPO_IMAGES - LC_KEEP_SMALL : 0 ))
    EXP_MANY=$(( LC_REPOS * PER_SMALL ))
    LC_CHECK=PASS
    for r in $(seq "$LC_RUNS"); do
        [ "$r" = 1 ] || restore "$TMP/lc-template" "$LCD"
        start_berth "$LCD" "${LC_SERVE[@]}"
        sync

        log "run $r/$LC_RUNS lifecycle: preview $BIG ($LC_IMAGES images)"
        t0=$(now)
        berth_cli lifecycle preview --data-dir "$LCD" --repository-name "$BIG" \
            >"$TMP/lc.preview.$r.json" 2>"$TMP/lc.err" || failed "run $r: lifecycle preview" $? "$TMP/lc.err"
        t1=$(now)
        got=$(jget "$TMP/lc.preview.$r.json" summary expiringImageTotalCount)
        if [ "$got" = "$EXP_BIG" ]; then keep_min lc.preview "$(calc3 "$t1 - $t0")"
        else LC_CHECK=MISS; note "run $r: preview of $BIG: expiringImageTotalCount ${got:-?}, expected $EXP_BIG"; fi

        log "run $r/$LC_RUNS lifecycle: run $BIG (expires $EXP_BIG)"
        t0=$(now)
        berth_cli lifecycle run --data-dir "$LCD" --repository-name "$BIG" \
            >"$TMP/lc.run.big.$r.json" 2>"$TMP/lc.err" || failed "run $r: lifecycle run $BIG" $? "$TMP/lc.err"
        t1=$(now)
        read -r ev ex <<<"$(lc_summary "$TMP/lc.run.big.$r.json")"
        if [ "$ev" = 1 ] && [ "$ex" = "$EXP_BIG" ]; then keep_min lc.big "$(calc3 "$t1 - $t0")"
        else LC_CHECK=MISS; note "run $r: lifecycle run $BIG: $ev evaluations, $ex expired; expected 1, $EXP_BIG"; fi

        log "run $r/$LC_RUNS lifecycle: run over every repository ($LC_REPOS x $LC_REPO_IMAGES + $BIG)"
        t0=$(now)
        berth_cli lifecycle run --data-dir "$LCD" >"$TMP/lc.run.all.$r.json" 2>"$TMP/lc.err" \
            || failed "run $r: lifecycle run (all)" $? "$TMP/lc.err"
        t1=$(now)
        read -r ev ex <<<"$(lc_summary "$TMP/lc.run.all.$r.json")"
        if [ "$ev" = $((LC_REPOS + 1)) ] && [ "$ex" = "$EXP_MANY" ]; then keep_min lc.all "$(calc3 "$t1 - $t0")"
        else LC_CHECK=MISS; note "run $r: lifecycle run (all): $ev evaluations, $ex expired; expected $((LC_REPOS + 1)), $EXP_MANY"; fi

        ecr count-images --prefix bench/big- --repos 1 >"$TMP/lc.count.big.$r.json" 2>/dev/null
        ecr count-images --prefix bench/many- --repos "$LC_REPOS" --concurrency "$SEED_CONC" \
            >"$TMP/lc.count.many.$r.json" 2>/dev/null
        n=$(jget "$TMP/lc.count.big.$r.json" images)
        lo=$(jget "$TMP/lc.count.many.$r.json" min); hi=$(jget "$TMP/lc.count.many.$r.json" max)
        keep=$(( LC_REPO_IMAGES < LC_KEEP_SMALL ? LC_REPO_IMAGES : LC_KEEP_SMALL ))
        keepb=$(( LC_IMAGES < LC_KEEP_BIG ? LC_IMAGES : LC_KEEP_BIG ))
        if [ "$n" != "$keepb" ] || [ "$lo" != "$keep" ] || [ "$hi" != "$keep" ]; then
            LC_CHECK=MISS
            note "run $r: after expiry ListImages counts ${n:-?} images in $BIG (expected $keepb), ${lo:-?}..${hi:-?} per bench/many-* repository (expected $keep)"
        fi
        stop_berth
    done
    INFO[lc.check]=$LC_CHECK
    rm -rf "$TMP/lc-template"
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$LCD"
fi
T_LC=$(now)

# ================================================================= 2. GC
GCD=$TMP/gc-data
PD=$TMP/peer-data
GC_SERVE=(--auth none --gc-interval 24h --gc-grace 24h)
if part gc; then
    mkdir -p "$GCD"
    start_berth "$GCD" "${GC_SERVE[@]}"
    start_peer
    log "gc: pushing $GC_BLOBS unreferenced ${GC_BLOB_SIZE} B blobs to berth and distribution (at the same time, $SEED_CONC connections each)"
    gcl "$PEER_URL" blobs --repo gc/garbage --count "$GC_BLOBS" --size "$GC_BLOB_SIZE" \
        --concurrency "$SEED_CONC" --mode post-put >"$TMP/gc.seed.peer.json" 2>"$TMP/gc.seed.peer.err" &
    SEED_PID=$!
    gcl "$BERTH_URL" blobs --repo gc/garbage --count "$GC_BLOBS" --size "$GC_BLOB_SIZE" \
        --concurrency "$SEED_CONC" --mode post >"$TMP/gc.seed.berth.json" 2>"$TMP/gc.seed.berth.err" \
        || note "berth: blob seeding failed: $(head -c 300 "$TMP/gc.seed.berth.err")"
    wait "$SEED_PID" || note "distribution: blob seeding failed: $(head -c 300 "$TMP/gc.seed.peer.err")"
    SEED_PID=""
    seed_ok gc.seed.berth "berth blob seeding" "$TMP/gc.seed.berth.json" "$GC_BLOBS"
    seed_ok gc.seed.peer "distribution blob seeding" "$TMP/gc.seed.peer.json" "$GC_BLOBS"
    stop_berth
    stop_pid "$PEER_PID"; PEER_PID=""
    nb=$(count_files "$GCD/storage/blobs"); np=$(find "$PD/docker/registry/v2/blobs" -name data -type f | wc -l)
    [ "$nb" = "$GC_BLOBS" ] || note "berth: $nb blob files after seeding, expected $GC_BLOBS"
    [ "$np" = "$GC_BLOBS" ] || note "distribution: $np blob data files after seeding, expected $GC_BLOBS"
    log "gc: copying both data directories (templates for the runs)"
    cp -a "$GCD" "$TMP/gc-template" && cp -a "$PD" "$TMP/peer-template" || die "copying the GC data directories failed"
    sync
    GC_CHECK=PASS
    for r in $(seq "$GC_RUNS"); do
        if [ "$r" != 1 ]; then restore "$TMP/gc-template" "$GCD"; restore "$TMP/peer-template" "$PD"; fi
        start_berth "$GCD" "${GC_SERVE[@]}"
        wait_gc_idle   # its start-up collection (grace 24h: deletes nothing) must not overlap ours
        sync
        log "run $r/$GC_RUNS gc: berth gc run --gc-grace 1s (server running)"
        t0=$(now)
        berth_cli gc run --data-dir "$GCD" --gc-grace 1s >"$TMP/gc.berth.$r.json" 2>"$TMP/gc.err" \
            || failed "run $r: berth gc run" $? "$TMP/gc.err"
        t1=$(now)
        del=$(jget "$TMP/gc.berth.$r.json" blobs_deleted)
        left=$(count_files "$GCD/storage/blobs")
        if [ "$del" = "$GC_BLOBS" ] && [ "$left" = 0 ]; then
            keep_min gc.berth "$(calc3 "$t1 - $t0")"
            keep_min gc.berth_ms "$(jget "$TMP/gc.berth.$r.json" duration_ms)"
        else
            GC_CHECK=MISS
            note "run $r: berth gc run: blobs_deleted ${del:-?} (expected $GC_BLOBS), $left blob files left; report $(tr -d ' \n' <"$TMP/gc.berth.$r.json" | head -c 300)"
        fi
        INFO[gc.berth.left]=$left
        stop_berth

        sync
        log "run $r/$GC_RUNS gc: docker-registry garbage-collect (distribution stopped)"
        t0=$(now)
        timeout "$CLI_TIMEOUT" "$PEER_BIN" garbage-collect "$TMP/peer-config.yml" >"$TMP/gc.peer.$r.out" 2>&1 \
            || failed "run $r: docker-registry garbage-collect" $? "$TMP/gc.peer.$r.out"
        t1=$(now)
        pdel=$(awk '/eligible for deletion$/ && /blobs and/ { for (i = 1; i <= NF; i++) if ($(i+1) == "blobs" && $(i+2) == "and") print $i }' "$TMP/gc.peer.$r.out" | tail -1)
        pleft=$(find "$PD/docker/registry/v2/blobs" -name data -type f | wc -l)
        plinks=$(find "$PD/docker/registry/v2/repositories" -path '*/_layers/*' -name link -type f | wc -l)
        if [ "$pdel" = "$GC_BLOBS" ] && [ "$pleft" = 0 ]; then
            keep_min gc.peer "$(calc3 "$t1 - $t0")"
        else
            note "run $r: distribution garbage-collect: ${pdel:-?} blobs eligible (expected $GC_BLOBS), $pleft blob data files left"
        fi
        INFO[gc.peer.left]="$pleft (+$plinks links)"
    done
    INFO[gc.check]=$GC_CHECK
    rm -rf "$TMP/peer-template"
fi
T_GC=$(now)

# ================================================================= 3. push with/without GC
PSD=$TMP/push-data
if part push; then
    # Template: GC_POOL unreferenced blobs + CHURN_IMAGES small images. Reuses the GC
    # section's seeded Berth data when there is one.
    rm -rf "$PSD"
    have=0
    if [ -d "$TMP/gc-template" ]; then cp -a "$TMP/gc-template" "$PSD"; have=$GC_BLOBS; else mkdir -p "$PSD"; fi
    start_berth "$PSD" --auth none --gc-interval 24h --gc-grace 24h
    if [ "$have" -lt "$GC_POOL" ]; then
        log "push: seeding $((GC_POOL - have)) more unreferenced blobs (pool of $GC_POOL)"
        gcl "$BERTH_URL" blobs --repo pool/garbage --seed 2 --count $((GC_POOL - have)) --size "$GC_BLOB_SIZE" \
            --concurrency "$SEED_CONC" >"$TMP/push.seed.pool.json" 2>"$TMP/push.err" \
            || note "pool seeding failed: $(head -c 300 "$TMP/push.err")"
        seed_ok push.seed.pool "pool seeding" "$TMP/push.seed.pool.json" $((GC_POOL - have))
    fi
    POOL=$(( have > GC_POOL ? have : GC_POOL ))
    log "push: seeding $CHURN_IMAGES small images for the deleter"
    gcl "$BERTH_URL" small-images --repo churn/victims --count "$CHURN_IMAGES" --concurrency "$SEED_CONC" \
        >"$TMP/push.seed.victims.json" 2>"$TMP/push.err" || note "victim seeding failed: $(head -c 300 "$TMP/push.err")"
    seed_ok push.seed.victims "victim seeding" "$TMP/push.seed.victims.json" "$CHURN_IMAGES"
    stop_berth
    rm -rf "$TMP/gc-template"
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$GCD"
    mv "$PSD" "$TMP/push-template" || die "moving the push template failed"
    sync

    push_run() { # mode run
        local mode=$1 r=$2 out=$TMP/push.$1.$2.json d0 d1 g0 g1 run0 run1 mibs c0 c1
        restore "$TMP/push-template" "$PSD"
        if [ "$mode" = A ]; then
            start_berth "$PSD" --auth none --gc-interval 24h --gc-grace 24h
            wait_gc_idle
        else
            start_berth "$PSD" --auth none --gc-interval 1s --gc-grace 1s
        fi
        d0=$(metric berth_gc_blobs_deleted_total); run0=$(metric berth_gc_runs_total); g0=$(metric berth_gc_running)
        c0=$(cpu_secs "$BERTH_PID")
        log "run $r/$RUNS push $mode: $PUSH_IMAGES x $PUSH_LAYER_MIB MiB, $PUSH_CONC clients, deleter $CHURN_RATE/s"
        gcl "$BERTH_URL" images --repo push/app --count "$PUSH_IMAGES" --layer-size $((PUSH_LAYER_MIB << 20)) \
            --concurrency "$PUSH_CONC" --churn-repo churn/victims --churn-count "$CHURN_IMAGES" \
            --churn-rate "$CHURN_RATE" >"$out" 2>"$TMP/push.err" \
            || { note "push $mode run $r: generator failed: $(head -c 300 "$TMP/push.err")"; stop_berth; return; }
        c1=$(cpu_secs "$BERTH_PID")
        d1=$(metric berth_gc_blobs_deleted_total); run1=$(metric berth_gc_runs_total); g1=$(metric berth_gc_running)
        stop_berth
        local errs cerr
        errs=$(jget "$out" errors); cerr=$(jget "$out" churn_errors)
        [ "${errs:-1}" = 0 ] || note "push $mode run $r: ${errs:-?} errors, first: $(jget "$out" first_error)"
        [ "${cerr:-1}" = 0 ] || note "push $mode run $r: ${cerr:-?} deleter errors, first: $(jget "$out" churn_first_error)"
        [ "$(jget "$out" churn_exhausted)" != True ] || note "push $mode run $r: the deleter ran out of images (raise CHURN_IMAGES)"
        mibs=$(jget "$out" mib_per_s)
        if [ "${errs:-1}" = 0 ] && [ -n "$mibs" ]; then
            ALL[push.$mode]="${ALL[push.$mode]:-} $mibs"
            local cur=${BEST[push.$mode]:-}
            if [ -z "$cur" ] || awk "BEGIN { exit !($mibs > $cur) }"; then
                BEST[push.$mode]=$mibs
                BEST[push.$mode.secs]=$(jget "$out" secs)
                BEST[push.$mode.churn]=$(jget "$out" churn_deleted)
                BEST[push.$mode.gcdel]=$(( ${d1:-0} - ${d0:-0} ))
                BEST[push.$mode.gcruns]=$(( ${run1:-0} - ${run0:-0} ))
                BEST[push.$mode.gcrunning]="${g0:-?}/${g1:-?}"
                BEST[push.$mode.cpu]=$(calc "${c1:-0} - ${c0:-0}")
            fi
        fi
    }
    for r in $(seq "$RUNS"); do
        push_run A "$r"
        push_run B "$r"
    done
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$PSD" "$TMP/push-template"
fi
T_END=$(now)

# ================================================================= table
v() { echo "${BEST[$1]:-}"; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo MISS; fi; }
row() { printf '%-48s %17s %17s %8s  %-16s %s\n' "$@"; }
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
rate() { [ -n "$2" ] && awk "BEGIN { if ($2 > 0) printf \"%.0f\", $1 / $2 }"; }
ratio() { if [ -n "$1" ] && [ -n "$2" ] && awk "BEGIN { exit !($2 > 0) }"; then awk "BEGIN { printf \"%.2fx\", $1 / $2 }"; else echo "-"; fi; }
secs() { awk "BEGIN { printf \"%.0f\", $2 - $1 }"; }

echo
echo "== Lifecycle and GC: Berth$(part gc && echo " vs Distribution ($("$PEER_BIN" --version 2>/dev/null | awk '{print $NF}'))" || true), best of $RUNS (lifecycle $LC_RUNS, gc $GC_RUNS); $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "== berth $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty'), $(date -u +%Y-%m-%dT%H:%MZ)"
row "metric" "berth" "distribution" "ratio" "target" "result"
if part lifecycle; then
    P=$(v lc.preview); B=$(v lc.big); A=$(v lc.all)
    NALL=$((LC_REPOS * LC_REPO_IMAGES + (LC_IMAGES < LC_KEEP_BIG ? LC_IMAGES : LC_KEEP_BIG)))
    row "lifecycle preview, 1 repo x $LC_IMAGES (s)" "${P:--}" "-" "-" "-" "-"
    row "  images evaluated/s" "$(rate "$LC_IMAGES" "$P")" "-" "-" "-" "-"
    row "lifecycle run, 1 repo x $LC_IMAGES, expire $EXP_BIG (s)" "${B:--}" "-" "-" "-" "-"
    row "  images evaluated/s; expired/s" "$(rate "$LC_IMAGES" "$B"); $(rate "$EXP_BIG" "$B")" "-" "-" "-" "-"
    row "lifecycle run, $LC_REPOS repos x $LC_REPO_IMAGES, expire $EXP_MANY (s)" "${A:--}" "-" "-" "-" "-"
    row "  images evaluated/s; repositories/s" "$(rate "$NALL" "$A"); $(rate $((LC_REPOS + 1)) "$A")" "-" "-" "-" "-"
    row "  expiries and ListImages afterwards" "${INFO[lc.check]:-?}" "-" "-" "as the policies" "${INFO[lc.check]:-MISS}"
fi
if part gc; then
    GB=$(v gc.berth); GP=$(v gc.peer)
    RB=$(rate "$GC_BLOBS" "$GB"); RP=$(rate "$GC_BLOBS" "$GP")
    row "GC $GC_BLOBS unreferenced blobs, wall (s)" "${GB:--}" "${GP:--}" "$(ratio "$GP" "$GB")" "-" "-"
    row "  blobs deleted/s" "${RB:--}" "${RP:--}" "$(ratio "$RB" "$RP")" "-" "-"
    row "  mode" "online" "offline" "-" "-" "-"
    row "  berth report duration_ms" "$(v gc.berth_ms)" "-" "-" "-" "-"
    row "  deleted = $GC_BLOBS, blob files left" "${INFO[gc.berth.left]:--}" "${INFO[gc.peer.left]:--}" "-" "all, 0 left" "${INFO[gc.check]:-MISS}"
fi
if part push; then
    PA=$(v push.A); PB=$(v push.B)
    row "push ${PUSH_IMAGES}x${PUSH_LAYER_MIB} MiB, c$PUSH_CONC, GC idle (MiB/s)" "${PA:--}" "-" "-" "-" "-"
    row "push ${PUSH_IMAGES}x${PUSH_LAYER_MIB} MiB, c$PUSH_CONC, GC running (MiB/s)" "${PB:--}" "-" "-" "-" "-"
    if [ -n "$PA" ] && [ -n "$PB" ]; then
        LOSS=$(calc "100 * (1 - $PB / $PA)")
        row "  B/A (push cost of GC)" "$(ratio "$PB" "$PA") ($LOSS%)" "-" "-" "loss < 10%" "$(verdict "$LOSS < 10")"
    else
        row "  B/A (push cost of GC)" "-" "-" "-" "loss < 10%" "MISS(no data)"
    fi
    MA=$(median <<<"${ALL[push.A]:-}"); MB=$(median <<<"${ALL[push.B]:-}")
    if [ -n "$MA" ] && [ -n "$MB" ]; then
        row "  medians A; B (B/A)" "$MA; $MB" "-" "$(ratio "$MB" "$MA")" "-" "-"
    fi
    row "  server CPU s in the best window (A; B)" "$(v push.A.cpu); $(v push.B.cpu)" "-" "-" "-" "-"
    row "  GC in B's window: runs; blobs deleted" "$(v push.B.gcruns); $(v push.B.gcdel)" "-" "-" "-" "-"
    row "  GC running at start/end of B's window" "$(v push.B.gcrunning)" "-" "-" "-" "-"
    row "  images deleted meanwhile (A; B)" "$(v push.A.churn); $(v push.B.churn)" "-" "-" "-" "-"
fi
part lifecycle && echo "lifecycle seeding (not counted): $((LC_REPOS + 1)) repositories with blobs and policy ${INFO[lc.setup]:-?}; PutImage $BIG ${INFO[lc.seed.big]:-?}, bench/many-* ${INFO[lc.seed.many]:-?}; ${INFO[lc.seedtime]:-?} s in all"
part gc && echo "gc seeding (concurrently, not counted): berth (POST ?digest=) ${INFO[gc.seed.berth]:-?}; distribution (POST + PUT) ${INFO[gc.seed.peer]:-?}"
part push && echo "push runs (MiB/s, in order): A:${ALL[push.A]:- -}; B:${ALL[push.B]:- -}"
part push && echo "push data set: $POOL unreferenced blobs (${INFO[push.seed.pool]:-from the gc section}), $CHURN_IMAGES small images (${INFO[push.seed.victims]:-?}); A: --gc-interval 24h, B: --gc-interval 1s --gc-grace 1s"
echo "wall time: build $(secs "$T_START" "$T_BUILT") s, lifecycle $(secs "$T_BUILT" "$T_LC") s, gc $(secs "$T_LC" "$T_GC") s, push $(secs "$T_GC" "$T_END") s"

if [ ${#NOTES[@]} -gt 0 ]; then
    echo "notes:"
    printf '  - %s\n' "${NOTES[@]}"
fi
for s in berth peer; do
    [ -f "$TMP/$s.log" ] || continue
    n=$(grep -ciE 'error|warn|panic' "$TMP/$s.log" 2>/dev/null); n=${n:-0}
    if [ "$n" != 0 ]; then
        echo "$s log: $n error/warn lines, last ones:"
        grep -iE 'error|warn|panic' "$TMP/$s.log" | tail -n 3 | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-240 | sed 's/^/    /'
    fi
done
exit 0
