import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const NAME = '@sysnee/pgs';

/** The folder of pgs's own package.json above this file (dist/bundle/..., dist/src/...), or null. */
export function packageRoot(): string | null {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++, dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === NAME) return dir;
    } catch {
      // not here
    }
  }
  return null;
}

/** The version in pgs's package.json. */
export async function packageVersion(): Promise<string> {
  const root = packageRoot();
  if (root === null) return 'unknown';
  const pkg = JSON.parse(await readFile(path.join(root, 'package.json'), 'utf8')) as { version?: string };
  return pkg.version ?? 'unknown';
}
