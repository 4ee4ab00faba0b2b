import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { PgsError } from '../core/errors.js';
import { everyLimit } from '../core/limit.js';

/**
 * PostgreSQL's backup manifest (the `backup_manifest` BASE_BACKUP writes):
 * every file of the backup with its size and checksum, the WAL range the
 * backup needs, and a SHA-256 of the manifest itself. pgs asks the server for
 * SHA-256 checksums, and writes the same format for backups it takes from a
 * stopped server's files, so that one check serves both.
 */
export const MANIFEST_FILE = 'backup_manifest';

export interface ManifestFile {
  path: string;
  size: number;
  algorithm: string;
  checksum: string;
}

export interface WalRange {
  timeline: number;
  start: string;
  end: string;
}

export interface Manifest {
  files: ManifestFile[];
  walRanges: WalRange[];
}

interface RawManifest {
  'PostgreSQL-Backup-Manifest-Version'?: number;
  Files?: { Path?: string; 'Encoded-Path'?: string; Size?: number; 'Checksum-Algorithm'?: string; Checksum?: string }[];
  'WAL-Ranges'?: { Timeline?: number; 'Start-LSN'?: string; 'End-LSN'?: string }[];
  'Manifest-Checksum'?: string;
}

const CHECKSUM_KEY = '"Manifest-Checksum"';

/** Parses a manifest and checks its own checksum; `where` names it in errors. */
export function parseManifest(text: string, where: string): Manifest {
  const at = text.lastIndexOf(CHECKSUM_KEY);
  let raw: RawManifest;
  try {
    raw = JSON.parse(text) as RawManifest;
  } catch {
    throw damaged(`${where} is not valid JSON`);
  }
  if (at < 0 || typeof raw['Manifest-Checksum'] !== 'string') throw damaged(`${where} has no checksum of its own`);
  const actual = createHash('sha256').update(text.slice(0, at)).digest('hex');
  if (actual !== raw['Manifest-Checksum'].toLowerCase()) throw damaged(`${where} does not match its own checksum`);
  const files = (raw.Files ?? []).map((f) => {
    const name = f.Path ?? (f['Encoded-Path'] !== undefined ? Buffer.from(f['Encoded-Path'], 'hex').toString('utf8') : undefined);
    if (name === undefined || typeof f.Size !== 'number') throw damaged(`${where} lists a file without a path or size`);
    return { path: name, size: f.Size, algorithm: f['Checksum-Algorithm'] ?? 'NONE', checksum: (f.Checksum ?? '').toLowerCase() };
  });
  const walRanges = (raw['WAL-Ranges'] ?? []).map((r) => ({ timeline: r.Timeline ?? 0, start: r['Start-LSN'] ?? '', end: r['End-LSN'] ?? '' }));
  return { files, walRanges };
}

/**
 * Checks every file the manifest lists against what is in `dir`: present,
 * the same size, the same SHA-256. The first difference is the error, naming
 * the file: a damaged backup is refused before anything is made from it.
 */
export async function verifyTree(dir: string, manifest: Manifest, backupName: string): Promise<void> {
  await everyLimit(manifest.files, 4, async (file) => {
    const full = path.join(dir, file.path);
    if (path.relative(dir, full).startsWith('..')) throw damaged(`backup ${backupName} names a file outside its folder: ${file.path}`);
    const stat = await fs.lstat(full).catch(() => undefined);
    if (!stat?.isFile()) throw damaged(`backup ${backupName} is damaged: ${file.path} is missing`);
    if (stat.size !== file.size) throw damaged(`backup ${backupName} is damaged: ${file.path} has ${stat.size} bytes, the manifest says ${file.size}`);
    if (file.algorithm === 'NONE') return;
    if (file.algorithm !== 'SHA256') throw damaged(`backup ${backupName}: ${file.path} has a ${file.algorithm} checksum; pgs checks SHA256`);
    if ((await sha256File(full)) !== file.checksum) throw damaged(`backup ${backupName} is damaged: ${file.path} does not match its checksum`);
  });
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * A manifest for the files of a stopped server's folder (every regular file
 * under `dir` but those `skip` names), in PostgreSQL's format.
 */
