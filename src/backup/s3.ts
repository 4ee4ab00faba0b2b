import { createHash, createHmac, randomBytes } from 'node:crypto';
import { constants as fsConstants, createReadStream, promises as fs, readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { PgsError, errnoCode } from '../core/errors.js';

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

export class S3Client {
  readonly target: S3Target;
  private readonly credentials: S3Credentials;
  private readonly base: URL;
  private readonly pathStyle: boolean;

  constructor(target: S3Target, credentials: S3Credentials) {
    this.target = target;
    this.credentials = credentials;
    this.pathStyle = target.endpoint !== undefined;
    this.base = new URL(target.endpoint ?? `https://${target.bucket}.s3.${target.region}.amazonaws.com`);
  }

  /** The full key of a path under the target's prefix. */
  key(relative: string): string {
    return this.target.prefix === '' ? relative : `${this.target.prefix}/${relative}`;
  }

  /** Describes where things go, for messages: s3://bucket/prefix. */
  get url(): string {
    return `s3://${this.target.bucket}${this.target.prefix === '' ? '' : `/${this.target.prefix}`}`;
  }

  async putFile(key: string, file: string): Promise<void> {
    const { size } = await fs.stat(file);
    // Small files (WAL segments, metadata) are signed with their hash; large ones stream unsigned (TLS protects them on AWS).
    const hash = size <= 16 << 20 ? createHash('sha256').update(await fs.readFile(file)).digest('hex') : 'UNSIGNED-PAYLOAD';
    await this.send('PUT', key, {}, { hash, length: size, body: () => createReadStream(file) });
  }

  async putText(key: string, text: string): Promise<void> {
    const body = Buffer.from(text);
    await this.send('PUT', key, {}, { hash: createHash('sha256').update(body).digest('hex'), length: body.length, body: () => body });
  }

  /** Downloads an object into `file` (written whole under a temporary name, then renamed). */
  async getFile(key: string, file: string): Promise<void> {
    // A new file under a random name, never through a symlink: the folder may be a tenant's, and pgs may be root.
    const tmp = `${file}.part-${randomBytes(6).toString('hex')}`;
    const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;
    try {
      await this.send('GET', key, {}, undefined, async (res) => {
        const handle = await fs.open(tmp, flags, 0o600);
        await pipeline(res, handle.createWriteStream());
      });
      await fs.rename(tmp, file);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  async getText(key: string): Promise<string> {
    let text = '';
    await this.send('GET', key, {}, undefined, async (res) => {
      for await (const chunk of res) text += (chunk as Buffer).toString('utf8');
    });
    return text;
  }

  async delete(key: string): Promise<void> {
    await this.send('DELETE', key, {});
  }

  /** Every object under `prefix` (ListObjectsV2, all pages). */
  async list(prefix: string): Promise<S3Object[]> {
    const out: S3Object[] = [];
    let token: string | undefined;
    do {
      let xml = '';
      await this.send('GET', '', { 'list-type': '2', prefix, ...(token ? { 'continuation-token': token } : {}) }, undefined, async (res) => {
        for await (const chunk of res) xml += (chunk as Buffer).toString('utf8');
      });
      for (const block of xml.match(/<Contents>[\s\S]*?<\/Contents>/g) ?? []) {
        const field = (name: string) => unescapeXml(new RegExp(`<${name}>([\\s\\S]*?)</${name}>`).exec(block)?.[1] ?? '');
        out.push({ key: field('Key'), size: Number(field('Size')), lastModified: new Date(field('LastModified')) });
      }
      token = /<IsTruncated>true<\/IsTruncated>/.test(xml) ? unescapeXml(/<NextContinuationToken>([\s\S]*?)<\/NextContinuationToken>/.exec(xml)?.[1] ?? '') : undefined;
    } while (token);
    return out;
  }

  private send(
    method: string,
    key: string,
    query: Record<string, string>,
    payload?: { hash: string; length: number; body: () => Buffer | NodeJS.ReadableStream },
    onBody?: (res: http.IncomingMessage) => Promise<void>,
  ): Promise<void> {
    const objectPath = key === '' ? '' : `/${encode(key, true)}`;
    const pathname = (this.pathStyle ? `${this.base.pathname.replace(/\/$/, '')}/${encode(this.target.bucket)}` : '') + (objectPath || '/');
    const canonicalQuery = canonicalQueryOf(query);
    const hash = payload?.hash ?? EMPTY_SHA256;
    const headers: Record<string, string> = { host: this.base.host, 'x-amz-content-sha256': hash };
    if (this.credentials.sessionToken) headers['x-amz-security-token'] = this.credentials.sessionToken;
    if (payload) headers['content-length'] = String(payload.length);
    signV4({ method, pathname, canonicalQuery, headers, payloadHash: hash, region: this.target.region, credentials: this.credentials, now: new Date() });
    const transport = this.base.protocol === 'http:' ? http : https;
    const what = `${method} ${this.url}/${key.startsWith(this.target.prefix) ? key.slice(this.target.prefix.length).replace(/^\//, '') : key}`;
    return new Promise<void>((resolve, reject) => {
      const req = transport.request({
        host: this.base.hostname, port: this.base.port || undefined, method, path: pathname + (canonicalQuery ? `?${canonicalQuery}` : ''), headers, timeout: 60_000,
      }, (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300) {
          let text = '';
          res.setEncoding('utf8').on('data', (s: string) => { text += s; });
          res.on('end', () => {
            const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? String(status);
            const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? '';
            reject(new S3Error(status, code, `${what}: ${status} ${code}${message ? ` (${unescapeXml(message)})` : ''}`));
          });
          return;
        }
        (onBody ? onBody(res) : new Promise<void>((done) => { res.resume(); res.on('end', () => done()); })).then(resolve, reject);
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

function unescapeXml(text: string): string {
  return text.replace(/&(lt|gt|quot|apos|amp);/g, (_m, e: string) => ({ lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' })[e] ?? '');
}

/** The client for the settings' backup target, or undefined when there is none. */
export function s3ClientFor(settings: { backupTarget?: string; s3Endpoint?: string; s3Region?: string }, env: NodeJS.ProcessEnv = process.env): S3Client | undefined {
  if (settings.backupTarget === undefined) return undefined;
  const { bucket, prefix } = parseS3Url(settings.backupTarget);
  const region = settings.s3Region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1';
  return new S3Client({ bucket, prefix, region, ...(settings.s3Endpoint !== undefined ? { endpoint: settings.s3Endpoint } : {}) }, loadCredentials(env));
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
