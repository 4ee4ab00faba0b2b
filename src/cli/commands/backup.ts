import { createWriteStream, promises as fs, createReadStream } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { BackupJson, BackupListJson, ExportJson, TenantJson } from '../../api/schemas.js';
import { PgsError, codeFromWord, errnoCode } from '../../core/errors.js';
import { daemonPaths } from '../../core/paths.js';
import { parsePointInTime } from '../../core/time.js';
import { parseLsn, segmentName } from '../../backup/wal.js';
import { Backups } from '../../service/backups.js';
import { runOperation } from '../api-client.js';
import { announceDaemon, confirm, printJson, tenantPath, type Command, type Context } from '../command.js';
import { formatTable } from '../table.js';

/** `pgs backup`, `backups`, `restore`, `branch`, `export` and `import`: the daemon's backup operations. */

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** What pgs took from data it did not make, as lines under the tenant's (nothing when it took nothing). */
function neutralizedLines(t: TenantJson): string {
  const notes = (t.notes ?? []).map((note) => `\n${note}`).join('');
  if (!t.neutralized || t.neutralized.length === 0) return notes;
  return `${notes}\npgs took away what no tenant may have (${t.neutralized.length}):\n${t.neutralized.map((line) => `  - ${line}`).join('\n')}`;
}

function tenantLine(verb: string, t: TenantJson): string {
  return `${verb} ${t.id}: ${t.hostname}, ${t.state}`;
}

export const backup: Command = {
  summary: 'take a backup of a tenant now',
  usage: 'pgs backup <id> [--json]',
  details: [
    '  Online and consistent while the server runs (BASE_BACKUP, SHA-256 per file in its manifest);',
    '  a suspended or stopped tenant is backed up from its files without waking it.',
    '  Backups and the continuous WAL archive live in <data>/backups/<id>/.',
    '  --json   print the backup {id, kind, startedAt, finishedAt, startLsn, endLsn, bytes, ...}',
    'API: POST /v1/tenants/{id}/backups (Prefer: respond-async for an operation)',
  ].join('\n'),
  options: { json: { type: 'boolean' } },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const made = await runOperation<BackupJson>(ctx.api, 'POST', tenantPath(id as string, '/backups'), { onStart: announceDaemon });
    if (values.json) printJson(made);
    else {
      const seconds = (Date.parse(made.finishedAt) - Date.parse(made.startedAt)) / 1000;
      console.log(`Backup ${made.id} of ${made.tenant}: ${made.kind}, ${formatBytes(made.bytes)}, ${seconds.toFixed(1)} s`);
    }
    return 0;
  },
};

