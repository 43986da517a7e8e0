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
if [ -f "$BERTH_TEST_SERVICES_DIR/s3/pid" ]; then
  pid=$(cat "$BERTH_TEST_SERVICES_DIR/s3/pid")
  # weed leads its own process group (setsid): stop the group, then wait for it.
  kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
rm -rf "$BERTH_TEST_SERVICES_DIR" "$OUT"
