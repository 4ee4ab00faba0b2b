import type { Log } from '../core/log.js';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BACKUP_META, GENERATION_META, STAMP_PATTERN, backupsRoot, type BackupMeta } from '../backup/layout.js';
import { MAX_RECORD_BYTES, parseBackupMeta, parseGenerationMeta } from '../backup/records.js';
import { S3Error, type S3Client } from '../backup/s3.js';
import { SEGMENT_NAME } from '../backup/wal.js';
import { pathExists } from '../core/files.js';
import type { TenantRuntime } from '../runtime/runtime.js';

/**
 * Copies the local backups tree to S3, as it is: every finished WAL segment
 * and history file, every whole backup (its metadata last, so a backup in the
 * bucket is whole when its pgs-backup.json is there), every generation's
 * record. The local tree is always written first (the server archives to
 * disk, never to the network): an S3 outage never stops a tenant nor loses
 * WAL; the shipper retries with back-off (1 s doubling to 60 s) and catches up.
 * What was shipped is remembered in <data>/s3-shipped/ (one list per
 * generation), so a restart does not send everything again.
 */
const CYCLE_MS = 2_000;
const MAX_BACKOFF_MS = 60_000;
/** How often a host looks again at who owns a tenant's archive in the bucket (another host may have restored it). */
const CLAIM_RECHECK_MS = 60_000;
/** The object that names the one host writing a tenant's archive. */
export const OWNER_OBJECT = 'pgs-owner.json';

export interface ShipperDeps {
  client: S3Client;
  dataRoot: string;
  runtime: TenantRuntime;
  log: Log;
  /** This data root's id (see BackupPlane): what the owner objects name. */
  hostId: string;
}

/** What waits to be copied: files, bytes, and when the oldest of them was written (ms since the epoch). */
export interface Pending {
  files: number;
  bytes: number;
  oldestMs: number | null;
}

interface Claim {
  checkedAt: number;
  /** Undefined: ours. Otherwise the host that writes it, and since when. */
  other?: { host: string; at: string };
}

export class Shipper {
  readonly client: S3Client;
  private readonly deps: ShipperDeps;
  private readonly ledgers = new Map<string, Set<string>>();
  private readonly pendingByTenant = new Map<string, Map<string, { bytes: number; mtimeMs: number }>>();
  private readonly claims = new Map<string, Claim>();
  private lastShipped: string | undefined;
  private failure: { since: string; error: string } | undefined;
  private backoffMs = 0;
  private nextAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(deps: ShipperDeps) {
    this.deps = deps;
    this.client = deps.client;
  }

  private get root(): string {
    return backupsRoot(this.deps.dataRoot);
  }

  private get ledgerRoot(): string {
    return path.join(this.deps.dataRoot, 's3-shipped');
  }

  start(): void {
    this.timer = setInterval(() => this.kick(), CYCLE_MS);
    this.timer.unref();
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
  }

  /** A cycle now (after a backup), unless one runs or the back-off says wait. */
  kick(): void {
    if (this.running || this.stopped || Date.now() < this.nextAt) return;
    this.running = this.cycle().finally(() => { this.running = undefined; });
  }

  /** Waits until everything there is now has been shipped (or a cycle failed). */
  async flush(): Promise<void> {
    await this.running;
    this.nextAt = 0;
    this.kick();
    await this.running;
  }

  /** Since when and why shipping fails; undefined while it works. */
  get failing(): { since: string; error: string } | undefined {
    return this.failure;
  }

  /** Files of the tenant in the local tree that are not in the bucket yet (as of the last look, less what was copied since). */
  pending(id: string): Pending {
    const files = this.pendingByTenant.get(id);
    if (!files || files.size === 0) return { files: 0, bytes: 0, oldestMs: null };
    let bytes = 0;
    let oldestMs = Infinity;
    for (const f of files.values()) {
      bytes += f.bytes;
      oldestMs = Math.min(oldestMs, f.mtimeMs);
    }
    return { files: files.size, bytes, oldestMs };
  }

