/**
 * Running spares (the native runtime's only): servers already started from a
 * cold spare under spares/.warm-<name>, each with an admin session open in
 * pgs_admin. A create takes one with a rename of its folder and one
 * transaction on the open session instead of starting a server. Only the
 * daemon keeps them (keepWarm); they cost an idle server each.
 */
import { promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { fsyncDir } from '../../core/files.js';
import type { AdminClient } from '../admin-client.js';
import type { TenantServerSpec } from '../runtime.js';
import { ADMIN_DATABASE, TEMPLATE_MARKER } from '../server-config.js';
import type { AdminSessions } from './admin-sessions.js';
import type { AdminSql } from './admin-sql.js';
import type { LocalFolders } from './folders.js';
import type { HostProcesses } from './host-processes.js';
import { WARM_PREFIX, type LocalLayout } from './layout.js';
import type { ServerFiles } from './server-files.js';
import type { ColdSpares } from './spares.js';
import { templateMarker } from './template.js';

const debug = debuglog('pgs');

interface Warm {
  key: string;
  maxConnections: number;
  session: AdminClient;
  pid: number;
}

/** What the running spares need of the runtime they belong to. */
export interface WarmOwner {
  stop(key: string, options?: { immediate?: boolean }): Promise<void>;
  configureArchive(spec: TenantServerSpec): Promise<void>;
}

export class WarmSpares {
  private readonly warm: Warm[] = [];
  private target = 0;
  private maxConnections = 0;
  private warming: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly layout: LocalLayout,
    private readonly folders: LocalFolders,
    private readonly processes: HostProcesses,
    private readonly cold: ColdSpares,
    private readonly files: ServerFiles,
    private readonly sessions: AdminSessions,
    private readonly sql: AdminSql,
    private readonly owner: WarmOwner,
  ) {}

  get running(): number {
    return this.warm.length;
  }

  keep(count: number, maxConnections: number): void {
    this.target = count;
    this.maxConnections = maxConnections;
    this.closed = false;
    this.refill();
  }

  async stopAll(): Promise<void> {
    this.closed = true;
    await this.warming?.catch(() => undefined);
    for (const w of this.warm.splice(0)) w.session.destroy();
    // Every running spare, also one an earlier (killed) daemon left that this one had not reached yet.
    const names = await fs.readdir(this.layout.sparesDir).catch(() => [] as string[]);
    await Promise.all(names.filter((n) => n.startsWith(WARM_PREFIX)).map((key) => this.owner.stop(key).catch(() => undefined)));
  }

  /** A running spare's server exited: it leaves the pool, which is refilled. */
  exited(key: string): void {
    const at = this.warm.findIndex((w) => w.key === key);
    if (at >= 0) this.warm.splice(at, 1)[0]?.session.destroy();
    this.refill();
  }

  /**
   * Makes tenant `spec.id` from a running spare when one with its connection
   * limit is ready: false when none is. A failure stops the spare and `undo`es
   * the tenant's folder.
   */
  async take(spec: TenantServerSpec, passwordVerifier: string, undo: (id: string) => Promise<void>): Promise<boolean> {
    let warm = spec.maxConnections === this.maxConnections ? this.warm.shift() : undefined;
    if (warm && !this.usable(warm)) {
      // Died since it was started: let it go and make the tenant the ordinary way.
      warm.session.destroy();
      void this.owner.stop(warm.key, { immediate: true }).catch(() => undefined);
      this.refill();
      warm = undefined;
    }
    if (!warm) return false;
    try {
      await this.takeOne(warm, spec, passwordVerifier);
    } catch (err) {
      await this.owner.stop(warm.key, { immediate: true }).catch(() => undefined);
      await undo(spec.id).catch(() => undefined);
      throw err;
    } finally {
      this.refill();
    }
    return true;
  }

  /**
   * Moves a running spare's folder to the tenant's name (PostgreSQL works
   * relative to its data folder, its working directory: the move does not
   * disturb it, and its socket moves with the folder), then names its database
   * and sets the password on the admin session that is already open, which
   * stays as the tenant's health session.
   */
  private async takeOne(warm: Warm, spec: TenantServerSpec, passwordVerifier: string): Promise<void> {
    const id = spec.id;
    const from = this.layout.tenantDir(warm.key);
    const to = this.layout.tenantDir(id);
    if (!this.processes.has(warm.key) || !this.usable(warm)) throw new Error('the running spare is gone');
    await fs.rename(from, to);
    await fsyncDir(path.dirname(to));
    await fsyncDir(path.dirname(from));
    await fs.rename(this.layout.logFile(warm.key), this.layout.logFile(id)).catch(() => undefined);
    this.processes.rekey(warm.key, id);
    await this.sql.nameTenant(id, passwordVerifier, warm.session);
    // The spare ran with archiving unconfigured (it kept its WAL, though an idle one finishes no
    // segment): from now on it archives as this tenant, from the first segment it kept.
    await this.owner.configureArchive(spec);
    this.sessions.keep(id, warm.pid, warm.session);
  }

  private usable(warm: Warm): boolean {
    return this.processes.childAlive(warm.key) === true && warm.session.usable;
  }

  /** Starts running spares up to the target, one at a time, in the background. */
  private refill(): void {
    if (this.warming || this.closed || this.warm.length >= this.target) return;
    this.warming = (async () => {
      while (!this.closed && this.warm.length < this.target) {
        if (!(await this.startOne())) {
          await sleep(1_000); // no cold spare yet: the refill copy is still running
        }
      }
    })().catch((err: Error) => debug('running spare failed: %s', err.message)).finally(() => {
      this.warming = undefined;
    });
  }

  /** One more running spare: a stopped one left by an earlier daemon, else a cold spare. False when none is at hand. */
  private async startOne(): Promise<boolean> {
    const spares = this.layout.sparesDir;
    await this.folders.mkdirShared(spares);
    const inPool = new Set(this.warm.map((w) => w.key));
    const marker = templateMarker();
    let key: string | undefined;
    for (const name of await fs.readdir(spares)) {
      // Skip this daemon's own spares, also one a create is taking right now (no longer in the pool).
      if (!name.startsWith(WARM_PREFIX) || inPool.has(name) || this.processes.has(name)) continue;
      const made = await fs.readFile(path.join(spares, name, TEMPLATE_MARKER), 'utf8').catch(() => '');
      await this.owner.stop(name, { immediate: true }); // an earlier daemon's, left running when it was killed
      if (made.trim() !== marker) {
        await this.folders.removeTree(path.join(spares, name));
        continue;
      }
      key = name;
      break;
    }
    if (key === undefined) {
      key = `${WARM_PREFIX}${randomBytes(6).toString('hex')}`;
      const taken = await this.cold.take(this.layout.tenantDir(key));
      await this.cold.refill();
      if (!taken) return false;
    }
    await this.files.writeSpareConf(key, this.maxConnections);
    await this.processes.spawn(key, this.layout.tenantDir(key));
    const pid = this.processes.pidOf(key);
    if (pid === undefined) throw new Error('the running spare exited at once');
    const session = await this.sessions.connect(key, ADMIN_DATABASE, { timeoutMs: 10_000 });
    if (this.closed) {
      session.destroy();
      await this.owner.stop(key);
      return true;
    }
    this.warm.push({ key, maxConnections: this.maxConnections, session, pid });
    return true;
  }
}
