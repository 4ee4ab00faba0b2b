import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { trimWal } from '../../src/runtime/local/template.js';

/** A WAL file name: timeline, log id and segment, 8 upper-case hex digits each. */
function walName(timeline: number, log: number, segment: number): string {
  return [timeline, log, segment].map((n) => n.toString(16).toUpperCase().padStart(8, '0')).join('');
}

describe('trimWal', () => {
  let root: string;
  let n = 0;

  before(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'pgs-wal-'));
  });
  after(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  async function walDir(files: string[]): Promise<string> {
    const dir = path.join(root, `pg_wal-${n++}`);
    await fs.mkdir(path.join(dir, 'archive_status'), { recursive: true });
    for (const file of files) await fs.writeFile(path.join(dir, file), '');
    return dir;
  }

  it('keeps the current segment and the next one, removes older and later ones', async () => {
    const names = Array.from({ length: 11 }, (_, i) => walName(1, 0, 8 + i));
    assert.equal(names[0], '000000010000000000000008');
    assert.equal(names[10], '000000010000000000000012');
    const dir = await walDir(names);
    await trimWal(dir, '00000001000000000000000C');
    assert.deepEqual((await fs.readdir(dir)).sort(), [
      '00000001000000000000000C',
      '00000001000000000000000D',
      'archive_status',
    ]);
  });

  it('leaves files that are not segments of the current timeline alone', async () => {
    const others = [
      '00000002.history',
      '000000010000000000000009.partial',
      '000000010000000000000009.00000028.backup',
      '000000020000000000000009', // another timeline
      '00000001000000000000000a', // lower-case: not a name PostgreSQL writes
    ];
    const dir = await walDir([...others, '000000010000000000000009', '00000001000000000000000C']);
    await trimWal(dir, '00000001000000000000000C');
    assert.deepEqual((await fs.readdir(dir)).sort(), [...others, '00000001000000000000000C', 'archive_status'].sort());
  });

  it('orders segments across a log id boundary (1 MiB segments: 4096 per log id)', async () => {
    const dir = await walDir([
      walName(1, 0, 0xffe),
      walName(1, 0, 0xfff),
      walName(1, 1, 0),
      walName(1, 1, 1),
    ]);
    await trimWal(dir, walName(1, 0, 0xfff));
    assert.deepEqual((await fs.readdir(dir)).sort(), [walName(1, 0, 0xfff), walName(1, 1, 0), 'archive_status']);
  });

  it('keeps a lone current segment', async () => {
    const dir = await walDir(['000000010000000000000003']);
    await trimWal(dir, '000000010000000000000003');
    assert.deepEqual((await fs.readdir(dir)).sort(), ['000000010000000000000003', 'archive_status']);
  });
});
