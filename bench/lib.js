// Shared by the bench scripts.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';

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
