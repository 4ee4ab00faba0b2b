/**
 * What one pooled client believes of its session's settings, carried from
 * server session to server session: the ParameterStatus values it was given,
 * its start-up settings the server does not report, and what it SET or RESET
 * since. A change counts once the ReadyForQuery after it says idle and no
 * error came; until then it is tentative.
 */
import type { Change } from '../../protocol/sql-statements.js';
import { TxStatus } from '../../protocol/codes.js';
import { carried, UNKNOWN, wantedKey, type PooledState, type Wanted } from './server-state.js';

export class ClientSettings {
  /** What this client's settings come to, as one string (undefined: to be worked out again). */
  private settingsKey: string | undefined;
  /** Settings the server does not report that the client changed with SET (by lower-case name; reported ones follow `seen`). */
  private readonly sets = new Map<string, Wanted>();
  /** Changes that succeeded since the last ReadyForQuery: recorded at the next one if it says idle and no error came. */
  private tentative: Change[] = [];
  private failed = false;
  /** The held session's settings changed while held: its settings key is not this client's any more. */
  private touched = false;
  /** What the unnamed statement changes in the settings. */
  unnamedChanges: Change[] | undefined;
  /** Portals bound to a statement that changes settings, and what running them changes. */
  private readonly portalChanges = new Map<string, Change[]>();

  /**
   * `seen`: the ParameterStatus values the client was given; `fixed`: its start-up
   * settings beyond those (set on each session it gets, reset on others).
   */
  constructor(readonly seen: Map<string, string>, private readonly fixed: Map<string, string>) {}

  /** This client's settings as one string: a session whose last settings were the same needs none set. */
  key(): string {
    if (this.settingsKey === undefined) {
      const parts: string[] = [];
      for (const [name, value] of this.seen) if (carried(name.toLowerCase())) parts.push(name, value);
      parts.push('\0');
      for (const [name, wanted] of this.wanted()) parts.push(name, wantedKey(wanted));
      this.settingsKey = parts.join('\0');
    }
    return this.settingsKey;
  }

  /** Its start-up settings, and over them what it SET since. */
  wanted(): Map<string, Wanted> {
    return this.sets.size === 0 ? this.fixed : new Map<string, Wanted>([...this.fixed, ...this.sets]);
  }

  /** The server reported a setting (ParameterStatus): the client saw it. */
  reported(name: string, value: string): void {
    this.seen.set(name, value);
    this.settingsKey = undefined;
  }

  /** Some portal runs a statement that changes settings: Execute must be read to know which. */
  get portalsChange(): boolean {
    return this.portalChanges.size > 0;
  }

  /** A Bind of a statement whose changes are `changes` to `portal`. */
  bound(portal: string, changes: Change[] | undefined): void {
    if (changes) this.portalChanges.set(portal, changes);
    else if (this.portalChanges.size > 0) this.portalChanges.delete(portal);
  }

  /** What an Execute of `portal` changes. */
  changesOf(portal: string): Change[] | undefined {
    return this.portalChanges.get(portal);
  }

  /** A statement that makes `changes` completed. */
  completed(changes: Change[]): void {
    this.tentative.push(...changes);
  }

  /** The server sent an ErrorResponse: what was tentative is not kept. */
  errored(): void {
    this.failed = true;
  }

  /**
   * At a ReadyForQuery of transaction status `status`, on a session of
   * `state`: the settings changed since the last one become the client's when
   * it says idle and no error came (a SET outside a transaction block).
   * Otherwise (inside a block, or rolled back) the server session's value is
   * no longer known, and the next transaction on it sets it again. Returns
   * true when a DISCARD ALL took (the client's prepared statements are gone).
   */
  settle(status: number, state: PooledState | undefined): boolean {
    const changes = this.tentative;
    const kept = !this.failed && status === TxStatus.Idle;
    this.tentative = [];
    this.failed = false;
    if (status === TxStatus.Idle && this.portalChanges.size > 0) this.portalChanges.clear();
    if (changes.length === 0 || !state) return false;
    this.touched = true;
    this.settingsKey = undefined;
    const params = state.params;
    const reported = (name: string): boolean => [...params.keys()].some((k) => k.toLowerCase() === name);
    let discarded = false;
    for (const change of changes) {
      if (change.kind === 'reset-all' || change.kind === 'discard-all') {
        if (!kept) {
          state.tainted = true;
          continue;
        }
        this.sets.clear();
        state.applied.clear();
        if (change.kind === 'discard-all') discarded = true;
      } else if (reported(change.name)) {
        continue; // its ParameterStatus told the client (and `seen`)
      } else if (!kept) {
        state.applied.set(change.name, UNKNOWN);
      } else if (change.kind === 'set') {
        const wanted = { sql: change.sql };
        this.sets.set(change.name, wanted);
        state.applied.set(change.name, wantedKey(wanted));
      } else {
        this.sets.delete(change.name);
        state.applied.delete(change.name);
      }
    }
    return discarded;
  }

  /** The client gives back a session of `state`: it is set as this client's settings say, unless they changed while held. */
  released(state: PooledState): void {
    state.settings = this.touched ? undefined : this.key();
    this.touched = false;
  }
}
