/**
 * WAL positions and segment file names. Every tenant server is a copy of one
 * template made with 1 MiB segments (initdb --wal-segsize=1), so a segment
 * name is TTTTTTTT (timeline) LLLLLLLL (log id) SSSSSSSS (segment in that
 * log, 0..4095), and a log id spans 4 GiB of WAL.
 */
export const WAL_SEGMENT_BYTES = 1024 * 1024;
const SEGMENTS_PER_LOG = 0x1_0000_0000 / WAL_SEGMENT_BYTES;

/** "16/B374D848" → 0x16B374D848 */
export function parseLsn(text: string): bigint {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  if (!match?.[1] || !match[2]) throw new Error(`not a WAL position: ${text}`);
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffff_ffffn).toString(16).toUpperCase()}`;
}

export const SEGMENT_NAME = /^[0-9A-F]{24}$/;

/** The segment that holds `lsn` on `timeline`. */
export function segmentName(timeline: number, lsn: bigint): string {
  const segno = Number(lsn / BigInt(WAL_SEGMENT_BYTES));
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(timeline)}${hex(Math.floor(segno / SEGMENTS_PER_LOG))}${hex(segno % SEGMENTS_PER_LOG)}`;
}

/** A segment's place in the WAL (timeline aside): consecutive segments differ by one. */
export function segmentNumber(name: string): number {
  return Number.parseInt(name.slice(8, 16), 16) * SEGMENTS_PER_LOG + Number.parseInt(name.slice(16, 24), 16);
}

export function segmentTimeline(name: string): number {
  return Number.parseInt(name.slice(0, 8), 16);
}

/**
 * The first segment missing from `names` (whole segment files of an archive)
 * between `from` (the segment a backup starts in) and the newest one, or
 * undefined when every one is there. A later timeline takes over from where
 * it branched: on each timeline only the segments from its first one count.
 */
export function firstGap(names: string[], from: string): string | undefined {
  const segments = names.filter((n) => SEGMENT_NAME.test(n)).sort((a, b) => segmentNumber(a) - segmentNumber(b) || segmentTimeline(a) - segmentTimeline(b));
  const start = segmentNumber(from);
  // The newest timeline's copy of each position is what recovery replays.
  const byPosition = new Map<number, string>();
  for (const name of segments) {
    const n = segmentNumber(name);
    if (n < start) continue;
    const have = byPosition.get(n);
    if (!have || segmentTimeline(name) > segmentTimeline(have)) byPosition.set(n, name);
  }
  if (byPosition.size === 0) return undefined;
  const last = Math.max(...byPosition.keys());
  for (let n = start; n <= last; n++) {
    if (!byPosition.has(n)) {
      const timeline = segmentTimeline(byPosition.get(last) ?? from);
      return segmentName(timeline, BigInt(n) * BigInt(WAL_SEGMENT_BYTES));
    }
  }
  return undefined;
}
