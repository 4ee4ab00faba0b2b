import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BACKUP_META, GENERATION_META, STAMP_PATTERN, backupsRoot, type BackupMeta } from '../backup/layout.js';
import type { S3Client } from '../backup/s3.js';
import { SEGMENT_NAME } from '../backup/wal.js';
import { pathExists } from '../core/files.js';
import type { RouterLog } from '../router/router.js';
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

export interface ShipperDeps {
  client: S3Client;
  dataRoot: string;
  runtime: TenantRuntime;
  log: RouterLog;
}

export class Shipper {
  readonly client: S3Client;
  private readonly deps: ShipperDeps;
  private readonly ledgers = new Map<string, Set<string>>();
  private readonly pendingByTenant = new Map<string, number>();
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

  /** Files of the tenant not in the bucket yet, as of the last cycle. */
  pending(id: string): number {
    return this.pendingByTenant.get(id) ?? 0;
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
      for (const tenant of await listDir(this.root, (n) => !n.startsWith('.'))) {
        let pending = 0;
        for (const generation of await listDir(path.join(this.root, tenant), (n) => STAMP_PATTERN.test(n))) {
          if (this.stopped) return;
          pending += await this.shipGeneration(tenant, generation);
        }
        this.pendingByTenant.set(tenant, pending);
      }
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

  /** Ships what is new in one generation; returns how many files are still to go (0 when done). */
  private async shipGeneration(tenant: string, generation: string): Promise<number> {
    const dir = path.join(this.root, tenant, generation);
    const shipped = await this.ledger(tenant, generation);
    const todo: string[] = [];
    if (!shipped.has(GENERATION_META) && (await pathExists(path.join(dir, GENERATION_META)))) todo.push(GENERATION_META);
    for (const name of (await listDir(path.join(dir, 'wal'), (n) => SEGMENT_NAME.test(n.slice(0, 24)) || /^[0-9A-F]{8}\.history$/.test(n))).sort()) {
      if (!shipped.has(`wal/${name}`)) todo.push(`wal/${name}`);
    }
    for (const backup of await listDir(path.join(dir, 'base'), (n) => STAMP_PATTERN.test(n))) {
      // Its metadata last: in the bucket, a backup with pgs-backup.json is whole.
      for (const file of ['base.tar', 'backup_manifest', BACKUP_META]) {
        if (!shipped.has(`base/${backup}/${file}`)) todo.push(`base/${backup}/${file}`);
      }
    }
    let left = todo.length;
    for (const relative of todo) {
      if (!(await pathExists(path.join(dir, relative)))) { // deleted meanwhile (retention), or only in the bucket
        left--;
        continue;
      }
      await this.client.putFile(this.client.key(`${tenant}/${generation}/${relative}`), path.join(dir, relative));
      await this.record(tenant, generation, [relative]);
      left--;
    }
    return left;
  }

  /** Deletes from the bucket what retention deleted here (paths relative to the backups tree; a folder: everything under it). */
  async forget(relatives: string[]): Promise<void> {
    for (const relative of relatives) {
      const [tenant, generation, ...rest] = relative.split('/');
      if (!tenant) continue;
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
    for (const object of await this.client.list(prefix)) {
      const relative = object.key.slice(prefix.length);
      const [generation, ...rest] = relative.split('/');
      const inner = rest.join('/');
      if (!generation || !STAMP_PATTERN.test(generation) || inner === '') continue;
      if (/^base\/[^/]+\/(base\.tar|backup_manifest)$/.test(inner)) {
        await this.record(tenant, generation, [inner]); // in the bucket: fetched when a restore needs it
        continue;
      }
      const local = path.join(this.root, tenant, generation, inner);
      if (await pathExists(local)) continue;
      await this.deps.runtime.mkdirOwnedPath(path.dirname(local));
      await this.client.getFile(object.key, local);
      await fs.utimes(local, object.lastModified, object.lastModified); // the restorable window reads archive times
      await this.deps.runtime.adoptFile(local);
      await this.record(tenant, generation, [inner]);
      fetched++;
    }
    return fetched;
  }

  /** The backup's large files, from the bucket, when they are not here. */
  async fetchBackup(meta: BackupMeta, dir: string): Promise<void> {
    for (const file of ['backup_manifest', 'base.tar']) {
      if (await pathExists(path.join(dir, file))) continue;
      await this.client.getFile(this.client.key(`${meta.tenant}/${meta.generation}/base/${meta.id}/${file}`), path.join(dir, file));
    }
  }
}

async function listDir(dir: string, keep: (name: string) => boolean): Promise<string[]> {
  return (await fs.readdir(dir).catch(() => [] as string[])).filter(keep);
}
