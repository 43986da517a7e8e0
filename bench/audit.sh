#!/usr/bin/env bash
# The audit log's cost: one release build as two deployments on 127.0.0.1 (embedded
# backend: SQLite + files), `--audit true` (the default) beside `--audit false`, measured
# in turn, round by round, in one run (bench/audit.py has the details):
# 1. manifest GET by tag over one keep-alive connection: median, mean, p95 per request;
#    and THREADS clients at once, requests per second;
# 2. blob push as docker does it (POST, PATCH with the bytes, PUT ?digest=).
# Reported as ratios audit on / audit off (the issue's budget: at most 1.05).
#
# Usage: bench/audit.sh
# Environment knobs (all optional): ROUNDS=10 GETS=500 PUSHES=30 BLOB_KIB=256 THREADS=4
#   CONCURRENT_SECONDS=10; BERTH_BIN=PATH runs this binary, not a fresh release build.
# Prints a markdown table; exits 0 once the benchmark has run (it is a benchmark, not a
# test). Not part of CI.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,14p' "$0"; exit 0 ;; esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${BERTH_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --locked -q)
    BERTH_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/berth
fi
export BERTH_BIN
python3 "$ROOT/bench/audit.py"
