import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgsHome, realPid, unixUpload, waitFor, zeros } from '../helpers/pgs.js';

/**
 * POST /v1/import against a real daemon: an upload is untrusted and may be
 * huge, cut short or of the wrong kind. Each is refused with its own problem,
 * nothing stays under <dataRoot>/imports/, the daemon holds no handle to it,
 * and no tenant is made from an export whose settings were edited.
 */
interface Problem { status: number; code: string; detail: string }
interface Status { pid: number; importLimit: { bytes: number; auto: boolean } | null }

const MiB = 2 ** 20;

/** The export with its pgs-export.json replaced by `edit` of it (the checksums cover only the data members). */
function rewriteMeta(bytes: Buffer, edit: (meta: Record<string, unknown>) => unknown): Buffer {
  for (let offset = 0; offset + 512 <= bytes.length;) {
    const name = bytes.toString('utf8', offset, offset + 100).replace(/\0.*$/s, '');
    const size = Number.parseInt(bytes.toString('latin1', offset + 124, offset + 136).replace(/\0.*$/s, ''), 8);
    if (name === 'pgs-export.json') {
      const meta = JSON.parse(bytes.toString('utf8', offset + 512, offset + 512 + size)) as Record<string, unknown>;
      const json = Buffer.from(`${JSON.stringify(edit(meta), null, 2)}\n`);
      const header = Buffer.from(bytes.subarray(offset, offset + 512));
      header.write(`${json.length.toString(8).padStart(11, '0')}\0`, 124);
      header.write('        ', 148);
      let sum = 0;
      for (const b of header) sum += b;
      header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
      return Buffer.concat([bytes.subarray(0, offset), header, json, Buffer.alloc((512 - (json.length % 512)) % 512), Buffer.alloc(1024)]);
    }
    offset += 512 + size + ((512 - (size % 512)) % 512);
  }
  throw new Error('no pgs-export.json in the export');
}

