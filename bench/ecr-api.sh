#!/usr/bin/env bash
# ECR API benchmark: Berth vs moto's server (moto_server, pip 'moto[server]'),
# side by side on 127.0.0.1, same data set, same load generator, one run.
#
# Usage: bench/ecr-api.sh [-n RUNS]
#   RUNS (default 2)       best of N for every throughput number (both servers)
# Environment knobs (all optional):
#   IMAGES=20000           images (PutImage, each tagged) in one repository
#   REPOS=10000            extra repositories (CreateRepository)
#   CONC=16                concurrent keep-alive connections of the load generator
#   MOTO_PAGE_CONC=1       connections for moto's paged operations (see below)
#   LOAD_SECS=10           duration of each load run (generator and wrk)
#   LAT_SECS=5             duration of each unloaded (1 connection) Berth latency run
#   SEED_CONC=8            connections used for seeding
#   MOTO_BIN=moto_server
#   KEEP_TMP=1             keep the temp dir (data dirs, server logs, JSON results)
#
# Seeds both servers (concurrently; seeding time is reported, not counted),
# then measures with examples/ecr_load.rs (SigV4-signed AWS JSON 1.1 over
# reqwest keep-alive connections): DescribeImages, ListImages and
# DescribeRepositories pages (maxResults=100, walking nextToken, restarting at
# the end) and GetAuthorizationToken: requests/s, items/s, p50/p99, errors,
# server CPU per request. Then /v2/ manifest GET with wrk: Basic token auth
# on Berth (--auth ecr) vs the same data on a Berth started with --auth none.
# moto ignores maxResults/nextToken and returns every item on every call, and
# serves one request at a time (GIL), so its paged operations run with
# MOTO_PAGE_CONC connections: more only queue (16 DescribeImages calls in
# flight take ~2 minutes to finish), they do not add throughput.
# Prints a table with PASS/MISS against the targets; always exits 0 once the
# benchmark has run (it is a benchmark, not a test).

set -uo pipefail

RUNS=${RUNS:-2}
while [ $# -gt 0 ]; do
    case "$1" in
        -n|--runs) RUNS=${2:?-n needs a number}; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
num_ok() { case "$1" in ''|*[!0-9]*) return 1 ;; *) [ "$1" -gt 0 ] ;; esac; }
for v in RUNS; do num_ok "${!v}" || { echo "$v must be a positive integer" >&2; exit 2; }; done
[ "$RUNS" -le 10 ] || { echo "RUNS is capped at 10" >&2; exit 2; }
IMAGES=${IMAGES:-20000}
REPOS=${REPOS:-10000}
CONC=${CONC:-16}
MOTO_PAGE_CONC=${MOTO_PAGE_CONC:-1}
LOAD_SECS=${LOAD_SECS:-10}
LAT_SECS=${LAT_SECS:-5}
SEED_CONC=${SEED_CONC:-8}
MOTO_BIN=${MOTO_BIN:-moto_server}
for v in IMAGES REPOS CONC MOTO_PAGE_CONC LOAD_SECS LAT_SECS SEED_CONC; do
    num_ok "${!v}" || { echo "$v must be a positive integer" >&2; exit 2; }
done
[ "$IMAGES" -le 99999 ] && [ "$REPOS" -le 99999 ] || { echo "IMAGES and REPOS are capped at 99999" >&2; exit 2; }
[ "$LOAD_SECS" -le 120 ] && [ "$LAT_SECS" -le 120 ] || { echo "LOAD_SECS/LAT_SECS are capped at 120" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BERTH_BIN=$ROOT/target/release/berth
LOAD_BIN=$ROOT/target/release/examples/ecr_load
ACCOUNT=123456789012
AKID=AKIAIOSFODNN7EXAMPLE
SECRET=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
IMAGE_REPO=bench/images
# Never let the caller's Berth settings leak into the benchmarked servers.
unset BERTH_CONFIG BERTH_LISTEN BERTH_DATA_DIR BERTH_UPLOAD_MAX_AGE BERTH_AUTH \
      BERTH_UPLOAD_REAP_INTERVAL BERTH_MAX_MANIFEST_BYTES BERTH_REGION \
      BERTH_REGISTRY_HOST BERTH_MASTER_KEY
# No proxies for loopback traffic (curl, wrk and reqwest are told directly too).
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for tool in curl wrk python3 awk timeout cargo; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install wrk curl)"
done
command -v "$MOTO_BIN" >/dev/null || die "missing $MOTO_BIN (python3 -m pip install 'moto[server]')"

