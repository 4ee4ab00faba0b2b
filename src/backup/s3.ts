import { createHash, createHmac, randomBytes } from 'node:crypto';
import { constants as fsConstants, createReadStream, promises as fs, readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgsError, errnoCode } from '../core/errors.js';
import { childText, childrenNamed, parseXml, type XmlElement } from './xml.js';

/**
 * A small S3 client: PUT, GET, LIST (v2) and DELETE of objects, signed with
 * AWS Signature Version 4. It is all pgs needs to keep WAL and backups in a
 * bucket, in ~200 lines and no dependency, where the AWS SDK v3 would add
 * megabytes, seconds of install and (from 2027) a Node 22 requirement. It
 * speaks to AWS (virtual-hosted addressing) and to any S3 API server given as
 * an endpoint (path-style: MinIO, Ceph, s3rver in the tests).
 */
export interface S3Target {
  bucket: string;
  /** Key prefix without leading or trailing slash; '' for the bucket's root. */
  prefix: string;
  /** An S3 API server's base URL; absent: AWS. */
  endpoint?: string;
  region: string;
}

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3Object {
  key: string;
  size: number;
  lastModified: Date;
}

/** "s3://bucket/some/prefix" → bucket and prefix. */
export function parseS3Url(text: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(text);
  if (!match?.[1]) throw new PgsError('INVALID_SETTING', `invalid backup target ${JSON.stringify(text)}: s3://BUCKET[/PREFIX] (a bucket name is 3 to 63 of a-z 0-9 . -)`);
  return { bucket: match[1], prefix: (match[2] ?? '').replace(/^\/+|\/+$/g, '') };
}

/**
 * Credentials as the AWS tools find them: AWS_ACCESS_KEY_ID and
 * AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), else the profile
 * AWS_PROFILE (default "default") of AWS_SHARED_CREDENTIALS_FILE (default
 * ~/.aws/credentials). Never written anywhere by pgs.
 */
export function loadCredentials(env: NodeJS.ProcessEnv = process.env): S3Credentials {
  if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    return { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) };
  }
  const file = env.AWS_SHARED_CREDENTIALS_FILE ?? path.join(env.HOME ?? os.homedir(), '.aws', 'credentials');
  const profile = env.AWS_PROFILE ?? 'default';
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    // reported below
  }
  let section = '';
  const values: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const header = /^\[(.+)\]$/.exec(line);
    if (header?.[1]) section = header[1].trim();
    else if (section === profile) {
      const kv = /^([a-z_]+)\s*=\s*(.*)$/.exec(line);
      if (kv?.[1]) values[kv[1]] = (kv[2] ?? '').trim();
    }
  }
  if (values.aws_access_key_id && values.aws_secret_access_key) {
    return { accessKeyId: values.aws_access_key_id, secretAccessKey: values.aws_secret_access_key, ...(values.aws_session_token ? { sessionToken: values.aws_session_token } : {}) };
  }
  throw new PgsError('INVALID_SETTING', `no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the daemon's environment, or profile "${profile}" in ${file}`);
}

const EMPTY_SHA256 = createHash('sha256').update('').digest('hex');

/** RFC 3986 encoding as SigV4 wants it; `/` kept in keys. */
function encode(text: string, keepSlash = false): string {
  const out = encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return keepSlash ? out.replaceAll('%2F', '/') : out;
}

const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();

/** How the client cuts large files and how it retries. */
export interface S3Options {
  /** Files larger than this go up as a multipart upload in parts of this size (S3 allows 5 MiB to 5 GiB). */
  partSize?: number;
  /** Tries of one request before its error is the answer (1: no retry). */
  attempts?: number;
  /** Back-off before the n-th retry: a random time up to retryBaseMs × 2^(n-1) ("full jitter"), at most retryMaxMs. */
  retryBaseMs?: number;
  retryMaxMs?: number;
}

const MiB = 1 << 20;
export const MIN_PART_SIZE = 5 * MiB;
export const MAX_PART_SIZE = 5 * 1024 * MiB;
export const DEFAULT_PART_SIZE = 64 * MiB;
/** S3's own limits: 10,000 parts to an upload, 5 TiB to an object. */
export const MAX_PARTS = 10_000;
export const MAX_OBJECT_SIZE = 5 * 1024 * 1024 * MiB;
/** An answer pgs reads into memory (a listing page, an error, metadata) is never larger than this. */
const MAX_TEXT_ANSWER = 16 * MiB;

