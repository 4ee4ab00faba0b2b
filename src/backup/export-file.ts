import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { PgsError } from '../core/errors.js';
import type { Tenant } from '../catalog/schema.js';
import type { BackupMeta } from './layout.js';

/**
 * `pgs export` writes one file: a tar (ustar) of a backup's backup_manifest and
 * base.tar, then pgs-export.json, which names the tenant's settings, the
 * backup, and the SHA-256 of the two files before it. `pgs import` reads it
 * in one pass, hashing as it writes, and refuses it unless every hash matches:
 * the file carries its own proof, and a tenant is only made from a whole one.
 */
export const EXPORT_META = 'pgs-export.json';
export const EXPORT_FORMAT = 1;
const MEMBERS = ['backup_manifest', 'base.tar'] as const;

export interface ExportMeta {
  format: number;
  pgsVersion: string;
  exportedAt: string;
  tenant: Tenant;
  backup: BackupMeta;
  sha256: Record<string, string>;
}

function header(name: string, size: number, mtime: number): Buffer {
  const block = Buffer.alloc(512);
  block.write(name, 0, 100, 'utf8');
  block.write('0000600\0', 100);
  block.write('0000000\0', 108);
  block.write('0000000\0', 116);
  block.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  block.write(`${Math.floor(mtime / 1000).toString(8).padStart(11, '0')}\0`, 136);
  block.write('        ', 148); // the checksum counts itself as spaces
  block.write('0', 156);
  block.write('ustar\0', 257);
  block.write('00', 263);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return block;
}

const padding = (size: number) => Buffer.alloc((512 - (size % 512)) % 512);

/** Writes the export of the backup in `backupDir` to `file`; returns its size and SHA-256. */
export async function writeExport(file: string, backupDir: string, meta: Omit<ExportMeta, 'sha256'>): Promise<{ bytes: number; sha256: string }> {
  const out = createWriteStream(file, { mode: 0o600, flags: 'wx' });
  const whole = createHash('sha256');
  let bytes = 0;
  const write = (chunk: Buffer) => new Promise<void>((resolve, reject) => {
    whole.update(chunk);
    bytes += chunk.length;
    out.write(chunk, (err) => (err ? reject(err) : resolve()));
  });
  const sums: Record<string, string> = {};
  try {
    for (const name of MEMBERS) {
      const source = path.join(backupDir, name);
      const stat = await fs.stat(source);
      await write(header(name, stat.size, stat.mtimeMs));
      const hash = createHash('sha256');
      for await (const chunk of createReadStream(source, { highWaterMark: 1 << 20 })) {
        hash.update(chunk as Buffer);
        await write(chunk as Buffer);
      }
      sums[name] = hash.digest('hex');
      await write(padding(stat.size));
    }
    const json = Buffer.from(`${JSON.stringify({ ...meta, sha256: sums }, null, 2)}\n`);
    await write(header(EXPORT_META, json.length, Date.now()));
    await write(json);
    await write(padding(json.length));
    await write(Buffer.alloc(1024));
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  } catch (err) {
    out.destroy();
    await fs.rm(file, { force: true });
    throw err;
  }
  return { bytes, sha256: whole.digest('hex') };
}

/**
 * Unpacks an export into `dir` (backup_manifest, base.tar) and returns its
 * metadata once every member's SHA-256 matches; anything else is refused.
 */
export async function readExport(file: string, dir: string): Promise<ExportMeta> {
  const handle = await fs.open(file, 'r');
  const sums: Record<string, string> = {};
  let meta: ExportMeta | undefined;
  try {
    let offset = 0;
    const block = Buffer.alloc(512);
    for (;;) {
      const { bytesRead } = await handle.read(block, 0, 512, offset);
      if (bytesRead < 512) throw refuse('it ends in the middle (a partial copy?)');
      offset += 512;
      if (block.every((b) => b === 0)) break;
      const name = block.toString('utf8', 0, 100).replace(/\0.*$/s, '');
      const size = Number.parseInt(block.toString('ascii', 124, 136).replace(/\0.*$/s, '').trim(), 8);
      if (!Number.isSafeInteger(size) || size < 0) throw refuse(`the entry ${JSON.stringify(name)} has no valid size`);
      if (name === EXPORT_META) {
        if (size > 16 << 20) throw refuse(`${EXPORT_META} is too large`);
        const json = Buffer.alloc(size);
        await handle.read(json, 0, size, offset);
        try {
          meta = JSON.parse(json.toString('utf8')) as ExportMeta;
        } catch {
          throw refuse(`${EXPORT_META} is not valid JSON`);
        }
      } else if ((MEMBERS as readonly string[]).includes(name)) {
        const hash = createHash('sha256');
        const source = createReadStream('', { fd: handle.fd, start: offset, end: offset + size - 1, autoClose: false, highWaterMark: 1 << 20 });
        source.on('data', (chunk) => hash.update(chunk as Buffer));
        if (size > 0) await pipeline(source, createWriteStream(path.join(dir, name), { mode: 0o600, flags: 'wx' }));
        else await fs.writeFile(path.join(dir, name), '', { mode: 0o600, flag: 'wx' });
        sums[name] = hash.digest('hex');
      } else {
        throw refuse(`it holds an entry pgs does not write: ${JSON.stringify(name)}`);
      }
      offset += size + ((512 - (size % 512)) % 512);
    }
  } finally {
    await handle.close();
  }
  if (!meta) throw refuse(`${EXPORT_META} is missing`);
  if (meta.format !== EXPORT_FORMAT) throw refuse(`its format is ${String(meta.format)}; this pgs reads format ${EXPORT_FORMAT}`);
  for (const name of MEMBERS) {
    if (sums[name] === undefined) throw refuse(`${name} is missing`);
    if (sums[name] !== meta.sha256?.[name]) throw refuse(`${name} does not match its checksum`);
  }
  return meta;
}

function refuse(why: string): PgsError {
  return new PgsError('BACKUP_DAMAGED', `not a usable pgs export: ${why}`);
}
