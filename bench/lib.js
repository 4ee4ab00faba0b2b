// Shared by the bench scripts.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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