/** Errors worth another try: the server is busy or failed, or the connection broke. */
const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);
const RETRY_CODES = new Set(['SlowDown', 'InternalError', 'ServiceUnavailable', 'RequestTimeout', 'Throttling', 'ThrottlingException', 'RequestLimitExceeded']);
const RETRY_ERRNO = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ERR_STREAM_PREMATURE_CLOSE']);

/** Whether an error of a request to S3 is one that a later try of the same request may not have. */
export function isRetryable(err: unknown): boolean {
  // An answer that is not what S3 sends (InvalidResponse) is not retried: it is a wrong server, not a busy one.
  if (err instanceof S3Error) return (err.status === 0 && err.s3Code !== 'InvalidResponse') || RETRY_STATUS.has(err.status) || RETRY_CODES.has(err.s3Code);
  const code = errnoCode(err);
  return code !== undefined && RETRY_ERRNO.has(code);
}

export class S3Client {
  readonly target: S3Target;
  private readonly credentials: S3Credentials;
  private readonly base: URL;
  private readonly pathStyle: boolean;
  readonly partSize: number;
  private readonly attempts: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;

  constructor(target: S3Target, credentials: S3Credentials, options: S3Options = {}) {
    this.target = target;
    this.credentials = credentials;
    this.pathStyle = target.endpoint !== undefined;
    this.base = new URL(target.endpoint ?? `https://${target.bucket}.s3.${target.region}.amazonaws.com`);
    this.partSize = options.partSize ?? DEFAULT_PART_SIZE;
    if (!Number.isSafeInteger(this.partSize) || this.partSize < MIN_PART_SIZE || this.partSize > MAX_PART_SIZE) {
      throw new PgsError('INVALID_SETTING', `invalid S3 part size ${this.partSize}: S3 takes parts of 5 MiB to 5 GiB`);
    }
    this.attempts = Math.max(1, options.attempts ?? 5);
    this.retryBaseMs = options.retryBaseMs ?? 200;
    this.retryMaxMs = options.retryMaxMs ?? 5_000;
  }

  /** The full key of a path under the target's prefix. */
  key(relative: string): string {
    return this.target.prefix === '' ? relative : `${this.target.prefix}/${relative}`;
  }

  /** Describes where things go, for messages: s3://bucket/prefix. */
  get url(): string {
    return `s3://${this.target.bucket}${this.target.prefix === '' ? '' : `/${this.target.prefix}`}`;
  }

  /**
   * Uploads a file: one PUT up to the part size, a multipart upload above it
   * (parts grow past the part size when a file would need more than S3's
   * 10,000). Every body is signed with its SHA-256, so a server that received
   * other bytes than the file's refuses them, even without TLS.
   */
  async putFile(key: string, file: string): Promise<void> {
    const { size } = await fs.stat(file);
    if (size > MAX_OBJECT_SIZE) throw new PgsError('BACKUP_FAILED', `${file} is ${size} bytes: S3 keeps objects of up to 5 TiB`);
    if (size <= this.partSize) {
      const hash = await sha256Of(file, 0, size);
      await this.retrying(() => this.send('PUT', key, {}, { hash, length: size, body: () => createReadStream(file) }));
      return;
    }
    const partSize = Math.max(this.partSize, Math.ceil(size / MAX_PARTS / MiB) * MiB);
    const uploadId = await this.retrying(async () => {
      const answer = await this.sendForXml('POST', key, { uploads: '' });
      const id = answer.name === 'InitiateMultipartUploadResult' ? childText(answer, 'UploadId') : undefined;
      if (!id) throw new S3Error(0, 'InvalidResponse', `${this.what('POST', key)}: the answer to starting a multipart upload has no UploadId`);
      return id;
    });
    try {
      const parts: { number: number; etag: string }[] = [];
      for (let start = 0; start < size; start += partSize) {
        const number = parts.length + 1;
        const length = Math.min(partSize, size - start);
        const hash = await sha256Of(file, start, length);
        const end = start + length - 1;
        const headers = await this.retrying(() => this.send('PUT', key, { partNumber: String(number), uploadId }, { hash, length, body: () => createReadStream(file, { start, end }) }));
        const etag = headers.etag;
        if (typeof etag !== 'string' || etag === '' || /[<>&\r\n]/.test(etag)) throw new S3Error(0, 'InvalidResponse', `${this.what('PUT', key)}: part ${number} was answered without a usable ETag`);
        parts.push({ number, etag });
      }
      const body = Buffer.from(`<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${parts.map((p) => `<Part><PartNumber>${p.number}</PartNumber><ETag>${p.etag}</ETag></Part>`).join('')}</CompleteMultipartUpload>`);
      await this.retrying(async () => {
        const answer = await this.sendForXml('POST', key, { uploadId }, { hash: createHash('sha256').update(body).digest('hex'), length: body.length, body: () => body });
        // S3 may answer 200 and then an error in the body, once it has assembled the parts.
        if (answer.name === 'Error') throw errorOf(200, answer, this.what('POST', key));
        if (answer.name !== 'CompleteMultipartUploadResult') throw new S3Error(0, 'InvalidResponse', `${this.what('POST', key)}: completing the upload was answered with <${answer.name}>`);
      });
    } catch (err) {
      // Parts of an upload never completed are kept (and billed) until aborted.
      await this.send('DELETE', key, { uploadId }).catch(() => undefined);
      throw err;
    }
  }