  /** When a file last reached the bucket (ISO), since this daemon started. */
  get lastShippedAt(): string | undefined {
    return this.lastShipped;
  }

  /** The host that writes the tenant's archive instead of this one, when another does (see claim). */
  claimedElsewhere(id: string): { host: string; at: string } | undefined {
    return this.claims.get(id)?.other;
  }

  /**
   * Makes this host the one writer of the tenant's archive in the bucket: a
   * restore from the bucket takes the archive over (the host it came from may
   * be lost, or may not: either way only one writes from now on; the other
   * sees the owner object change within CLAIM_RECHECK_MS and stops copying).
   * Returns the host it took over from, if any.
   */
  async claim(id: string): Promise<string | undefined> {
    const before = await this.readOwner(id);
    await this.client.putText(this.client.key(`${id}/${OWNER_OBJECT}`), `${JSON.stringify({ host: this.deps.hostId, at: new Date().toISOString() })}\n`);
    this.claims.set(id, { checkedAt: Date.now() });
    return before && before.host !== this.deps.hostId ? before.host : undefined;
  }

  private async readOwner(id: string): Promise<{ host: string; at: string } | undefined> {
    try {
      const parsed = JSON.parse(await this.client.getText(this.client.key(`${id}/${OWNER_OBJECT}`))) as { host?: unknown; at?: unknown };
      // From the bucket: only a host id and a time as pgs writes them count; anything else is taken over by the next claim.
      return typeof parsed.host === 'string' && /^[0-9a-f]{16}$/.test(parsed.host) && typeof parsed.at === 'string' && !Number.isNaN(Date.parse(parsed.at)) ? { host: parsed.host, at: parsed.at.slice(0, 40) } : undefined;
    } catch (err) {
      if (err instanceof S3Error && (err.status === 404 || err.s3Code === 'NoSuchKey')) return undefined;
      if (err instanceof SyntaxError) return undefined; // not an owner object pgs wrote: taken over by the next claim
      throw err;
    }
  }

  /** Whether this host may write the tenant's archive now: it owns it, or nobody does and it claims it. */
  private async mayWrite(id: string): Promise<boolean> {
    const known = this.claims.get(id);
    if (known && Date.now() - known.checkedAt < CLAIM_RECHECK_MS) return known.other === undefined;
    const owner = await this.readOwner(id);
    if (owner === undefined) {
      await this.claim(id);
      return true;
    }
    const other = owner.host === this.deps.hostId ? undefined : owner;
    if (other && !known?.other) this.deps.log.warn('another host now writes this tenant\'s archive in the bucket: this host stops copying it', { tenant: id, host: other.host, since: other.at });
    this.claims.set(id, { checkedAt: Date.now(), ...(other ? { other } : {}) });
    return other === undefined;
  }

  /**
   * Copies until nothing is left or `deadlineMs` passes, retrying a failing
   * target every second; `progress` hears how much is left after each try.
   * Returns what is still not in the bucket (relative paths), empty when all is.
   */
  async drain(deadlineMs: number, progress?: (left: Pending, error?: string) => void): Promise<string[]> {
    for (;;) {
      await this.flush();
      const left = this.leftover();
      const total = [...this.pendingByTenant.keys()].reduce((sum, id) => {
        const p = this.pending(id);
        return { files: sum.files + p.files, bytes: sum.bytes + p.bytes, oldestMs: p.oldestMs === null ? sum.oldestMs : Math.min(sum.oldestMs ?? Infinity, p.oldestMs) };
      }, { files: 0, bytes: 0, oldestMs: null as number | null });
      // Files of a tenant another host now writes never go from here: reported, not waited for.
      const waiting = left.filter((file) => this.claims.get(file.slice(0, file.indexOf('/')))?.other === undefined);
      if (waiting.length === 0 && !this.failure) return left;
      progress?.(total, this.failure?.error);
      if (Date.now() >= deadlineMs) return left;
      await new Promise((r) => setTimeout(r, Math.min(1_000, Math.max(0, deadlineMs - Date.now()))));
      this.nextAt = 0;
    }
  }

