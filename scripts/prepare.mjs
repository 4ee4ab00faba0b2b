// npm's prepare step (npm ci, npm install, npm link): builds unless dist is
// already as new as everything the build reads. A fresh clone has no dist, so
// it builds; `npm link` right after `npm ci` finds the stamp and does not
// build again. The stamp holds the time the last build started, so a file
// saved during that build is still seen as newer.
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';

const root = path.join(path.dirname(new URL(import.meta.url).pathname), '..');
const stamp = path.join(root, 'dist', '.build-stamp');
const inputs = ['src', 'test', 'web', 'bin', 'tsconfig.json', 'package.json', 'package-lock.json'];
const outputs = ['dist/bundle/pgs.js', 'dist/web/index.html'];

async function newest(file) {
  let stat;
  try {
    stat = await fs.stat(file);
  } catch {
    return 0;
  }
  if (!stat.isDirectory()) return stat.mtimeMs;
  let latest = stat.mtimeMs;
  for (const entry of await fs.readdir(file)) latest = Math.max(latest, await newest(path.join(file, entry)));
  return latest;
}

async function builtAt() {
  try {
    for (const file of outputs) await fs.access(path.join(root, file));
    const time = Number((await fs.readFile(stamp, 'utf8')).trim());
    return Number.isFinite(time) ? time : 0;
  } catch {
    return 0;
  }
}

const last = await builtAt();
let latest = 0;
for (const input of inputs) latest = Math.max(latest, await newest(path.join(root, input)));
if (last > 0 && latest < last) {
  console.log('pgs: dist is newer than its sources; not building again (npm run build always builds)');
} else {
  const started = Date.now();
  const result = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
  await fs.writeFile(stamp, `${started}\n`);
}
