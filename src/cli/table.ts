/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function formatTable(rows: string[][], options: { indent?: string } = {}): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, cell.length); });
  return rows
    .map((row) => (options.indent ?? '') + row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '))
    .join('\n');
}
