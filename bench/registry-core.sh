#!/usr/bin/env bash
# Registry-core benchmark: Berth vs CNCF Distribution (Debian's docker-registry),
# side by side on 127.0.0.1, same workload, one run.
#
# Usage: bench/registry-core.sh [-n RUNS]
#   RUNS (default 3)       best of N for every throughput number
# Environment knobs (all optional):
#   SMALL_COUNT=1000       number of small blobs pushed per run
#   SMALL_SIZE=1024        size of each small blob, bytes
#   LOAD_SECS=10           duration of each wrk / ab load run
#   PEER_BIN=/usr/bin/docker-registry
#   BLOB_MIB=1024          size of the "1 GiB" blob (smoke tests only; multiple of 16)
#   KEEP_TMP=1             keep the temp dir (blob, data dirs, server logs)
#   TMPDIR                 where the temp dir (1 GiB file + data dirs) goes
#
# Measures: 1 GiB push (monolithic and 16x64 MiB chunked), 1 GiB pull,
# small-blob pushes over one keep-alive connection, manifest GET (wrk) and
# HEAD (ab) requests/s, peak RSS (VmHWM) during the 1 GiB push, and the
# machine's single-core SHA-256 rate and fdatasync'd disk write rate.
# Prints a table with PASS/MISS against the targets; always exits 0 once the
# benchmark has run (it is a benchmark, not a test).

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
SMALL_COUNT=${SMALL_COUNT:-1000}
SMALL_SIZE=${SMALL_SIZE:-1024}
LOAD_SECS=${LOAD_SECS:-10}
PEER_BIN=${PEER_BIN:-/usr/bin/docker-registry}
BLOB_MIB=${BLOB_MIB:-1024}
case "$BLOB_MIB" in ''|*[!0-9]*) echo "BLOB_MIB must be a number" >&2; exit 2 ;; esac
[ $((BLOB_MIB % 16)) = 0 ] && [ "$BLOB_MIB" -ge 16 ] || { echo "BLOB_MIB must be a multiple of 16" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
BERTH_BIN=$ROOT/target/release/berth
# Never let the caller's Berth settings leak into the benchmarked server.
unset BERTH_CONFIG BERTH_LISTEN BERTH_DATA_DIR BERTH_UPLOAD_MAX_AGE \
      BERTH_UPLOAD_REAP_INTERVAL BERTH_MAX_MANIFEST_BYTES

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for tool in curl wrk ab openssl python3 dd awk sha256sum sync; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install wrk apache2-utils curl openssl)"
done
[ -x "$PEER_BIN" ] || die "missing $PEER_BIN (apt-get install docker-registry)"

log "building berth (cargo build --release in $ROOT)"
(cd "$ROOT" && cargo build --release) >&2 || die "cargo build failed"
[ -x "$BERTH_BIN" ] || die "no $BERTH_BIN after the build"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX") || die "mktemp failed"
BERTH_PID=""
PEER_PID=""

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
declare -A BASE=([berth]="http://127.0.0.1:$BERTH_PORT" [peer]="http://127.0.0.1:$PEER_PORT")

# Distribution gets its own config: filesystem storage in our temp dir,
# loopback only, log level warn, no access log. (Never the system config.)
mkdir -p "$TMP/peer-data" "$TMP/berth-data"
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

wait_up() { # name pid: poll /v2/ for up to 10 s
    local name=$1 pid=$2 i code
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup (see $TMP/$name.log)"
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "${BASE[$name]}/v2/")
        [ "$code" = 200 ] && return 0
        sleep 0.1
    done
    die "$name did not answer GET /v2/ with 200 within 10 s (last: $code)"
}

