import { X509Certificate } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import { PgsError, errnoCode } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { DaemonPaths } from '../core/paths.js';
import { pidExists, processArgv } from '../core/proc.js';

/** What every daemon does with its host's files: its pid file, its certificate, its log lines. */
/** JSON lines: one object per event, for the log file or stderr. */
export function jsonLog(write: (line: string) => void): Log {
  const emit = (level: string) => (message: string, fields: Record<string, unknown> = {}) =>
    write(`${JSON.stringify({ time: new Date().toISOString(), level, message, ...fields })}\n`);
  return { info: emit('info'), warn: emit('warn') };
}

export function readCertificate(certFile: string, keyFile: string): { cert: Buffer; key: Buffer } {
  try {
    return { cert: readFileSync(certFile), key: readFileSync(keyFile) };
  } catch (err) {
    throw new PgsError('CERT_INVALID', `cannot read the certificate or key (${(err as Error).message}); run "pgs setup" to make or check them`);
  }
}

export function certificateExpiry(cert: Buffer): string | null {
  try {
    return new Date(new X509Certificate(cert).validTo).toISOString();
  } catch {
    return null;
  }
}

async function isPgsProcess(pid: number): Promise<boolean> {
  return (await processArgv(pid)).some((arg) => arg.includes('pgs'));
}

/** Writes the daemon's pid file, or says which daemon already runs for this home. */
export async function claimPidFile(paths: DaemonPaths, home: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await fs.writeFile(paths.pidFile, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      return;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    const pid = Number.parseInt(await fs.readFile(paths.pidFile, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidExists(pid) && (await isPgsProcess(pid))) {
      throw new PgsError('USAGE', `a pgs daemon already runs for ${home} (pid ${pid}); "pgs stop" stops it`);
    }
    await fs.rm(paths.pidFile, { force: true }); // left by a daemon that died
  }
  throw new PgsError('USAGE', `cannot claim ${paths.pidFile}`);
}