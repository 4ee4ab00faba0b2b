import { PgsError } from './errors.js';

/** "30s", "5m", "1h" or "90" (seconds), for options and environment settings alike. */
export function parseSeconds(text: string, what: string): number {
  const match = /^(\d+)(s|m|h)?$/.exec(text);
  const seconds = match ? Number(match[1]) * { s: 1, m: 60, h: 3600 }[(match[2] ?? 's') as 's' | 'm' | 'h'] : NaN;
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 31_536_000) {
    throw new PgsError('USAGE', `invalid ${what} ${JSON.stringify(text)}: a duration such as 30s, 5m, 1h${what === '--autosuspend' ? ', or off' : ''}`);
  }
  return seconds;
}
