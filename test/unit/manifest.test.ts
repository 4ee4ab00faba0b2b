import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { buildManifest, parseManifest, verifyTar, verifyTree } from '../../src/backup/manifest.js';

describe('backup manifests: made, parsed, and checked against a tar and a folder', () => {
  it('a manifest pgs makes passes its own checks; a flipped byte, a missing file and a cut tar are named', async () => {
    const dir = await fs.mkdtemp(path.join(tmpdir(), 'pgs-manifest-'));
    const data = path.join(dir, 'data');
    await fs.mkdir(path.join(data, 'base', '1'), { recursive: true });
    await fs.writeFile(path.join(data, 'PG_VERSION'), '18\n');
    await fs.writeFile(path.join(data, 'base', '1', '1259'), Buffer.alloc(20_000, 7));
    await fs.writeFile(path.join(data, 'base', '1', 'empty'), '');
    const text = await buildManifest(data, () => false, { timeline: 1, start: '0/E00028', end: '0/E00120' }, 7n);
    const manifest = parseManifest(text, 'test');
    assert.deepEqual(manifest.files.map((f) => f.path).sort(), ['PG_VERSION', 'base/1/1259', 'base/1/empty']);
    assert.deepEqual(manifest.walRanges, [{ timeline: 1, start: '0/E00028', end: '0/E00120' }]);
    assert.throws(() => parseManifest(text.replace('20000', '20001'), 'edited'), /edited does not match its own checksum/);

    const tar = path.join(dir, 'base.tar');
    execFileSync('tar', ['--format=ustar', '-cf', tar, '-C', data, '.']);
    await verifyTar(tar, manifest, 'b1');
    await verifyTree(data, manifest, 'b1');

    const bytes = await fs.readFile(tar);
    const at = bytes.indexOf(Buffer.alloc(64, 7));
    const flipped = Buffer.from(bytes);
    flipped[at + 5] = 8;
    await fs.writeFile(tar, flipped);
    await assert.rejects(verifyTar(tar, manifest, 'b1'), /backup b1 is damaged: base\/1\/1259 does not match its checksum/);
    await fs.writeFile(tar, bytes.subarray(0, at + 100));
    await assert.rejects(verifyTar(tar, manifest, 'b1'), /base.tar ends inside base\/1\/1259/);

    await fs.rm(path.join(data, 'base', '1', 'empty'));
    await assert.rejects(verifyTree(data, manifest, 'b1'), /backup b1 is damaged: base\/1\/empty is missing/);
    await fs.rm(dir, { recursive: true });
  });
});
