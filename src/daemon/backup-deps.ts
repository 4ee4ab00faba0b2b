import type { Log } from '../core/log.js';
import type { EventLog } from '../telemetry/events.js';
import type { DaemonMetrics } from '../telemetry/metrics.js';
import type { Catalog, Tenant } from '../catalog/schema.js';
import type { TenantRuntime } from '../runtime/runtime.js';
import type { Pgs } from '../service/pgs.js';
import type { Supervisor } from '../supervisor/supervisor.js';

/**
 * The terms the backup parts share (daemon/backup-plane.ts joins them): what
 * the daemon gives them, and what a restore, branch or import gives back.
 */

/** What the daemon gives its backups (daemon/backup-plane.ts and the parts it joins). */
export interface BackupPlaneDeps {
  pgs: Pgs;
  runtime: TenantRuntime;
  supervisor: Supervisor;
  events: EventLog;
  metrics: DaemonMetrics;
  log: Log;
  version: string;
  catalog(): Catalog;
  refresh(): Promise<void>;
  serial<T>(task: () => Promise<T>): Promise<T>;
  endSessions(id: string, why: string): Promise<void>;
  stopping(): boolean;
}

/** A tenant a restore, branch or import made (or remade), with what pgs took from data it did not make (see runtime/neutralize.ts). */
export interface MadeTenant {
  tenant: Tenant;
  neutralized: string[];
  /** Anything else the user should know of it (an archive in the bucket taken over from another host). */
  notes?: string[];
}

/** How long a running server may take to archive its last WAL before a restore reads the archive. */
export const FLUSH_TIMEOUT_MS = 60_000;
