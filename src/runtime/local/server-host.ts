/**
 * What differs between the local runtimes: where a tenant's postmaster runs.
 * Everything about files (folders, the template and spares, backups, WAL,
 * restores, owners) is shared (LocalRuntime's parts); a ServerHost starts,
 * finds, waits for and limits the servers: as child processes of pgs
 * (native-host.ts) or as containers (runtime/docker.ts).
 */
import type { ResourceUsage } from '../cgroups.js';
import type { PostmasterPid } from '../postmaster.js';
import type { TenantServerSpec } from '../runtime.js';
import type { WarmSpares } from './warm.js';

export interface ServerHost {
  /** The runtime's kind ("native", "docker"). */
  readonly kind: string;
  /** What must be there before anything is made (the engine, the image); throws why not. */
  check(): Promise<void>;
  /** What runs the servers, in a line (pgs status). */
  describe(): string;
  /** As whom the servers run, from what the files' owners are (`local`). */
  serverUsers(local: { perTenant: boolean; detail: string }): { perTenant: boolean; detail: string };
  limitsSupport(): { enforced: true; how: string } | { enforced: false; why: string };
  /** Starts the server of `spec` in `dir` (its files written) and waits until it takes sessions. */
  launch(spec: TenantServerSpec, dir: string, startTimeoutMs: number): Promise<void>;
  /** The server's postmaster.pid with its pid as this process sees it (-1: none of this host's runs it). */
  postmasterOf(id: string, dir: string): Promise<PostmasterPid | undefined>;
  /** Whether the server with `pid` is this process's own child and still runs; undefined when it is not a child. */
  childAlive(id: string, pid: number): boolean | undefined;
  /** Before a start: what a dead server left that would keep a new one from starting. */
  clearDead(dir: string): Promise<void>;
  /** Waits until the server with `pid` has exited; false when it still runs after `timeoutMs`. */
  waitForExit(id: string, pid: number, timeoutMs: number): Promise<boolean>;
  /** The server has stopped (its limits' groups can go). */
  stopped(id: string): Promise<void>;
  /** The tenant is removed (its server stopped): what the host keeps of it goes. */
  removed(id: string): Promise<void>;
  /** The tenant's limits changed (`pid`: its running server's); pgs.conf is written, the caller reloads. */
  applyLimits(spec: TenantServerSpec, pid: number | undefined): Promise<void>;
  resourceUsage(id: string): Promise<ResourceUsage | undefined>;
  moveToHomeNames(specs: TenantServerSpec[]): Promise<string[]>;
  /** Running spares, where the host can keep them. */
  readonly warm: WarmSpares | undefined;
}
