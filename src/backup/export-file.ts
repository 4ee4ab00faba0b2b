import { createHash } from 'node:crypto';
import { constants as fsConstants, createReadStream, createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import * as v from 'valibot';
import { PgsError } from '../core/errors.js';
import { TenantSchema, isoTime, matching, schemaProblem, type Tenant } from '../catalog/schema.js';
import { BackupMetaSchema, label } from './records.js';
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

/** pgs writes pgs-export.json at a few KiB; anything near this is not one of its files. */
const MAX_META_BYTES = 1 << 20;
const SHA256 = matching(/^[0-9a-f]{64}$/, 'a SHA-256 in hex');

const ExportMetaSchema = v.strictObject({
  format: v.literal(EXPORT_FORMAT, `must be ${EXPORT_FORMAT}`),
  pgsVersion: label(100),
  exportedAt: isoTime,
  tenant: TenantSchema,
  backup: BackupMetaSchema,
  sha256: v.strictObject({ backup_manifest: SHA256, 'base.tar': SHA256 }, 'must be the SHA-256 of backup_manifest and base.tar'),
}, 'must be an object');

interface Member { name: string; offset: number; size: number }

/**
 * Unpacks an export into `dir` (backup_manifest, base.tar) and returns its
 * metadata once every member's SHA-256 matches; anything else is refused with
 * BACKUP_DAMAGED naming what is wrong, and what was written to `dir` removed.
 * The file is untrusted: its tar headers are walked and its pgs-export.json
 * checked whole first, so nothing is written for a file that would be refused.
 */
export async function readExport(file: string, dir: string): Promise<ExportMeta> {
  const handle = await fs.open(file, 'r');
  const written: string[] = [];
  try {
    const { members, meta } = await walk(handle);
    const sums: Record<string, string> = {};
    for (const member of members) {
      const target = path.join(dir, member.name);
      // A new file: one that exists, or a link of that name, is refused (O_EXCL), never written through.
      const out = await fs.open(target, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
      written.push(target);
      sums[member.name] = await copyOut(handle, member, out);
    }
    for (const name of MEMBERS) {
      if (sums[name] !== meta.sha256[name]) throw refuse(`${name} does not match its checksum`);
    }
    return meta;
  } catch (err) {
    for (const target of written) await fs.rm(target, { force: true });
    throw err;
  } finally {
    await handle.close();
  }
}

/** Reads every header and pgs-export.json; checks the layout pgs writes: the two data files, the JSON last, the end, nothing after. */
async function walk(handle: fs.FileHandle): Promise<{ members: Member[]; meta: ExportMeta }> {
  const fileSize = (await handle.stat()).size;
  if (fileSize === 0) throw refuse('the file is empty');
  const members: Member[] = [];
  const block = Buffer.alloc(512);
  let offset = 0;
  let meta: ExportMeta | undefined;
  for (;;) {
    if (offset + 512 > fileSize) throw refuse(`it ends in the middle (a partial copy?): ${fileSize} bytes, the next header would be at ${offset}`);
    await readAt(handle, block, offset);
    offset += 512;
    if (block.every((b) => b === 0)) break;
    const name = headerName(block, offset - 512);
    if (meta !== undefined) throw refuse(name === EXPORT_META ? `it holds ${EXPORT_META} twice` : `it holds ${JSON.stringify(name)} after ${EXPORT_META}, which pgs writes last`);
    const size = headerSize(block, name);
    const end = offset + size + ((512 - (size % 512)) % 512);
    if (end > fileSize) throw refuse(`the entry ${JSON.stringify(name)} claims ${size} bytes, past the end of the file (a partial copy?)`);
    if (name === EXPORT_META) {
      const missing = MEMBERS.filter((m) => !members.some((seen) => seen.name === m));
      if (missing.length > 0) throw refuse(`${EXPORT_META} comes before ${missing.join(' and ')} (pgs writes it last)`);
      if (size > MAX_META_BYTES) throw refuse(`${EXPORT_META} is ${size} bytes, more than the ${MAX_META_BYTES} pgs reads`);
      const json = Buffer.alloc(size);
      await readAt(handle, json, offset);
      meta = parseMeta(json);
    } else if ((MEMBERS as readonly string[]).includes(name)) {
      if (members.some((m) => m.name === name)) throw refuse(`it holds ${name} twice`);
      members.push({ name, offset, size });
    } else {
      throw refuse(`it holds an entry pgs does not write: ${JSON.stringify(name)}`);
    }
    offset = end;
  }
  if (offset + 512 > fileSize) throw refuse('it ends in the middle of its end marker (a partial copy?)');
  await readAt(handle, block, offset);
  if (!block.every((b) => b === 0)) throw refuse('its end marker is damaged');
  offset += 512;
  if (offset !== fileSize) throw refuse(`it goes on for ${fileSize - offset} bytes past its end`);
  if (!meta) {
    for (const name of MEMBERS) if (!members.some((m) => m.name === name)) throw refuse(`${name} is missing`);
    throw refuse(`${EXPORT_META} is missing`);
  }
  return { members, meta };
}

/** A header's name, once its checksum, magic and type are those of a plain file as pgs writes it. */
function headerName(block: Buffer, at: number): string {
  const stored = octal(block, 148, 8);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  if (stored !== sum) throw refuse(`the tar header at byte ${at} is damaged (its checksum does not match)`);
  if (block.toString('latin1', 257, 263) !== 'ustar\0') throw refuse(`the tar header at byte ${at} is not a ustar header pgs writes`);
  const name = cString(block, 0, 100);
  if (cString(block, 345, 155) !== '') throw refuse(`the entry ${JSON.stringify(name)} has a path prefix; pgs writes plain names`);
  if (name.includes('/') || name === '..' || name === '.' || name === '') throw refuse(`it holds an entry with a path: ${JSON.stringify(name)}; pgs writes plain names`);
  const type = String.fromCharCode(block[156]!);
  if (type !== '0' && type !== '\0') throw refuse(`the entry ${JSON.stringify(name)} is a ${TYPES[type] ?? `tar entry of type ${JSON.stringify(type)}`}; pgs writes only plain files`);
  return name;
}

const TYPES: Record<string, string> = { 1: 'hard link', 2: 'symbolic link', 3: 'character device', 4: 'block device', 5: 'directory', 6: 'FIFO', 7: 'contiguous file', x: 'pax header', g: 'pax global header', L: 'GNU long name', K: 'GNU long link name' };

function headerSize(block: Buffer, name: string): number {
  const size = octal(block, 124, 12);
  if (size === undefined) throw refuse(`the entry ${JSON.stringify(name)} has no valid size`);
  return size;
}

/** A tar number field: octal digits, padded with leading spaces or zeros, ended by NUL or space; anything else (base-256, signs, garbage) is undefined. */
function octal(block: Buffer, start: number, length: number): number | undefined {
  const text = block.toString('latin1', start, start + length);
  const match = /^ *([0-7]{1,12})[ \0]*$/.exec(text);
  if (!match?.[1]) return undefined;
  const n = Number.parseInt(match[1], 8);
  return Number.isSafeInteger(n) ? n : undefined;
}

function cString(block: Buffer, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const nul = field.indexOf(0);
  return field.toString('utf8', 0, nul === -1 ? length : nul);
}

function parseMeta(json: Buffer): ExportMeta {
  let value: unknown;
  try {
    value = JSON.parse(json.toString('utf8'));
  } catch {
    throw refuse(`${EXPORT_META} is not valid JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw refuse(`${EXPORT_META} is not a JSON object`);
  // A later format is told apart from a damaged file: its fields would not be this schema's.
  if ('format' in value && value.format !== EXPORT_FORMAT) {
    throw refuse(`its format is ${JSON.stringify(value.format)}; this pgs reads format ${EXPORT_FORMAT}`);
  }
  const problem = schemaProblem(ExportMetaSchema, value, '');
  if (problem !== undefined) throw refuse(problem);
  const meta = value as ExportMeta;
  if (meta.backup.tenant !== meta.tenant.id) throw refuse(`backup.tenant must be tenant.id (${meta.tenant.id})`);
  return meta;
}

async function readAt(handle: fs.FileHandle, into: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await handle.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) throw refuse('it ends in the middle (a partial copy?)');
    done += bytesRead;
  }
}

/** Copies a member into `out`, which it closes, and returns the member's SHA-256. */
async function copyOut(handle: fs.FileHandle, member: Member, out: fs.FileHandle): Promise<string> {
  const hash = createHash('sha256');
  const chunk = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(member.size, 1)));
  try {
    for (let done = 0; done < member.size;) {
      const want = Math.min(chunk.length, member.size - done);
      const slice = chunk.subarray(0, want);
      await readAt(handle, slice, member.offset + done);
      hash.update(slice);
      await writeAll(out, slice);
      done += want;
    }
  } finally {
    await out.close();
  }
  return hash.digest('hex');
}

async function writeAll(out: fs.FileHandle, data: Buffer): Promise<void> {
  for (let done = 0; done < data.length;) done += (await out.write(data, done, data.length - done)).bytesWritten;
}

function refuse(why: string): PgsError {
  return new PgsError('BACKUP_DAMAGED', `not a usable pgs export: ${why}`);
}
