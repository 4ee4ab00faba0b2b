// Checks src/'s imports against layers.json: a file imports its own folder or a
// lower layer's, never upward or sideways, and no files import each other in a
// cycle. One line per violation, exit 1 if any. Type-only imports count too.
// Usage: node scripts/check-layers.mjs [root] (default: this repository).
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
const src = path.join(root, 'src');
const { layers } = JSON.parse(readFileSync(path.join(root, 'layers.json'), 'utf8'));
const rank = new Map();
layers.forEach((layer, i) => { for (const folder of layer.folders) rank.set(folder, i); });

function sources(dir) {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return sources(full);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [full] : [];
  });
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\b[^'"`;]*?\bfrom\s*['"](\.{1,2}\/[^'"]+)['"]|\bimport\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)|(?:^|\n)\s*import\s*['"](\.{1,2}\/[^'"]+)['"]/g;
const folderOf = (file) => path.relative(src, file).split(path.sep)[0];
const problems = [];
const graph = new Map();

for (const file of sources(src)) {
  const from = folderOf(file);
  const text = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const targets = [];
  for (const match of text.matchAll(IMPORT)) {
    const spec = match[1] ?? match[2] ?? match[3];
    const target = path.resolve(path.dirname(file), spec).replace(/\.js$/, '.ts');
    const rel = path.relative(root, file);
    if (!target.startsWith(src + path.sep)) {
      problems.push(`${rel}: imports ${spec}, outside src/`);
      continue;
    }
    targets.push(target);
    const to = folderOf(target);
    if (to === from) continue;
    if (!rank.has(from) || !rank.has(to)) {
      problems.push(`${rel}: folder ${!rank.has(from) ? from : to}/ is in no layer of layers.json`);
    } else if (rank.get(to) >= rank.get(from)) {
      const how = rank.get(to) === rank.get(from) ? 'sideways, within its layer' : 'upward';
      problems.push(`${rel}: imports ${spec} (${to}/, layer ${layers[rank.get(to)].name}) ${how} from ${from}/ (layer ${layers[rank.get(from)].name})`);
    }
  }
  graph.set(file, targets);
}

// Cycles between files: a depth-first walk, each cycle told once.
const state = new Map();
const stack = [];
const told = new Set();
function walk(file) {
  state.set(file, 'open');
  stack.push(file);
  for (const next of graph.get(file) ?? []) {
    if (state.get(next) === 'open') {
      const cycle = stack.slice(stack.indexOf(next)).map((f) => path.relative(root, f));
      const key = [...cycle].sort().join(' ');
      if (!told.has(key)) {
        told.add(key);
        problems.push(`import cycle: ${[...cycle, cycle[0]].join(' -> ')}`);
      }
    } else if (!state.has(next)) walk(next);
  }
  stack.pop();
  state.set(file, 'done');
}
for (const file of graph.keys()) if (!state.has(file)) walk(file);

for (const line of problems) console.error(line);
if (problems.length > 0) {
  console.error(`${problems.length} layer violation(s): see layers.json and docs/design.md ("Layers")`);
  process.exit(1);
}
