#!/usr/bin/env bash
# Stop what tests/services/start.sh started.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${BERTH_TEST_SERVICES:-$ROOT/target/test-services.env}
[ -f "$OUT" ] || exit 0
# shellcheck disable=SC1090
. "$OUT"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$BERTH_TEST_SERVICES_DIR/pg/data" -m fast stop >/dev/null 2>&1
[ -f "$BERTH_TEST_SERVICES_DIR/s3/pid" ] && kill "$(cat "$BERTH_TEST_SERVICES_DIR/s3/pid")" 2>/dev/null
rm -rf "$BERTH_TEST_SERVICES_DIR" "$OUT"