  async putText(key: string, text: string): Promise<void> {
    const body = Buffer.from(text);
    const hash = createHash('sha256').update(body).digest('hex');
    await this.retrying(() => this.send('PUT', key, {}, { hash, length: body.length, body: () => body }));
  }

  /**
   * Downloads an object into `file` (written whole under a temporary name,
   * then renamed). `bytes`: the object must be exactly that long; `maxBytes`:
   * no longer than that. A server that sends more is cut off, not believed.
   */
  async getFile(key: string, file: string, size: { bytes?: number; maxBytes?: number } = {}): Promise<void> {
    const limit = size.bytes ?? size.maxBytes ?? Number.MAX_SAFE_INTEGER;
    await this.retrying(async () => {
      // A new file under a random name, never through a symlink: the folder may be a tenant's, and pgs may be root.
      const tmp = `${file}.part-${randomBytes(6).toString('hex')}`;
      const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;
      try {
        await this.send('GET', key, {}, undefined, async (res) => {
          const handle = await fs.open(tmp, flags, 0o600);
          let received = 0;
          const counted = async function* (source: AsyncIterable<Buffer>) {
            for await (const chunk of source) {
              received += chunk.length;
              if (received > limit) throw new S3Error(0, 'InvalidResponse', `GET ${key}: the object is larger than the ${limit} bytes it should have`);
              yield chunk;
            }
          };
          await pipeline(res, counted, handle.createWriteStream());
          if (size.bytes !== undefined && received !== size.bytes) throw new S3Error(0, 'InvalidResponse', `GET ${key}: the object has ${received} bytes, not the ${size.bytes} it should have`);
        });
        await fs.rename(tmp, file);
      } catch (err) {
        await fs.rm(tmp, { force: true });
        throw err;
      }
    });
  }

  /** A small object's text (metadata pgs wrote); refused past 16 MiB, which no such object reaches. */
  async getText(key: string): Promise<string> {
    return this.retrying(async () => {
      let text = '';
      await this.send('GET', key, {}, undefined, async (res) => {
        text = await readText(res, this.what('GET', key));
      });
      return text;
    });
  }

  async delete(key: string): Promise<void> {
    await this.retrying(() => this.send('DELETE', key, {}));
  }

  /** Every object under `prefix` (ListObjectsV2, all pages). */
  async list(prefix: string): Promise<S3Object[]> {
    const out: S3Object[] = [];
    let token: string | undefined;
    do {
      const query = { 'list-type': '2', prefix, ...(token ? { 'continuation-token': token } : {}) };
      const page = await this.retrying(() => this.sendForXml('GET', '', query));
      const what = this.what('GET', `?list-type=2&prefix=${prefix}`);
      if (page.name !== 'ListBucketResult') throw new S3Error(0, 'InvalidResponse', `${what}: a listing was answered with <${page.name}>`);
      for (const entry of childrenNamed(page, 'Contents')) {
        const key = childText(entry, 'Key');
        const size = Number(childText(entry, 'Size'));
        const lastModified = new Date(childText(entry, 'LastModified') ?? '');
        if (key === undefined || key === '' || !Number.isSafeInteger(size) || size < 0 || Number.isNaN(lastModified.getTime())) {
          throw new S3Error(0, 'InvalidResponse', `${what}: a listed object lacks a key, a size or a time`);
        }
        if (!key.startsWith(prefix)) throw new S3Error(0, 'InvalidResponse', `${what}: the listing names ${JSON.stringify(key)}, which is not under the prefix asked for`);
        out.push({ key, size, lastModified });
      }
      const truncated = childText(page, 'IsTruncated') === 'true';
      const next = childText(page, 'NextContinuationToken');
      if (truncated && (!next || next === token)) throw new S3Error(0, 'InvalidResponse', `${what}: a listing says it goes on but gives no new continuation token`);
      token = truncated ? next : undefined;
    } while (token);
    return out;
  }

