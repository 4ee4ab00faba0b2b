// Builds the dashboard (web/src) into dist/web: one script, one style sheet,
// index.html naming them by content hash, and a gzip twin of each file the
// daemon serves to browsers that accept it. Everything ships in the package:
// the page fetches nothing from anywhere but the daemon.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const root = path.dirname(new URL(import.meta.url).pathname);
const out = path.join(root, '..', 'dist', 'web');
await fs.rm(out, { recursive: true, force: true });
await build({
  entryPoints: { app: path.join(root, 'src', 'main.tsx') },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outdir: path.join(out, 'assets'),
  logLevel: 'warning',
});
const hash = createHash('sha256');
for (const name of ['app.js', 'app.css']) hash.update(await fs.readFile(path.join(out, 'assets', name)));
const version = hash.digest('hex').slice(0, 12);
const html = (await fs.readFile(path.join(root, 'index.html'), 'utf8')).replaceAll('%VERSION%', version);
await fs.writeFile(path.join(out, 'index.html'), html);
for (const file of ['index.html', 'assets/app.js', 'assets/app.css']) {
  const full = path.join(out, file);
  await fs.writeFile(`${full}.gz`, gzipSync(await fs.readFile(full), { level: 9 }));
}
