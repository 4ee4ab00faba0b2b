/**
 * What a tenant's container is, as data for the Engine API: its name, labels,
 * bind mounts, resources and health check, and the hash of its creation spec
 * (a stopped container whose hash still matches is started again, not
 * recreated). Pure: docker.ts does the calls.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { POSTMASTER_PID_FILE } from './postmaster.js';
import type { TenantServerSpec } from './runtime.js';
import { SERVER_PORT, SOCKET_SUBDIR, serverMaxConnections, socketDirOf } from './server-config.js';
import type { Identity } from './tenant-users.js';

export const LABEL_TENANT = 'pgs.tenant';
export const LABEL_HOME = 'pgs.home';
export const LABEL_SPEC = 'pgs.spec';
/** Where the container's entrypoint points the server's output (the tenant's log file is mounted there). */
export const CONTAINER_LOG = '/var/log/pgs/server.log';
const SECOND_NS = 1e9;

/** A tenant's container: named by its home's tag (core/paths.ts homeTag) and its id, so that two homes' tenants of one id never meet. */
export function containerName(tag: string, id: string): string {
  return `pgs-${tag}-${id}`;
}

/** The name an older pgs gave a tenant's container, by id alone. */
export function untaggedContainerName(id: string): string {
  return `pgs-${id}`;
}

/**
 * The container's health check, for whoever looks with `docker ps`: pg_isready
 * on the server's socket where the image has it (the official image does),
 * else the state the postmaster writes in postmaster.pid. It informs only:
 * restarting is pgs's supervisor's, which hears of a death from the engine.
 */
export function healthcheck(): Record<string, unknown> {
  // It runs in the container's working folder, the tenant's data folder: no path to quote.
  const check = [
    `if command -v pg_isready >/dev/null 2>&1; then exec pg_isready -q -h "$PWD/${SOCKET_SUBDIR}" -p ${SERVER_PORT}; fi`,
    'n=0',
    `while IFS= read -r line; do n=$((n+1)); if [ $n -eq 8 ]; then case "$line" in ready*) exit 0;; esac; exit 1; fi; done < ${POSTMASTER_PID_FILE}`,
    'exit 1',
  ].join('; ');
  return { Test: ['CMD-SHELL', check], Interval: 30 * SECOND_NS, Timeout: 5 * SECOND_NS, Retries: 3, StartPeriod: 10 * SECOND_NS };
}

/** The container's limits: memory without swap, CPUs, and processes (max_connections + reserved + 32); 0 is none. */
export function containerResources(spec: TenantServerSpec): Record<string, number> {
  const limits = spec.limits ?? {};
  return {
    Memory: limits.memoryBytes ?? 0,
    MemorySwap: limits.memoryBytes !== undefined ? limits.memoryBytes : 0,
    NanoCpus: limits.cpus !== undefined ? Math.round(limits.cpus * 1e9) : 0,
    PidsLimit: serverMaxConnections(spec.maxConnections) + 32,
  };
}

/**
 * For an update: the engine takes 0 as "unchanged" and refuses -1, so a lifted
 * limit is one no server reaches (2^53 bytes, every core of the host); the next
 * start recreates the container without it (its spec hash differs).
 */
export function liftedResources(spec: TenantServerSpec, hostCpus: number): Record<string, number> {
  const r = containerResources(spec);
  if (r.Memory === 0) r.Memory = r.MemorySwap = 2 ** 53;
  if (r.NanoCpus === 0) r.NanoCpus = hostCpus * 1e9;
  return r;
}

/**
 * The folders the server reads or writes besides its own, each at its own
 * path: all of its tenant's backups (it archives WAL into one generation and
 * writes online backups beside it), the archive when it is elsewhere, and a
 * restore's WAL sources (read-only). Only the ones in `present` exist to mount.
 */
export function containerBinds(spec: TenantServerSpec, dir: string, logFile: string, backups: string, present: (p: string) => boolean): string[] {
  const binds = [`${dir}:${dir}`, `${logFile}:${CONTAINER_LOG}`];
  const within = (p: string) => p === backups || p.startsWith(`${backups}/`);
  if (present(backups)) binds.push(`${backups}:${backups}`);
  const archive = spec.archive?.directory;
  if (archive && !within(archive) && present(archive)) binds.push(`${archive}:${archive}`);
  for (const wal of spec.recovery?.walDirs ?? []) {
    if (!within(wal) && wal !== archive && present(wal)) binds.push(`${wal}:${wal}:ro`);
  }
  return binds;
}

export interface ContainerPlan {
  image: string;
  pgBinPath: string;
  home: string;
  spec: TenantServerSpec;
  dir: string;
  identity: Identity | undefined;
  binds: string[];
}

/**
 * The creation spec: the postmaster as the container's first process (through
 * `sh -c exec`, which points its output at the log), as the folder's owner, no
 * network, no capabilities, no restart policy (pgs's supervisor restarts).
 */
export function containerBody(plan: ContainerPlan): Record<string, unknown> {
  const { dir, identity } = plan;
  return {
    Image: plan.image,
    User: identity ? `${identity.uid}:${identity.gid}` : undefined,
    WorkingDir: dir,
    Entrypoint: ['/bin/sh', '-c', `exec "$@" >>${CONTAINER_LOG} 2>&1`, 'sh'],
    Cmd: [path.posix.join(plan.pgBinPath, 'postgres'), '-D', dir, '-k', socketDirOf(dir)],
    Labels: { [LABEL_TENANT]: plan.spec.id, [LABEL_HOME]: plan.home },
    StopSignal: 'SIGINT',
    Healthcheck: healthcheck(),
    HostConfig: {
      NetworkMode: 'none',
      Binds: plan.binds,
      ShmSize: 64 * 2 ** 20,
      ...containerResources(plan.spec),
      RestartPolicy: { Name: 'no' },
      SecurityOpt: ['no-new-privileges'],
      CapDrop: ['ALL'],
    },
  };
}

/** The hash of a creation spec (label pgs.spec): what tells a reusable stopped container from one to recreate. */
export function specKey(body: Record<string, unknown>): string {
  return createHash('sha256').update(JSON.stringify(body)).digest('hex').slice(0, 16);
}
