import { open, readFile, stat } from 'node:fs/promises';
import { PgsError } from '../../core/errors.js';
import { parseInteger, type Command } from '../command.js';

export const logs: Command = {
  summary: 'show a tenant server\'s log',
  usage: 'pgs logs <id> [-n N] [-f]',
  details: [
    '  -n, --lines N  the last N lines (default 50)',
    '  -f, --follow   keep printing new lines until interrupted',
    'API: GET /v1/tenants/{id}/logs?lines=N',
  ].join('\n'),
  options: { lines: { type: 'string', short: 'n' }, follow: { type: 'boolean', short: 'f' } },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const count = values.lines === undefined ? 50 : parseInteger(String(values.lines), '--lines', 0, 1_000_000);
    // Read from the file on this host: no daemon needed, and -f can follow it.
    const file = await ctx.pgs().logFile(id as string);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      throw new PgsError('TENANT_NOT_FOUND', `tenant ${id} has no log yet (${file})`);
    }
    const lines = text.split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    if (count > 0 && lines.length > 0) process.stdout.write(`${lines.slice(-count).join('\n')}\n`);
    if (!values.follow) return 0;
    let offset = Buffer.byteLength(text);
    for (;;) {
      await new Promise((r) => setTimeout(r, 250));
      const size = (await stat(file).catch(() => ({ size: offset }))).size;
      if (size < offset) offset = 0; // the log was truncated or replaced
      if (size === offset) continue;
      const handle = await open(file, 'r');
      try {
        const chunk = Buffer.alloc(size - offset);
        await handle.read(chunk, 0, chunk.length, offset);
        process.stdout.write(chunk);
        offset = size;
      } finally {
        await handle.close();
      }
    }
  },
};
