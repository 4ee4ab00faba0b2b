import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseArgs } from 'node:util';
import { argsProblem } from '../../src/cli/main.js';

const problem = (args: string[]) => {
  try {
    parseArgs({ args, options: { memory: { type: 'string' }, json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (err) {
    return argsProblem(err);
  }
  return undefined;
};

describe('CLI: argument errors in one line', () => {
  it('says which option is wrong, and how, with balanced quotes', () => {
    assert.equal(problem(['x1', '--bogus']), 'unknown option --bogus');
    assert.equal(problem(['-z']), 'unknown option -z');
    assert.equal(problem(['--memory']), '--memory needs a value');
    assert.equal(problem(['--json=yes']), '--json takes no value');
    assert.equal(problem(['--memory', '1G', '--json']), undefined);
  });
});
