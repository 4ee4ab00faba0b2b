import { promises as fs } from 'node:fs';
import path from 'node:path';
import { PGS_BIN, ROOT } from './pgs.js';

/** The README, as the tests that run its examples read it. */
export function readReadme(): Promise<string> {
  return fs.readFile(path.join(ROOT, 'README.md'), 'utf8');
}

/** The fenced blocks of a kind (`sh`, `js`) under a heading, up to the next `## ` heading. */
export function readmeBlocks(readme: string, heading: string, lang: string): string[] {
  const start = readme.indexOf(heading);
  if (start < 0) throw new Error(`the README has no heading ${JSON.stringify(heading)}`);
  const end = readme.indexOf('\n## ', start + heading.length);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(new RegExp(`\`\`\`${lang}\\n([\\s\\S]*?)\`\`\``, 'g'))].map((m) => m[1] ?? '');
}

/** A folder with a `pgs` that runs this repository's CLI, to put first on PATH for the README's lines. */
export async function pgsShim(parent: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(parent, 'bin-'));
  await fs.writeFile(path.join(dir, 'pgs'), `#!/bin/sh\nexec "${process.execPath}" "${PGS_BIN}" "$@"\n`, { mode: 0o755 });
  return dir;
}
