import { createInterface } from 'node:readline/promises';
import type { ParseArgsConfig } from 'node:util';
import { parseSeconds } from '../core/duration.js';
import { PgsError } from '../core/errors.js';
import { pgsHome } from '../core/paths.js';
import { Pgs } from '../service/pgs.js';
import { ApiClient } from './api-client.js';

/** One CLI command: its help, its options, and what it runs. Each lives in commands/<name>.ts. */
export type Options = NonNullable<ParseArgsConfig['options']>;
export type Values = Record<string, string | boolean | undefined>;

export interface Context {
  home: string;
  env: NodeJS.ProcessEnv;
  /** The daemon's API over its unix socket. */
  api: ApiClient;
  /** The files, for `setup` and for read-only commands when no daemon runs. */
  pgs(): Pgs;
}

export interface Command {
  summary: string;
  usage: string;
  details: string;
  options: Options;
  /** How many positional arguments: [min, max]. */
  positionals: [number, number];
  run(ctx: Context, args: string[], values: Values): Promise<number>;
}

export const EXIT_USAGE = 2;
/** `pgs status` when no daemon runs. */
export const EXIT_NO_DAEMON = 3;

export function makeContext(env: NodeJS.ProcessEnv = process.env): Context {
  const home = pgsHome(env);
  let pgs: Pgs | undefined;
  return { home, env, api: new ApiClient(home), pgs: () => (pgs ??= new Pgs(env)) };
}

export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

/** "30s", "5m", "1h", "90" (seconds) or "off" (null). */
export function parseDuration(text: string, what = '--autosuspend'): number | null {
  return text === 'off' ? null : parseSeconds(text, what);
}

export function parseInteger(text: string, what: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(n) || n < min || n > max) {
    throw new PgsError('USAGE', `invalid ${what} ${JSON.stringify(text)}: a number from ${min} to ${max}`);
  }
  return n;
}

const SIZE_UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** "512M", "1.5G", "64MiB", "1073741824" (bytes), or "off" (null); at least 64 MiB. */
export function parseMemory(text: string, what = '--memory'): number | null {
  return parseSize(text, what, 64, '512M or 2G');
}

/** A disk quota: as --memory, at least 128 MiB. */
export function parseDisk(text: string, what = '--disk'): number | null {
  return parseSize(text, what, 128, '10G or 500M');
}

/** The largest upload to import: as --disk, at least 1 MiB, or "auto" (null). */
export function parseImportLimit(text: string, what = '--import-limit'): number | null {
  return parseSize(text, what, 1, '20G or 500M', 'auto');
}

function parseSize(text: string, what: string, minMiB: number, examples: string, none = 'off'): number | null {
  if (text === none) return null;
  const match = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  const bytes = match ? Math.floor(Number(match[1]) * (SIZE_UNITS[(match[2] ?? '').toUpperCase()] ?? NaN)) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < minMiB * 2 ** 20 || bytes > 2 ** 50) {
    throw new PgsError('USAGE', `invalid ${what} ${JSON.stringify(text)}: a size such as ${examples} (at least ${minMiB}M), or ${none}`);
  }
  return bytes;
}

/** "0.5", "2" (cores), or "off" (null). */
export function parseCpus(text: string, what = '--cpus'): number | null {
  if (text === 'off') return null;
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || !(n >= 0.01 && n <= 1024)) throw new PgsError('USAGE', `invalid ${what} ${JSON.stringify(text)}: cores from 0.01 to 1024 (0.5 is half a core), or off`);
  return n;
}

export { formatBytes } from '../core/size.js';

/** A tenant id in a URL path (ids are DNS labels; anything else is refused by the daemon with the reason). */
export function tenantPath(id: string, rest = ''): string {
  return `/v1/tenants/${encodeURIComponent(id)}${rest}`;
}

/** When a change started the daemon, say so on stderr (stdout may be JSON). */
export function announceDaemon(pid: number): void {
  console.error(`(started the pgs daemon, pid ${pid})`);
}

/** Asks on a terminal for `expected` to be typed; refuses without a terminal (scripts pass --yes). */
export async function confirm(question: string, expected: string, refusal: string): Promise<void> {
  if (!process.stdin.isTTY) throw new PgsError('NOT_CONFIRMED', `${refusal}: stdin is not a terminal, pass --yes to confirm`);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    if ((await rl.question(question)).trim() !== expected) throw new PgsError('NOT_CONFIRMED', `${refusal}: the answer did not match`);
  } finally {
    rl.close();
  }
}