T_START=$EPOCHREALTIME
log "building berth and the load generator (cargo build --release --bin berth --example ecr_load)"
(cd "$ROOT" && cargo build --release --bin berth --example ecr_load) >&2 || die "cargo build failed"
[ -x "$BERTH_BIN" ] && [ -x "$LOAD_BIN" ] || die "no $BERTH_BIN or $LOAD_BIN after the build"
T_BUILT=$EPOCHREALTIME

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-ecr-bench.XXXXXX") || die "mktemp failed"
BERTH_PID=""
NONE_PID=""
MOTO_PID=""
SEED_PID=""

stop_pid() { # pid: TERM, wait up to 5 s, then KILL
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}
cleanup() {
    stop_pid "$SEED_PID"; SEED_PID=""
    stop_pid "$BERTH_PID"; BERTH_PID=""
    stop_pid "$NONE_PID"; NONE_PID=""
    stop_pid "$MOTO_PID"; MOTO_PID=""
    if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
declare -A PORT=()
for s in berth moto none; do
    p=$(free_port)
    while [ "$p" = "${PORT[berth]:-}" ] || [ "$p" = "${PORT[moto]:-}" ]; do p=$(free_port); done
    PORT[$s]=$p
done
declare -A BASE=([berth]="http://127.0.0.1:${PORT[berth]}" [moto]="http://127.0.0.1:${PORT[moto]}"
                 [none]="http://127.0.0.1:${PORT[none]}")

wait_up() { # name pid url: poll for up to 30 s until the server answers at all
    local name=$1 pid=$2 url=$3 i code=000
    for i in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup (see $TMP/$name.log)"
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url")
        [ "$code" != 000 ] && return 0
        sleep 0.1
    done
    die "$name did not answer $url within 30 s"
}

start_berth() { # name data-dir [extra args]
    local name=$1 dir=$2; shift 2
    BERTH_LOG=warn BERTH_ACCOUNT_ID=$ACCOUNT BERTH_ROOT_ACCESS_KEY_ID=$AKID \
        BERTH_ROOT_SECRET_ACCESS_KEY=$SECRET \
        "$BERTH_BIN" serve --listen "127.0.0.1:${PORT[$name]}" --data-dir "$dir" "$@" \
        >>"$TMP/$name.log" 2>&1 &
    local pid=$!
    if [ "$name" = berth ]; then BERTH_PID=$pid; else NONE_PID=$pid; fi
    wait_up "$name" "$pid" "${BASE[$name]}/v2/"
}
pid_of() { case "$1" in berth) echo "$BERTH_PID" ;; moto) echo "$MOTO_PID" ;; none) echo "$NONE_PID" ;; esac; }
cpu_secs() { # pid: user+system CPU seconds so far (all threads)
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null
}
calc() { awk "BEGIN { printf \"%.1f\", $* }"; }
jget() { # file key: one field of the generator's JSON output (empty if null/missing)
    python3 -c 'import json,sys
try:
    v = json.load(open(sys.argv[1])).get(sys.argv[2])
except Exception:
    v = None
print("" if v is None else v)' "$1" "$2"
}

gen() { # server args...: run the load generator against a server (bounded)
    local s=$1; shift
    timeout 1800 "$LOAD_BIN" --endpoint "${BASE[$s]}" --access-key-id "$AKID" \
        --secret-access-key "$SECRET" --region us-east-1 "$@"
}

declare -A BEST   # "<server>.<op>.<metric>" -> value from the best-rps run
NOTES=()
note() { NOTES+=("$*"); log "NOTE: $*"; }

# ---------------------------------------------------------------- servers + seeding
mkdir -p "$TMP/berth-data"
start_berth berth "$TMP/berth-data"
"$MOTO_BIN" -H 127.0.0.1 -p "${PORT[moto]}" >>"$TMP/moto.log" 2>&1 &
MOTO_PID=$!
wait_up moto "$MOTO_PID" "${BASE[moto]}/moto-api/"

