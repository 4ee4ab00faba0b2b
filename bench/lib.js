// Shared by the bench scripts.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

/** Stops the daemon and servers of a bench PGS_HOME and deletes its data root and the home. */
export function removePgsHome(home, bin, env) {
  let dataRoot;
  try {
    dataRoot = JSON.parse(readFileSync(path.join(home, 'catalog.json'), 'utf8')).settings.dataRoot;
    spawnSync(process.execPath, [bin, 'stop'], { env });
  } catch { /* not set up */ }
  if (dataRoot) rmSync(dataRoot, { recursive: true, force: true });
  rmSync(home, { recursive: true, force: true });
}

/** The q-quantile (0..1) of a list of numbers, nearest rank. */
export function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

/**
 * A fresh PGS_HOME for a bench script, and `pgs(...args)` that runs the CLI
 * in it (a new process each time, like a person or a script) and returns its
 * stdout with the wall time; it throws with stderr when the command fails.
 */
export function benchHome(extraEnv = {}) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const bin = path.join(root, 'bin', 'pgs.js');
  const home = mkdtempSync(path.join(tmpdir(), 'pgs-bench-'));
  const env = { ...process.env, PGS_HOME: home, ...extraEnv };
  const pgs = (...args) => {
    const started = process.hrtime.bigint();
    const result = spawnSync(process.execPath, [bin, ...args], { env, encoding: 'utf8' });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (result.status !== 0) throw new Error(`pgs ${args.join(' ')} failed: ${result.stderr}`);
    return { ms, stdout: result.stdout, stderr: result.stderr };
  };
  return { root, bin, home, env, pgs, remove: () => removePgsHome(home, bin, env) };
}

/** RSS and PSS (bytes) of one process, from /proc/<pid>/smaps_rollup; zeros when it is gone. */
export function smaps(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const kb = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
    return { rss: kb('Rss'), pss: kb('Pss') };
  } catch {
    return { rss: 0, pss: 0 };
  }
}

/** Milliseconds from TCP connect to the first row of SELECT 1 through the router (TLS with SNI, SCRAM), node-postgres; `t` as `pgs create --json` prints it. */
export async function routerConnectMs(t, port) {
  const started = performance.now();
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: t.id, password: t.password, ssl: { servername: t.hostname, rejectUnauthorized: false } });
  await client.connect();
  await client.query('SELECT 1');
  const took = performance.now() - started;
  await client.end();
  return took;
}