# Restart a server on an empty data dir, so a push really writes everything
# and VmHWM afterwards is the peak of that push alone.
fresh() { # name
    local name=$1
    if [ "$name" = berth ]; then
        stop_pid "$BERTH_PID"; BERTH_PID=""
        rm -rf "$TMP/berth-data"; mkdir -p "$TMP/berth-data"
        sync
        BERTH_LOG=warn "$BERTH_BIN" serve --auth none --listen "127.0.0.1:$BERTH_PORT" \
            --data-dir "$TMP/berth-data" >>"$TMP/berth.log" 2>&1 &
        BERTH_PID=$!
        wait_up berth "$BERTH_PID"
    else
        stop_pid "$PEER_PID"; PEER_PID=""
        rm -rf "$TMP/peer-data"; mkdir -p "$TMP/peer-data"
        sync
        "$PEER_BIN" serve "$TMP/peer-config.yml" >>"$TMP/peer.log" 2>&1 &
        PEER_PID=$!
        wait_up peer "$PEER_PID"
    fi
}
pid_of() { if [ "$1" = berth ]; then echo "$BERTH_PID"; else echo "$PEER_PID"; fi; }
hwm_mib() { awk '/^VmHWM:/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null; }

calc() { awk "BEGIN { printf \"%.1f\", $* }"; }
now() { echo "$EPOCHREALTIME"; }

declare -A BEST   # key "<server>.<metric>" -> best value over runs
declare -A WORST  # for RSS: the highest value seen
NOTES=()
note() { NOTES+=("$*"); log "NOTE: $*"; }
keep_max() { # array key value
    local -n arr=$1
    local cur=${arr[$2]:-}
    [ -n "$3" ] || return 0
    if [ -z "$cur" ] || awk "BEGIN { exit !($3 > $cur) }"; then arr[$2]=$3; fi
}

# Location may be relative (/v2/...) or absolute, and may carry a query.
abs_url() { # name location
    case "$2" in
        http://127.0.0.1:*) echo "$2" ;;
        http://*|https://*) die "$1 returned a non-loopback Location: $2" ;;
        *) echo "${BASE[$1]}$2" ;;
    esac
}
add_digest() { case "$1" in *\?*) echo "$1&digest=$2" ;; *) echo "$1?digest=$2" ;; esac; }