export const backups: Command = {
  summary: 'list a tenant\'s backups and how far back it can be restored',
  usage: 'pgs backups <id> [--json] | pgs backups <id> --delete [--yes]',
  details: [
    '  Each backup with its timeline, its WAL (first and last segment; their names hold the timeline)',
    '  and, for a pre-restore backup, what restore it was taken before ("before restore to backup B",',
    '  or to a time). Then the restorable window: the earliest and latest points in time',
    '  "pgs restore --time" can reach. Also lists a removed tenant\'s backups, which stay',
    '  until deleted: "pgs restore <id>" brings such a tenant back.',
    '  --json     print {tenant, backups: [...], window: {earliest, latest}, ranges, lastFailure}',
    '  --delete   delete every backup and the WAL archive of a removed tenant (asks on a terminal;',
    '             --yes does not ask)',
    'API: GET /v1/tenants/{id}/backups, DELETE /v1/tenants/{id}/backups',
  ].join('\n'),
  options: { json: { type: 'boolean' }, delete: { type: 'boolean' }, yes: { type: 'boolean' } },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    if (values.delete) {
      if (!values.yes) await confirm(`Delete every backup of ${id}? They are the only way back to it. Type its id to confirm: `, id as string, `not deleting the backups of ${id}`);
      await ctx.api.change('DELETE', tenantPath(id as string, '/backups'), {}, announceDaemon);
      console.log(`Deleted the backups of ${id}`);
      return 0;
    }
    // With an S3 target the daemon also looks in the bucket (a host that lost its data root): start it if need be.
    const remote = (await ctx.pgs().store.read()).settings.backupTarget !== undefined;
    const list = remote
      ? (await ctx.api.change<BackupListJson>('GET', tenantPath(id as string, '/backups'), {}, announceDaemon)).body
      : ((await ctx.api.getIfRunning<BackupListJson>(tenantPath(id as string, '/backups'))) ?? (await readBackups(ctx, id as string)));
    if (values.json) {
      printJson(list);
      return 0;
    }
    if (list.backups.length === 0) console.log(`No backups of ${id} yet ("pgs backup ${id}" takes one).`);
    else {
      console.log(formatTable([
        // The generation (one unbroken line of WAL) and timeline tell a backup from before a restore from the first one after it.
        // A restore goes back in the WAL: the first backup after it can start at the very position (LSN) one
        // before it did, on another timeline. Segment names hold the timeline, so each backup's WAL reads as its own.
        ['ID', 'KIND', 'REASON', 'FINISHED', 'SIZE', 'GENERATION', 'TL', 'WAL', 'NOTE'],
        ...list.backups.map((b) => [
          b.id, b.kind, b.reason, b.finishedAt.replace(/\.\d+Z$/, 'Z'), formatBytes(b.bytes), b.generation, String(b.timeline),
          `${segmentName(b.timeline, parseLsn(b.startLsn))}-${segmentName(b.timeline, parseLsn(b.endLsn))}`, b.note ?? '',
        ]),
      ]));
    }
    if (list.window) console.log(`\nRestorable from ${list.window.earliest} to ${list.window.latest}`);
    for (const r of list.ranges.filter((range) => range.gap !== undefined)) console.log(`WAL archive gap at ${r.gap}: generation ${r.generation} reaches ${r.to} only`);
    if (list.lastFailure) console.log(`Last backup failure at ${list.lastFailure.at}: ${list.lastFailure.error}`);
    return 0;
  },
};