export async function buildManifest(dir: string, skip: (relative: string) => boolean, wal: WalRange, systemIdentifier: bigint): Promise<string> {
  const files: string[] = [];
  const walk = async (relative: string): Promise<void> => {
    for (const entry of await fs.readdir(path.join(dir, relative), { withFileTypes: true })) {
      const rel = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (skip(rel)) continue;
      if (entry.isDirectory()) await walk(rel);
      else if (entry.isFile()) files.push(rel);
    }
  };
  await walk('');
  files.sort();
  const lines: string[] = [];
  await everyLimit(files, 4, async (rel) => {
    const full = path.join(dir, rel);
    const stat = await fs.stat(full);
    const checksum = await sha256File(full);
    const modified = `${stat.mtime.toISOString().slice(0, 19).replace('T', ' ')} GMT`;
    lines.push(JSON.stringify({ Path: rel, Size: stat.size, 'Last-Modified': modified, 'Checksum-Algorithm': 'SHA256', Checksum: checksum }));
  });
  lines.sort();
  const body =
    `{ "PostgreSQL-Backup-Manifest-Version": 2,\n"System-Identifier": ${systemIdentifier.toString()},\n"Files": [\n${lines.join(',\n')}\n],\n` +
    `"WAL-Ranges": [\n${JSON.stringify({ Timeline: wal.timeline, 'Start-LSN': wal.start, 'End-LSN': wal.end })}\n],\n`;
  return `${body}${CHECKSUM_KEY}: "${createHash('sha256').update(body).digest('hex')}"}\n`;
}

function damaged(message: string): PgsError {
  return new PgsError('BACKUP_DAMAGED', message);
}

/**
 * Checks a backup's base.tar against its manifest without unpacking it: one
 * pass over the tar, hashing each member the manifest lists. A backup is
 * listed only after this passes, so a bad disk or a cut write shows at backup
 * time, not at restore time.
 */
