import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EXPORT_META, readExport, writeExport, type ExportMeta } from '../../src/backup/export-file.js';
import { PgsError } from '../../src/core/errors.js';

/**
 * readExport against hostile export files built here, byte by byte: each is
 * refused with one BACKUP_DAMAGED naming what is wrong, and leaves nothing in
 * the folder it was to unpack into.
 */
const manifest = Buffer.from('{"PostgreSQL-Backup-Manifest-Version": 1}\n');
const baseTar = Buffer.alloc(3000, 7);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const tenant = { id: 'acme', suffix: 'abc123', access: 'enabled', wanted: 'running', maxConnections: 20, createdAt: '2026-01-01T12:00:00.000Z', generation: '20260101-120000-a3f9' };
const backup = {
  format: 1, id: '20260101-130000-b4e0', tenant: 'acme', generation: '20260101-120000-a3f9', kind: 'online', reason: 'export',
  startedAt: '2026-01-01T13:00:00.000Z', finishedAt: '2026-01-01T13:00:01.000Z', startLsn: '0/2000028', endLsn: '0/2000120', timeline: 1, afterLsn: '0/2000158',
  bytes: baseTar.length, tenantEntry: tenant,
};
const goodMeta = () => ({ format: 1, pgsVersion: '0.2.0', exportedAt: '2026-01-01T13:00:02.000Z', tenant: structuredClone(tenant), backup: structuredClone(backup), sha256: { backup_manifest: sha(manifest), 'base.tar': sha(baseTar) } });

interface Entry { name: string; data: Buffer; type?: string; size?: string; checksum?: string; prefix?: string; magic?: string }

