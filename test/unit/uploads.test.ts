import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { AUTO_IMPORT_CAP_BYTES } from '../../src/catalog/schema.js';
import { PgsError } from '../../src/core/errors.js';
import { autoImportBytes, receiveUpload } from '../../src/daemon/uploads.js';

const GiB = 2 ** 30;
const limit = (bytes: number) => ({ bytes, auto: false, why: 'test' });

describe('uploads to import: the limit and the receiver', () => {
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(tmpdir(), 'pgs-uploads-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('auto is half the free space above the 5 % kept free, at most the cap, never negative', () => {
    assert.equal(autoImportBytes(45 * GiB, 100 * GiB), 20 * GiB);
    assert.equal(autoImportBytes(5 * GiB, 100 * GiB), 0);
    assert.equal(autoImportBytes(1 * GiB, 100 * GiB), 0);
    assert.equal(autoImportBytes(900 * GiB, 1000 * GiB), AUTO_IMPORT_CAP_BYTES);
  });

  it('a whole body is written and its size returned', async () => {
    const body = new PassThrough();
    const file = path.join(dir, 'whole');
    const done = receiveUpload(body, file, limit(10));
    body.end(Buffer.from('0123456789'));
    assert.equal(await done, 10);
    assert.equal(await fs.readFile(file, 'utf8'), '0123456789');
  });

  it('past the limit, cut short, or onto an existing file: refused, with the file closed', async () => {
    const over = new PassThrough();
    const overFile = path.join(dir, 'over');
    const refused = receiveUpload(over, overFile, limit(8));
    over.write(Buffer.alloc(5));
    over.write(Buffer.alloc(5));
    await assert.rejects(refused, (err: unknown) => err instanceof PgsError && err.code === 'UPLOAD_TOO_LARGE' && /goes past 8 B; imports take at most 8 B \(test\)/.test(err.message));
    assert.ok(!over.destroyed, 'the request is paused, not destroyed: the daemon still answers');
    assert.ok((await fs.stat(overFile)).size <= 8, 'nothing past the limit is written');

    const cut = new PassThrough();
    const cutShort = receiveUpload(cut, path.join(dir, 'cut'), limit(100));
    cut.write(Buffer.alloc(5));
    cut.destroy();
    await assert.rejects(cutShort, (err: unknown) => err instanceof PgsError && err.code === 'INVALID_REQUEST' && /stopped after 5 B, before its end/.test(err.message));

    const again = new PassThrough();
    const exists = receiveUpload(again, path.join(dir, 'whole'), limit(100));
    again.end(Buffer.alloc(5));
    await assert.rejects(exists, { code: 'EEXIST' });
    assert.equal(await fs.readFile(path.join(dir, 'whole'), 'utf8'), '0123456789');
  });
});