describe('uploads to POST /v1/import', () => {
  let pgs: PgsHome;
  let socket: string;
  let imports: string;
  let exported: Buffer;

  /** Files under imports/, and the daemon's open handles to any. */
  const leftovers = async (): Promise<string[]> => {
    const files: string[] = [];
    for (const entry of await fs.readdir(imports, { recursive: true }).catch(() => [] as string[])) files.push(String(entry));
    const { pid } = (await pgs.api<Status>('GET', '/v1/status')).body;
    const fdDir = `/proc/${realPid(pid, 'the daemon')}/fd`;
    for (const fd of await fs.readdir(fdDir)) {
      const target = await fs.readlink(path.join(fdDir, fd)).catch(() => '');
      if (target.startsWith(imports)) files.push(`open: ${target}`);
    }
    return files;
  };
  const upload = <T = Problem>(urlPath: string, chunks: Iterable<Buffer> | AsyncIterable<Buffer>, options: Parameters<typeof unixUpload>[3] = {}) =>
    unixUpload<T>(socket, urlPath, chunks, options);
  const octet = { 'content-type': 'application/octet-stream' };

  before(async () => {
    pgs = await PgsHome.make();
    await pgs.setup();
    socket = path.join(pgs.home, 'daemon.sock');
    imports = path.join(await pgs.dataRoot(), 'imports');
    await pgs.ok(['create', 'src']);
    const file = path.join(pgs.home, 'src.pgs');
    await pgs.ok(['export', 'src', '-o', file]);
    exported = await fs.readFile(file);
  });
  after(async () => {
    await pgs.destroy();
  });

  it('a valid export still imports, streamed in chunks without a Content-Length', async () => {
    const status = (await pgs.api<Status>('GET', '/v1/status')).body;
    assert.equal(status.importLimit?.auto, true);
    assert.ok((status.importLimit?.bytes ?? 0) > exported.length, `the auto limit (${status.importLimit?.bytes}) takes a small export`);
    const chunks = function* () {
      for (let at = 0; at < exported.length; at += 64 * 1024) yield exported.subarray(at, at + 64 * 1024);
    };
    const made = await upload<{ id: string }>('/v1/import?as=copy', chunks(), { headers: octet });
    assert.equal(made.status, 201, made.text);
    assert.equal(made.body.id, 'copy');
    assert.deepEqual(await leftovers(), []);
  });

  it('other content types are 415 before a byte is written; the body is never buffered', async () => {
    for (const type of ['text/plain', 'application/json', 'application/x-www-form-urlencoded', undefined]) {
      // The daemon says so at once: the body (announced as 1 GiB) is not read, let alone held in memory.
      const refused = await upload(`/v1/import?as=t${type?.length ?? 0}`, zeros(1024 * MiB), { headers: { ...(type ? { 'content-type': type } : {}), 'content-length': 1024 * MiB } });
      assert.equal(refused.status, 415, `${type}: ${refused.text}`);
      assert.equal(refused.body.code, 'unsupported_media_type');
      assert.match(refused.body.detail, /Content-Type: application\/octet-stream/);
      assert.ok(refused.sent < 256 * MiB, `${type}: answered after ${refused.sent} bytes`);
      assert.deepEqual(await leftovers(), []);
    }
    const json = await pgs.api<Problem>('POST', '/v1/import', { body: { not: 'an export' } });
    assert.equal(json.status, 415, json.text);
    assert.equal((await pgs.api('GET', '/healthz')).status, 200);
  });

  it('an aborted upload leaves no file and no open handle, and the daemon still answers', async () => {
    for (const headers of [{ ...octet, 'content-length': 200 * MiB }, octet]) {
      const cut = await upload('/v1/import?as=cut', zeros(200 * MiB), { headers, abortAfter: 16 * MiB });
      assert.equal(cut.status, 0);
      await waitFor('the partial upload to go', async () => (await leftovers()).length === 0, 3_000);
      assert.equal((await pgs.api('GET', '/healthz')).status, 200);
    }
    assert.equal((await pgs.api('GET', '/v1/tenants/cut')).status, 404);
  });

  it('past the limit: 413 from Content-Length up front, and while a chunked body streams; nothing is kept', async () => {
    await pgs.ok(['setup', '--import-limit', '4M']);
    try {
      await overLimit();
    } finally {
      await pgs.ok(['setup', '--import-limit', 'auto']);
    }
    assert.equal((await pgs.api<Status>('GET', '/v1/status')).body.importLimit?.auto, true);
  });

  const overLimit = async () => {
    const status = (await pgs.api<Status>('GET', '/v1/status')).body;
    assert.deepEqual(status.importLimit, { bytes: 4 * MiB, auto: false });
    assert.match(await pgs.ok(['status']), /imports\s+uploads up to 4 MiB \(pgs setup --import-limit\)/);

    const declared = await upload('/v1/import?as=big', zeros(64 * MiB), { headers: { ...octet, 'content-length': 64 * MiB } });
    assert.equal(declared.status, 413, declared.text);
    assert.equal(declared.body.code, 'upload_too_large');
    assert.match(declared.body.detail, /the upload is 64 MiB; imports take at most 4 MiB \(pgs setup --import-limit\)/);
    assert.ok(declared.sent < 64 * MiB, 'refused before the body was sent');
    assert.deepEqual(await leftovers(), []);

    const chunked = await upload('/v1/import?as=big', zeros(64 * MiB), { headers: octet });
    assert.equal(chunked.status, 413, chunked.text);
    assert.equal(chunked.body.code, 'upload_too_large');
    assert.match(chunked.body.detail, /the upload goes past 4 MiB; imports take at most 4 MiB/);
    assert.deepEqual(await leftovers(), [], 'the partial file is removed before the answer');

    // The CLI says the same, with the file sent as it is.
    const cli = await pgs.run(['import', path.join(pgs.home, 'src.pgs'), '--as', 'big']);
    assert.equal(cli.code, 1, cli.stderr);
    assert.match(cli.stderr, /imports take at most 4 MiB/);
    assert.equal((await pgs.api('GET', '/v1/tenants/big')).status, 404);
  };

  it('an export whose pgs-export.json was edited is refused, naming the field; no tenant is made', async () => {
    const edits: [string, (meta: Record<string, unknown>) => unknown, RegExp][] = [
      ['config injection', (m) => ({ ...m, tenant: { ...(m.tenant as object), maxConnections: '20\narchive_command = \'x\'' } }), /^not a usable pgs export: tenant\.maxConnections must be an integer from 5 to 10000$/],
      ['negative RPO', (m) => ({ ...m, tenant: { ...(m.tenant as object), rpoSeconds: -5 } }), /^not a usable pgs export: tenant\.rpoSeconds must be an integer from 1 to 3600$/],
      ['bad LSN', (m) => ({ ...m, backup: { ...(m.backup as object), endLsn: '0/1\'; DROP' } }), /backup\.endLsn must be an LSN/],
      ['other tenant', (m) => ({ ...m, backup: { ...(m.backup as object), tenant: 'postgres' } }), /backup\.tenant must be a tenant id/],
    ];
    for (const [what, edit, why] of edits) {
      const refused = await upload('/v1/import?as=evil', [rewriteMeta(exported, edit)], { headers: octet });
      assert.equal(refused.status, 422, `${what}: ${refused.text}`);
      assert.equal(refused.body.code, 'backup_damaged');
      assert.match(refused.body.detail, why, what);
      assert.equal((await pgs.api('GET', '/v1/tenants/evil')).status, 404);
      assert.deepEqual(await leftovers(), []);
    }
    // The same file with its JSON rewritten unchanged is still an export: the rewrite is not what is refused.
    const same = await upload<{ id: string }>('/v1/import?as=same', [rewriteMeta(exported, (m) => m)], { headers: octet });
    assert.equal(same.status, 201, same.text);
    const ids = ((await pgs.api<{ items: { id: string }[] }>('GET', '/v1/tenants')).body.items).map((t) => t.id).sort();
    assert.deepEqual(ids, ['copy', 'same', 'src']);
    const tenants = await fs.readdir(path.join(await pgs.dataRoot(), 'tenants'));
    assert.ok(!tenants.some((name) => name.includes('evil')), `no folder for evil: ${tenants.join(', ')}`);
  });
});