/** Without a daemon: the same list, from the files. */
async function readBackups(ctx: Context, id: string): Promise<BackupListJson> {
  const catalog = await ctx.pgs().store.read();
  const tenant = catalog.tenants.find((t) => t.id === id);
  const list = await new Backups(ctx.pgs().runtimeFor(catalog.settings), catalog.settings.dataRoot).describe(id);
  if (!tenant && list.backups.length === 0) throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id}, and no backups of one (see "pgs list")`);
  const strip = ({ id: bid, tenant: t, generation, kind, reason, startedAt, finishedAt, startLsn, endLsn, timeline, bytes, note }: BackupJson) =>
    ({ id: bid, tenant: t, generation, kind, reason, startedAt, finishedAt, startLsn, endLsn, timeline, bytes, ...(note !== undefined ? { note } : {}) });
  return { tenant: id, backups: list.backups.map(strip), window: list.window, ranges: list.ranges, lastFailure: null };
}

export const restore: Command = {
  summary: 'restore a tenant from a backup or to a point in time',
  usage: 'pgs restore <id> [--backup B | --time T] [--as <new-id>] [--json]',
  details: [
    '  --time T      the tenant as it was at T (replays the WAL archive): 2026-11-30T14:02:00Z,',
    '                with any offset (+05:30, +0530, +05), as psql prints now() (2026-11-30',
    '                14:02:00.123456+00), or without an offset (local time)',
    '  --backup B    from backup B (see "pgs backups <id>"), as it was when B ended; with --time, B is',
    '                where the replay starts',
    '                Neither: the latest point the backups and archive reach.',
    '  --as NEW      make a new tenant NEW and leave <id> untouched; <id> may be a removed tenant',
    '                whose backups remain',
    '  In place (no --as), the current state is backed up first (listed, restorable), connections',
    '  are closed, and the restored tenant keeps its host name and its password.',
    '  --json        print the tenant',
    'API: POST /v1/tenants/{id}/restore {"time"?, "backup"?, "as"?} (Prefer: respond-async for an operation)',
  ].join('\n'),
  options: { backup: { type: 'string' }, time: { type: 'string' }, as: { type: 'string' }, json: { type: 'boolean' } },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const body = {
      ...(values.backup !== undefined ? { backup: String(values.backup) } : {}),
      ...(values.time !== undefined ? { time: parsePointInTime(String(values.time), '--time').iso } : {}),
      ...(values.as !== undefined ? { as: String(values.as) } : {}),
    };
    const tenant = await runOperation<TenantJson>(ctx.api, 'POST', tenantPath(id as string, '/restore'), { body, onStart: announceDaemon });
    if (values.json) printJson(tenant);
    else {
      const to = body.time ?? (body.backup !== undefined ? `the end of backup ${body.backup}` : 'the latest point');
      console.log(tenantLine(body.as !== undefined && body.as !== id ? `Restored ${id} to ${to} as` : `Restored to ${to}:`, tenant) + neutralizedLines(tenant));
      if (body.as !== undefined && body.as !== id) console.log(`Its roles and passwords are those of ${id} at that point. URL: pgs url ${tenant.id}`);
    }
    return 0;
  },
};

export const branch: Command = {
  summary: 'make a new tenant with another\'s data, now or at a point in time',
  usage: 'pgs branch <src> <new-id> [--at T] [--json]',
  details: [
    '  A new, independent tenant: changes to either do not reach the other. Without --at it has',
    '  <src>\'s data now: streamed from its running server (no downtime for <src>), or copied from a',
    '  suspended one\'s files without waking it (reflinks on XFS or btrfs). With --at T, as <src> was',
    '  at T, from its backups and WAL archive. T as for "pgs restore --time": 2026-11-30T14:02:00Z,',
    '  with any offset, as psql prints now() (2026-11-30 14:02:00.123456+00), or local time.',
    '  Its roles and passwords are <src>\'s; it gets its own host name.',
    '  --json   print the new tenant',
    'API: POST /v1/tenants/{src}/branch {"id": "<new-id>", "at"?} (Prefer: respond-async for an operation)',
  ].join('\n'),
  options: { at: { type: 'string' }, json: { type: 'boolean' } },
  positionals: [2, 2],
  async run(ctx, [src, newId], values) {
    const body = { id: newId as string, ...(values.at !== undefined ? { at: parsePointInTime(String(values.at), '--at').iso } : {}) };
    const tenant = await runOperation<TenantJson>(ctx.api, 'POST', tenantPath(src as string, '/branch'), { body, onStart: announceDaemon });
    if (values.json) printJson(tenant);
    else console.log(`${tenantLine(`Branched ${src}${body.at ? ` at ${body.at}` : ''} into`, tenant)}${neutralizedLines(tenant)}\nIts roles and passwords are those of ${src}. URL: pgs url ${tenant.id}`);
    return 0;
  },
};

export const exportCommand: Command = {
  summary: 'write a tenant to one file, to import on another host',
  usage: 'pgs export <id> [-o FILE] [--json]',
  details: [
    '  One self-contained file: a fresh online backup with its manifest and the tenant\'s settings,',
    '  each part with its SHA-256. Default FILE: ./<id>-<backup>.pgs. Passwords are inside as the',
    '  server keeps them (SCRAM verifiers): guard the file like the data.',
    '  --json   print {file, bytes, sha256}',
    'API: POST /v1/tenants/{id}/export, then GET /v1/exports/{name}',
  ].join('\n'),
  options: { output: { type: 'string', short: 'o' }, json: { type: 'boolean' } },
  positionals: [1, 1],
  async run(ctx, [id], values) {
    const made = await runOperation<ExportJson>(ctx.api, 'POST', tenantPath(id as string, '/export'), { onStart: announceDaemon });
    const file = path.resolve(values.output !== undefined ? String(values.output) : made.name);
    try {
      await download(ctx, made.download, file);
    } finally {
      await ctx.api.request('DELETE', made.download).catch(() => undefined);
    }
    if (values.json) printJson({ file, bytes: made.bytes, sha256: made.sha256 });
    else console.log(`Exported ${id} to ${file} (${formatBytes(made.bytes)}, sha256 ${made.sha256})`);
    return 0;
  },
};

export const importCommand: Command = {
  summary: 'make a tenant from a file that "pgs export" wrote',
  usage: 'pgs import FILE [--as <id>] [--json]',
  details: [
    '  Every part of the file is checked against its SHA-256 and every data file against the',
    '  backup\'s manifest before the tenant exists; a damaged file makes nothing.',
    '  --as ID   the new tenant\'s id (default: the exported tenant\'s)',
    '  --json    print the new tenant',
    'API: POST /v1/import?as=ID with the file as the body (application/octet-stream)',
  ].join('\n'),
  options: { as: { type: 'string' }, json: { type: 'boolean' } },
  positionals: [1, 1],
  async run(ctx, [file], values) {
    const stat = await fs.stat(file as string).catch((err: unknown) => {
      throw new PgsError('USAGE', `cannot read ${file}: ${errnoCode(err) === 'ENOENT' ? 'no such file' : (err as Error).message}`);
    });
    if (!stat.isFile()) throw new PgsError('USAGE', `${file} is not a file`);
    const query = values.as !== undefined ? `?as=${encodeURIComponent(String(values.as))}` : '';
    // Started first if none runs (the upload then goes to a daemon that answers).
    await ctx.api.change('GET', '/healthz', {}, announceDaemon);
    const op = await upload<{ id: string; status: string }>(ctx, `/v1/import${query}`, file as string, stat.size);
    const tenant = await runOperation<TenantJson>(ctx.api, 'GET', `/v1/operations/${op.id}`);
    if (values.json) printJson(tenant);
    else console.log(`${tenantLine('Imported', tenant)}${neutralizedLines(tenant)}\nIts roles and passwords are those in the file. URL: pgs url ${tenant.id}`);
    return 0;
  },
};

function download(ctx: Context, urlPath: string, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: daemonPaths(ctx.home).socket, method: 'GET', path: urlPath }, (res) => {
      if ((res.statusCode ?? 500) >= 400) {
        res.resume();
        return reject(new PgsError('INTERNAL', `the daemon answered ${res.statusCode} for ${urlPath}`));
      }
      pipeline(res, createWriteStream(file, { mode: 0o600, flags: 'wx' })).then(resolve, (err: unknown) => {
        if (errnoCode(err) === 'EEXIST') reject(new PgsError('USAGE', `${file} exists already: choose another with -o`));
        else reject(err as Error);
      });
    });
    req.on('error', reject);
    req.end();
  });
}

function upload<T>(ctx: Context, urlPath: string, file: string, size: number): Promise<T> {
  return new Promise((resolve, reject) => {
    // A refusal (413) may come before the whole file is sent; the daemon then closes, and the write fails.
    let answered = false;
    const req = http.request({
      socketPath: daemonPaths(ctx.home).socket, method: 'POST', path: urlPath,
      headers: { 'content-type': 'application/octet-stream', 'content-length': size, prefer: 'respond-async' },
    }, (res) => {
      answered = true;
      let text = '';
      res.setEncoding('utf8').on('data', (s: string) => { text += s; });
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        let body: { code?: string; detail?: string } & Record<string, unknown> = {};
        try {
          body = JSON.parse(text) as typeof body;
        } catch {
          // reported below
        }
        if ((res.statusCode ?? 500) >= 400) return reject(new PgsError(codeFromWord(body.code), body.detail ?? `the daemon answered ${res.statusCode}`));
        resolve(body as T);
      };
      res.on('end', finish);
      res.on('close', finish);
    });
    req.on('error', (err) => { if (!answered) reject(err); });
    const input = createReadStream(file);
    input.on('error', (err) => req.destroy(err));
    input.pipe(req);
  });
}
