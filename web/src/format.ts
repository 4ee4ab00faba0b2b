// Numbers, sizes and times as people read them.

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

export function seconds(s: number | null | undefined): string {
  if (s === null || s === undefined) return '—';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(s < 36000 ? 1 : 0)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** "3 min ago", or "now" for what is happening. */
export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '—';
  const s = Math.max(0, (now - Date.parse(iso)) / 1000);
  return s < 5 ? 'now' : `${seconds(s)} ago`;
}

export function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function number(n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return n.toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** The autosuspend setting as the CLI writes it. */
export function autosuspend(s: number | null): string {
  if (s === null) return 'off';
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

/** "30s", "5m", "1h", "off" → seconds (null: off); undefined when not understood. */
export function parseDuration(text: string): number | null | undefined {
  const t = text.trim().toLowerCase();
  if (t === 'off') return null;
  const m = /^(\d+)\s*(s|m|h|d)?$/.exec(t);
  if (!m) return undefined;
  const n = Number(m[1]);
  const factor = { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
  return n * factor > 0 ? n * factor : undefined;
}

/** "512M", "2G", "off" → bytes (null: off); undefined when not understood. */
export function parseSize(text: string): number | null | undefined {
  const t = text.trim().toUpperCase();
  if (t === 'OFF' || t === '') return null;
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT])?I?B?$/.exec(t);
  if (!m) return undefined;
  const factor = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[(m[2] ?? 'M') as 'K' | 'M' | 'G' | 'T'];
  return Math.round(Number(m[1]) * factor);
}

/** Bytes as the CLI takes them (512M, 2G). */
export function sizeArg(n: number | null): string {
  if (n === null) return 'off';
  if (n % 2 ** 30 === 0) return `${n / 2 ** 30}G`;
  return `${Math.round(n / 2 ** 20)}M`;
}
