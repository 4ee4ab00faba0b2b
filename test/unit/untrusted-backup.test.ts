import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkTarMembers } from '../../src/backup/manifest.js';
import { parseBackupMeta, parseGenerationMeta } from '../../src/backup/records.js';
import { bucketObjectKind } from '../../src/daemon/shipper.js';

/** A ustar header for `name` of `type` with `size` bytes of data (zeros), its checksum right unless `badSum`. */
function member(name: string, type: string, data = Buffer.alloc(0), options: { badSum?: boolean; linkTo?: string } = {}): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0, 100, 'utf8');
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124);
  header.write('00000000000\0', 136);
  header.write(type, 156);
  if (options.linkTo) header.write(options.linkTo, 157, 100);
  header.write('ustar\0' + '00', 257, 'latin1');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(`${(options.badSum ? sum + 1 : sum).toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  const padded = Buffer.alloc(Math.ceil(data.length / 512) * 512);
  data.copy(padded);
  return Buffer.concat([header, padded]);
}
const end = Buffer.alloc(1024);

describe('untrusted backups: tar members, bucket names, records', () => {
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(tmpdir(), 'pgs-untrusted-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });
  const tarOf = async (name: string, ...parts: Buffer[]) => {
    const file = path.join(dir, name);
    await fs.writeFile(file, Buffer.concat(parts));
    return file;
  };

  it('takes the tar GNU tar and PostgreSQL write: files and folders, with or without the end blocks', async () => {
    const tree = path.join(dir, 'tree');
    await fs.mkdir(path.join(tree, 'base', '1'), { recursive: true });
    await fs.writeFile(path.join(tree, 'PG_VERSION'), '18\n');
    await fs.writeFile(path.join(tree, 'base', '1', 'x'.repeat(95)), Buffer.alloc(70_000, 1)); // a path past 100 bytes: ustar's prefix field
    const file = path.join(dir, 'good.tar');
    assert.equal(spawnSync('tar', ['--format=ustar', '-cf', file, '-C', tree, '.']).status, 0);
    assert.equal(await checkTarMembers(file, 'b1'), 5);
    assert.equal(await checkTarMembers(await tarOf('noend.tar', member('PG_VERSION', '0', Buffer.from('18\n'))), 'b1'), 1);
  });

  it('refuses links, devices, names that leave the folder, damaged headers and cut files, naming the member', async () => {
    const cases: [Buffer[], RegExp][] = [
      [[member('pg_hba.conf', '2', Buffer.alloc(0), { linkTo: '/etc/passwd' }), end], /member "pg_hba.conf" is a symbolic link/],
      [[member('PG_VERSION', '0', Buffer.from('18')), member('x', '1', Buffer.alloc(0), { linkTo: 'PG_VERSION' }), end], /member "x" is a hard link/],
      [[member('dev', '3'), end], /is a character device/],
      [[member('fifo', '6'), end], /is a FIFO/],
      [[member('pax', 'x', Buffer.from('30 path=../../etc/x\n')), end], /is a pax header/],
      [[member('../escape', '0', Buffer.from('x')), end], /member "..\/escape" is not a relative name inside the data folder/],
      [[member('base/../../escape', '0'), end], /not a relative name/],
      [[member('/etc/cron.d/x', '0'), end], /not a relative name/],
      [[member('a\nb', '0'), end], /not a relative name/],
      [[member('ok', '0', Buffer.alloc(10), { badSum: true }), end], /header at byte 0 is damaged \(checksum\)/],
      [[member('big', '0', Buffer.alloc(2000)).subarray(0, 1024)], /ends inside a member/],
      [[member('ok', '0'), Buffer.alloc(100, 1)], /ends inside a header/],
      [[member('dir/', '5', Buffer.alloc(10)), end], /folder "dir\/" has data/],
    ];
    let n = 0;
    for (const [parts, reason] of cases) {
      const file = await tarOf(`bad-${n++}.tar`, ...parts);
      await assert.rejects(checkTarMembers(file, 'b1'), (err: Error) => /^backup b1 is refused: /.test(err.message) && reason.test(err.message), String(reason));
    }
  });

  it('takes from a bucket only the names and sizes pgs writes', () => {
    const g = '20261201-120000-abcd';
    const b = '20261201-130000-ef01';
    assert.equal(bucketObjectKind(`${g}/pgs-generation.json`, 300), 'record');
    assert.equal(bucketObjectKind(`${g}/wal/000000010000000000000003`, 16 << 20), 'wal');
    assert.equal(bucketObjectKind(`${g}/wal/000000010000000000000003.partial`, 16 << 20), 'wal');
    assert.equal(bucketObjectKind(`${g}/wal/00000002.history`, 42), 'wal');
    assert.equal(bucketObjectKind(`${g}/base/${b}/pgs-backup.json`, 2000), 'record');
    assert.equal(bucketObjectKind(`${g}/base/${b}/base.tar`, 5 << 30), 'large');
    assert.equal(bucketObjectKind(`${g}/base/${b}/backup_manifest`, 100), 'large');
    for (const bad of [
      `${g}/wal/../../../../etc/cron.d/x`, `${g}/wal/run-me.sh`, `${g}/wal/000000010000000000000003.sh`, `${g}/notes.txt`, `../${g}/pgs-generation.json`,
      `${g}/base/../../x/pgs-backup.json`, `${g}/base/${b}/postgresql.auto.conf`, `${g}/base/${b}/x/base.tar`, 'pgs-generation.json', `${g}/wal/`,
    ]) assert.equal(bucketObjectKind(bad, 10), undefined, bad);
    assert.equal(bucketObjectKind(`${g}/pgs-generation.json`, 2 << 20), undefined, 'a record of megabytes is not one');
    assert.equal(bucketObjectKind(`${g}/wal/000000010000000000000003`, (1 << 30) + 1), undefined, 'no segment is larger than 1 GiB');
  });

  it('checks a record whole, and that it names the place it was found', () => {
    const tenantEntry = { id: 'shop', suffix: 'ab12cd', createdAt: '2026-12-01T12:00:00.000Z', access: 'enabled', wanted: 'running', maxConnections: 20 };
    const record = { format: 1, id: '20261201-130000-ef01', tenant: 'shop', generation: '20261201-120000-abcd', kind: 'online', reason: 'scheduled', startedAt: '2026-12-01T13:00:00.000Z', finishedAt: '2026-12-01T13:00:05.000Z', startLsn: '0/3000028', endLsn: '0/3000100', timeline: 1, afterLsn: '0/3000100', bytes: 1000, tenantEntry };
    const under = { tenant: 'shop', generation: '20261201-120000-abcd', id: '20261201-130000-ef01' };
    let parsed;
    try {
      parsed = parseBackupMeta(JSON.stringify(record), 'r', under);
    } catch (err) {
      // The tenant entry's schema may want more fields than this test names: say which.
      assert.fail((err as Error).message);
    }
    assert.equal(parsed.id, under.id);
    assert.throws(() => parseBackupMeta(JSON.stringify({ ...record, id: '../../../../tmp/x' }), 'r'), /r: id must be a stamp/);
    assert.throws(() => parseBackupMeta(JSON.stringify({ ...record, id: '20261201-130000-0000' }), 'r', under), /names backup shop\/20261201-120000-abcd\/20261201-130000-0000, not the/);
    assert.throws(() => parseBackupMeta(JSON.stringify({ ...record, tenantEntry: { ...tenantEntry, id: 'other' } }), 'r', under), /settings of tenant other, not of shop/);
    assert.throws(() => parseBackupMeta(JSON.stringify({ ...record, extra: 1 }), 'r'), /extra is not a field pgs knows/);
    assert.throws(() => parseBackupMeta(JSON.stringify({ ...record, reason: 'a\nb' }), 'r'), /reason/);
    assert.throws(() => parseBackupMeta('{', 'r'), /r is not JSON/);
    assert.throws(() => parseBackupMeta(' '.repeat((1 << 20) + 1), 'r'), /larger than 1 MiB/);
    const generation = { format: 1, tenant: 'shop', generation: '20261201-120000-abcd', createdAt: '2026-12-01T12:00:00.000Z' };
    assert.equal(parseGenerationMeta(JSON.stringify(generation), 'g', { tenant: 'shop', generation: generation.generation }).tenant, 'shop');
    assert.throws(() => parseGenerationMeta(JSON.stringify({ ...generation, tenant: 'Bad/..' }), 'g'), /g: tenant/);
    assert.throws(() => parseGenerationMeta(JSON.stringify(generation), 'g', { tenant: 'other', generation: generation.generation }), /not the other\//);
  });
});