log "seeding moto in the background: $IMAGES PutImage into $IMAGE_REPO, then $REPOS CreateRepository"
(
    gen moto seed-images --repo "$IMAGE_REPO" --count "$IMAGES" --concurrency "$SEED_CONC" \
        >"$TMP/seed.moto.images.json" 2>"$TMP/seed.moto.err" &&
    gen moto create-repos --prefix bench/repo- --count "$REPOS" --concurrency "$SEED_CONC" \
        >"$TMP/seed.moto.repos.json" 2>>"$TMP/seed.moto.err"
) &
SEED_PID=$!
log "seeding berth: 1 config + 1 layer blob (layer upload API), $IMAGES PutImage, $REPOS CreateRepository"
gen berth seed-images --repo "$IMAGE_REPO" --count "$IMAGES" --concurrency "$SEED_CONC" \
    --upload-layers >"$TMP/seed.berth.images.json" 2>"$TMP/seed.berth.err" \
    || note "berth: seed-images failed: $(head -c 300 "$TMP/seed.berth.err")"
gen berth create-repos --prefix bench/repo- --count "$REPOS" --concurrency "$SEED_CONC" \
    >"$TMP/seed.berth.repos.json" 2>>"$TMP/seed.berth.err" \
    || note "berth: create-repos failed: $(head -c 300 "$TMP/seed.berth.err")"
log "berth seeded; waiting for moto's seeding (its PutImage scans every image of the repository)"
wait "$SEED_PID" || note "moto: seeding failed: $(head -c 300 "$TMP/seed.moto.err")"
SEED_PID=""
declare -A SEED=()
for s in berth moto; do
    for k in images repos; do
        f=$TMP/seed.$s.$k.json
        [ -s "$f" ] || continue
        SEED[$s.$k]="$(jget "$f" ok) in $(jget "$f" secs) s ($(jget "$f" per_s)/s)"
        e=$(jget "$f" errors)
        [ "${e:-0}" = 0 ] || note "$s: $e seeding errors ($k): $(jget "$f" first_error)"
    done
done
T_SEEDED=$EPOCHREALTIME

# ---------------------------------------------------------------- ECR API load
OPS=(describe-images list-images describe-repositories get-authorization-token)
declare -A OPNAME=([describe-images]=DescribeImages [list-images]=ListImages
                   [describe-repositories]=DescribeRepositories
                   [get-authorization-token]=GetAuthorizationToken)
measure() { # server op run
    local s=$1 op=$2 r=$3 c=$CONC pid cpu0 cpu1 out rps best req
    case "$s.$op" in moto.get-authorization-token) ;; moto.*) c=$MOTO_PAGE_CONC ;; esac
    pid=$(pid_of "$s")
    out=$TMP/load.$s.$op.$r.json
    log "run $r/$RUNS $s: ${OPNAME[$op]}, $c connections, ${LOAD_SECS}s"
    cpu0=$(cpu_secs "$pid")
    gen "$s" --threads 2 load --op "$op" --repo "$IMAGE_REPO" --duration "$LOAD_SECS" \
        --concurrency "$c" --max-results 100 --timeout 120 >"$out" 2>"$TMP/load.err" \
        || { note "$s ${OPNAME[$op]}: generator failed: $(head -c 300 "$TMP/load.err")"; return; }
    cpu1=$(cpu_secs "$pid")
    local errs; errs=$(jget "$out" errors)
    [ "${errs:-0}" = 0 ] || note "$s ${OPNAME[$op]} run $r: $errs errors, first: $(jget "$out" first_error)"
    rps=$(jget "$out" rps); req=$(jget "$out" requests)
    best=${BEST[$s.$op.rps]:-}
    if [ -n "$rps" ] && { [ -z "$best" ] || awk "BEGIN { exit !($rps > $best) }"; }; then
        for k in rps p50_ms p99_ms items_per_s items_per_page errors client_cpu_s; do
            BEST[$s.$op.$k]=$(jget "$out" $k)
        done
        BEST[$s.$op.conc]=$c
        if [ -n "$cpu0" ] && [ -n "$cpu1" ] && [ "${req:-0}" -gt 0 ]; then
            BEST[$s.$op.cpu_ms]=$(awk "BEGIN { printf \"%.2f\", 1000 * ($cpu1 - $cpu0) / $req }")
        fi
    fi
}
for r in $(seq "$RUNS"); do
    for op in "${OPS[@]}"; do
        for s in berth moto; do measure "$s" "$op" "$r"; done
    done