export async function verifyTar(tarFile: string, manifest: Manifest, backupName: string): Promise<void> {
  const expected = new Map(manifest.files.map((f) => [f.path, f]));
  const seen = new Set<string>();
  let pending = Buffer.alloc(0);
  let member: { name: string; left: number; pad: number; hash: ReturnType<typeof createHash> | undefined; size: number } | undefined;
  let longName: string | undefined;
  let ended = false;
  const finishMember = () => {
    if (!member?.hash) return;
    const want = expected.get(member.name);
    if (!want) return;
    seen.add(member.name);
    if (member.size !== want.size) throw damaged(`backup ${backupName} is damaged: ${member.name} has ${member.size} bytes, the manifest says ${want.size}`);
    if (want.algorithm === 'SHA256' && member.hash.digest('hex') !== want.checksum) throw damaged(`backup ${backupName} is damaged: ${member.name} does not match its checksum`);
  };
  for await (const chunk of createReadStream(tarFile, { highWaterMark: 1 << 20 })) {
    let data = pending.length > 0 ? Buffer.concat([pending, chunk as Buffer]) : (chunk as Buffer);
    pending = Buffer.alloc(0);
    while (data.length > 0 && !ended) {
      if (member && member.left > 0) {
        const take = Math.min(member.left, data.length);
        const part = data.subarray(0, take);
        if (member.hash) member.hash.update(part);
        else if (member.name === '\0long') longName = (longName ?? '') + part.toString('utf8');
        member.left -= take;
        data = data.subarray(take);
        continue;
      }
      if (member && member.pad > 0) {
        const take = Math.min(member.pad, data.length);
        member.pad -= take;
        data = data.subarray(take);
        if (member.pad > 0) continue;
      }
      if (member) {
        finishMember();
        member = undefined;
      }
      if (data.length < 512) {
        pending = Buffer.from(data);
        break;
      }
      const header = data.subarray(0, 512);
      data = data.subarray(512);
      if (header.every((b) => b === 0)) {
        ended = true;
        break;
      }
      const field = (from: number, to: number) => header.toString('utf8', from, to).replace(/\0.*$/s, '');
      const size = Number.parseInt(field(124, 136).trim() || '0', 8);
      const type = String.fromCharCode(header[156] ?? 0);
      const prefix = field(345, 500);
      let name = (prefix ? `${prefix}/` : '') + field(0, 100);
      if (longName !== undefined && type !== 'L') {
        name = longName.replace(/\0.*$/s, '');
        longName = undefined;
      }
      name = name.replace(/^\.\//, '');
      const pad = (512 - (size % 512)) % 512;
      if (type === 'L') member = { name: '\0long', left: size, pad, hash: undefined, size };
      else if (type === '0' || type === '\0') member = { name, left: size, pad, hash: createHash('sha256'), size };
      else member = { name, left: size, pad, hash: undefined, size };
      if (member.left === 0 && member.pad === 0) {
        finishMember();
        member = undefined;
      }
    }
  }
  if (member) {
    if (member.left > 0) throw damaged(`backup ${backupName} is damaged: base.tar ends inside ${member.name}`);
    finishMember();
  }
  for (const name of expected.keys()) {
    if (!seen.has(name)) throw damaged(`backup ${backupName} is damaged: ${name} is missing from base.tar`);
  }
}

/**
 * Walks a base.tar's headers (seeking past each member's data) before
 * anything is unpacked: an untrusted tar (from a bucket or an export) is
 * refused unless every member is a regular file or a directory with a
 * relative name that stays inside the folder, every header's checksum holds
 * and every member lies within the file. Links, devices and FIFOs are
 * refused here, before tar could make them.
 */
export async function checkTarMembers(tarFile: string, backupName: string): Promise<number> {
  const handle = await fs.open(tarFile, 'r');
  try {
    const { size: fileSize } = await handle.stat();
    const header = Buffer.alloc(512);
    let at = 0;
    let longName: string | undefined;
    let members = 0;
    const refuse = (what: string) => damaged(`backup ${backupName} is refused: ${what}`);
    for (;;) {
      if (at + 512 > fileSize) {
        if (at === fileSize && longName === undefined) return members; // an end without the two zero blocks: tar reads it so too
        throw refuse(`base.tar ends inside a header at byte ${at}`);
      }
      await handle.read(header, 0, 512, at);
      if (header.every((b) => b === 0)) return members;
      let sum = 0;
      for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : (header[i] ?? 0);
      const stored = Number.parseInt(header.toString('latin1', 148, 156).replace(/[\0 ]+$/, '').trim(), 8);
      if (stored !== sum) throw refuse(`the tar header at byte ${at} is damaged (checksum)`);
      const sizeField = header.toString('latin1', 124, 136).replace(/[\0 ]+$/, '').trim();
      if (!/^[0-7]{0,11}$/.test(sizeField)) throw refuse(`the tar header at byte ${at} has no valid size`);
      const size = sizeField === '' ? 0 : Number.parseInt(sizeField, 8);
      const dataEnd = at + 512 + Math.ceil(size / 512) * 512;
      if (at + 512 + size > fileSize) throw refuse(`base.tar ends inside a member at byte ${at}`);
      const type = String.fromCharCode(header[156] ?? 0);
      if (type === 'L') {
        if (size > 4096 || longName !== undefined) throw refuse(`a long-name record at byte ${at} is not one tar writes`);
        const data = Buffer.alloc(size);
        await handle.read(data, 0, size, at + 512);
        longName = data.toString('utf8').replace(/\0+$/, '');
        at = dataEnd;
        continue;
      }
      const field = (from: number, to: number) => header.toString('utf8', from, to).replace(/\0.*$/s, '');
      const magic = header.toString('latin1', 257, 262);
      const prefix = magic === 'ustar' ? field(345, 500) : '';
      const name = longName ?? ((prefix ? `${prefix}/` : '') + field(0, 100));
      longName = undefined;
      const shown = JSON.stringify(name.slice(0, 200));
      if (type !== '0' && type !== '\0' && type !== '5') {
        const kinds: Record<string, string> = { 1: 'a hard link', 2: 'a symbolic link', 3: 'a character device', 4: 'a block device', 6: 'a FIFO', x: 'a pax header', g: 'a pax header', K: 'a long link name' };
        throw refuse(`member ${shown} is ${kinds[type] ?? `of tar type ${JSON.stringify(type)}`}; a backup holds only files and folders`);
      }
      // eslint-disable-next-line no-control-regex -- control characters in a name are what is refused
      if (name === '' || name.startsWith('/') || /[\0-\x1f\x7f\\]/.test(name) || name.split('/').some((part) => part === '..')) {
        throw refuse(`member ${shown} is not a relative name inside the data folder`);
      }
      if (type === '5' && size !== 0) throw refuse(`folder ${shown} has data`);
      members++;
      at = dataEnd;
    }
  } finally {
    await handle.close();
  }
}
