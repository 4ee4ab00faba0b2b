import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsHome, ROOT, shell, type Result } from '../helpers/pgs.js';
import { pgsShim, readReadme, readmeBlocks } from '../helpers/readme.js';

/**
 * The README's examples, run as written against a real daemon: the curl
 * calls, the psql lines and the node-postgres snippet. Only the example host
 * name, port, API address and certificate path are replaced by this run's.
 * The "Disaster recovery" block needs an S3 server and a lost host: it is run
 * by test/integration/disaster.test.ts, with the same block finder.
 */
interface Created { hostname: string }

describe('the README\'s examples work as written', () => {
  let pgs: PgsHome;
  let port: number;
  let shims: string;
  let readme: string;
  let substitutions: [string | RegExp, string][];

  const run = (line: string, env: NodeJS.ProcessEnv = {}): Promise<Result> => {
    let text = line;
    for (const [from, to] of substitutions) text = text.split(from as string).join(to);
    return shell(text, { ...pgs.env, PATH: `${shims}:${process.env.PATH ?? ''}`, ...env });
  };

  const blocks = (heading: string, lang: string): string[] => readmeBlocks(readme, heading, lang);

  before(async () => {
    readme = await readReadme();
    pgs = await PgsHome.make();
    port = await pgs.setup();
    shims = await pgsShim(pgs.home);
    await pgs.ok(['start']);
    // What the README's earlier steps made: acme, which its later examples connect to.
    await pgs.ok(['create', 'acme']);
    const status = JSON.parse(await pgs.ok(['status', '--json'])) as { api: string; certificate: string };
    substitutions = [
      ['127.0.0.1:5480', status.api],
      ['$HOME/.sysnee-config/certs/server.crt', status.certificate],
      ['port=5432', `port=${port}`],
    ];
  });
  after(async () => {
    await pgs.destroy();
  });

  it('the API section\'s curl calls: a token, a list, a create (201 with the password), a suspend, the document', async () => {
    const [block] = blocks('## The API', 'sh');
    assert.ok(block);
    const lines = block.replace(/\\\n\s*/g, '').split('\n').filter((l) => l.trim() !== '').map((l) => l.replace(/\s+#.*$/, ''));
    const script = `set -e\n${lines.map((l) => (l.startsWith('curl') ? `${l}; echo` : l)).join('\n')}`;
    const result = await run(script);
    assert.equal(result.code, 0, result.stderr);
    const answers = result.stdout.split('\n');
    assert.match(answers[0] ?? '', /^\{"items":\[/);
    // Its own id: acme, which the README's earlier steps made, would be a 409.
    assert.match(answers[1] ?? '', /^\{"id":"billing","hostname":"billing-[a-z0-9]{6}\.pgs\.localhost","password":"[A-Za-z0-9]{32}"/);
    assert.match(answers[2] ?? '', /"state":"suspended"/);
    assert.match(answers[3] ?? '', /^\{"openapi":"3\.1\.0"/);
  });

  it('the Connecting section\'s psql lines and env export reach the tenant (and verify it)', async () => {
    const { password } = JSON.parse(await pgs.ok(['passwd', 'acme', '--json'])) as { password: string };
    const acme = (JSON.parse(await pgs.ok(['list', '--json'])) as (Created & { id: string })[]).find((t) => t.id === 'acme');
    substitutions.push(['acme-x7k2q9.pgs.localhost', acme?.hostname ?? ''], ['acme-x7k2q9', (acme?.hostname ?? '').split('.')[0] ?? '']);
    const lines = blocks('## Connecting', 'sh').flatMap((b) => b.split('\n')).filter((l) => l.startsWith('psql "host=') || l.startsWith('export $(pgs url'));
    assert.ok(lines.length >= 3, `found ${lines.length} lines`);
    for (const line of lines) {
      const command = line.startsWith('export') ? `${line.replace(/\s+#.*$/, '')}; psql -Atc 'SELECT current_database()'` : `${line} -Atc 'SELECT current_database()'`;
      const result = await run(command, { PGPASSWORD: password });
      assert.equal(result.stdout, 'acme', `${line}: ${result.stderr}`);
    }
    const endpointLine = /`(psql "host=127\.0\.0\.1 port=5432 [^`]*options=endpoint=[^`]*)`/.exec(readme)?.[1];
    assert.ok(endpointLine);
    assert.equal((await run(`${endpointLine} -Atc 'SELECT 1'`, { PGPASSWORD: password })).stdout, '1');

    const [snippet] = blocks('## Connecting', 'js');
    assert.ok(snippet);
    let code = snippet;
    for (const [from, to] of substitutions) code = code.split(from as string).join(to);
    const { certificate } = JSON.parse(await pgs.ok(['status', '--json'])) as { certificate: string };
    code = code.replace('port: 5432', `port: ${port}`).replace('`${process.env.HOME}/.sysnee-config/certs/server.crt`', JSON.stringify(certificate));
    assert.ok(code.includes(JSON.stringify(certificate)), 'the snippet reads the certificate pgs made');
    const file = path.join(ROOT, 'dist', `readme-snippet-${process.pid}.mjs`);
    await fs.writeFile(file, `${code}\nawait client.connect();\nconsole.log((await client.query('SELECT current_database() AS db')).rows[0].db);\nawait client.end();\n`);
    try {
      const result = await run(`"${process.execPath}" "${file}"`, { PGPASSWORD: password });
      assert.equal(result.stdout, 'acme', result.stderr);
    } finally {
      await fs.rm(file, { force: true });
    }
  });
});
