import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { recoveryConfText } from '../../src/runtime/server-config.js';

/**
 * The restore_command pgs writes, run by /bin/sh the way PostgreSQL runs it
 * (%f and %p replaced first): found, missing, and there but not copyable.
 */
describe('restore_command', () => {
  let dir: string;
  const segment = '00000001000000000000000E';

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgs restore cmd '));
    for (const d of ['first', 'second']) await fs.mkdir(path.join(dir, d));
    await fs.writeFile(path.join(dir, 'second', segment), 'wal bytes');
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  function run(name: string, target: string): number | null {
    const conf = recoveryConfText({ walDirs: [path.join(dir, 'first'), path.join(dir, 'second')], target: 'latest' });
    const quoted = /^restore_command = '(.*)'$/m.exec(conf)?.[1];
    assert.ok(quoted, conf);
    const command = quoted.replaceAll("''", "'").replaceAll('%f', name).replaceAll('%p', target);
    return spawnSync('/bin/sh', ['-c', command], { stdio: 'ignore' }).status;
  }

  it('copies a segment from whichever folder has it (a folder name with a space, too)', async () => {
    const target = path.join(dir, 'restored');
    assert.equal(run(segment, target), 0);
    assert.equal(await fs.readFile(target, 'utf8'), 'wal bytes');
  });

  it('answers 1 (the archive ends here) for a segment no folder has', () => {
    assert.equal(run('00000001000000000000000F', path.join(dir, 'none')), 1);
  });

  it('fails with a status PostgreSQL takes as fatal when a segment is there but cannot be copied', () => {
    assert.equal(run(segment, path.join(dir, 'no such folder', 'x')), 126);
  });
});
