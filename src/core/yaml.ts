/**
 * Writes plain data (objects, arrays, strings, numbers, booleans, null) as
 * block-style YAML. Every string is double-quoted with JSON's escapes, which
 * YAML's double-quoted scalars read the same way: no value can change type or
 * meaning (`no`, `1e3`, `*x`, `: `) however it is spelled. Keys that begin
 * with a letter or `_` and go on with letters, digits, `_`, `.`, `-` are
 * written bare (but for YAML's words such as `true` and `no`), others quoted.
 */
export function toYaml(value: unknown): string {
  return `${lines(value, 0).join('\n')}\n`;
}

function scalar(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`not a finite number: ${value}`);
    return String(value);
  }
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  throw new Error(`cannot write ${typeof value} as YAML`);
}

/** Bare only where no YAML reader can take it for anything but that string (not 00, true, no, ~). */
function key(k: string): string {
  return /^[A-Za-z_][A-Za-z0-9_.-]*$/.test(k) && !/^(true|false|null|yes|no|on|off|y|n)$/i.test(k) ? k : JSON.stringify(k);
}

function isBlock(value: unknown): value is Record<string, unknown> | unknown[] {
  if (Array.isArray(value)) return value.length > 0;
  return typeof value === 'object' && value !== null && Object.keys(value).length > 0;
}

function inline(value: unknown): string {
  if (Array.isArray(value)) return '[]';
  if (typeof value === 'object' && value !== null) return '{}';
  return scalar(value);
}

function lines(value: unknown, depth: number): string[] {
  const pad = '  '.repeat(depth);
  if (Array.isArray(value)) {
    if (value.length === 0) return [`${pad}[]`];
    return value.flatMap((item) => {
      if (!isBlock(item)) return [`${pad}- ${inline(item)}`];
      const inner = lines(item, depth + 1);
      // The first line of the item goes after the dash.
      return [`${pad}- ${(inner[0] as string).trimStart()}`, ...inner.slice(1)];
    });
  }
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    if (entries.length === 0) return [`${pad}{}`];
    return entries.flatMap(([k, v]) => (isBlock(v) ? [`${pad}${key(k)}:`, ...lines(v, depth + 1)] : [`${pad}${key(k)}: ${inline(v)}`]));
  }
  return [`${pad}${scalar(value)}`];
}