  /** Every file not in the bucket, as `<tenant>/<generation>/<relative>`. */
  private leftover(): string[] {
    const out: string[] = [];
    for (const [id, files] of this.pendingByTenant) for (const name of files.keys()) out.push(`${id}/${name}`);
    return out.sort();
  }

  private async ledger(tenant: string, generation: string): Promise<Set<string>> {
    const key = `${tenant}/${generation}`;
    let set = this.ledgers.get(key);
    if (!set) {
      const text = await fs.readFile(path.join(this.ledgerRoot, tenant, `${generation}.txt`), 'utf8').catch(() => '');
      set = new Set(text.split('\n').filter((l) => l !== ''));
      this.ledgers.set(key, set);
    }
    return set;
  }

  private async record(tenant: string, generation: string, names: string[]): Promise<void> {
    const set = await this.ledger(tenant, generation);
    for (const n of names) set.add(n);
    await fs.mkdir(path.join(this.ledgerRoot, tenant), { recursive: true, mode: 0o700 });
    await fs.appendFile(path.join(this.ledgerRoot, tenant, `${generation}.txt`), names.map((n) => `${n}\n`).join(''), { mode: 0o600 });
  }

  private async cycle(): Promise<void> {
    try {
      let firstError: unknown;
      for (const tenant of await listDir(this.root, (n) => !n.startsWith('.'))) {
        const pending = new Map<string, { bytes: number; mtimeMs: number }>();
        this.pendingByTenant.set(tenant, pending);
        const generations = await listDir(path.join(this.root, tenant), (n) => STAMP_PATTERN.test(n));
        for (const generation of generations) await this.scanGeneration(tenant, generation, pending);
        if (pending.size === 0) continue;
        try {
          if (!(await this.mayWrite(tenant))) continue;
          for (const generation of generations) {
            if (this.stopped) return;
            await this.shipGeneration(tenant, generation, pending);
          }
        } catch (err) {
          firstError ??= err; // one tenant's trouble (a file that cannot be read) does not stop the others
        }
      }
      if (firstError !== undefined) throw firstError;
      if (this.failure) this.deps.log.info('shipping to S3 works again', { target: this.client.url });
      this.failure = undefined;
      this.backoffMs = 0;
      this.nextAt = 0;
    } catch (err) {
      const error = (err as Error).message;
      if (!this.failure) this.deps.log.warn('shipping to S3 fails; the local archive keeps everything and it is retried', { target: this.client.url, error });
      this.failure = { since: this.failure?.since ?? new Date().toISOString(), error };
      this.backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(1_000, this.backoffMs * 2));
      this.nextAt = Date.now() + this.backoffMs;
    }
  }

  /** What of one generation is not in the bucket yet, in the order it goes (a backup's metadata last: with it, a backup in the bucket is whole). */
  private async scanGeneration(tenant: string, generation: string, pending: Map<string, { bytes: number; mtimeMs: number }>): Promise<void> {
    const dir = path.join(this.root, tenant, generation);
    const shipped = await this.ledger(tenant, generation);
    const todo: string[] = [GENERATION_META];
    for (const name of (await listDir(path.join(dir, 'wal'), (n) => SEGMENT_NAME.test(n.slice(0, 24)) || /^[0-9A-F]{8}\.history$/.test(n))).sort()) todo.push(`wal/${name}`);
    for (const backup of await listDir(path.join(dir, 'base'), (n) => STAMP_PATTERN.test(n))) {
      for (const file of ['base.tar', 'backup_manifest', BACKUP_META]) todo.push(`base/${backup}/${file}`);
    }
    for (const relative of todo) {
      if (shipped.has(relative)) continue;
      const stat = await fs.stat(path.join(dir, relative)).catch(() => undefined); // gone meanwhile (retention), or only in the bucket
      if (stat?.isFile()) pending.set(`${generation}/${relative}`, { bytes: stat.size, mtimeMs: stat.mtimeMs });
    }
  }

  /** Ships what the scan found of one generation, in its order; each file leaves `pending` once in the bucket. */
  private async shipGeneration(tenant: string, generation: string, pending: Map<string, { bytes: number; mtimeMs: number }>): Promise<void> {
    const dir = path.join(this.root, tenant, generation);
    for (const key of [...pending.keys()].filter((k) => k.startsWith(`${generation}/`))) {
      const relative = key.slice(generation.length + 1);
      if (await pathExists(path.join(dir, relative))) {
        await this.client.putFile(this.client.key(`${tenant}/${key}`), path.join(dir, relative));
        await this.record(tenant, generation, [relative]);
        this.lastShipped = new Date().toISOString();
      }
      pending.delete(key);
    }
  }

  /** Deletes from the bucket what retention deleted here (paths relative to the backups tree; a folder: everything under it). */
  async forget(relatives: string[]): Promise<void> {
    const owners = new Map<string, { host: string } | undefined>();
    for (const relative of relatives) {
      const [tenant, generation, ...rest] = relative.split('/');
      if (!tenant) continue;
      // Only the host that writes a tenant's archive deletes in it: another host may have restored the
      // tenant from the bucket and write there now (asked afresh, not from the claim's cache).
      if (!owners.has(tenant)) owners.set(tenant, await this.readOwner(tenant));
      const owner = owners.get(tenant);
      if (owner && owner.host !== this.deps.hostId) {
        this.deps.log.warn('left in the bucket: another host writes this tenant\'s archive there now', { tenant, host: owner.host, kept: relative });
        if (!generation) { // this host forgets the tenant; the bucket keeps it
          for (const key of [...this.ledgers.keys()]) if (key.startsWith(`${tenant}/`)) this.ledgers.delete(key);
          this.pendingByTenant.delete(tenant);
          await fs.rm(path.join(this.ledgerRoot, tenant), { recursive: true, force: true });
        }
        continue;
      }
      if (!generation) { // a whole tenant
        for (const o of await this.client.list(this.client.key(`${tenant}/`))) await this.client.delete(o.key);
        for (const key of [...this.ledgers.keys()]) if (key.startsWith(`${tenant}/`)) this.ledgers.delete(key);
        this.pendingByTenant.delete(tenant);
        await fs.rm(path.join(this.ledgerRoot, tenant), { recursive: true, force: true });
        continue;
      }
      const objects = await this.client.list(this.client.key(rest.length === 0 ? `${relative}/` : relative));
      for (const o of objects) await this.client.delete(o.key);
      const set = await this.ledger(tenant, generation);
      const inner = rest.join('/');
      for (const name of [...set]) if (inner === '' || name === inner || name.startsWith(`${inner}/`)) set.delete(name);
      await fs.mkdir(path.join(this.ledgerRoot, tenant), { recursive: true, mode: 0o700 });
      await fs.writeFile(path.join(this.ledgerRoot, tenant, `${generation}.txt`), [...set].map((n) => `${n}\n`).join(''), { mode: 0o600 });
    }
  }

  /**
   * Brings the tenant's records from the bucket into the local tree (a host
   * whose data root was lost, a tenant moved here): generation records,
   * backup metadata and WAL. The large files (base.tar, backup_manifest) come
   * only when a restore needs them (fetchBackup).
   */
  async hydrate(tenant: string): Promise<number> {
    const prefix = this.client.key(`${tenant}/`);
    let fetched = 0;
    const refused: string[] = [];
    for (const object of await this.client.list(prefix)) {
      const relative = object.key.slice(prefix.length);
      if (relative === OWNER_OBJECT) continue;
      // The bucket is not trusted: only names pgs writes, of sizes pgs writes, become local files.
      const kind = bucketObjectKind(relative, object.size);
      if (kind === undefined) {
        refused.push(`${relative} (${object.size} bytes)`);
        continue;
      }
      const [generation = ''] = relative.split('/');
      const inner = relative.slice(generation.length + 1);
      if (kind === 'large') {
        await this.record(tenant, generation, [inner]); // in the bucket: fetched when a restore needs it
        continue;
      }
      const local = path.join(this.root, tenant, generation, inner);
      if (await pathExists(local)) continue;
      if (kind === 'record') {
        // A record is read and checked whole before it is written here: it names paths and the tenant's settings.
        const text = await this.client.getText(object.key);
        const where = `${this.client.url}/${relative}`;
        try {
          if (inner === GENERATION_META) parseGenerationMeta(text, where, { tenant, generation });
          else parseBackupMeta(text, where, { tenant, generation, id: inner.split('/')[1] ?? '' });
        } catch (err) {
          refused.push(`${relative} (${(err as Error).message})`);
          continue;
        }
        await this.deps.runtime.mkdirOwnedPath(path.dirname(local));
        await this.deps.runtime.writeOwnedFile(path.dirname(local), path.basename(local), text);
      } else {
        await this.deps.runtime.mkdirOwnedPath(path.dirname(local));
        await this.client.getFile(object.key, local, { bytes: object.size });
      }
      await fs.utimes(local, object.lastModified, object.lastModified); // the restorable window reads archive times
      await this.deps.runtime.adoptFile(local);
      await this.record(tenant, generation, [inner]);
      fetched++;
    }
    if (refused.length > 0) {
      this.deps.log.warn('objects in the bucket that pgs does not write were left there, not used', { tenant, target: this.client.url, count: refused.length, first: refused.slice(0, 5).join('; ') });
    }
    return fetched;
  }

  /** The backup's large files, from the bucket, when they are not here. */
  async fetchBackup(meta: BackupMeta, dir: string): Promise<void> {
    for (const file of ['backup_manifest', 'base.tar']) {
      if (await pathExists(path.join(dir, file))) continue;
      // base.tar must be the size its record says; a manifest is at most MAX_MANIFEST_BYTES (both are checked again, byte for byte, before use).
      await this.client.getFile(this.client.key(`${meta.tenant}/${meta.generation}/base/${meta.id}/${file}`), path.join(dir, file), file === 'base.tar' ? { bytes: meta.bytes } : { maxBytes: MAX_MANIFEST_BYTES });
    }
  }
}

