/**
 * CIDR blocks for per-tenant network allow-lists: strict parsing (dotted-quad
 * IPv4 without leading zeros, IPv6 without a zone), one normal form (a bare
 * address is its /32 or /128; IPv6 as RFC 5952 writes it; an IPv4-mapped IPv6
 * block of /96 or longer as the IPv4 block it is), and matching of a socket's
 * address, IPv4-mapped IPv6 ones (::ffff:127.0.0.1) as IPv4.
 */

import { PgsError } from './errors.js';

/** The most blocks one tenant's allow-list may have. */
export const MAX_ALLOW_ENTRIES = 100;

export interface Cidr {
  family: 4 | 6;
  /** The network's bytes (4 or 16), no bit set right of the prefix. */
  bytes: Uint8Array;
  prefix: number;
  /** Its normal form. */
  text: string;
}

const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

function parseIPv4(text: string): Uint8Array | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => OCTET.test(p))) return undefined;
  return Uint8Array.from(parts.map(Number));
}

function parseIPv6(text: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups = (part: string, last: boolean): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    const pieces = part.split(':');
    for (const [i, piece] of pieces.entries()) {
      if (piece.includes('.')) {
        // An embedded IPv4 address ends the address.
        if (!last || i !== pieces.length - 1) return undefined;
        const v4 = parseIPv4(piece);
        if (!v4) return undefined;
        out.push(((v4[0] as number) << 8) | (v4[1] as number), ((v4[2] as number) << 8) | (v4[3] as number));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(piece)) return undefined;
        out.push(parseInt(piece, 16));
      }
    }
    return out;
  };
  let all: number[];
  if (halves.length === 1) {
    const only = groups(halves[0] as string, true);
    if (!only || only.length !== 8) return undefined;
    all = only;
  } else {
    const front = groups(halves[0] as string, false);
    const back = groups(halves[1] as string, true);
    if (!front || !back || front.length + back.length > 7) return undefined;
    all = [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  }
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

/** An address's bytes; an IPv4-mapped IPv6 address as its IPv4 one. */
export function parseAddress(text: string): { family: 4 | 6; bytes: Uint8Array } | undefined {
  const v4 = parseIPv4(text);
  if (v4) return { family: 4, bytes: v4 };
  const v6 = parseIPv6(text);
  if (!v6) return undefined;
  if (isMapped(v6)) return { family: 4, bytes: v6.slice(12) };
  return { family: 6, bytes: v6 };
}

function isMapped(bytes: Uint8Array): boolean {
  return bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
}

function formatIPv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] as number) << 8) | (bytes[i + 1] as number));
  // RFC 5952: the longest run of two or more zero groups (the first of equals) becomes ::.
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      best = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLength))}`;
}

function formatAddress(family: 4 | 6, bytes: Uint8Array): string {
  return family === 4 ? [...bytes].join('.') : formatIPv6(bytes);
}

const CIDR_EXAMPLE = 'an IPv4 or IPv6 address or CIDR block such as 203.0.113.0/24 or 2001:db8::/32';

/** `text` as a block, or why it is not one. */
export function parseCidr(text: string): Cidr | { problem: string } {
  const shown = JSON.stringify(text);
  if (text.length > 64) return { problem: `${shown.slice(0, 40)}..." is not ${CIDR_EXAMPLE}` };
  const slash = text.indexOf('/');
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  const v4 = parseIPv4(addressText);
  const v6 = v4 ? undefined : parseIPv6(addressText);
  if (!v4 && !v6) return { problem: `${shown} is not ${CIDR_EXAMPLE}` };
  let family: 4 | 6 = v4 ? 4 : 6;
  let bytes = (v4 ?? v6) as Uint8Array;
  const bits = family === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^(0|[1-9]\d{0,2})$/.test(prefixText)) return { problem: `${shown} has no valid prefix length after / (0 to ${bits})` };
  let prefix = prefixText === undefined ? bits : Number(prefixText);
  if (prefix > bits) return { problem: `${shown} has a prefix longer than ${bits} bits` };
  const network = masked(bytes, prefix);
  if (!network.every((b, i) => b === bytes[i])) {
    return { problem: `${shown} has bits set right of its /${prefix} prefix: its network is ${formatAddress(family, network)}/${prefix}` };
  }
  if (family === 6 && prefix >= 96 && isMapped(bytes)) {
    family = 4;
    bytes = bytes.slice(12);
    prefix -= 96;
  }
  return { family, bytes, prefix, text: `${formatAddress(family, bytes)}/${prefix}` };
}

function masked(bytes: Uint8Array, prefix: number): Uint8Array {
  return bytes.map((b, i) => {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    return b & ((0xff << (8 - keep)) & 0xff);
  });
}

/**
 * An allow-list as given (each entry a block or a bare address) in normal form,
 * duplicates dropped, or the first problem naming the entry: `<field>.<index> ...`.
 */
export function normalizeAllowList(list: readonly unknown[], field = 'allow'): { allow: string[] } | { problem: string } {
  if (list.length === 0) return { problem: `${field} must name at least one address or block (null, or "any" in the CLI, allows every address)` };
  if (list.length > MAX_ALLOW_ENTRIES) return { problem: `${field} has ${list.length} entries: at most ${MAX_ALLOW_ENTRIES}` };
  const out: string[] = [];
  for (const [i, entry] of list.entries()) {
    if (typeof entry !== 'string') return { problem: `${field}.${i} must be a string: ${CIDR_EXAMPLE}` };
    const cidr = parseCidr(entry.trim());
    if ('problem' in cidr) return { problem: `${field}.${i} ${cidr.problem}` };
    if (!out.includes(cidr.text)) out.push(cidr.text);
  }
  return { allow: out };
}

/** Whether `text` is a block in its normal form (what the catalog keeps). */
export function isNormalCidr(text: string): boolean {
  const cidr = parseCidr(text);
  return !('problem' in cidr) && cidr.text === text;
}

/** Who may connect: a socket's address (IPv4-mapped IPv6 as IPv4) against a list of blocks. */
export class AllowList {
  readonly blocks: readonly Cidr[];

  constructor(entries: readonly string[]) {
    this.blocks = entries.map((entry) => {
      const cidr = parseCidr(entry);
      if ('problem' in cidr) throw new Error(`invalid allow-list entry: ${cidr.problem}`);
      return cidr;
    });
  }

  allows(address: string): boolean {
    const parsed = parseAddress(address.replace(/%.*$/, ''));
    if (!parsed) return false;
    return this.blocks.some((block) => {
      if (block.family !== parsed.family) return false;
      const network = masked(parsed.bytes, block.prefix);
      return network.every((b, i) => b === block.bytes[i]);
    });
  }

  /** The address as the router tells it to a client: plain, IPv4-mapped IPv6 as IPv4. */
  static shown(address: string): string {
    const parsed = parseAddress(address.replace(/%.*$/, ''));
    return parsed ? formatAddress(parsed.family, parsed.bytes) : address;
  }
}

/** A request's allow-list (undefined: unchanged, null: any address) normalised, or an INVALID_REQUEST naming the entry. */
export function requestedAllow(value: readonly unknown[] | null | undefined, field = 'allow'): string[] | null | undefined {
  if (value === undefined || value === null) return value;
  const result = normalizeAllowList(value, field);
  if ('problem' in result) throw new PgsError('INVALID_REQUEST', `invalid body: ${result.problem}`, { field });
  return result.allow;
}
