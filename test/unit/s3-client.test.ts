import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import S3rver from 's3rver';
import { isRetryable, MIN_PART_SIZE, parsePartSize, S3Client, S3Error } from '../../src/backup/s3.js';

/**
 * The S3 client against a real S3 API server (s3rver, on loopback) behind a
 * proxy the test controls: it can fail the next requests the ways S3 and
 * networks fail (503 SlowDown, 500, a reset connection, a 200 whose body is
 * an error), or answer with what a hostile server would send.
 */
type Fault = 'slowdown' | 'internal' | 'reset' | 'forbidden' | 'error-in-200' | { status: number; body: string };

describe('S3 client: multipart uploads, retries, strict answers', () => {
  let dir: string;
  let server: S3rver;
  let proxy: http.Server;
  let upstream: number;
  let faults: { match: (req: http.IncomingMessage) => boolean; fault: Fault }[] = [];
  const seen: string[] = [];
  let client: S3Client;

  const fail = (match: (req: http.IncomingMessage) => boolean, ...list: Fault[]) => {
    for (const fault of list) faults.push({ match, fault });
  };
  const any = () => true;

  before(async () => {
    dir = await fs.mkdtemp(path.join(tmpdir(), 'pgs-s3c-'));
    server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: path.join(dir, 's3'), configureBuckets: [{ name: 'pgs-c' }] });
    upstream = (await server.run()).port;
    proxy = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      const at = faults.findIndex((f) => f.match(req));
      const fault = at >= 0 ? faults.splice(at, 1)[0]?.fault : undefined;
      if (fault === 'reset') {
        req.socket.destroy();
        return;
      }
      if (fault === 'slowdown' || fault === 'internal' || fault === 'forbidden' || (typeof fault === 'object')) {
        req.resume();
        const [status, body] = typeof fault === 'object' ? [fault.status, fault.body]
          : fault === 'slowdown' ? [503, '<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>']
          : fault === 'internal' ? [500, '<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>']
          : [403, '<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'];
        req.on('end', () => res.writeHead(status, { 'content-type': 'application/xml' }).end(body));
        return;
      }
      if (fault === 'error-in-200') { // S3 answers 200 at once, then fails to assemble the parts: the upload is still there to complete
        req.resume();
        req.on('end', () => res.writeHead(200, { 'content-type': 'application/xml' }).end('<Error><Code>InternalError</Code><Message>assembling failed</Message></Error>'));
        return;
      }
      const forward = http.request({ host: '127.0.0.1', port: upstream, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      req.pipe(forward);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    client = new S3Client({ bucket: 'pgs-c', prefix: 'p', endpoint, region: 'us-east-1' }, { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, { partSize: MIN_PART_SIZE, retryBaseMs: 5, retryMaxMs: 20 });
  });
  after(async () => {
    await new Promise((resolve) => proxy.close(resolve));
    await server.close();
    await fs.rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    faults = [];
    seen.length = 0;
  });

  const roundTrip = async (bytes: Buffer, name: string) => {
    const file = path.join(dir, name);
    await fs.writeFile(file, bytes);
    await client.putFile(client.key(name), file);
    const back = path.join(dir, `${name}.back`);
    await client.getFile(client.key(name), back);
    assert.ok((await fs.readFile(back)).equals(bytes), `${name} comes back byte for byte`);
  };

  it('uploads a file above the part size in parts, and it comes back whole', async () => {
    await roundTrip(randomBytes(2 * MIN_PART_SIZE + 12345), 'big.tar');
    const parts = seen.filter((s) => s.startsWith('PUT ') && s.includes('partNumber='));
    assert.equal(parts.length, 3, seen.join('\n'));
    assert.ok(seen.some((s) => s.startsWith('POST ') && s.includes('uploads')), 'the upload was started');
    assert.ok(seen.some((s) => s.startsWith('POST ') && s.includes('uploadId=')), 'and completed');
    const listed = await client.list(client.key('big'));
    assert.deepEqual(listed.map((o) => [o.key, o.size]), [['p/big.tar', 2 * MIN_PART_SIZE + 12345]]);
  });

  it('a file of the part size or less is one PUT', async () => {
    await roundTrip(randomBytes(MIN_PART_SIZE), 'edge');
    assert.equal(seen.filter((s) => s.startsWith('PUT ')).length, 1);
  });

  it('retries SlowDown, 500 and a reset connection, then succeeds', async () => {
    fail((req) => req.method === 'PUT', 'slowdown', 'internal', 'reset');
    fail((req) => req.method === 'GET', 'reset', 'slowdown');
    await roundTrip(randomBytes(1000), 'wal-1');
    assert.equal(seen.filter((s) => s.startsWith('PUT ')).length, 4, 'three failures, then the PUT that worked');
    assert.equal(seen.filter((s) => s.startsWith('GET ')).length, 3);
  });

  it('retries each part alone, and a completion answered 200 with an error', async () => {
    fail((req) => req.method === 'PUT' && (req.url ?? '').includes('partNumber=2'), 'reset', 'slowdown');
    fail((req) => req.method === 'POST' && (req.url ?? '').includes('uploadId='), 'error-in-200');
    await roundTrip(randomBytes(MIN_PART_SIZE + 10), 'retried.tar');
    const parts = seen.filter((s) => s.startsWith('PUT ') && s.includes('partNumber='));
    assert.deepEqual(parts.map((s) => /partNumber=(\d+)/.exec(s)?.[1]), ['1', '2', '2', '2']);
  });

  it('does not retry what another try cannot change (403), and says what S3 said', async () => {
    fail(any, 'forbidden');
    const file = path.join(dir, 'denied');
    await fs.writeFile(file, 'x');
    await assert.rejects(client.putFile(client.key('denied'), file), (err: unknown) => err instanceof S3Error && err.status === 403 && /403 AccessDenied \(Access Denied\)/.test(err.message));
    assert.equal(seen.length, 1);
  });

  it('gives up after its tries, with the last error', async () => {
    fail(any, 'slowdown', 'slowdown', 'slowdown', 'slowdown', 'slowdown', 'slowdown');
    await assert.rejects(client.getText(client.key('anything')), /503 SlowDown/);
    assert.equal(seen.length, 5);
  });

  it('aborts a multipart upload whose part keeps failing, and nothing is listed', async () => {
    fail((req) => req.method === 'PUT' && (req.url ?? '').includes('partNumber=2'), 'forbidden');
    const file = path.join(dir, 'aborted.tar');
    await fs.writeFile(file, randomBytes(MIN_PART_SIZE + 10));
    await assert.rejects(client.putFile(client.key('aborted.tar'), file), /403 AccessDenied/);
    assert.ok(seen.some((s) => s.startsWith('DELETE ') && s.includes('uploadId=')), 'the upload was aborted');
    assert.deepEqual(await client.list(client.key('aborted')), []);
  });

  it('refuses hostile answers: malformed XML, a DOCTYPE, keys outside the prefix, a listing that never ends, a huge body', async () => {
    const listing = (body: string) => fail((req) => req.method === 'GET' && (req.url ?? '').includes('list-type=2'), { status: 200, body });
    listing('<ListBucketResult><Contents><Key>p/a</Key></ListBucketResult>');
    await assert.rejects(client.list('p/'), /not XML S3 would send.*<\/ListBucketResult> closes <Contents>/);
    listing('<!DOCTYPE x [<!ENTITY a "aaaa">]><ListBucketResult>&a;</ListBucketResult>');
    await assert.rejects(client.list('p/'), /document type declaration/);
    listing('<ListBucketResult><Contents><Key>q/secret</Key><Size>1</Size><LastModified>2026-01-01T00:00:00Z</LastModified></Contents></ListBucketResult>');
    await assert.rejects(client.list('p/'), /"q\/secret", which is not under the prefix/);
    listing('<ListBucketResult><Contents><Key>p/a</Key><Size>-1</Size><LastModified>2026-01-01T00:00:00Z</LastModified></Contents></ListBucketResult>');
    await assert.rejects(client.list('p/'), /lacks a key, a size or a time/);
    listing('<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>');
    await assert.rejects(client.list('p/'), /no new continuation token/);
    listing('<Error><Code>x</Code></Error>');
    await assert.rejects(client.list('p/'), /a listing was answered with <Error>/);
    listing(`<ListBucketResult>${'x'.repeat(17 << 20)}</ListBucketResult>`);
    await assert.rejects(client.list('p/'), /larger than 16 MiB/);
    fail(any, { status: 503, body: `<Error><Code>Slow\nDown</Code><Message>${'\u0007'.repeat(3)}ok</Message></Error>` }, { status: 404, body: 'not xml at all <' });
    await assert.rejects(client.getText('p/x'), (err: unknown) => err instanceof S3Error && err.status === 404 && err.s3Code === '404');
  });

  it('knows which errors to retry', () => {
    assert.equal(isRetryable(new S3Error(503, 'SlowDown', '')), true);
    assert.equal(isRetryable(new S3Error(400, 'RequestTimeout', '')), true);
    assert.equal(isRetryable(new S3Error(0, 'ECONNRESET', '')), true);
    assert.equal(isRetryable(new S3Error(0, 'InvalidResponse', '')), false);
    assert.equal(isRetryable(new S3Error(404, 'NoSuchKey', '')), false);
    assert.equal(isRetryable(new S3Error(400, 'XAmzContentSHA256Mismatch', '')), false);
    assert.equal(isRetryable(Object.assign(new Error('aborted'), { code: 'ECONNRESET' })), true);
    assert.equal(isRetryable(Object.assign(new Error('disk full'), { code: 'ENOSPC' })), false);
  });

  it('reads PGS_S3_PART_SIZE within S3\'s limits', () => {
    assert.equal(parsePartSize('16MiB'), 16 << 20);
    assert.equal(parsePartSize('1GiB'), 1 << 30);
    assert.equal(parsePartSize(String(MIN_PART_SIZE)), MIN_PART_SIZE);
    for (const bad of ['1MiB', '6GiB', 'lots', '-5MiB', '']) assert.throws(() => parsePartSize(bad), /invalid PGS_S3_PART_SIZE/);
  });
});