done
# Unloaded latency: Berth with a single connection (what one client sees).
for op in describe-images list-images describe-repositories; do
    log "berth: ${OPNAME[$op]}, 1 connection, ${LAT_SECS}s (unloaded latency)"
    if gen berth --threads 1 load --op "$op" --repo "$IMAGE_REPO" --duration "$LAT_SECS" \
            --concurrency 1 --max-results 100 >"$TMP/lat.$op.json" 2>"$TMP/load.err"; then
        BEST[berth.$op.p99_c1]=$(jget "$TMP/lat.$op.json" p99_ms)
        BEST[berth.$op.p50_c1]=$(jget "$TMP/lat.$op.json" p50_ms)
        BEST[berth.$op.rps_c1]=$(jget "$TMP/lat.$op.json" rps)
    else
        note "berth ${OPNAME[$op]} c1: generator failed: $(head -c 300 "$TMP/load.err")"
    fi
done
stop_pid "$MOTO_PID"; MOTO_PID=""

# ---------------------------------------------------------------- /v2/ manifest GET: token vs none
TOKEN=$(gen berth token 2>"$TMP/token.err" | python3 -c 'import json,sys; print(json.load(sys.stdin)["authorizationToken"])' 2>>"$TMP/token.err")
[ -n "$TOKEN" ] || note "berth: GetAuthorizationToken for wrk failed: $(head -c 300 "$TMP/token.err")"
# The same data under --auth none: stop, copy the data directory, start both.
stop_pid "$BERTH_PID"; BERTH_PID=""
cp -a "$TMP/berth-data" "$TMP/none-data" || die "copying the data directory failed"
start_berth berth "$TMP/berth-data"
start_berth none "$TMP/none-data" --auth none
ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json'
MPATH="/v2/$IMAGE_REPO/manifests/t00000"
for s in berth none; do
    hdr=(); [ "$s" = berth ] && hdr=(-H "Authorization: Basic $TOKEN")
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "${hdr[@]}" -H "Accept: $ACCEPT" "${BASE[$s]}$MPATH")
    [ "$code" = 200 ] || note "$s: GET $MPATH -> HTTP $code before wrk"
    wrk -t2 -c32 -d1s -H "Accept: $ACCEPT" "${hdr[@]}" "${BASE[$s]}$MPATH" >/dev/null 2>&1  # warm-up
done
for r in $(seq "$RUNS"); do
    for s in berth none; do
        hdr=(); [ "$s" = berth ] && hdr=(-H "Authorization: Basic $TOKEN")
        log "run $r/$RUNS $s: manifest GET, wrk -t2 -c32 -d${LOAD_SECS}s"
        out=$(wrk -t2 -c32 -d"${LOAD_SECS}s" --timeout 10s -H "Accept: $ACCEPT" "${hdr[@]}" \
            "${BASE[$s]}$MPATH" 2>&1)
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        bad=$(awk -F: '/Non-2xx or 3xx/ {gsub(/ /,"",$2); print $2}' <<<"$out")
        sockerr=$(grep -m1 'Socket errors' <<<"$out")
        if [ -n "$bad" ] || [ -n "$sockerr" ]; then
            note "$s: wrk GET: ${bad:-0} non-2xx responses; ${sockerr:-no socket errors}"
        fi
        if [ -n "$rps" ] && [ -z "$bad" ]; then
            cur=${BEST[$s.mget]:-}
            if [ -z "$cur" ] || awk "BEGIN { exit !($rps > $cur) }"; then BEST[$s.mget]=$rps; fi
        fi
    done
done
T_END=$EPOCHREALTIME

# ---------------------------------------------------------------- table
v() { echo "${BEST[$1]:-}"; }
ratio() { if [ -n "$1" ] && [ -n "$2" ] && awk "BEGIN { exit !($2 > 0) }"; then awk "BEGIN { r = $1 / $2; printf (r >= 100 ? \"%.0fx\" : \"%.1fx\"), r }"; else echo "-"; fi; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo PASS; else echo MISS; fi; }
pass_ratio() { [ -n "$1" ] && [ -n "$2" ] && verdict "$1 >= $3 * $2" || echo "MISS(no data)"; }
pass_lt() { [ -n "$1" ] && verdict "$1 < $2" || echo "MISS(no data)"; }
row() { printf '%-40s %14s %14s %9s  %-16s %s\n' "$@"; }
pair() { if [ -n "$1" ] || [ -n "$2" ]; then echo "${1:--}/${2:--}"; else echo "-"; fi; }

