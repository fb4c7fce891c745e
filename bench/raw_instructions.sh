#!/usr/bin/env bash
# What the server pays per feature of the raw table, in instructions (issue #21, item 3).
#
#   bash bench/raw_instructions.sh ORDERS_CSV [ROWS]
#
# Timings on a shared 2-core VM swing by ±20 % from run to run; instruction counts do not. This
# runs PostgreSQL's own COPY (single-user mode, a fresh copy of one data folder per variant) under
# valgrind's callgrind and counts the instructions inside COPY (and ATTACH PARTITION) only, for
# the first ROWS rows (default 200,000) of one of bench.data's orders CSVs. Same variants as
# bench/raw_cost.py: plain text table, the lineage features one at a time, the single-table
# layout before (BRIN on the file id), and a table per file attached as its partition (now).
# Needs valgrind and the PostgreSQL server binaries (pg_config --bindir, or PG_BINDIR).
set -euo pipefail

csv=$(realpath "$1")
rows=${2:-200000}
bindir=${PG_BINDIR:-$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | tail -1)}
work=$(mktemp -d /tmp/ap-raw-instructions-XXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
as_owner=()
if [ "$(id -u)" = 0 ]; then
  as_owner=(runuser -u postgres --)  # PostgreSQL refuses to run as root
  chown postgres "$work"
fi

head -n $((rows + 1)) "$csv" >"$work/sample.csv"
chmod 644 "$work/sample.csv"
names=$(head -1 "$csv" | tr -d '\r')
text=$(echo "$names" | sed 's/,/ text, /g; s/$/ text/')
"${as_owner[@]}" "$bindir/initdb" -D "$work/template" -U postgres -A trust >/dev/null

file_id="_file_id bigint NOT NULL DEFAULT 7"
line="_line bigint NOT NULL DEFAULT nextval('seq')"
loaded_at="_loaded_at timestamptz NOT NULL DEFAULT now()"
copy="COPY t ($names) FROM '$work/sample.csv' WITH (FORMAT csv, HEADER true)"

# Single-user mode with -j: a statement ends with a semicolon and an empty line.
variant() {
  local name=$1
  shift
  printf '%s;\n\n' "CREATE SEQUENCE seq CACHE 1000" "$@" >"$work/$name.sql"
}
variant plain "CREATE TABLE t ($text)" "$copy"
variant file_id "CREATE TABLE t ($text, $file_id)" "$copy"
variant line "CREATE TABLE t ($text, $file_id, $line)" "$copy"
variant loaded_at "CREATE TABLE t ($text, $file_id, $line, $loaded_at)" "$copy"
variant brin_before "CREATE TABLE t ($text, $file_id, $line, $loaded_at)" \
  "CREATE INDEX ON t USING brin (_file_id)" "$copy"
variant partition_now \
  "CREATE TABLE raw ($text, $file_id, $line, $loaded_at) PARTITION BY LIST (_file_id)" \
  "BEGIN" "CREATE TABLE t (LIKE raw INCLUDING DEFAULTS, CHECK (_file_id = 7))" "$copy" \
  "ALTER TABLE raw ATTACH PARTITION t FOR VALUES IN (7)" "COMMIT"
chmod 644 "$work"/*.sql

echo "| variant | instructions in COPY ($rows rows) | × plain | plain ÷ variant |"
echo "| --- | ---: | ---: | ---: |"
plain=""
for name in plain file_id line loaded_at brin_before partition_now; do
  rm -rf "$work/data" && cp -a "$work/template" "$work/data"
  "${as_owner[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" \
    --collect-atstart=no --toggle-collect=DoCopy --toggle-collect=ATExecAttachPartition \
    "$bindir/postgres" --single -j -D "$work/data" -c autovacuum=off -c fsync=off postgres \
    <"$work/$name.sql" >"$work/$name.log" 2>&1
  if grep -q ERROR "$work/$name.log"; then
    grep ERROR "$work/$name.log" >&2
    exit 1
  fi
  count=$(awk '/^summary:/ {print $2}' "$work/$name.out")
  plain=${plain:-$count}
  awk -v n="$name" -v c="$count" -v p="$plain" \
    'BEGIN {printf "| %s | %\047.0f | %.3f | %.3f |\n", n, c, c / p, p / c}'
done
