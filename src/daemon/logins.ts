import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { parseVerifier, type ScramVerifier } from '../auth/scram.js';
import { errnoCode } from '../core/errors.js';
import { writeAtomic } from '../core/files.js';
import { BackendUnavailable } from '../router/router.js';
import type { LoginRole, TenantRuntime } from '../runtime/runtime.js';

/** What pgs keeps of a tenant's login roles while its server is down: verifiers, never passwords. */
interface LoginCopy {
  takenAt: string;
  roles: Record<string, { verifier: string | null; validUntil: number | null }>;
}

interface LoginsLog {
  warn(message: string, fields?: Record<string, unknown>): void;
}

/**
 * Where the router's password check gets a role's verifier (as PgBouncer's
 * auth_query, but without waking anything). While a tenant's server runs it is
 * asked each time (one query on the open health-check session), so a role
 * created or a password changed inside the database counts at the next login.
 * Just before the server stops, the verifiers of all its login roles are copied
 * to `<dir>/<id>.json` (0600, in a 0700 folder of the daemon's user), and a
 * suspended tenant's clients are checked against that copy. A login that passed
 * against the copy is checked again against the woken server (the password may
 * have changed while pgs was not looking). A tenant with no copy yet (its server
 * last stopped by an older pgs) is woken once to be asked.
 */
export class Logins {
  private readonly dir: string;
  private readonly runtime: TenantRuntime;
  private readonly log: LoginsLog;
  private readonly copies = new Map<string, LoginCopy | null>();
  /** The salts of the mock exchange for roles that do not exist are derived from this. */
  secret: Buffer = Buffer.alloc(0);
  /** Set by the daemon: wakes a suspended tenant (true) or says it cannot (false). */
  wake: ((id: string) => Promise<boolean>) | undefined;

  constructor(dir: string, runtime: TenantRuntime, log: LoginsLog) {
    this.dir = dir;
    this.runtime = runtime;
    this.log = log;
  }

  async open(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await fs.chmod(this.dir, 0o700);
    const file = path.join(this.dir, 'mock-secret');
    try {
      this.secret = await fs.readFile(file);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    if (this.secret.length < 32) {
      this.secret = randomBytes(32);
      await writeAtomic(file, this.secret, 0o600);
    }
  }

  async verifier(id: string, role: string, { fresh = false }: { fresh?: boolean } = {}): Promise<{ verifier: ScramVerifier | undefined; live: boolean }> {
    if (fresh || (await this.runtime.status(id, { fresh: true })).state === 'running') {
      try {
        const found = await this.readRole(id, role);
        await this.learn(id, role, found);
        return { verifier: usable(found), live: true };
      } catch (err) {
        if (fresh) throw err;
        this.log.warn('could not read a login role from the running server; using the copy', { tenant: id, error: (err as Error).message });
      }
    }
    const copy = await this.load(id);
    if (copy) return { verifier: usable(copy.roles[role]), live: false };
    // No copy: the server last stopped under a pgs that kept none. Ask the server itself, once.
    if (!(this.wake && (await this.wake(id)))) {
      const { state } = await this.runtime.status(id, { fresh: true });
      if (state !== 'running') throw notRunning(id, state);
    }
    await this.snapshot(id);
    const [found] = await this.runtime.loginRoles(id, role);
    return { verifier: usable(found), live: true };
  }

  private readonly reading = new Map<string, Promise<LoginRole | undefined>>();

  /** One role from the running server; logins that ask at the same moment share one query (a burst of clients is one read, not a backend each). */
  private readRole(id: string, role: string): Promise<LoginRole | undefined> {
    const key = `${id}\0${role}`;
    let read = this.reading.get(key);
    if (!read) {
      read = this.runtime.loginRoles(id, role).then(([found]) => found).finally(() => this.reading.delete(key));
      this.reading.set(key, read);
    }
    return read;
  }

  /** Copies every login role's verifier from the running server (before it stops). */
  snapshot(id: string): Promise<void> {
    return this.inTurn(id, async () => {
      const roles = await this.runtime.loginRoles(id);
      const copy: LoginCopy = { takenAt: new Date().toISOString(), roles: {} };
      for (const role of roles) copy.roles[role.name] = { verifier: role.verifier, validUntil: role.validUntil };
      await this.save(id, copy);
    });
  }

  /** Changes to one tenant's copy, one at a time: a login's update never overwrites a newer snapshot. */
  private readonly turns = new Map<string, Promise<void>>();

  private inTurn(id: string, task: () => Promise<void>): Promise<void> {
    const run = (this.turns.get(id) ?? Promise.resolve()).then(task);
    const settled = run.catch(() => undefined);
    this.turns.set(id, settled);
    void settled.then(() => {
      if (this.turns.get(id) === settled) this.turns.delete(id);
    });
    return run;
  }

  /** Drops the copy (the tenant is gone, or its data was replaced by a restore): the next login asks the server. */
  async forget(id: string): Promise<void> {
    this.copies.delete(id);
    await fs.rm(this.file(id), { force: true });
  }

  /** Keeps the copy in step with what a running server answered for one role. */
  private learn(id: string, role: string, found: LoginRole | undefined): Promise<void> {
    return this.inTurn(id, () => this.learnNow(id, role, found));
  }

  private async learnNow(id: string, role: string, found: LoginRole | undefined): Promise<void> {
    const copy = await this.load(id);
    if (!copy) return; // taken in full before the next stop
    const known = copy.roles[role];
    if (!found && !known) return;
    if (found && known && known.verifier === found.verifier && known.validUntil === found.validUntil) return;
    const roles = { ...copy.roles };
    if (found) roles[role] = { verifier: found.verifier, validUntil: found.validUntil };
    else delete roles[role];
    await this.save(id, { takenAt: copy.takenAt, roles });
  }

  private async load(id: string): Promise<LoginCopy | null> {
    const cached = this.copies.get(id);
    if (cached !== undefined) return cached;
    let copy: LoginCopy | null = null;
    try {
      const parsed = JSON.parse(await fs.readFile(this.file(id), 'utf8')) as LoginCopy;
      if (parsed && typeof parsed.roles === 'object') copy = parsed;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') this.log.warn('the copy of login roles is unreadable; the tenant is asked at its next login', { tenant: id, error: (err as Error).message });
    }
    this.copies.set(id, copy);
    return copy;
  }

  private async save(id: string, copy: LoginCopy): Promise<void> {
    await writeAtomic(this.file(id), `${JSON.stringify(copy)}\n`, 0o600);
    this.copies.set(id, copy);
  }

  private file(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }
}

function usable(role: { verifier: string | null; validUntil: number | null } | undefined): ScramVerifier | undefined {
  if (!role) return undefined;
  if (role.validUntil !== null && role.validUntil < Date.now()) return undefined; // VALID UNTIL passed: PostgreSQL refuses too
  return parseVerifier(role.verifier);
}

/** A tenant whose server is not running: a stopped one (pgs stop <id>, or pgs stop of everything) says how to start it. */
function notRunning(id: string, state: string): BackendUnavailable {
  return new BackendUnavailable(`tenant ${id} is not running (${state})`, 'tenant_unavailable', state === 'stopped' ? `pgs start ${id} starts it` : undefined);
}