  /** Runs `op` until it succeeds, its error is not one to retry, or the tries are spent. */
  private async retrying<T>(op: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await op();
      } catch (err) {
        if (attempt >= this.attempts || !isRetryable(err)) throw err;
        await sleep(Math.random() * Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** (attempt - 1)));
      }
    }
  }

  private what(method: string, key: string): string {
    return `${method} ${this.url}/${key.startsWith(this.target.prefix) ? key.slice(this.target.prefix.length).replace(/^\//, '') : key}`;
  }

  /** A request whose answer is an XML document, parsed (a malformed one is an error, not a guess). */
  private async sendForXml(method: string, key: string, query: Record<string, string>, payload?: Payload): Promise<XmlElement> {
    let text = '';
    await this.send(method, key, query, payload, async (res) => {
      text = await readText(res, this.what(method, key));
    });
    try {
      return parseXml(text);
    } catch (err) {
      throw new S3Error(0, 'InvalidResponse', `${this.what(method, key)}: the answer is not XML S3 would send (${(err as Error).message})`);
    }
  }

  /** One request; resolves with the answer's headers once its body is consumed (by `onBody`, or dropped). */
  private send(method: string, key: string, query: Record<string, string>, payload?: Payload, onBody?: (res: http.IncomingMessage) => Promise<void>): Promise<http.IncomingHttpHeaders> {
    const objectPath = key === '' ? '' : `/${encode(key, true)}`;
    const pathname = (this.pathStyle ? `${this.base.pathname.replace(/\/$/, '')}/${encode(this.target.bucket)}` : '') + (objectPath || '/');
    const canonicalQuery = canonicalQueryOf(query);
    const hash = payload?.hash ?? EMPTY_SHA256;
    const headers: Record<string, string> = { host: this.base.host, 'x-amz-content-sha256': hash };
    if (this.credentials.sessionToken) headers['x-amz-security-token'] = this.credentials.sessionToken;
    if (payload) headers['content-length'] = String(payload.length);
    signV4({ method, pathname, canonicalQuery, headers, payloadHash: hash, region: this.target.region, credentials: this.credentials, now: new Date() });
    const transport = this.base.protocol === 'http:' ? http : https;
    const what = this.what(method, key);
    return new Promise<http.IncomingHttpHeaders>((resolve, reject) => {
      const req = transport.request({
        host: this.base.hostname, port: this.base.port || undefined, method, path: pathname + (canonicalQuery ? `?${canonicalQuery}` : ''), headers, timeout: 60_000,
      }, (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300) {
          readText(res, what).then((text) => {
            let answer: XmlElement | undefined;
            try {
              answer = text.trim() === '' ? undefined : parseXml(text);
            } catch {
              // not XML (a proxy's page): the status says enough
            }
            reject(errorOf(status, answer?.name === 'Error' ? answer : undefined, what));
          }, reject);
          return;
        }
        (onBody ? onBody(res) : new Promise<void>((done, fail) => { res.resume(); res.on('end', () => done()); res.on('error', fail); })).then(() => resolve(res.headers), reject);
      });
      req.on('timeout', () => req.destroy(new Error('no answer within 60 s')));
      req.on('error', (err) => {
        const code = errnoCode(err);
        reject(new S3Error(0, code ?? 'NETWORK', `${what}: ${code === 'ECONNREFUSED' ? `nothing answers at ${this.base.origin}` : err.message}`));
      });
      if (!payload) return void req.end();
      const body = payload.body();
      if (Buffer.isBuffer(body)) req.end(body);
      else pipeline(body, req).catch((err: Error) => req.destroy(err));
    });
  }
}

interface Payload { hash: string; length: number; body: () => Buffer | NodeJS.ReadableStream }

/** The S3Error an error answer stands for: its Code and Message when it has them. */
function errorOf(status: number, answer: XmlElement | undefined, what: string): S3Error {
  const given = answer ? childText(answer, 'Code') : undefined;
  const code = given !== undefined && /^[A-Za-z0-9._-]{1,64}$/.test(given) ? given : String(status);
  const message = (answer && childText(answer, 'Message')) ?? '';
  // eslint-disable-next-line no-control-regex -- control characters from the server are what is removed
  return new S3Error(status, code, `${what}: ${status} ${code}${message ? ` (${message.replace(/[\0-\x1f\x7f]+/g, ' ').slice(0, 500)})` : ''}`);
}

