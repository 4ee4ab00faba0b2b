#!/usr/bin/env bash
# bench/pool.sh: transaction pooling, pgs router against PgBouncer, both in
# front of the same tenant server, in one run, interleaved over rounds.
#
#   pgbouncer  Debian's pgbouncer, pool_mode = transaction, default_pool_size
#              = $POOL, client TLS (pgs's certificate), reaching the tenant's
#              server over its unix socket (run as the tenant's uid, given a
#              user name for the bench's duration: peer authentication).
#   router     the pgs daemon (fresh PGS_HOME), tenant `bench` with
#              `pgs config bench --pool transaction --pool-size $POOL`, by SNI.
# Workloads (each: pgbench -c $CLIENTS -j 2 -T $DURATION -n, every
# transaction's latency logged to compute p50 and p99):
#   S        -S (select-only), simple protocol
#   Sx       -S, extended protocol (unnamed statements)
#   TPCB     the built-in TPC-B-like script (5 statements in BEGIN/END)
#
# Usage: bash bench/pool.sh        (as root)
#   env: ROUNDS=3 DURATION=15 CLIENTS=500 POOL=10 SCALE=10 WORKLOADS="S Sx TPCB"
# Besides TPS and latency it reports the CPU time the pooler process used per
# 1,000 transactions (utime + stime from /proc).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
CLIENTS=${CLIENTS:-500}
POOL=${POOL:-10}
SCALE=${SCALE:-10}
WORKLOADS=${WORKLOADS:-S Sx TPCB}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PW="bench-$(openssl rand -hex 8)"
export PGPASSWORD=$PW
T_START=$(date +%s)

[ "$(id -u)" = 0 ] || die "run as root (PgBouncer runs as the tenant's own uid to reach its socket)"
for b in pgbench psql openssl node; do command -v $b >/dev/null || die "$b not found"; done
[ -f dist/bundle/pgs.js ] || die "no dist/bundle/pgs.js (npm run build first)"
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
  log "installing pgbouncer"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true


WORK=$(mktemp -d /tmp/pgs-pool-bench.XXXXXX)
chmod 755 "$WORK"
BOUNCER_PID= PGS_HOME_DIR= BENCH_USER=
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$BOUNCER_PID" ]; then kill -INT "$BOUNCER_PID" 2>/dev/null; wait "$BOUNCER_PID" 2>/dev/null; fi
  [ -n "$BENCH_USER" ] && userdel "$BENCH_USER" 2>/dev/null
  if [ -n "$PGS_HOME_DIR" ]; then
    DATA_ROOT=$(node -e 'try{console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).settings.dataRoot)}catch{}' "$PGS_HOME_DIR/catalog.json")
    PGS_HOME=$PGS_HOME_DIR node bin/pgs.js stop >/dev/null 2>&1
    [ -n "$DATA_ROOT" ] && rm -rf "$DATA_ROOT"
    rm -rf "$PGS_HOME_DIR"
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- pgs daemon and tenant
RPORT=$(free_port)
PGS_HOME_DIR=$(mktemp -d /tmp/pgs-pool-bench-home.XXXXXX)
export PGS_HOME=$PGS_HOME_DIR
log "pgs: setup --port $RPORT, create bench (transaction pool of $POOL)"
node bin/pgs.js setup --port "$RPORT" --api-listen off >"$WORK/pgs-setup.log" 2>&1 || { cat "$WORK/pgs-setup.log" >&2; die "pgs setup failed"; }
CREATE_JSON=$(node bin/pgs.js create bench --password "$PW" --autosuspend off --max-connections $((POOL * 2 + 10)) --json)
node bin/pgs.js config bench --pool transaction --pool-size "$POOL" --max-client-conn $((CLIENTS + 50)) >/dev/null
HOSTNAME_SNI=$(node -e 'console.log(JSON.parse(process.argv[1]).hostname)' "$CREATE_JSON")
ROUTER="host=$HOSTNAME_SNI hostaddr=127.0.0.1 port=$RPORT user=postgres dbname=bench sslmode=require"
TENANT=$(node bin/pgs.js url bench --local)
SOCKDIR=$(node -e 'console.log(new URL(process.argv[1].replace("@/","@x/")).searchParams.get("host"))' "$TENANT")
SPORT=$(node -e 'console.log(new URL(process.argv[1].replace("@/","@x/")).searchParams.get("port") || 5432)' "$TENANT")
CATALOG=$PGS_HOME_DIR/catalog.json
CERT=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).settings.certFile)' "$CATALOG")
KEY=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).settings.keyFile)' "$CATALOG")
TUID=$(stat -c %u "$SOCKDIR")
# The tenant's server authenticates its socket by peer, which needs a user name for the uid (pgs gives
# tenants none): a name for the bench's duration, removed at the end.
BENCH_USER=pgspoolbench$$
useradd --system --no-create-home --shell /usr/sbin/nologin --non-unique --uid "$TUID" --no-user-group --gid nogroup "$BENCH_USER"

