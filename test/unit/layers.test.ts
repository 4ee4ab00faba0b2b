import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { ROOT } from '../helpers/pgs.js';

const CHECK = path.join(ROOT, 'scripts', 'check-layers.mjs');
const homes: string[] = [];
after(() => { for (const home of homes) rmSync(home, { recursive: true, force: true }); });

/** A tree with the repository's layers.json and the given files under src/; the checker's exit code and output. */
function check(files: Record<string, string>): { code: number; out: string } {
  const root = mkdtempSync(path.join(tmpdir(), 'pgs-layers-'));
  homes.push(root);
  copyFileSync(path.join(ROOT, 'layers.json'), path.join(root, 'layers.json'));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, 'src', name)), { recursive: true });
    writeFileSync(path.join(root, 'src', name), text);
  }
  const run = spawnSync(process.execPath, [CHECK, root], { encoding: 'utf8' });
  return { code: run.status ?? -1, out: run.stderr };
}

describe('the layer check (scripts/check-layers.mjs, part of npm run lint)', () => {
  it('passes on this repository', () => {
    const run = spawnSync(process.execPath, [CHECK], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
  });

  it('passes downward imports, within a folder and to lower layers', () => {
    const result = check({
      'core/a.ts': 'export const a = 1;\n',
      'router/r.ts': "import { a } from '../core/a.js';\nimport { b } from './b.js';\nexport const r = a + b;\n",
      'router/b.ts': 'export const b = 2;\n',
      'cli/main.ts': "import type { r } from '../router/r.js';\nexport type R = typeof r;\n",
    });
    assert.equal(result.code, 0, result.out);
  });

  it('fails on a planted upward import, a type-only one too, naming the file and the layers', () => {
    const result = check({
      'core/a.ts': "import type { Plane } from '../api/routes.js';\nexport type A = Plane;\n",
      'api/routes.ts': 'export interface Plane { id: string }\n',
    });
    assert.equal(result.code, 1);
    assert.match(result.out, /^src\/core\/a\.ts: imports \.\.\/api\/routes\.js \(api\/, layer surface\) upward from core\/ \(layer base\)$/m);
  });

  it('fails on a sideways import within a layer, and on a folder no layer has', () => {
    const result = check({
      'router/r.ts': "import { b } from '../backup/b.js';\nexport const r = b;\n",
      'backup/b.ts': 'export const b = 1;\n',
      'extras/x.ts': "import { r } from '../router/r.js';\nexport const x = r;\n",
    });
    assert.equal(result.code, 1);
    assert.match(result.out, /src\/router\/r\.ts: imports \.\.\/backup\/b\.js \(backup\/, layer parts\) sideways, within its layer/);
    assert.match(result.out, /src\/extras\/x\.ts: folder extras\/ is in no layer of layers\.json/);
  });

  it('fails on a cycle of files, told once', () => {
    const result = check({
      'api/routes.ts': "import type { Options } from './server.js';\nexport type R = Options;\n",
      'api/server.ts': "import type { R } from './routes.js';\nexport interface Options { r?: R }\n",
    });
    assert.equal(result.code, 1);
    assert.equal(result.out.match(/^import cycle: /gm)?.length, 1, result.out);
    assert.match(result.out, /import cycle: src\/api\/(routes|server)\.ts -> src\/api\/(server|routes)\.ts -> src\/api\/(routes|server)\.ts/);
  });
});