start_upload() { # name repo -> absolute upload URL, or empty on failure
    local name=$1 repo=$2 out code loc
    out=$(curl -s -o "$TMP/resp" -m 30 -X POST -H 'Content-Length: 0' \
        -w '%{http_code} %header{location}' "${BASE[$name]}/v2/$repo/blobs/uploads/")
    code=${out%% *}; loc=${out#* }
    if [ "$code" != 202 ] || [ -z "$loc" ]; then
        note "$name: POST /v2/$repo/blobs/uploads/ -> HTTP $code $(head -c 200 "$TMP/resp")"
        return 1
    fi
    abs_url "$name" "$loc"
}

push_mono() { # name repo -> seconds
    local name=$1 repo=$2 t0 url code
    t0=$(now)
    url=$(start_upload "$name" "$repo") || return 1
    code=$(curl -s -o "$TMP/resp" -m 600 -X PUT -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' -T "$BLOB" \
        -w '%{http_code}' "$(add_digest "$url" "$DIGEST")")
    local t1; t1=$(now)
    if [ "$code" != 201 ]; then
        note "$name: monolithic PUT -> HTTP $code $(head -c 200 "$TMP/resp")"; return 1
    fi
    calc "$t1 - $t0"
}

push_chunked() { # name repo -> seconds
    local name=$1 repo=$2 t0 url out code loc i first last
    t0=$(now)
    url=$(start_upload "$name" "$repo") || return 1
    for i in $(seq 0 $((CHUNKS - 1))); do
        first=$((i * CHUNK_BYTES)); last=$((first + CHUNK_BYTES - 1))
        out=$(curl -s -o "$TMP/resp" -m 300 -X PATCH -H 'Expect:' \
            -H 'Content-Type: application/octet-stream' -H "Content-Range: $first-$last" \
            -T "$TMP/chunk.$i" -w '%{http_code} %header{location}' "$url")
        code=${out%% *}; loc=${out#* }
        if [ "$code" != 202 ] || [ -z "$loc" ]; then
            note "$name: PATCH chunk $i ($first-$last) -> HTTP $code $(head -c 200 "$TMP/resp")"
            return 1
        fi
        url=$(abs_url "$name" "$loc")
    done
    code=$(curl -s -o "$TMP/resp" -m 300 -X PUT -H 'Content-Type: application/octet-stream' \
        --data-binary '' -w '%{http_code}' "$(add_digest "$url" "$DIGEST")")
    local t1; t1=$(now)
    if [ "$code" != 201 ]; then
        note "$name: final chunked PUT -> HTTP $code $(head -c 200 "$TMP/resp")"; return 1
    fi
    calc "$t1 - $t0"
}

pull() { # name repo -> seconds
    local name=$1 repo=$2 out
    out=$(curl -s -o /dev/null -m 300 -w '%{http_code} %{size_download} %{time_total}' \
        "${BASE[$name]}/v2/$repo/blobs/$DIGEST")
    read -r code size secs <<<"$out"
    if [ "$code" != 200 ] || [ "$size" != "$BLOB_BYTES" ]; then
        note "$name: GET blob -> HTTP $code, $size bytes"; return 1
    fi
    echo "$secs"
}

# ---------------------------------------------------------------- inputs
BLOB=$TMP/blob-1g
BLOB_BYTES=$((BLOB_MIB * 1024 * 1024))
CHUNKS=16
CHUNK_MIB=$((BLOB_MIB / CHUNKS))
CHUNK_BYTES=$((CHUNK_MIB * 1024 * 1024))
log "creating $BLOB_MIB MiB random file in $TMP"
head -c "$BLOB_BYTES" /dev/urandom >"$BLOB" || die "could not create $BLOB"
log "slicing it into $CHUNKS chunks of $((CHUNK_BYTES >> 20)) MiB"
for i in $(seq 0 $((CHUNKS - 1))); do
    dd if="$BLOB" of="$TMP/chunk.$i" bs=1M skip=$((i * CHUNK_MIB)) count=$CHUNK_MIB status=none || die "dd chunk $i"
done

# ---------------------------------------------------------------- physical limits
log "physical limits: openssl speed sha256, sha256 of the file, dd conv=fdatasync"
SHA_SPEED=$(openssl speed -mr -bytes 1048576 -seconds 3 sha256 2>/dev/null \
    | awk -F: '/^\+F:/ {printf "%.1f", $4/1048576}')
t0=$(now)
DIGEST=sha256:$(openssl dgst -sha256 -r "$BLOB" | awk '{print $1}')
t1=$(now)
SHA_FILE=$(calc "$BLOB_MIB / ($t1 - $t0)")
DISK=""
for r in $(seq "$RUNS"); do
    sync
    t0=$(now)
    dd if="$BLOB" of="$TMP/ddtest" bs=1M conv=fdatasync status=none
    t1=$(now)
    rm -f "$TMP/ddtest"
    keep_max BEST disk "$(calc "$BLOB_MIB / ($t1 - $t0)")"
done
DISK=${BEST[disk]}
log "sha256: $SHA_SPEED MiB/s (openssl speed), $SHA_FILE MiB/s (dgst of the file); disk: $DISK MiB/s"

# ---------------------------------------------------------------- big blobs
for r in $(seq "$RUNS"); do
    for s in berth peer; do
        log "run $r/$RUNS $s: 1 GiB monolithic push + pull"
        fresh "$s"
        pid=$(pid_of "$s")
        if secs=$(push_mono "$s" "bench/mono$r"); then
            keep_max BEST "$s.mono" "$(calc "$BLOB_MIB / $secs")"
            keep_max WORST "$s.rss_mono" "$(hwm_mib "$pid")"
            sync   # untimed: flush what the server left dirty before the next step
            if secs=$(pull "$s" "bench/mono$r"); then
                keep_max BEST "$s.pull" "$(calc "$BLOB_MIB / $secs")"
            fi
        fi
        log "run $r/$RUNS $s: 1 GiB chunked push ($CHUNKS x $((CHUNK_BYTES >> 20)) MiB)"
        fresh "$s"
        pid=$(pid_of "$s")
        if secs=$(push_chunked "$s" "bench/chunked$r"); then
            keep_max BEST "$s.chunked" "$(calc "$BLOB_MIB / $secs")"
            keep_max WORST "$s.rss_chunked" "$(hwm_mib "$pid")"
        fi
        sync
    done
done

# ---------------------------------------------------------------- small blobs, manifests
fresh berth
fresh peer
for r in $(seq "$RUNS"); do
    for s in berth peer; do
        log "run $r/$RUNS $s: $SMALL_COUNT x $SMALL_SIZE B blob pushes on one connection"
        if out=$(python3 "$BENCH/smallblobs.py" push "${BASE[$s]#http://}" "bench/small$r" \
                "$SMALL_COUNT" "$SMALL_SIZE" 2>"$TMP/small.err"); then
            read -r rate secs errs <<<"$out"
            if [ "$errs" = 0 ]; then keep_max BEST "$s.small" "$rate"
            else note "$s: $errs of $SMALL_COUNT small pushes failed: $(head -c 300 "$TMP/small.err")"; fi
        else
            note "$s: smallblobs.py failed: $(head -c 300 "$TMP/small.err")"
        fi
    done
done

ACCEPT='application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json'
for s in berth peer; do
    python3 "$BENCH/smallblobs.py" manifest "${BASE[$s]#http://}" bench/app v1 >"$TMP/mdigest" 2>"$TMP/m.err" \
        || note "$s: manifest push failed: $(head -c 300 "$TMP/m.err")"
done
for r in $(seq "$RUNS"); do
    for s in berth peer; do
        url="${BASE[$s]}/v2/bench/app/manifests/v1"
        log "run $r/$RUNS $s: manifest GET, wrk -t2 -c32 -d${LOAD_SECS}s"
        out=$(wrk -t2 -c32 -d"${LOAD_SECS}s" --timeout 10s -H "Accept: $ACCEPT" "$url" 2>&1)
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        bad=$(awk -F: '/Non-2xx or 3xx/ {gsub(/ /,"",$2); print $2}' <<<"$out")
        sockerr=$(grep -m1 'Socket errors' <<<"$out")
        if [ -n "$bad" ] || [ -n "$sockerr" ]; then
            note "$s: wrk GET: ${bad:-0} non-2xx responses; ${sockerr:-no socket errors}"
        fi
        [ -n "$rps" ] && [ -z "$bad" ] && keep_max BEST "$s.mget" "$rps"

        log "run $r/$RUNS $s: manifest HEAD, ab -k -i -c32 -t$LOAD_SECS"
        out=$(ab -k -i -c32 -t "$LOAD_SECS" -n 1000000 -s 10 \
            -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$url" 2>&1)
        rps=$(awk '/^Requests per second:/ {print $4}' <<<"$out")
        bad=$(awk -F: '/^Non-2xx responses/ {gsub(/ /,"",$2); print $2}' <<<"$out")
        failed=$(awk -F: '/^Failed requests/ {gsub(/ /,"",$2); print $2}' <<<"$out")
        ka=$(awk -F: '/^Keep-Alive requests/ {gsub(/ /,"",$2); print $2}' <<<"$out")
        done_n=$(awk -F: '/^Complete requests/ {gsub(/ /,"",$2); print $2}' <<<"$out")
        if [ -n "$bad" ] || [ "${failed:-0}" != 0 ]; then
            note "$s: ab HEAD: ${bad:-0} non-2xx, ${failed:-?} failed"
        elif [ -n "$ka" ] && [ "$ka" != "$done_n" ]; then
            note "$s: ab HEAD: only $ka of $done_n requests used keep-alive"
        fi
        [ -n "$rps" ] && [ -z "$bad" ] && keep_max BEST "$s.mhead" "$rps"
    done
done

# ---------------------------------------------------------------- table
val() { echo "${BEST[$1]:-${WORST[$1]:-}}"; }
ratio() { if [ -n "$1" ] && [ -n "$2" ]; then awk "BEGIN { printf \"%.2fx\", $1 / $2 }"; else echo "-"; fi; }
verdict() { # awk expression -> PASS/MISS
    if awk "BEGIN { exit !($1) }"; then echo PASS; else echo MISS; fi
}
row() { printf '%-34s %12s %12s %9s  %-18s %s\n' "$@"; }
pct() { [ -n "$1" ] && [ -n "$SHA_SPEED" ] && calc "100 * $1 / $SHA_SPEED" || echo ""; }

if [ "$BLOB_MIB" = 1024 ]; then SZ="1 GiB"; else SZ="$BLOB_MIB MiB"; fi
BM=$(val berth.mono); PM=$(val peer.mono)
BC=$(val berth.chunked); PC=$(val peer.chunked)
BP=$(val berth.pull); PP=$(val peer.pull)
BS=$(val berth.small); PS=$(val peer.small)
BG=$(val berth.mget); PG=$(val peer.mget)
BH=$(val berth.mhead); PH=$(val peer.mhead)
BRM=$(val berth.rss_mono); PRM=$(val peer.rss_mono)
BRC=$(val berth.rss_chunked); PRC=$(val peer.rss_chunked)
pass_ratio() { [ -n "$1" ] && [ -n "$2" ] && verdict "$1 >= $3 * $2" || echo "MISS(no data)"; }
pass_lt() { [ -n "$1" ] && verdict "$1 < $2" || echo "MISS(no data)"; }
pass_ge() { [ -n "$1" ] && verdict "$1 >= $2" || echo "MISS(no data)"; }
BMP=$(pct "$BM"); PMP=$(pct "$PM"); BCP=$(pct "$BC"); PCP=$(pct "$PC")

echo
echo "== Berth vs Distribution ($("$PEER_BIN" --version 2>/dev/null | awk '{print $NF}')), best of $RUNS; $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "== berth $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty'), $(date -u +%Y-%m-%dT%H:%MZ)"
row "metric" "berth" "distribution" "ratio" "target" "result"
row "push $SZ monolithic (MiB/s)" "${BM:--}" "${PM:--}" "$(ratio "$BM" "$PM")" ">= 4x peer" "$(pass_ratio "$BM" "$PM" 4)"
row "  as % of 1-core SHA-256" "${BMP:+$BMP%}" "${PMP:+$PMP%}" "-" ">= 75%" "$(pass_ge "$BMP" 75)"
row "push $SZ chunked 16x${CHUNK_MIB}M (MiB/s)" "${BC:--}" "${PC:--}" "$(ratio "$BC" "$PC")" ">= 4x peer" "$(pass_ratio "$BC" "$PC" 4)"
row "  as % of 1-core SHA-256" "${BCP:+$BCP%}" "${PCP:+$PCP%}" "-" ">= 75%" "$(pass_ge "$BCP" 75)"
row "pull $SZ (MiB/s)" "${BP:--}" "${PP:--}" "$(ratio "$BP" "$PP")" ">= 2x peer" "$(pass_ratio "$BP" "$PP" 2)"
row "small blob push ${SMALL_COUNT}x${SMALL_SIZE}B (blobs/s)" "${BS:--}" "${PS:--}" "$(ratio "$BS" "$PS")" "-" "-"
row "manifest GET, wrk c32 (req/s)" "${BG:--}" "${PG:--}" "$(ratio "$BG" "$PG")" ">= 10x peer" "$(pass_ratio "$BG" "$PG" 10)"
row "manifest HEAD, ab -k c32 (req/s)" "${BH:--}" "${PH:--}" "$(ratio "$BH" "$PH")" "-" "-"
row "peak RSS, mono push (MiB, max)" "${BRM:--}" "${PRM:--}" "$(ratio "$BRM" "$PRM")" "< 64 MiB" "$(pass_lt "$BRM" 64)"
row "peak RSS, chunked push (MiB, max)" "${BRC:--}" "${PRC:--}" "$(ratio "$BRC" "$PRC")" "< 64 MiB" "$(pass_lt "$BRC" 64)"
echo "physical: SHA-256 1 core (openssl speed, 1 MiB blocks) ${SHA_SPEED:-?} MiB/s;" \
     "openssl dgst of the $SZ file ${SHA_FILE:-?} MiB/s; dd conv=fdatasync $SZ ${DISK:-?} MiB/s (best of $RUNS)"

if [ ${#NOTES[@]} -gt 0 ]; then
    echo "notes:"
    printf '  - %s\n' "${NOTES[@]}"
fi
for s in berth peer; do
    n=$(grep -ciE 'error|warn|panic' "$TMP/$s.log" 2>/dev/null); n=${n:-0}
    if [ "$n" != 0 ]; then
        echo "$s log: $n error/warn lines, last ones:"
        grep -iE 'error|warn|panic' "$TMP/$s.log" | tail -n 3 | cut -c1-240 | sed 's/^/    /'
    fi
done
exit 0