/** A response body as text, refused past MAX_TEXT_ANSWER. */
async function readText(res: http.IncomingMessage, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of res) {
    length += (chunk as Buffer).length;
    if (length > MAX_TEXT_ANSWER) {
      res.destroy();
      throw new S3Error(0, 'InvalidResponse', `${what}: the answer is larger than ${MAX_TEXT_ANSWER >> 20} MiB`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The SHA-256 of `length` bytes of a file from `start`, read as a stream (never whole in memory). */
async function sha256Of(file: string, start: number, length: number): Promise<string> {
  const hash = createHash('sha256');
  if (length > 0) for await (const chunk of createReadStream(file, { start, end: start + length - 1 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Adds x-amz-date and the Authorization header (AWS Signature Version 4, service s3)
 * to `headers`, which must hold every header to sign (host, x-amz-content-sha256, ...).
 */
export function signV4(request: {
  method: string;
  pathname: string;
  canonicalQuery: string;
  headers: Record<string, string>;
  payloadHash: string;
  region: string;
  credentials: S3Credentials;
  now: Date;
}): void {
  const { headers } = request;
  const amzDate = request.now.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  headers['x-amz-date'] = amzDate;
  const names = Object.keys(headers).map((n) => n.toLowerCase()).sort();
  const value = (name: string) => Object.entries(headers).find(([k]) => k.toLowerCase() === name)?.[1]?.trim().replace(/\s+/g, ' ') ?? '';
  const canonicalRequest = [request.method, request.pathname, request.canonicalQuery, ...names.map((n) => `${n}:${value(n)}`), '', names.join(';'), request.payloadHash].join('\n');
  const scope = `${day}/${request.region}/s3/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonicalRequest).digest('hex')].join('\n');
  const signingKey = hmac(hmac(hmac(hmac(`AWS4${request.credentials.secretAccessKey}`, day), request.region), 's3'), 'aws4_request');
  const signature = createHmac('sha256', signingKey).update(toSign).digest('hex');
  headers.authorization = `AWS4-HMAC-SHA256 Credential=${request.credentials.accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
}

/** The query string of a request in SigV4's canonical form (sorted, RFC 3986 encoded). */
export function canonicalQueryOf(query: Record<string, string>): string {
  return Object.keys(query).sort().map((k) => `${encode(k)}=${encode(query[k] ?? '')}`).join('&');
}

export class S3Error extends PgsError {
  readonly status: number;
  readonly s3Code: string;
  constructor(status: number, s3Code: string, message: string) {
    super('BACKUP_FAILED', message);
    this.status = status;
    this.s3Code = s3Code;
  }
}

/** The client for the settings' backup target, or undefined when there is none. */
export function s3ClientFor(settings: { backupTarget?: string; s3Endpoint?: string; s3Region?: string }, env: NodeJS.ProcessEnv = process.env): S3Client | undefined {
  if (settings.backupTarget === undefined) return undefined;
  const { bucket, prefix } = parseS3Url(settings.backupTarget);
  const region = settings.s3Region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1';
  const partSize = env.PGS_S3_PART_SIZE ? parsePartSize(env.PGS_S3_PART_SIZE) : undefined;
  return new S3Client({ bucket, prefix, region, ...(settings.s3Endpoint !== undefined ? { endpoint: settings.s3Endpoint } : {}) }, loadCredentials(env), partSize !== undefined ? { partSize } : {});
}

/** PGS_S3_PART_SIZE: bytes, or a number of MiB or GiB ("16MiB"), within S3's 5 MiB to 5 GiB. */
export function parsePartSize(text: string): number {
  const match = /^\s*(\d+)\s*(MiB|GiB)?\s*$/.exec(text);
  const size = match ? Number(match[1]) * (match[2] === 'GiB' ? 1024 * MiB : match[2] === 'MiB' ? MiB : 1) : NaN;
  if (!Number.isSafeInteger(size) || size < MIN_PART_SIZE || size > MAX_PART_SIZE) {
    throw new PgsError('INVALID_SETTING', `invalid PGS_S3_PART_SIZE ${JSON.stringify(text)}: a size of 5MiB to 5GiB (bytes, or a number with MiB or GiB)`);
  }
  return size;
}

/** Writes and deletes a small object: the target exists and these credentials may write to it. */
export async function probeTarget(client: S3Client): Promise<void> {
  const key = client.key('.pgs-probe');
  try {
    await client.putText(key, `pgs ${new Date().toISOString()}\n`);
    await client.delete(key);
  } catch (err) {
    throw new PgsError('INVALID_SETTING', `the backup target ${client.url} is not writable: ${(err as Error).message}`);
  }
}