# ---------------------------------------------------------------- pgbouncer
BPORT=$(free_port)
log "pgbouncer: transaction mode, pool $POOL, client TLS, as uid $TUID on the tenant's socket"
mkdir -p "$WORK/bouncer"
cp "$CERT" "$WORK/bouncer/tls.crt"; cp "$KEY" "$WORK/bouncer/tls.key"
printf '"postgres" "%s"\n' "$PW" > "$WORK/bouncer/userlist.txt"
cat > "$WORK/bouncer/pgbouncer.ini" <<EOF
[databases]
bench = host=$SOCKDIR port=$SPORT dbname=bench user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/bouncer/userlist.txt
pool_mode = transaction
max_client_conn = $((CLIENTS + 50))
default_pool_size = $POOL
ignore_startup_parameters = extra_float_digits
client_tls_sslmode = require
client_tls_key_file = $WORK/bouncer/tls.key
client_tls_cert_file = $WORK/bouncer/tls.crt
log_connections = 0
log_disconnections = 0
logfile = $WORK/bouncer/pgbouncer.log
pidfile = $WORK/bouncer/pgbouncer.pid
EOF
chown -R "$TUID:$TUID" "$WORK/bouncer"; chmod 600 "$WORK/bouncer/userlist.txt" "$WORK/bouncer/tls.key"
setpriv --reuid="$TUID" --regid="$TUID" --clear-groups -- "$PGBOUNCER" "$WORK/bouncer/pgbouncer.ini" >"$WORK/bouncer/stdout.log" 2>&1 &
BOUNCER_PID=$!
BOUNCER="host=$HOSTNAME_SNI hostaddr=127.0.0.1 port=$BPORT user=postgres dbname=bench sslmode=require"

log "pgbench -i -s $SCALE on the tenant"
pgbench -i -s "$SCALE" -q "$TENANT" >"$WORK/init.log" 2>&1 || { cat "$WORK/init.log" >&2; die "pgbench -i failed"; }
conninfo() { case $1 in pgbouncer) echo "$BOUNCER";; router) echo "$ROUTER";; esac; }
pooler_pid() { case $1 in pgbouncer) echo "$BOUNCER_PID";; router) cat "$PGS_HOME_DIR/daemon.pid";; esac; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)
for t in pgbouncer router; do
  for _ in $(seq 50); do psql "$(conninfo $t)" -Atqc 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
  out=$(psql "$(conninfo $t)" -Atc "select current_setting('server_version') || ' maxconn=' || current_setting('max_connections') || ' rows=' || (select count(*) from pgbench_branches)" 2>&1) || die "$t: cannot connect: $out $(cat "$WORK/bouncer/pgbouncer.log" 2>/dev/null | tail -3)"
  log "check $t: $out"
done

