/**
 * Commands the local runtimes run on the tenants' files (tar, cp, chown,
 * find, sync, initdb), each as a given uid or as pgs itself, in a small fixed
 * environment; a failure's last lines of output become its error.
 */
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { PgsError } from '../../core/errors.js';
import type { Identity } from '../tenant-users.js';

/** The spawn options that run a process as `identity` (nothing: as pgs itself). */
export function spawnAs(identity: Identity | undefined): { uid?: number; gid?: number } {
  return identity ? { uid: identity.uid, gid: identity.gid } : {};
}

/** The environment of every server and command: no variable of pgs's own leaks into them. */
export function serverEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', TZ: 'UTC' };
}

/** Runs a command (as `as`, else as pgs itself), `stdinFile` as its input; its output becomes the error on failure. */
export function runCommand(command: string, args: string[], { stdinFile, as }: { stdinFile?: string; as?: Identity | undefined } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: [stdinFile === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: serverEnv(), ...spawnAs(as) });
    if (stdinFile !== undefined && child.stdin) {
      const input = createReadStream(stdinFile, { highWaterMark: 1 << 20 });
      input.on('error', (err) => child.stdin?.destroy(err));
      child.stdin.on('error', () => undefined); // tar exiting early closes it; its exit code says why
      input.pipe(child.stdin);
    }
    const output: Buffer[] = [];
    child.stdout?.on('data', (chunk: Buffer) => output.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => output.push(chunk));
    child.once('error', (err) => reject(new PgsError('PG_COMMAND_FAILED', `${path.basename(command)} could not run: ${err.message}`)));
    child.once('close', (code, signal) => {
      if (code === 0) return resolve();
      const text = Buffer.concat(output).toString('utf8').trim().split('\n').slice(-8).join('\n');
      reject(new PgsError('PG_COMMAND_FAILED', `${path.basename(command)} failed (${signal ?? `exit ${code}`}): ${text}`));
    });
  });
}