function header(entry: Entry): Buffer {
  const block = Buffer.alloc(512);
  block.write(entry.name, 0, 100, 'utf8');
  block.write('0000600\0', 100);
  block.write('0000000\0', 108);
  block.write('0000000\0', 116);
  block.write(entry.size ?? `${entry.data.length.toString(8).padStart(11, '0')}\0`, 124, 12, 'latin1');
  block.write('00000000000\0', 136);
  block.write('        ', 148);
  block.write(entry.type ?? '0', 156, 1, 'latin1');
  block.write(entry.magic ?? 'ustar\0', 257, 'latin1');
  block.write('00', 263);
  if (entry.prefix) block.write(entry.prefix, 345);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(entry.checksum ?? `${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return block;
}

function tar(entries: Entry[], tail: Buffer = Buffer.alloc(1024)): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(header(entry), entry.data, Buffer.alloc((512 - (entry.data.length % 512)) % 512));
  }
  return Buffer.concat([...parts, tail]);
}

const json = (meta: unknown) => Buffer.from(`${JSON.stringify(meta, null, 2)}\n`);
const members = (): Entry[] => [{ name: 'backup_manifest', data: manifest }, { name: 'base.tar', data: baseTar }];
const withMeta = (edit: (meta: ReturnType<typeof goodMeta>) => unknown): Buffer => tar([...members(), { name: EXPORT_META, data: json(edit(goodMeta())) }]);
const good = () => withMeta((m) => m);

describe('readExport: an export file is untrusted input', () => {
  let root: string;
  let n = 0;

  before(async () => {
    root = await fs.mkdtemp(path.join(tmpdir(), 'pgs-export-'));
  });
  after(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  /** Writes `bytes` as an export and reads it into an empty folder. */
  async function read(bytes: Buffer): Promise<{ dir: string; result: Promise<ExportMeta> }> {
    const dir = path.join(root, `case-${++n}`);
    await fs.mkdir(dir);
    const file = path.join(dir, 'upload.pgs');
    await fs.writeFile(file, bytes);
    const out = path.join(dir, 'unpacked');
    await fs.mkdir(out);
    return { dir: out, result: readExport(file, out) };
  }

  async function refused(bytes: Buffer, why: RegExp): Promise<void> {
    const { dir, result } = await read(bytes);
    await assert.rejects(result, (err: unknown) => {
      assert.ok(err instanceof PgsError, `a PgsError: ${String(err)}`);
      assert.equal(err.code, 'BACKUP_DAMAGED');
      assert.match(err.message, /^not a usable pgs export: /);
      assert.match(err.message, why);
      return true;
    });
    assert.deepEqual(await fs.readdir(dir), [], 'nothing is left in the folder');
  }

  it('a file as writeExport writes it, and the one built here, are read back whole', async () => {
    const backupDir = path.join(root, 'backup');
    await fs.mkdir(backupDir);
    await fs.writeFile(path.join(backupDir, 'backup_manifest'), manifest);
    await fs.writeFile(path.join(backupDir, 'base.tar'), baseTar);
    const rest: Partial<ReturnType<typeof goodMeta>> = goodMeta();
    delete rest.sha256;
    const file = path.join(root, 'written.pgs');
    await writeExport(file, backupDir, rest as unknown as Omit<ExportMeta, 'sha256'>);
    for (const bytes of [await fs.readFile(file), good()]) {
      const { dir, result } = await read(bytes);
      const meta = await result;
      assert.equal(meta.tenant.id, 'acme');
      assert.deepEqual((await fs.readdir(dir)).sort(), ['backup_manifest', 'base.tar']);
      assert.deepEqual(await fs.readFile(path.join(dir, 'base.tar')), baseTar);
    }
  });

  it('tar entries that are not plain files are refused, whatever their name', async () => {
    for (const [type, what] of [['2', 'symbolic link'], ['1', 'hard link'], ['5', 'directory'], ['3', 'character device'], ['4', 'block device'], ['6', 'FIFO'], ['x', 'pax header'], ['L', 'GNU long name']] as const) {
      const entries = members();
      entries[1] = { name: 'base.tar', data: Buffer.alloc(0), type };
      await refused(tar([...entries, { name: EXPORT_META, data: json(goodMeta()) }]), new RegExp(`"base.tar" is a ${what}; pgs writes only plain files`));
    }
  });

  it('names with a path, unknown names, a ustar prefix and duplicates are refused', async () => {
    for (const name of ['../base.tar', '/etc/passwd', 'sub/base.tar', '..', '.']) {
      await refused(tar([{ name, data: baseTar }, ...members()]), /an entry with a path/);
    }
    await refused(tar([{ name: 'postgresql.conf', data: baseTar }, ...members()]), /an entry pgs does not write: "postgresql.conf"/);
    await refused(tar([{ name: 'base.tar', data: baseTar, prefix: '../../x' }]), /has a path prefix/);
    await refused(tar([...members(), { name: 'base.tar', data: baseTar }]), /it holds base.tar twice/);
  });

  it('sizes past the end, negative, garbage or base-256 are refused', async () => {
    const cut = good().subarray(0, 512 + 200);
    await refused(cut, /"backup_manifest" claims \d+ bytes, past the end of the file/);
    const huge = members();
    huge[1] = { name: 'base.tar', data: baseTar, size: '77777777777\0' };
    await refused(tar(huge), /"base.tar" claims 8589934591 bytes, past the end/);
    for (const size of ['-0000000005\0', '0x00000010\0\0', '1e3\0\0\0\0\0\0\0\0\0', 'zzzzzzzzzzz\0', '\x80\0\0\0\0\0\0\0\0\0\x10\0', '00000008000\0', '\0\0\0\0\0\0\0\0\0\0\0\0']) {
      const entries = members();
      entries[0] = { name: 'backup_manifest', data: manifest, size };
      await refused(tar(entries), /"backup_manifest" has no valid size/);
    }
  });

  it('a bad header checksum, another magic, garbage after the end, a damaged end marker are refused', async () => {
    const entries = members();
    entries[0] = { name: 'backup_manifest', data: manifest, checksum: '0000000\0' };
    await refused(tar(entries), /the tar header at byte 0 is damaged \(its checksum does not match\)/);
    const flipped = good();
    flipped[10] = 0x41; // inside the first name: the stored checksum no longer matches
    await refused(flipped, /tar header at byte 0 is damaged/);
    entries[0] = { name: 'backup_manifest', data: manifest, magic: 'GNUtar' };
    await refused(tar(entries), /not a ustar header/);
    await refused(Buffer.concat([good(), Buffer.from('trailing garbage')]), /goes on for 16 bytes past its end/);
    await refused(Buffer.concat([good(), Buffer.alloc(512)]), /goes on for 512 bytes past its end/);
    const end = Buffer.alloc(1024);
    end[700] = 1;
    await refused(withMetaTail(end), /end marker is damaged/);
    await refused(withMetaTail(Buffer.alloc(512)), /ends in the middle of its end marker/);
    await refused(Buffer.alloc(0), /the file is empty/);
    await refused(Buffer.from('not an export'), /ends in the middle/);
    await refused(Buffer.alloc(4096, 0x41), /tar header at byte 0 is damaged/);
  });

  it('pgs-export.json before the data, twice, too large, not JSON, or missing is refused', async () => {
    const meta = { name: EXPORT_META, data: json(goodMeta()) };
    await refused(tar([meta, ...members()]), /pgs-export.json comes before backup_manifest and base.tar/);
    await refused(tar([members()[0]!, meta, members()[1]!]), /pgs-export.json comes before base.tar/);
    await refused(tar([...members(), meta, meta]), /it holds pgs-export.json twice/);
    await refused(tar([...members(), meta, members()[0]!]), /it holds "backup_manifest" after pgs-export.json/);
    await refused(tar([...members(), { name: EXPORT_META, data: Buffer.alloc(2 << 20, 0x20) }]), /pgs-export.json is 2097152 bytes, more than the 1048576 pgs reads/);
    await refused(tar([...members(), { name: EXPORT_META, data: Buffer.from('{"format": 1,') }]), /pgs-export.json is not valid JSON/);
    await refused(tar(members()), /pgs-export.json is missing/);
    await refused(tar([members()[0]!]), /base.tar is missing/);
  });

  it('a member is written only as a new file in the folder: a link there is not followed', async () => {
    const { dir, result } = await read(good());
    await result.catch(() => undefined);
    await fs.rm(dir, { recursive: true });
    await fs.mkdir(dir);
    const outside = path.join(root, 'outside');
    await fs.writeFile(outside, 'kept');
    await fs.symlink(outside, path.join(dir, 'base.tar'));
    const file = path.join(path.dirname(dir), 'upload.pgs');
    await assert.rejects(readExport(file, dir), { code: 'EEXIST' });
    assert.equal(await fs.readFile(outside, 'utf8'), 'kept');
    assert.deepEqual(await fs.readdir(dir), ['base.tar'], 'the manifest it wrote is removed, the link it did not make is not');
  });

  it('a member whose bytes differ from its checksum is refused and removed', async () => {
    await refused(withMeta((m) => ({ ...m, sha256: { ...m.sha256, 'base.tar': sha(Buffer.from('other')) } })), /base.tar does not match its checksum/);
  });

  it('the settings in pgs-export.json are checked whole, naming the field', async () => {
    const cases: [(m: ReturnType<typeof goodMeta>) => unknown, RegExp][] = [
      [(m) => ({ ...m, tenant: { ...m.tenant, maxConnections: '20\narchive_command = \'x\'' } }), /: tenant.maxConnections must be an integer from 5 to 10000$/],
      [(m) => ({ ...m, tenant: { ...m.tenant, maxConnections: 20.5 } }), /tenant.maxConnections must be an integer from 5 to 10000$/],
      [(m) => ({ ...m, tenant: { ...m.tenant, maxConnections: 1e9 } }), /tenant.maxConnections must be an integer/],
      [(m) => ({ ...m, tenant: { ...m.tenant, rpoSeconds: -5 } }), /tenant.rpoSeconds must be an integer from 1 to 3600$/],
      [(m) => ({ ...m, tenant: { ...m.tenant, autosuspendSeconds: 0 } }), /tenant.autosuspendSeconds must be an integer from 1 to/],
      [(m) => ({ ...m, tenant: { ...m.tenant, backupSchedule: 'weekly' } }), /tenant.backupSchedule must be hourly, daily or off$/],
      [(m) => ({ ...m, tenant: { ...m.tenant, id: 'acme\nx' } }), /tenant.id must be a tenant id/],
      [(m) => ({ ...m, tenant: { ...m.tenant, id: 'postgres' } }), /tenant.id must be a tenant id .*reserved/],
      [(m) => ({ ...m, tenant: { ...m.tenant, database: 'x"; DROP' } }), /tenant.database must be a database name/],
      [(m) => ({ ...m, tenant: { ...m.tenant, extra: 1 } }), /tenant.extra is not a field pgs knows$/],
      [(m) => { const t: Partial<typeof m.tenant> = m.tenant; delete t.maxConnections; return m; }, /tenant.maxConnections is missing$/],
      [(m) => ({ ...m, tenant: 'acme' }), /tenant must be a tenant entry$/],
      [(m) => ({ ...m, backup: { ...m.backup, id: '../../etc' } }), /backup.id must be a stamp/],
      [(m) => ({ ...m, backup: { ...m.backup, startLsn: '0/2000028\nx' } }), /backup.startLsn must be an LSN/],
      [(m) => ({ ...m, backup: { ...m.backup, endLsn: '0/20000g8' } }), /backup.endLsn must be an LSN/],
      [(m) => ({ ...m, backup: { ...m.backup, timeline: 0 } }), /backup.timeline must be an integer from 1 to/],
      [(m) => ({ ...m, backup: { ...m.backup, kind: 'hot' } }), /backup.kind must be online or offline$/],
      [(m) => ({ ...m, backup: { ...m.backup, finishedAt: 'yesterday' } }), /backup.finishedAt must be a time \(ISO 8601\)$/],
      [(m) => ({ ...m, backup: { ...m.backup, reason: 'export\u0007' } }), /backup.reason must be printable text/],
      [(m) => ({ ...m, backup: { ...m.backup, tenant: 'other' } }), /backup.tenant must be tenant.id \(acme\)/],
      [(m) => ({ ...m, backup: { ...m.backup, tenantEntry: { ...m.backup.tenantEntry, rpoSeconds: 99999 } } }), /backup.tenantEntry.rpoSeconds must be an integer from 1 to 3600/],
      [(m) => ({ ...m, sha256: { ...m.sha256, 'base.tar': 'abc' } }), /sha256.base.tar must be a SHA-256 in hex/],
      [(m) => ({ ...m, format: 2 }), /its format is 2; this pgs reads format 1/],
      [(m) => ({ ...m, pgsVersion: 'x'.repeat(500) }), /pgsVersion must be printable text/],
      [() => [1, 2], /pgs-export.json is not a JSON object$/],
      [() => 'text', /pgs-export.json is not a JSON object$/],
      [(m) => { const x: Partial<typeof m> = m; delete x.format; return x; }, /: format is missing$/],
    ];
    for (const [edit, why] of cases) await refused(withMeta(edit), why);
  });
});

function withMetaTail(tail: Buffer): Buffer {
  return tar([...members(), { name: EXPORT_META, data: json(goodMeta()) }], tail);
}
