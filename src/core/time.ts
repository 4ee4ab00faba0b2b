import { PgsError, type PgsErrorCode } from './errors.js';

/** A point in time as someone wrote it, checked field by field. */
export interface PointInTime {
  /** The instant, to the millisecond (a Date holds no more). */
  date: Date;
  /** The same instant in UTC as RFC 3339; with 6 fraction digits when the text had more than 3 (microseconds kept). */
  iso: string;
}

const FORM = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(?: ?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?))?$/;

const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

/** Every form parsePointInTime takes, with an example of each, for its errors and help texts. */
export function pointInTimeForms(zone = localZone()): string {
  return '2026-11-30T14:02:00Z (ISO 8601 in UTC); 2026-11-30T14:02:00+05:30, +0530 or +05 (any offset); ' +
    '2026-11-30 14:02:00.123456+00 (as PostgreSQL prints now(): a space or T, fractions up to microseconds, seconds optional); ' +
    `2026-11-30 14:02:00 (no offset: local time, ${zone})`;
}

function localZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'the host\'s time zone';
}

/**
 * Parses a time as PostgreSQL prints a timestamptz (`2026-12-06 21:00:58.429273+00`),
 * as ISO 8601 with Z or any offset (`+05:30`, `+0530`, `+05`), or without an offset
 * (local time). Impossible fields (February 30, hour 25, a local time the clocks
 * skipped) are refused, where Date would roll them over. `what` names the input in
 * the error (`--time`); `code` is the error's (USAGE for an option, INVALID_REQUEST for the API).
 */
export function parsePointInTime(text: string, what: string, code: PgsErrorCode = 'USAGE', field?: string): PointInTime {
  const fail = (reason: string): never => {
    throw new PgsError(code, `invalid ${what} ${JSON.stringify(text)}: ${reason}; write one of ${pointInTimeForms()}`, field !== undefined ? { field } : undefined);
  };
  const m = FORM.exec(text.trim());
  if (!m) return fail('not a time pgs reads');
  const [year, month, day, hour, minute] = [m[1], m[2], m[3], m[4], m[5]].map(Number) as [number, number, number, number, number];
  const second = m[6] === undefined ? 0 : Number(m[6]);
  const digits = (m[7] ?? '').slice(0, 6).padEnd(6, '0');
  const micros = Number(digits);
  if (month < 1 || month > 12) return fail(`there is no month ${m[2]}`);
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = month === 2 && leap ? 29 : (DAYS[month - 1] as number);
  if (day < 1 || day > days) return fail(`${MONTHS[month - 1]} ${year} has no day ${m[3]}`);
  if (hour > 23) return fail(`there is no hour ${m[4]} (00 to 23)`);
  if (minute > 59) return fail(`there is no minute ${m[5]} (00 to 59)`);
  if (second > 59) return fail(`there is no second ${m[6]} (00 to 59)`);
  const ms = Math.floor(micros / 1000);
  let date: Date;
  if (m[8] !== undefined || m[9] !== undefined) {
    const offsetHours = m[10] === undefined ? 0 : Number(m[10]);
    const offsetMinutes = m[11] === undefined ? 0 : Number(m[11]);
    if (offsetHours > 15 || offsetMinutes > 59) return fail(`there is no offset ${m[9]}${m[10]}${m[11] !== undefined ? `:${m[11]}` : ''} (at most ±15:59)`);
    const offset = (m[9] === '-' ? -1 : 1) * (offsetHours * 60 + offsetMinutes);
    date = new Date(0);
    date.setUTCFullYear(year, month - 1, day);
    date.setUTCHours(hour, minute - offset, second, ms);
  } else {
    date = new Date(0);
    date.setFullYear(year, month - 1, day);
    date.setHours(hour, minute, second, ms);
    // A local time inside a clock change's gap does not exist; Date would move it on.
    if (date.getDate() !== day || date.getHours() !== hour || date.getMinutes() !== minute) {
      return fail(`${m[1]}-${m[2]}-${m[3]} ${m[4]}:${m[5]} does not exist in the local time zone (${localZone()}: the clocks skipped it); give an offset`);
    }
  }
  if (Number.isNaN(date.getTime())) return fail('not a time pgs reads');
  const iso = (m[7] ?? '').length > 3 ? date.toISOString().replace(/\.\d{3}Z$/, `.${digits}Z`) : date.toISOString();
  return { date, iso };
}
