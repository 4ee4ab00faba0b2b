import { createWriteStream, promises as fs } from 'node:fs';
import type { Readable } from 'node:stream';
import type { ImportLimit } from '../api/routes.js';
import { AUTO_IMPORT_CAP_BYTES, type Settings } from '../catalog/schema.js';
import { PgsError, errnoCode } from '../core/errors.js';
import { formatBytes } from '../core/size.js';
import { HOST_FREE_MIN } from './disk-guard.js';

export type { ImportLimit };

/**
 * An upload to import (POST /v1/import) goes to disk as it arrives, never to
 * memory, and never past a limit: `pgs setup --import-limit SIZE`, or by
 * default (auto) half of what the data root's disk has free above the share
 * pgs keeps free for running tenants, at most AUTO_IMPORT_CAP_BYTES. Half,
 * because an import of N bytes holds about 2N at its peak: the upload and its
 * unpacked members, then those and the new tenant's folder.
 */
export function autoImportBytes(freeBytes: number, totalBytes: number): number {
  const usable = freeBytes - Math.ceil(totalBytes * HOST_FREE_MIN);
  return Math.max(0, Math.min(AUTO_IMPORT_CAP_BYTES, Math.floor(usable / 2)));
}

/** The limit now (auto is measured at each request: the free space changes). */
export async function importLimit(settings: Pick<Settings, 'dataRoot' | 'importMaxBytes'>): Promise<ImportLimit> {
  if (settings.importMaxBytes !== undefined) return { bytes: settings.importMaxBytes, auto: false, why: 'pgs setup --import-limit' };
  const stats = await fs.statfs(settings.dataRoot);
  const free = stats.bavail * stats.bsize;
  return {
    bytes: autoImportBytes(free, stats.blocks * stats.bsize),
    auto: true,
    why: `auto: half of the ${formatBytes(free)} free on the disk of ${settings.dataRoot} above the ${HOST_FREE_MIN * 100} % kept free, at most ${formatBytes(AUTO_IMPORT_CAP_BYTES)}; pgs setup --import-limit SIZE sets it`,
  };
}

function tooLarge(what: string, limit: ImportLimit): PgsError {
  return new PgsError('UPLOAD_TOO_LARGE', `${what}; imports take at most ${formatBytes(limit.bytes)} (${limit.why})`);
}

/**
 * Writes `body` to `file` (created exclusively, 0600) and resolves with its
 * size once the file is closed. Refused past `limit`, when the body stops
 * before its end (the client went away) or the disk fills; the file is then
 * closed before the promise settles, and the caller removes it. The request
 * itself is only paused, never destroyed: the daemon still answers why.
 */
export function receiveUpload(body: Readable, file: string, limit: ImportLimit): Promise<number> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    let failure: Error | undefined;
    let ended = false;
    const out = createWriteStream(file, { flags: 'wx', mode: 0o600 });
    const stop = (err: Error) => {
      if (failure) return;
      failure = err;
      body.off('data', onData);
      body.pause();
      out.destroy();
    };
    const onData = (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > limit.bytes) return stop(tooLarge(`the upload goes past ${formatBytes(limit.bytes)}`, limit));
      if (out.write(chunk)) return;
      body.pause();
      out.once('drain', () => { if (!failure) body.resume(); });
    };
    const cut = () => { if (!ended) stop(new PgsError('INVALID_REQUEST', `the upload stopped after ${formatBytes(bytes)}, before its end`)); };
    out.on('error', (err) => stop(errnoCode(err) === 'ENOSPC'
      ? new PgsError('DISK_FULL', `the disk of the data root is full: the upload was not kept (${formatBytes(bytes)} received)`)
      : err));
    out.on('close', () => (failure ? reject(failure) : resolve(bytes)));
    body.on('data', onData);
    body.once('end', () => {
      ended = true;
      if (!failure) out.end();
    });
    body.once('error', cut);
    body.once('close', cut);
  });
}