# ---------------------------------------------------------------- rounds
RESULTS=$WORK/results.tsv
ERRLOG=$WORK/errors.log
: > "$RESULTS"; : > "$ERRLOG"
run() { # round workload target
  local r=$1 w=$2 t=$3 args=() out tps p50 p99 dir pid c0 c1 cpu
  case $w in S) args=(-S -M simple);; Sx) args=(-S -M extended);; TPCB) args=(-M simple);; esac
  dir=$WORK/log-$r-$w-$t; mkdir -p "$dir"
  pid=$(pooler_pid "$t"); c0=$(cpu_ticks "$pid")
  out=$( (cd "$dir" && pgbench "${args[@]}" -c "$CLIENTS" -j 2 -T "$DURATION" -n -l "$(conninfo "$t")") 2>&1) || true
  c1=$(cpu_ticks "$pid")
  tps=$(printf '%s\n' "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
  # CPU ms of the pooler per 1,000 transactions (the run's connections included)
  cpu=$(awk -v d=$((c1 - c0)) -v hz="$TICKS" -v n="$(cat "$dir"/pgbench_log.* 2>/dev/null | wc -l)" 'BEGIN { if (n > 0) printf "%.1f", d * 1000 / hz / n * 1000; else print "NaN" }')
  if printf '%s\n' "$out" | grep -qiE 'error|fatal|abort|could not'; then
    { echo "== round $r $w $t"; printf '%s\n' "$out" | grep -iE 'error|fatal|abort|could not|failed' | sort | uniq -c | head -20; } >>"$ERRLOG"
  fi
  # the per-transaction log: client_id transaction_no time_us script_no epoch us
  read -r p50 p99 < <(cat "$dir"/pgbench_log.* 2>/dev/null | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "NaN NaN"} else {print a[int(NR*0.5)+1]/1000, a[int(NR*0.99)+1]/1000}}')
  rm -rf "$dir"
  [ -n "$tps" ] || tps=NaN
  printf '%s\t%s\t%s\t%s\n%s\t%s-p50\t%s\t%s\n%s\t%s-p99\t%s\t%s\n%s\t%s-cpu\t%s\t%s\n' "$r" "$w" "$t" "$tps" "$r" "$w" "$t" "$p50" "$r" "$w" "$t" "$p99" "$r" "$w" "$t" "$cpu" >>"$RESULTS"
  log "round $r  $w  $t: $tps tps, p50 ${p50} ms, p99 ${p99} ms, pooler CPU ${cpu} ms per 1000 transactions"
}
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order=(pgbouncer router); else order=(router pgbouncer); fi
  for w in $WORKLOADS; do
    for t in "${order[@]}"; do run "$r" "$w" "$t"; sleep 1; done
  done
done
T_END=$(date +%s)

# ---------------------------------------------------------------- report
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
echo
echo "## Transaction pooling: pgs vs PgBouncer, $CLIENTS clients on a pool of $POOL"
echo
echo "Machine: $(nproc) CPUs ($CPU), $MEM, Linux $(uname -r), Node $(node -v), $(pgbench --version), $("$PGBOUNCER" --version | head -1). $(date -u +%Y-%m-%d)."
echo
echo "Command: \`ROUNDS=$ROUNDS DURATION=$DURATION CLIENTS=$CLIENTS POOL=$POOL SCALE=$SCALE bash bench/pool.sh\` (rounds took $((T_END - T_START)) s)."
echo
node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split("\t"));
const med = (xs) => { const s = xs.filter(Number.isFinite).sort((a, b) => a - b); if (!s.length) return NaN; const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const get = (w, t) => rows.filter((r) => r[1] === w && r[2] === t).map((r) => Number(r[3]));
const names = { S: "pgbench -S, simple protocol", Sx: "pgbench -S, extended protocol", TPCB: "pgbench TPC-B-like (BEGIN; 3 UPDATE, SELECT, INSERT; END)" };
console.log(`Medians over ${new Set(rows.map((r) => r[0])).size} interleaved rounds.\n`);
console.log("| workload | PgBouncer TPS | pgs TPS | pgs / PgBouncer | PgBouncer p50 / p99 ms | pgs p50 / p99 ms | pooler CPU ms per 1000 tx: PgBouncer / pgs |");
console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const w of process.argv[2].split(" ").filter(Boolean)) {
  const b = med(get(w, "pgbouncer")), p = med(get(w, "router"));
  const f = (t) => `${med(get(w + "-p50", t)).toFixed(2)} / ${med(get(w + "-p99", t)).toFixed(2)}`;
  console.log(`| ${names[w]} | ${Math.round(b)} | ${Math.round(p)} | ${(p / b).toFixed(2)}x | ${f("pgbouncer")} | ${f("router")} | ${med(get(w + "-cpu", "pgbouncer")).toFixed(0)} / ${med(get(w + "-cpu", "router")).toFixed(0)} |`);
}
console.log("\nAll rounds (TPS): " + process.argv[2].split(" ").filter(Boolean).map((w) => `${w}: PgBouncer ${get(w, "pgbouncer").map(Math.round).join("/")}, pgs ${get(w, "router").map(Math.round).join("/")}`).join("; "));
' "$RESULTS" "$WORKLOADS"
echo
if [ -s "$ERRLOG" ]; then echo "Errors seen:"; cat "$ERRLOG"; else echo "Errors seen: none."; fi
