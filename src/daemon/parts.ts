import type { Readable } from 'node:stream';
import type * as S from '../api/schemas.js';
import type { ImportLimit, Progress } from '../api/routes.js';
import type { Settings, Tenant } from '../catalog/schema.js';
import type { History } from '../telemetry/history.js';
import type { ObservedTenant } from '../service/tenant-view.js';
import type { CreateRequest, TenantChanges, PatchRequest } from '../service/tenant-rules.js';
import type { CreatedTenant } from '../service/connection.js';

/**
 * The parts the one control plane (control-plane.ts) is given at wiring
 * time. The tenant rules are the plane's (and service/'s); what a runtime
 * does differently is here: where the tenant records are, what its servers
 * do, where its backups go, and how its daemons agree on who acts.
 */

/** What a runtime may lack; the plane refuses it with one message (tenant-rules.ts's notSupported). */
export type Feature = 'init' | 'logs' | 'queries' | 'resetQueries' | 'export' | 'exportFile' | 'import';

/** For a feature a runtime lacks: how the refusal names it and what to do instead. */
export type Lacking = Partial<Record<Feature, (id: string | undefined) => { what: string; instead: string }>>;

/** The catalog store: the file catalog on one host, the Cluster records on Kubernetes. */
export interface TenantRecords {
  settings(): Settings;
  /** Every readable tenant, as known now. */
  list(): Tenant[];
  /** The tenant, or TENANT_NOT_FOUND (INVALID_STATE when its record cannot be read). */
  held(id: string): Tenant;
  /** The tenant as stored now (a write through this process is seen at once). */
  fresh(id: string): Promise<Tenant>;
  /** One change of one tenant's record; `check` sees it as it is now and may refuse. */
  patch(id: string, changes: TenantChanges, check: (current: Tenant) => void): Promise<{ before: Tenant; after: Tenant }>;
}

/** The part of GET /v1/status that is the runtime's. */
export type RuntimeStatus = Pick<S.StatusJson, 'runtime' | 'limits' | 'serverUsers' | 'importLimit' | 'disk' | 'wakesLastHour' | 'backupTarget' | 'stopping' | 'tenants'>;

/** The tenants' servers: what every runtime does to them. */
export interface ServerRuntime {
  /** "native", "docker" or "kubernetes", for refusals. */
  readonly name: string;
  readonly lacking: Lacking;
  /** What is seen of the tenant's server, for its view. */
  observe(tenant: Tenant): Promise<ObservedTenant>;
  /** Makes a serving tenant from a checked request (password chosen), or nothing. */
  create(request: CreateRequest & { password: string }): Promise<CreatedTenant>;
  /** A runtime's own refusal of a change (a volume that cannot shrink). */
  checkPatch?(current: Tenant, patch: PatchRequest): void;
  /** What a written change needs beyond the record. */
  changed(before: Tenant, after: Tenant, patch?: PatchRequest): Promise<void>;
  /** After a create or change that set a disk quota (outside the plane's queue). */
  checkDisk?(id: string): void;
  remove(id: string): Promise<void>;
  act(tenant: Tenant, action: S.TenantActionName): Promise<void>;
  setVerifier(tenant: Tenant, verifier: string): Promise<void>;
  /** The administration URL (psql on the server's host). */
  localUrl(tenant: Tenant): string;
  /** 127.0.0.1 when the host name does not resolve where clients of this daemon run; null otherwise. */
  hostaddr(hostname: string): Promise<string | null>;
  logs?(id: string, lines: number): Promise<string[]>;
  queries?(id: string, order: 'total' | 'mean' | 'calls', limit: number): Promise<Omit<S.QueriesJson, 'tenant' | 'order'>>;
  resetQueries?(id: string): Promise<void>;
  status(): Promise<RuntimeStatus>;
  running(): { running: number; maxRunning: number };
  startAll(): Promise<S.BulkJson>;
  doctor(): Promise<S.DoctorFixJson['report']>;
  doctorFix(): Promise<S.DoctorFixJson>;
}

/** A tenant a restore, branch or import made, with what pgs took from data it did not make. */
export interface MadeTenant {
  tenant: Tenant;
  neutralized?: string[];
  notes?: string[];
}

/** Backups: the local repository and bucket on a host, CloudNativePG's plugin on Kubernetes. */
export interface BackupProvider {
  backup(id: string, progress?: Progress): Promise<S.BackupJson>;
  list(id: string): Promise<S.BackupListJson>;
  deleteAll(id: string): Promise<void>;
  restore(id: string, request: S.RestoreRequest, progress?: Progress): Promise<MadeTenant>;
  branch(id: string, request: S.BranchRequest, progress?: Progress): Promise<MadeTenant>;
  exportTenant?(id: string, progress?: Progress): Promise<{ name: string; bytes: number; sha256: string }>;
  exportFile?(name: string): string;
  importLimit?(): Promise<ImportLimit>;
  importUploadFile?(body: Readable, limit: ImportLimit): Promise<string>;
  importFile?(file: string, as: string | undefined, progress?: Progress): Promise<MadeTenant>;
}

/** How this daemon's changes are ordered with the others'. */
export interface Coordination {
  /** Single host: one change at a time, in order. Kubernetes: at once (the API server orders the writes). */
  serial<T>(task: () => Promise<T>): Promise<T>;
  /** Whether this daemon is the one that suspends idle tenants (single host: always). */
  readonly isLeader: boolean;
}

/** What the plane shows of the daemon that runs it. */
export interface DaemonFacts {
  readonly version: string;
  readonly startedAt: Date;
  readonly history: History;
  stopping(): boolean;
  port(): number;
  api(): string | null;
  connections(): number;
  refusals(): Record<string, number>;
  certificateExpires(): string | null;
  reload(): Promise<void>;
  shutdown(stopTenants: boolean, ship: boolean): void;
}

export interface PlaneParts {
  records: TenantRecords;
  servers: ServerRuntime;
  backups: BackupProvider;
  coordination: Coordination;
  daemon: DaemonFacts;
}
