// Backups, restores, branches, export/import of a ~1 GiB tenant, and what
// continuous archiving costs pgbench. Results go to docs/benchmarks.md by hand.
//
//   npm run build && node bench/backup.js [--scale 68] [--seconds 30] [--rounds 6] [--archiving-only]
//
// Needs pgbench and psql (Debian's postgresql-client). Takes ~10 minutes and
// ~8 GB of disk (the tenant, its backups, a branch, an export and an import).
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { benchHome, quantile } from './lib.js';

const arg = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
};
const SCALE = arg('scale', 68); // pgbench scale 68 is ~1 GiB
const SECONDS = arg('seconds', 30);
const ROUNDS = arg('rounds', 6); // archiving on/off pairs per workload: this VM's run-to-run spread is several %
const ARCHIVING_ONLY = process.argv.includes('--archiving-only');

class Done extends Error {} // --archiving-only ends the run after the TPS part
const b = benchHome({ PGS_RUNNING_SPARES: '0' });
const { pgs } = b;
const json = (...args) => JSON.parse(pgs(...args, '--json').stdout);
const sh = (cmd, args, env = {}) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};

try {
  pgs('setup', '--port', '25432', '--api-listen', 'off');
  const big = json('create', 'big', '--autosuspend', 'off');
  // No scheduled backup in the middle of a measurement (a new tenant's first comes after 5 minutes).
  pgs('config', 'big', '--backup-schedule', 'off');
  const dataRoot = JSON.parse(readFileSync(path.join(b.home, 'catalog.json'), 'utf8')).settings.dataRoot;
  const local = (id) => ({ host: path.join(dataRoot, 'tenants', id, 'pg_stat_tmp'), db: id });
  const psql = (id, sqlText) => sh('psql', ['-h', local(id).host, '-U', 'postgres', '-d', local(id).db, '-Atc', sqlText], { PGPASSWORD: big.password }).trim();
  const pgbench = (id, args) => sh('pgbench', ['-h', local(id).host, '-U', 'postgres', ...args, local(id).db], { PGPASSWORD: big.password });

  let t = performance.now();
  pgbench('big', ['-i', '-s', String(SCALE), '-q']);
  const size = Number(psql('big', 'SELECT pg_database_size(current_database())'));
  console.log(`pgbench -i -s ${SCALE}: ${(size / 2 ** 30).toFixed(2)} GiB in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  // --- archiving's cost on TPS: the same tenant, archiving on (as always) vs off, A/B/A/B ---
  // Two workloads: pgbench's default (TPC-B-like) and -N (simple update, the most WAL per second).
  const tps = (label, workload) => {
    const out = pgbench('big', ['-c', '4', '-j', '2', '-T', String(SECONDS), ...(workload === 'simple-update' ? ['-N'] : [])]);
    const value = Number(/tps = ([\d.]+)/.exec(out)?.[1]);
    console.log(`  ${label}: ${value.toFixed(0)} tps`);
    return value;
  };
  const pgsConf = path.join(dataRoot, 'tenants', 'big', 'pgs.conf');
  const conf = readFileSync(pgsConf, 'utf8');
  // pgbench -i wrote ~1 GiB of WAL: let the archiver catch up before measuring what it costs in steady state.
  const ready = () => spawnSync('sh', ['-c', `ls '${path.join(dataRoot, 'tenants', 'big', 'pg_wal', 'archive_status')}' | grep -c ready`], { encoding: 'utf8' }).stdout.trim();
  const mean = (xs) => xs.reduce((a, x) => a + x, 0) / xs.length;
  // pgbench -i leaves 1 GiB for autovacuum to visit: do it now, not inside one side's round.
  psql('big', 'VACUUM ANALYZE');
  // Both sides run the same server the same way, started directly (pgs rewrites pgs.conf before every
  // start it makes), so that they differ in the archiving settings alone: pgs's own pgs.conf (archiving
  // on, as every tenant runs) against what tenants ran before continuous archiving (wal_level minimal,
  // no archiver). The daemon keeps running beside both (the tenant is stopped as far as it knows).
  const maxConnections = /max_connections = \d+/.exec(conf)?.[0] ?? '';
  const offConf = `${maxConnections}\nwal_level = minimal\narchive_mode = off\nmax_wal_senders = 0\n`;
  pgs('stop', 'big');
  const run = (archiving) => {
    writeFileSync(pgsConf, archiving ? conf : offConf);
    startDirect();
    // The archiver catches up (after pgbench -i, the other side's WAL) before a measurement starts.
    if (archiving) for (let i = 0; i < 600 && ready() !== '0'; i++) spawnSync('sleep', ['0.5']);
  };
  for (const workload of ['tpcb', 'simple-update']) {
    const withArchiving = [];
    const without = [];
    run(true);
    tps(`${workload}, warm-up (not counted)`, workload);
    // A B B A, A B B A…: neither side always runs first after a restart or a checkpoint.
    for (let round = 0; round < ROUNDS; round++) {
      for (const archiving of round % 2 === 0 ? [true, false] : [false, true]) {
        // The warm-up's server serves the first measurement; every other one starts afresh.
        if (!(round === 0 && archiving)) {
          stopDirect();
          run(archiving);
        }
        (archiving ? withArchiving : without).push(tps(`${workload}, archiving ${archiving ? 'on (archive_timeout 60 s)' : 'off (wal_level minimal)'}`, workload));
      }
    }
    stopDirect();
    const pairs = withArchiving.map((x, i) => 100 * (1 - x / without[i])); // in the order they ran
    const meanOn = mean(withArchiving);
    const meanOff = mean(without);
    console.log(`archiving cost, ${workload}: ${(100 * (1 - meanOn / meanOff)).toFixed(1)} % of TPS (mean ${meanOn.toFixed(0)} with vs ${meanOff.toFixed(0)} without, ${ROUNDS} pairs of ${SECONDS} s; per pair ${pairs.map((x) => x.toFixed(1)).join(', ')} %)`);
  }
  writeFileSync(pgsConf, conf);
  pgs('start', 'big');
  if (ARCHIVING_ONLY) throw new Done();

  // --- backups ---
  const backups = [];
  for (let i = 0; i < 3; i++) backups.push(pgs('backup', 'big').ms);
  console.log(`online backup of ${(size / 2 ** 30).toFixed(2)} GiB: median ${quantile(backups, 0.5).toFixed(0)} ms (${backups.map((x) => x.toFixed(0)).join(', ')})`);

  // --- point-in-time restore: WAL written after the last backup is replayed ---
  pgbench('big', ['-c', '4', '-j', '2', '-T', '20', '-N']);
  const walBefore = psql('big', 'SELECT pg_current_wal_lsn()');
  const noted = new Date().toISOString();
  t = performance.now();
  pgs('restore', 'big', '--time', noted, '--as', 'pitr');
  const pitrMs = performance.now() - t;
  const list = json('backups', 'big');
  const last = list.backups.filter((x) => x.reason !== 'pre-restore').at(-1);
  const [hi, lo] = walBefore.split('/').map((x) => Number.parseInt(x, 16));
  const [bhi, blo] = last.endLsn.split('/').map((x) => Number.parseInt(x, 16));
  const walBytes = (hi * 2 ** 32 + lo) - (bhi * 2 ** 32 + blo);
  console.log(`PITR (--as): ${pitrMs.toFixed(0)} ms, ${(walBytes / 2 ** 20).toFixed(0)} MiB of WAL after the backup`);

  t = performance.now();
  pgs('restore', 'big', '--backup', last.id, '--as', 'restored');
  const plainMs = performance.now() - t;
  console.log(`restore of the backup (--as, no replay): ${plainMs.toFixed(0)} ms`);
  console.log(`PITR replay: ~${((walBytes / 2 ** 20) / ((pitrMs - plainMs) / 1000)).toFixed(0)} MiB/s (the PITR's extra time over the plain restore)`);

  t = performance.now();
  pgs('restore', 'big', '--backup', last.id);
  console.log(`restore in place (pre-restore backup included): ${(performance.now() - t).toFixed(0)} ms`);
  // The daemon then backs up the new generation in the background: let it finish before the next figure.
  const settle = (id) => {
    const until = Date.now() + 120_000;
    while (json('backups', id).backups.every((x) => x.reason !== 'first') && Date.now() < until) spawnSync('sleep', ['0.5']);
  };
  settle('big');

  // The copies made above vacuum and analyze their 1 GiB in the background: measure branches without them.
  for (const id of ['pitr', 'restored']) pgs('remove', id, '--yes');
  const branches = [];
  for (let i = 0; i < 3; i++) {
    t = performance.now();
    pgs('branch', 'big', `dev${i}`);
    branches.push(performance.now() - t);
  }
  console.log(`branch (online, streamed): median ${quantile(branches, 0.5).toFixed(0)} ms (${branches.map((x) => x.toFixed(0)).join(', ')})`);

  const file = path.join(b.home, 'big.pgs');
  t = performance.now();
  pgs('export', 'big', '-o', file);
  console.log(`export: ${(performance.now() - t).toFixed(0)} ms, ${(statSync(file).size / 2 ** 30).toFixed(2)} GiB`);
  t = performance.now();
  pgs('import', file, '--as', 'moved');
  console.log(`import: ${(performance.now() - t).toFixed(0)} ms`);
  rmSync(file);

  pgs('config', 'big', '--autosuspend', '1s');
  const deadline = Date.now() + 60_000;
  while (json('list').find((x) => x.id === 'big').state !== 'suspended' && Date.now() < deadline) spawnSync('sleep', ['1']);
  const wakesBefore = json('list').find((x) => x.id === 'big').wakes;
  t = performance.now();
  const offline = json('backup', 'big');
  const after = json('list').find((x) => x.id === 'big');
  console.log(`backup of the suspended tenant: ${(performance.now() - t).toFixed(0)} ms, ${offline.kind}, still ${after.state}, wakes ${wakesBefore} -> ${after.wakes}`);

  function startDirect() {
    // The server binary run by hand, as the owner of its folder (a uid of its own per tenant when pgs
    // runs as root), with whatever pgs.conf holds now.
    const versionDir = readdir(path.join(dataRoot, 'pg'))[0];
    const postgres = path.join(dataRoot, 'pg', versionDir, 'bin', 'postgres');
    const dir = path.join(dataRoot, 'tenants', 'big');
    const owner = statSync(dir);
    const server = spawn(postgres, ['-D', dir, '-k', dir], { detached: true, stdio: 'ignore', ...(process.getuid?.() === 0 ? { uid: owner.uid, gid: owner.gid } : {}) });
    server.unref();
    for (let i = 0; i < 200; i++) {
      if (spawnSync('psql', ['-h', dir, '-U', 'postgres', '-d', 'big', '-Atc', 'SELECT 1'], { env: { ...process.env, PGPASSWORD: big.password } }).status === 0) return;
      spawnSync('sleep', ['0.05']);
    }
    throw new Error('the server started directly did not start');
  }
  function stopDirect() {
    const dir = path.join(dataRoot, 'tenants', 'big');
    const pid = Number(readFileSync(path.join(dir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    process.kill(pid, 'SIGINT');
    for (let i = 0; i < 600; i++) {
      try {
        process.kill(pid, 0);
      } catch {
        return;
      }
      spawnSync('sleep', ['0.05']);
    }
  }
  function readdir(dir) {
    return spawnSync('ls', [dir], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  }
} catch (error) {
  if (!(error instanceof Done)) throw error;
} finally {
  b.remove();
}
