/** What the supervisor is given (its dependencies, the router's view) and what it tells of a tenant. */
import type { Catalog } from '../catalog/schema.js';
import type { Log } from '../core/log.js';
import type { TenantRuntime } from '../runtime/runtime.js';
import type { EventLog } from '../telemetry/events.js';
import type { SampledState } from '../telemetry/history.js';
import type { DaemonMetrics } from '../telemetry/metrics.js';
import type { Health } from './health.js';

export interface TenantStatus {
  id: string;
  state: SampledState;
  /** The postmaster's pid, null when no server runs. */
  pid: number | null;
  /** When the running server started (ISO), null when none runs. */
  serverStartedAt: string | null;
  /** Client connections through the router now. */
  connections: number;
  /** The last health check of the running server: a real query over its socket. */
  health: Health;
  healthCheckedAt: string | null;
  healthError?: string;
  restarts: number;
  wakes: number;
  lastError?: string;
}

/** What the supervisor needs of the router: connection counts, and closing a tenant's sessions. */
export interface RouterView {
  connectionCount(id?: string): number;
  /** When a client connection to the tenant last opened or closed (ms), if ever since the router started. */
  lastUsed(id: string): number | undefined;
  closeTenant(id: string, message?: string): number;
  /** Idle server sessions the router keeps for the tenant: sessions on its server, but no activity. */
  idleServerSessions(id: string): number;
  /** Closes them (before the server stops). */
  dropServerSessions(id: string): number;
}

export interface SupervisorDeps {
  runtime: TenantRuntime;
  router: RouterView;
  metrics: DaemonMetrics;
  events: EventLog;
  log: Log;
  /** The catalog as the daemon has it now. */
  catalog: () => Catalog;
  /** True once the daemon is stopping: nothing new is started. */
  stopping: () => boolean;
  healthIntervalMs: number;
  /** Why no tenant may be woken now (the host's disk is nearly full), or undefined. */
  wakeProblem?: () => Promise<string | undefined>;
}
