#!/bin/bash
# Postgres-only cost of the FHIR read shapes, with pgbench custom scripts (no Node involved).
# Run after `npm run bench:rest` (uses the Patients in fhir_bench; adds a table bench_ids there).
#   bench/pg-read-shapes.sh [clients=10] [seconds=5]
# Shapes, all as role fhir_app (RLS on), -M prepared:
#   tenant-tx  BEGIN; set_config('app.tenant', ..., true); SELECT by id; COMMIT   (what a read does today)
#   one-stmt   SELECT bench_read('bench','Patient',id)   (set_config + SELECT inside one plpgsql call)
#   select     the SELECT alone, tenant set once per session (set_config(..., false) in the script's first tx)
# plus the plain `pgbench -S` ceiling on pgbench_bench for comparison (if that database exists).
set -euo pipefail
C=${1:-10}
T=${2:-5}
export PGHOST=127.0.0.1 PGPORT=${PGPORT:-5432}
DB=fhir_bench
psql -q -U postgres -d $DB -v ON_ERROR_STOP=1 <<'SQL'
DROP TABLE IF EXISTS bench_ids;
CREATE TABLE bench_ids AS SELECT row_number() OVER () AS n, id FROM resources WHERE tenant_id = 'bench' AND res_type = 'Patient';
ALTER TABLE bench_ids ADD PRIMARY KEY (n);
GRANT SELECT ON bench_ids TO fhir_app;
CREATE OR REPLACE FUNCTION bench_read(t text, ty text, rid text)
RETURNS TABLE (res_type text, id text, version int, last_updated timestamptz, deleted boolean, json text)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('app.tenant', t, true);
  RETURN QUERY SELECT r.res_type, r.id, r.version, r.last_updated, r.deleted, r.content::text
    FROM resources r WHERE r.tenant_id = t AND r.res_type = ty AND r.id = rid;
END $$;
GRANT EXECUTE ON FUNCTION bench_read(text, text, text) TO fhir_app;
SQL
N=$(psql -U postgres -d $DB -Atc "select count(*) from bench_ids")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# The id lookup (bench_ids) is in every script, so the shapes differ only in what the server sends.
cat > "$TMP/tenant-tx.sql" <<SQL
\set n random(1, $N)
BEGIN;
SELECT set_config('app.tenant', 'bench', true);
SELECT res_type, id, version, last_updated, deleted, content::text FROM resources WHERE tenant_id = 'bench' AND res_type = 'Patient' AND id = (SELECT id FROM bench_ids WHERE n = :n);
COMMIT;
SQL
cat > "$TMP/one-stmt.sql" <<SQL
\set n random(1, $N)
SELECT * FROM bench_read('bench', 'Patient', (SELECT id FROM bench_ids WHERE n = :n));
SQL
cat > "$TMP/select.sql" <<SQL
\set n random(1, $N)
SELECT set_config('app.tenant', 'bench', false) WHERE :n < 0 OR current_setting('app.tenant', true) IS DISTINCT FROM 'bench';
SELECT res_type, id, version, last_updated, deleted, content::text FROM resources WHERE tenant_id = 'bench' AND res_type = 'Patient' AND id = (SELECT id FROM bench_ids WHERE n = :n);
SQL
run() { # name, pgbench args...
  local name=$1; shift
  local out
  out=$(timeout $((T + 60)) pgbench -n -M prepared -c "$C" -j 2 -T "$T" "$@" 2>&1) || { echo "$name: pgbench failed: $out" >&2; return 1; }
  printf '%-10s %8s tps   latency avg %s ms\n' "$name" "$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -1)" "$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")"
}
echo "pgbench, $C clients, $T s each, -M prepared, role fhir_app; $(nproc) cores; load avg $(cut -d' ' -f1 /proc/loadavg)"
run tenant-tx -U fhir_app -f "$TMP/tenant-tx.sql" $DB
run one-stmt  -U fhir_app -f "$TMP/one-stmt.sql" $DB
run select    -U fhir_app -f "$TMP/select.sql" $DB
if psql -U postgres -d pgbench_bench -Atc 'select 1' >/dev/null 2>&1; then
  run 'pgbench -S' -U postgres -S pgbench_bench
fi
