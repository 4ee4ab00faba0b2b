import { createHash } from 'node:crypto';
import { newSuffix } from '../catalog/ids.js';
import { DEFAULT_AUTOSUSPEND_SECONDS, DEFAULT_POOL_SIZE, type Catalog, type Settings, type Tenant } from '../catalog/schema.js';
import { requestedAllow } from '../core/cidr.js';
import { PgsError } from '../core/errors.js';
import { generatePassword } from '../auth/scram.js';

/**
 * The rules of a tenant, the same on every runtime: what a create may ask,
 * what a change may do (its ETag, its pool size), the password, and the
 * numbers that follow from an entry (its pool size, its idle time).
 */
export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_LENGTH = 1024;

/** What a create asks for (the API's body, under its names). */
export interface CreateRequest {
  id: string;
  password?: string | undefined;
  autosuspend?: number | null | undefined;
  maxConnections?: number | undefined;
  memoryBytes?: number | null | undefined;
  cpus?: number | null | undefined;
  diskBytes?: number | null | undefined;
  init?: string | undefined;
}

/** What a change asks for (the API's PATCH body, under its names). */
export interface PatchRequest {
  access?: Tenant['access'];
  autosuspend?: number | null;
  maxConnections?: number;
  backupSchedule?: NonNullable<Tenant['backupSchedule']>;
  backupRetain?: number;
  rpoSeconds?: number;
  memoryBytes?: number | null;
  cpus?: number | null;
  diskBytes?: number | null;
  pool?: NonNullable<Tenant['pool']>;
  poolSize?: number;
  maxClientConnections?: number | null;
  allow?: string[] | null;
}

/** A change to a catalog entry: null lifts a limit (its key goes), but for autosuspendSeconds, where null means never. */
export type TenantChanges = Partial<Pick<Tenant, 'access' | 'autosuspendSeconds' | 'maxConnections' | 'wanted' | 'generation' | 'rpoSeconds' | 'backupSchedule' | 'backupRetain' | 'pool' | 'poolSize'>>
  & { memoryBytes?: number | null; cpus?: number | null; diskBytes?: number | null; diskState?: Tenant['diskState'] | null; maxClientConnections?: number | null; allow?: string[] | null };