/** The largest WAL segment (PostgreSQL's largest wal_segment_size) or history file pgs takes from a bucket. */
const MAX_WAL_OBJECT = 1 << 30;
const MAX_MANIFEST_BYTES = 1 << 30;

/**
 * What an object under a tenant's prefix is, from its name (relative to the
 * prefix) and size: a record (read and checked), a WAL file, a large backup
 * file (fetched when a restore needs it), or undefined: nothing pgs writes.
 */
export function bucketObjectKind(relative: string, size: number): 'record' | 'wal' | 'large' | undefined {
  const parts = relative.split('/');
  const [generation = '', ...rest] = parts;
  if (!STAMP_PATTERN.test(generation)) return undefined;
  if (rest.length === 1 && rest[0] === GENERATION_META) return size <= MAX_RECORD_BYTES ? 'record' : undefined;
  if (rest.length === 2 && rest[0] === 'wal') {
    const name = rest[1] ?? '';
    const wal = (SEGMENT_NAME.test(name.slice(0, 24)) && (name.length === 24 || name.slice(24) === '.partial')) || /^[0-9A-F]{8}\.history$/.test(name);
    return wal && size <= MAX_WAL_OBJECT ? 'wal' : undefined;
  }
  if (rest.length === 3 && rest[0] === 'base' && STAMP_PATTERN.test(rest[1] ?? '')) {
    if (rest[2] === BACKUP_META) return size <= MAX_RECORD_BYTES ? 'record' : undefined;
    if (rest[2] === 'base.tar' || rest[2] === 'backup_manifest') return 'large';
  }
  return undefined;
}

async function listDir(dir: string, keep: (name: string) => boolean): Promise<string[]> {
  return (await fs.readdir(dir).catch(() => [] as string[])).filter(keep);
}
