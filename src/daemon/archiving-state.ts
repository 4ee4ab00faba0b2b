import type { ArchiverStatus } from '../runtime/runtime.js';
import type { Pending } from './shipper.js';

/**
 * What the API shows of a tenant's archive and of the bucket, from facts the
 * backup parts gather (daemon/backup-plane.ts): pure, so that each state and
 * sum can be checked without a server or a bucket.
 */

export type ArchivingState = 'ok' | 'failing' | 'behind' | 'gap' | 'unknown' | 'off';

/** More finished segments than this waiting to be archived: archiving is behind. */
export const BEHIND_SEGMENTS = 16;

/** The bucket as GET /v1/status shows it. */
export interface S3TargetStatus {
  url: string;
  /** Files of every tenant not in the bucket yet (see pendingFor), their bytes, and when the oldest was written. */
  pendingFiles: number;
  pendingBytes: number;
  oldestPendingAt: string | null;
  /** When a file last reached the bucket (since the daemon started). */
  lastCopiedAt: string | null;
  failingSince: string | null;
  error?: string;
}

/** A base backup being written: the bytes of its tar so far, and when it started. */
export interface InFlight {
  bytes: number;
  startedMs: number;
}

/**
 * What of one tenant is not in the bucket yet: the files here the copier has
 * not sent (`shipping`), the segments its server has finished and not
 * archived yet (`status`), and a base backup being written (`flight`).
 */
export function pendingOf(shipping: Pending, status: ArchiverStatus | undefined, flight: InFlight | undefined): Pending {
  let { files, bytes, oldestMs } = shipping;
  const older = (ms: number | null) => {
    if (ms !== null && (oldestMs === null || ms < oldestMs)) oldestMs = ms;
  };
  if (status?.readyFiles) {
    files += status.readyFiles;
    bytes += status.readyBytes ?? 0;
    older(status.oldestReadyAt ? Date.parse(status.oldestReadyAt) : null);
  }
  if (flight) {
    files += 1;
    bytes += flight.bytes;
    older(flight.startedMs);
  }
  return { files, bytes, oldestMs };
}

/** Every tenant's pending summed: files, bytes, the oldest of them (a null is a tenant without a bucket, left out). */
export function sumPending(each: readonly (Pending | null)[]): Pending {
  let files = 0;
  let bytes = 0;
  let oldestMs: number | null = null;
  for (const p of each) {
    if (!p) continue;
    files += p.files;
    bytes += p.bytes;
    if (p.oldestMs !== null && (oldestMs === null || p.oldestMs < oldestMs)) oldestMs = p.oldestMs;
  }
  return { files, bytes, oldestMs };
}

/** The bucket's status from what waits for it and what the copier knows. */
export function targetStatusOf(facts: {
  url: string;
  pending: Pending;
  lastCopiedAt: string | undefined;
  failing: { since: string; error: string } | undefined;
  targetError: string | undefined;
}): S3TargetStatus {
  const { url, pending, lastCopiedAt, failing, targetError } = facts;
  return {
    url,
    pendingFiles: pending.files,
    pendingBytes: pending.bytes,
    oldestPendingAt: pending.oldestMs === null ? null : new Date(pending.oldestMs).toISOString(),
    lastCopiedAt: lastCopiedAt ?? null,
    failingSince: failing?.since ?? null,
    ...(targetError ? { error: targetError } : failing ? { error: failing.error } : {}),
  };
}

/** What archivingState weighs for one tenant. */
export interface ArchivingFacts {
  id: string;
  /** The tenant's generation: none yet means its server does not archive. */
  generation: string | undefined;
  /** Why the backup target cannot be used, when it cannot. */
  targetError: string | undefined;
  /** The bucket's URL, or "S3" when there is no copier. */
  url: string;
  /** Another host that writes this tenant's archive in the bucket. */
  owner: { host: string; at: string } | undefined;
  /** What of it is not in the bucket yet (null: no bucket). */
  pending: Pending | null;
  /** Since when and why copying to the bucket fails. */
  shipping: { since: string; error: string } | undefined;
  /** Files here the copier has not sent yet. */
  uncopied: number;
  /** The first segment the archive misses. */
  gap: string | undefined;
  /** The last backup's failure, if it failed. */
  failure: { at: string; error: string } | undefined;
  /** The server's archiver, when known. */
  status: ArchiverStatus | undefined;
}

/** The tenant's archiving state, the worst first: off, a target that cannot be used, another host's archive, copying, a gap, the server's archiver. */
export function archivingState(f: ArchivingFacts): { state: ArchivingState; error?: string } {
  if (f.generation === undefined) return { state: 'off' };
  if (f.targetError !== undefined) return { state: 'failing', error: `the backup target cannot be used: ${f.targetError}` };
  if (f.owner) return { state: 'failing', error: `host ${f.owner.host} writes this tenant's archive in ${f.url} since ${f.owner.at} (it restored it there): this host copies nothing of it; "pgs restore ${f.id} --as <new-id>" gives a copy an archive of its own` };
  // A target that is down hurts only a tenant that has something to copy.
  if (f.shipping && f.pending !== null && f.pending.files > 0) return { state: 'failing', error: `copying to ${f.url} fails since ${f.shipping.since}: ${f.shipping.error}; ${f.pending.files} files wait, the local archive keeps everything` };
  if (f.uncopied > BEHIND_SEGMENTS) return { state: 'behind', error: `${f.uncopied} files wait to be copied to ${f.url}` };
  if (f.gap !== undefined) return { state: 'gap', error: `the WAL archive misses segment ${f.gap}: a restore cannot reach past it; the next backup starts a whole range again` };
  const { failure, status } = f;
  if (!status) return failure ? { state: 'unknown', error: `last backup failed at ${failure.at}: ${failure.error}` } : { state: 'unknown' };
  if (status.lastFailedAt !== null && (status.lastArchivedAt === null || status.lastFailedAt > status.lastArchivedAt)) {
    return { state: 'failing', error: `archiving WAL segment ${status.lastFailedWal ?? '?'} fails since ${status.lastFailedAt} (see pgs logs ${f.id}); ${status.pending} segments wait` };
  }
  if (status.pending > BEHIND_SEGMENTS) return { state: 'behind', error: `${status.pending} WAL segments wait to be archived` };
  if (failure) return { state: 'ok', error: `last backup failed at ${failure.at}: ${failure.error}` };
  return { state: 'ok' };
}
