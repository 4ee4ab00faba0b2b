/**
 * What happened to tenants, for GET /v1/events (Server-Sent Events). Each
 * event has an id that grows by one; the last EVENT_HISTORY are kept so that
 * a client reconnecting with `Last-Event-ID` misses nothing recent.
 */
export type EventType = 'created' | 'removed' | 'state' | 'access' | 'backup' | 'backup-failed' | 'restored' | 'disk';

export interface PgsEvent {
  id: number;
  type: EventType;
  tenant: string;
  at: string;
  /** For `state`: the new state; for `access`: enabled or disabled. */
  state?: string;
  access?: string;
  /** Why, when there is more to say (a failed start, an idle suspend, what a backup was for). */
  reason?: string;
  /** For backups, restores and tenants made from a backup: which backup, of which tenant, to what point. */
  backup?: string;
  kind?: string;
  from?: string;
  target?: string;
  /** For restores and imports: what pgs took from data it did not make (see runtime/neutralize.ts). */
  neutralized?: string[];
  /** For `restored`: a restore a stopped daemon left unfinished, undone (the tenant is as before it). */
  undone?: boolean;
  /** For `disk` (state: warning, read-only, standby, ok): the tenant's size and quota. */
  usedBytes?: number;
  quotaBytes?: number;
}

const EVENT_HISTORY = 1_000;

export class EventLog {
  private nextId = 1;
  private readonly history: PgsEvent[] = [];
  private readonly listeners = new Set<(event: PgsEvent) => void>();

  emit(type: EventType, tenant: string, fields: Omit<PgsEvent, 'id' | 'type' | 'tenant' | 'at'> = {}): PgsEvent {
    const event: PgsEvent = { id: this.nextId++, type, tenant, at: new Date().toISOString(), ...fields };
    this.history.push(event);
    if (this.history.length > EVENT_HISTORY) this.history.shift();
    for (const listener of this.listeners) listener(event);
    return event;
  }

  /** Events after `lastId` still in the history (all kept ones when undefined: none). */
  since(lastId: number | undefined): PgsEvent[] {
    if (lastId === undefined) return [];
    return this.history.filter((e) => e.id > lastId);
  }

  subscribe(listener: (event: PgsEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get lastId(): number {
    return this.nextId - 1;
  }
}

/** One event in the text/event-stream format. */
export function sseFrame(event: PgsEvent): string {
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}