export function assertPassword(password: string): void {
  if (password.length < MIN_PASSWORD_LENGTH) {
    throw new PgsError('WEAK_PASSWORD', `the password is too short: at least ${MIN_PASSWORD_LENGTH} characters`);
  }
  if (password.length > MAX_PASSWORD_LENGTH) {
    throw new PgsError('WEAK_PASSWORD', `the password is too long: at most ${MAX_PASSWORD_LENGTH} characters`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(password)) {
    throw new PgsError('WEAK_PASSWORD', 'the password must not contain control characters');
  }
}

/** The password given (checked), or a new random one. */
export function choosePassword(given: string | undefined): string {
  if (given === undefined) return generatePassword();
  assertPassword(given);
  return given;
}

export function findTenant(catalog: Pick<Catalog, 'tenants'>, id: string): Tenant {
  const tenant = catalog.tenants.find((t) => t.id === id);
  if (!tenant) throw new PgsError('TENANT_NOT_FOUND', `no tenant ${id} (see "pgs list")`);
  return tenant;
}

/** A new tenant's catalog entry; `extra`: what its runtime adds (a generation to archive under). */
export function newTenantEntry(settings: Pick<Settings, 'defaultMaxConnections'>, request: Omit<CreateRequest, 'password' | 'init'>, extra: Partial<Tenant> = {}): Tenant {
  return {
    id: request.id,
    suffix: newSuffix(),
    access: 'enabled',
    wanted: 'running',
    maxConnections: request.maxConnections ?? settings.defaultMaxConnections,
    createdAt: new Date().toISOString(),
    ...(request.autosuspend !== undefined ? { autosuspendSeconds: request.autosuspend } : {}),
    ...extra,
    ...(request.memoryBytes != null ? { memoryBytes: request.memoryBytes } : {}),
    ...(request.cpus != null ? { cpus: request.cpus } : {}),
    ...(request.diskBytes != null ? { diskBytes: request.diskBytes } : {}),
  };
}

/** A strong ETag of a tenant's settings (what PATCH changes), not of its server's state. */
export function etagOf(tenant: Tenant): string {
  return `"${createHash('sha256').update(JSON.stringify(tenant)).digest('base64url').slice(0, 22)}"`;
}

export function etagMatches(ifMatch: string, etag: string): boolean {
  return ifMatch.split(',').map((s) => s.trim().replace(/^W\//, '')).some((candidate) => candidate === '*' || candidate === etag);
}

/** Whether a change may be made to the entry as it is now: the ETag the caller saw, a pool no larger than the tenant's connections. */
export function checkPatch(current: Tenant, patch: PatchRequest, ifMatch: string | undefined): void {
  const id = current.id;
  if (ifMatch !== undefined && !etagMatches(ifMatch, etagOf(current))) {
    throw new PgsError('PRECONDITION_FAILED', `tenant ${id} changed since that ETag was read: GET it again and retry`);
  }
  const maxConnections = patch.maxConnections ?? current.maxConnections;
  if (patch.poolSize !== undefined && patch.poolSize > maxConnections) {
    throw new PgsError('USAGE', `a pool of ${patch.poolSize} server sessions is more than tenant ${id}'s max connections (${maxConnections}): raise --max-connections first`);
  }
}

/** A PATCH body as a change to the catalog entry. */
export function patchChanges(patch: PatchRequest): TenantChanges {
  return {
    ...(patch.access !== undefined ? { access: patch.access } : {}),
    ...(patch.autosuspend !== undefined ? { autosuspendSeconds: patch.autosuspend } : {}),
    ...(patch.maxConnections !== undefined ? { maxConnections: patch.maxConnections } : {}),
    ...(patch.backupSchedule !== undefined ? { backupSchedule: patch.backupSchedule } : {}),
    ...(patch.backupRetain !== undefined ? { backupRetain: patch.backupRetain } : {}),
    ...(patch.rpoSeconds !== undefined ? { rpoSeconds: patch.rpoSeconds } : {}),
    ...(patch.memoryBytes !== undefined ? { memoryBytes: patch.memoryBytes } : {}),
    ...(patch.cpus !== undefined ? { cpus: patch.cpus } : {}),
    ...(patch.diskBytes !== undefined ? { diskBytes: patch.diskBytes } : {}),
    ...(patch.pool !== undefined ? { pool: patch.pool } : {}),
    ...(patch.poolSize !== undefined ? { poolSize: patch.poolSize } : {}),
    ...(patch.maxClientConnections !== undefined ? { maxClientConnections: patch.maxClientConnections } : {}),
    ...(patch.allow !== undefined ? { allow: requestedAllow(patch.allow) } : {}),
  };
}

const LIFTABLE = new Set(['memoryBytes', 'cpus', 'diskBytes', 'diskState', 'maxClientConnections', 'allow']);

/** The entry with the changes made (null lifts a limit: the key goes). */
export function applyChanges(tenant: Tenant, changes: TenantChanges): Tenant {
  const after: Record<string, unknown> = { ...tenant };
  for (const [key, value] of Object.entries(changes)) {
    if (value === undefined) continue;
    if (value === null && LIFTABLE.has(key)) delete after[key];
    else after[key] = value;
  }
  return after as Tenant;
}

/** The server sessions a tenant's clients share in transaction mode: its poolSize, never more than its max connections. */
export function effectivePoolSize(tenant: Pick<Tenant, 'poolSize' | 'maxConnections'>): number {
  return Math.min(tenant.poolSize ?? DEFAULT_POOL_SIZE, tenant.maxConnections);
}

/** Seconds without clients before the tenant is suspended; null: never. */
export function autosuspendOf(tenant: Pick<Tenant, 'autosuspendSeconds'>): number | null {
  return tenant.autosuspendSeconds === undefined ? DEFAULT_AUTOSUSPEND_SECONDS : tenant.autosuspendSeconds;
}

/** Whether a tenant last served at `lastMs` is idle long enough to suspend at `now` (never one that is not wanted running, or has clients). */
export function idleLongEnough(tenant: Tenant, lastMs: number, now: number, connections: number): boolean {
  const seconds = autosuspendOf(tenant);
  return seconds !== null && tenant.wanted === 'running' && now - lastMs >= seconds * 1000 && connections === 0;
}

/** An action that needs the tenant wanted running, refused with the one message that says what to do. */
export function assertWantedRunning(tenant: Tenant, action: 'suspend' | 'wake' | 'start' | 'restart'): void {
  if (tenant.wanted === 'running') return;
  if (action === 'suspend') throw new PgsError('INVALID_STATE', `tenant ${tenant.id} is stopped: there is nothing to suspend`);
  throw new PgsError('INVALID_STATE', `tenant ${tenant.id} is stopped: "pgs start ${tenant.id}" starts it`);
}

/** What one runtime cannot do: the one refusal, naming what to do instead. */
export function notSupported(runtime: string, what: string, instead: string): PgsError {
  return new PgsError('NOT_SUPPORTED', `${what} is not available on the ${runtime} runtime yet: ${instead}`);
}