echo
echo "== Berth vs moto $(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null) (moto_server), best of $RUNS; $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "== berth $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty'), $(date -u +%Y-%m-%dT%H:%MZ); $IMAGES images in one repository, $((REPOS + 1)) repositories"
echo "== load: ${LOAD_SECS}s per run; berth $CONC connections; moto $CONC (GetAuthorizationToken) or $MOTO_PAGE_CONC (paged ops; moto returns every item per call)"
row "metric" "berth" "moto" "ratio" "target" "result"
for op in describe-images list-images describe-repositories get-authorization-token; do
    name=${OPNAME[$op]}
    B=$(v berth.$op.rps); M=$(v moto.$op.rps)
    row "$name (req/s)" "${B:--}" "${M:--}" "$(ratio "$B" "$M")" ">= 20x moto" "$(pass_ratio "$B" "$M" 20)"
    if [ "$op" != get-authorization-token ]; then
        BI=$(v berth.$op.items_per_s); MI=$(v moto.$op.items_per_s)
        row "  items/s (items per call $(v berth.$op.items_per_page)/$(v moto.$op.items_per_page))" \
            "${BI:--}" "${MI:--}" "$(ratio "$BI" "$MI")" ">= 20x moto" "$(pass_ratio "$BI" "$MI" 20)"
        row "  p50/p99 ms, loaded" "$(pair "$(v berth.$op.p50_ms)" "$(v berth.$op.p99_ms)")" \
            "$(pair "$(v moto.$op.p50_ms)" "$(v moto.$op.p99_ms)")" "-" "p99 < 20 ms" \
            "$(pass_lt "$(v berth.$op.p99_ms)" 20)"
        row "  p50/p99 ms, berth 1 connection" "$(pair "$(v berth.$op.p50_c1)" "$(v berth.$op.p99_c1)")" \
            "-" "-" "p99 < 20 ms" "$(pass_lt "$(v berth.$op.p99_c1)" 20)"
    else
        row "  p50/p99 ms, loaded" "$(pair "$(v berth.$op.p50_ms)" "$(v berth.$op.p99_ms)")" \
            "$(pair "$(v moto.$op.p50_ms)" "$(v moto.$op.p99_ms)")" "-" "-" "-"
    fi
    row "  server CPU ms/req (client CPU s)" "$(v berth.$op.cpu_ms) ($(v berth.$op.client_cpu_s))" \
        "$(v moto.$op.cpu_ms) ($(v moto.$op.client_cpu_s))" "-" "-" "-"
done
BT=$(v berth.mget); BN=$(v none.mget)
OVH=""
if [ -n "$BT" ] && [ -n "$BN" ]; then OVH=$(calc "100 * ($BN - $BT) / $BN"); fi
row "/v2/ manifest GET, token (req/s)" "${BT:--}" "-" "-" "-" "-"
row "/v2/ manifest GET, --auth none (req/s)" "${BN:--}" "-" "-" "-" "-"
row "  token auth overhead" "${OVH:+$OVH%}" "-" "-" "<= 15%" "$([ -n "$OVH" ] && verdict "$OVH <= 15" || echo "MISS(no data)")"
echo "seeding (concurrently, not counted): berth images ${SEED[berth.images]:-?}, repos ${SEED[berth.repos]:-?};" \
     "moto images ${SEED[moto.images]:-?}, repos ${SEED[moto.repos]:-?}"
secs() { awk "BEGIN { printf \"%.0f\", $2 - $1 }"; }
echo "wall time: build $(secs "$T_START" "$T_BUILT") s, start + seeding $(secs "$T_BUILT" "$T_SEEDED") s, measuring $(secs "$T_SEEDED" "$T_END") s"

if [ ${#NOTES[@]} -gt 0 ]; then
    echo "notes:"
    printf '  - %s\n' "${NOTES[@]}"
fi
for s in berth none moto; do
    [ -f "$TMP/$s.log" ] || continue
    pat='error|warn|panic'
    [ "$s" = moto ] && pat='Traceback|Error|" 5[0-9][0-9] '
    n=$(grep -ciE "$pat" "$TMP/$s.log" 2>/dev/null); n=${n:-0}
    if [ "$n" != 0 ]; then
        echo "$s log: $n error/warn lines, last ones:"
        grep -iE "$pat" "$TMP/$s.log" | tail -n 3 | cut -c1-240 | sed 's/^/    /'
    fi
done
exit 0
