// The daemon's REST API as the page uses it: the token from session storage
// as a bearer token, problem+json errors as ApiError, events as a stream.
import type { PgsEvent } from '../../src/telemetry/events.js';
import type { OperationJson as Operation, WhoAmIJson } from '../../src/api/schemas.js';

export type {
  TenantJson as Tenant, StatusJson as Status, HistoryJson as History, ConnectionJson as Connection,
  CreatedTenantJson as Created, WhoAmIJson as WhoAmI, PatchTenantRequest as Patch, BackupListJson as BackupList,
  OperationJson as Operation, ExportJson as Export,
} from '../../src/api/schemas.js';

const KEY = 'pgs.token';
/** Who the token is, kept beside it so that a reload draws at once (and checks again meanwhile). */
const WHO = 'pgs.who';

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

let unauthorized: (message: string) => void = () => undefined;

export function onUnauthorized(handler: (message: string) => void): void {
  unauthorized = handler;
}

export function token(): string | null {
  return sessionStorage.getItem(KEY);
}

export function setToken(value: string | null, who?: WhoAmIJson): void {
  if (value === null) {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(WHO);
    return;
  }
  sessionStorage.setItem(KEY, value);
  if (who) sessionStorage.setItem(WHO, JSON.stringify(who));
}

export function savedWho(): WhoAmIJson | null {
  try {
    const who = JSON.parse(sessionStorage.getItem(WHO) ?? 'null') as WhoAmIJson | null;
    return token() !== null && who && (who.scope === 'read' || who.scope === 'admin') ? who : null;
  } catch {
    return null;
  }
}

export async function api<T>(method: string, path: string, body?: unknown, extra: Record<string, string> = {}): Promise<T> {
  const headers: Record<string, string> = { ...extra, authorization: `Bearer ${token() ?? ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? null : JSON.stringify(body), cache: 'no-store' });
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown;
  try {
    data = text === '' ? undefined : JSON.parse(text);
  } catch {
    data = undefined;
  }
  if (!res.ok) {
    const problem = (data ?? {}) as { code?: string; detail?: string };
    const error = new ApiError(res.status, problem.code ?? 'error', problem.detail ?? `${res.status} ${res.statusText}`);
    if (res.status === 401) unauthorized(error.message);
    throw error;
  }
  return data as T;
}

/**
 * Long work (restore, branch, export) as an operation: asked with Prefer:
 * respond-async, then GET /v1/operations/{id} each second until it ends;
 * its phase goes to `onPhase`. Answers what the synchronous request would
 * have, or throws the operation's error.
 */
export async function operation<T>(method: string, path: string, body: unknown, onPhase: (phase: string) => void = () => undefined): Promise<T> {
  let op = await api<Operation>(method, path, body, { prefer: 'respond-async' });
  while (op.status === 'running') {
    if (op.phase) onPhase(op.phase);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    op = await api<Operation>('GET', `/v1/operations/${op.id}`);
  }
  if (op.status === 'failed') throw new ApiError(500, op.error?.code ?? 'error', op.error?.detail ?? 'the operation failed');
  return op.result as T;
}

/** Fetches a file the API serves (with the token, which a plain link cannot send) and saves it as `name`. */
export async function download(path: string, name: string): Promise<void> {
  const res = await fetch(path, { headers: { authorization: `Bearer ${token() ?? ''}` }, cache: 'no-store' });
  if (!res.ok) {
    const problem = (await res.json().catch(() => ({}))) as { code?: string; detail?: string };
    throw new ApiError(res.status, problem.code ?? 'error', problem.detail ?? `${res.status} ${res.statusText}`);
  }
  const url = URL.createObjectURL(await res.blob());
  try {
    const link = document.createElement('a');
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
  } finally {
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }
}

/** Checks a token without keeping it: who it is, or the daemon's reason for refusing it. */
export async function checkToken(candidate: string): Promise<WhoAmIJson> {
  const res = await fetch('/v1/whoami', { headers: { authorization: `Bearer ${candidate}` }, cache: 'no-store' });
  const data = (await res.json().catch(() => ({}))) as WhoAmIJson & { detail?: string; code?: string };
  if (!res.ok) throw new ApiError(res.status, data.code ?? 'error', data.detail ?? `${res.status} ${res.statusText}`);
  return data;
}

export type { PgsEvent } from '../../src/telemetry/events.js';

/**
 * Follows GET /v1/events (Server-Sent Events, read with fetch so that the
 * token goes in a header, not in the address), from the oldest event the
 * daemon keeps. Reconnects after 2 s with Last-Event-ID, so nothing recent is
 * missed; stops when `signal` aborts.
 */
export async function followEvents(onEvent: (event: PgsEvent) => void, signal: AbortSignal): Promise<void> {
  let last = 0; // the first time, every event the daemon still keeps (its last 1,000)
  while (!signal.aborted) {
    try {
      const headers: Record<string, string> = { authorization: `Bearer ${token() ?? ''}` };
      headers['last-event-id'] = String(last);
      const res = await fetch('/v1/events', { headers, signal, cache: 'no-store' });
      if (res.status === 401) {
        unauthorized('the API token is not valid (revoked or mistyped)');
        return;
      }
      if (!res.ok || !res.body) throw new Error(String(res.status));
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = frame.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
          if (data === '') continue;
          const event = JSON.parse(data) as PgsEvent;
          last = event.id;
          onEvent(event);
        }
      }
    } catch {
      if (signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 2_000));
  }
}
