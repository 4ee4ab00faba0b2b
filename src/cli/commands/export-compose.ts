import { promises as fs } from 'node:fs';
import path from 'node:path';
import { PgsError } from '../../core/errors.js';
import { composeProject } from '../../service/compose.js';
import type { Command } from '../command.js';

const ENV_HEADER = [
  '# The password of user postgres of each tenant, for docker compose. pgs never stores passwords:',
  '# fill every line (the ones "pgs create" or "pgs passwd" printed, or new ones) before',
  '# "docker compose up -d"; compose refuses to start a tenant whose line is empty.',
].join('\n');

export const exportCompose: Command = {
  summary: 'write the tenants as a Docker Compose project with Traefik v3 in front (the original deployment)',
  usage: 'pgs export-compose [-o DIR] [--json]',
  details: [
    '  -o, --output DIR  where to write (default ./pgs-compose): docker-compose.yml, traefik/traefik.yml,',
    '                    traefik/dynamic.yml and .env; files pgs wrote before are replaced, an existing',
    '                    .env is kept (lines for new tenants are added)',
    '  --json            print {dir, files, routed, unrouted, passwordVariables}',
    '  One postgres:18 service per tenant (its volume, max_connections, memory and CPU limits; tenants',
    '  pgs keeps stopped are in profile "stopped") on an internal network, and Traefik on the pgs port',
    '  with a HostSNI route per tenant whose access is enabled (its allow-list, if any, as an ipAllowList',
    '  middleware: a refused address is closed without a PostgreSQL error), the pgs certificate, and ALPN',
    '  "postgresql" for libpq 17+ direct TLS. Passwords are not written: .env has an empty line for',
    '  each. The containers start empty: data moves with pg_dump and pg_restore.',
  ].join('\n'),
  options: { output: { type: 'string', short: 'o' }, json: { type: 'boolean' } },
  positionals: [0, 0],
  async run(ctx, _args, values) {
    const dir = path.resolve(typeof values.output === 'string' ? values.output : 'pgs-compose');
    const catalog = await ctx.pgs().store.read();
    const project = composeProject(catalog);
    const existing = await fs.stat(dir).catch(() => undefined);
    if (existing && !existing.isDirectory()) throw new PgsError('USAGE', `${dir} is a file, not a folder: choose another with -o DIR`);
    await fs.mkdir(path.join(dir, 'traefik'), { recursive: true });
    const written: string[] = [];
    for (const file of project.files) {
      const target = path.join(dir, file.path);
      await fs.writeFile(`${target}.tmp`, file.content, { mode: 0o644 });
      await fs.rename(`${target}.tmp`, target);
      written.push(file.path);
    }
    const envFile = path.join(dir, '.env');
    const before = await fs.readFile(envFile, 'utf8').catch(() => null);
    const present = new Set((before ?? '').split('\n').map((l) => /^\s*([A-Z0-9_]+)\s*=/.exec(l)?.[1]).filter((v): v is string => v !== undefined));
    const missing = project.passwordVariables.filter((p) => !present.has(p.variable));
    if (before === null) {
      await fs.writeFile(envFile, `${ENV_HEADER}\n${missing.map((p) => `${p.variable}=`).join('\n')}\n`, { mode: 0o600, flag: 'wx' });
    } else if (missing.length > 0) {
      await fs.appendFile(envFile, `${before.endsWith('\n') ? '' : '\n'}${missing.map((p) => `${p.variable}=`).join('\n')}\n`);
    }
    written.push('.env');
    if (values.json) {
      console.log(JSON.stringify({ dir, files: written, routed: project.routed, unrouted: project.unrouted, passwordVariables: project.passwordVariables }, null, 2));
      return 0;
    }
    console.log(`Wrote ${written.join(', ')} in ${dir}`);
    console.log(`${project.routed.length} tenant(s) routed by Traefik${project.unrouted.length > 0 ? `; access disabled, so not routed: ${project.unrouted.join(', ')}` : ''}`);
    if (project.passwordVariables.length > 0) {
      console.log(`Passwords are not written: fill ${before === null ? '' : 'the empty lines of '}${envFile} (${missing.length > 0 ? `${missing.length} new line(s)` : 'no new lines'}), then: (cd ${dir} && docker compose up -d)`);
    }
    console.log('The containers start empty: move data with pg_dump and pg_restore.');
    return 0;
  },
};
