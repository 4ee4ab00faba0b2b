// Pieces every page uses: polling, the state badge, copy buttons, the panel
// of equivalent commands, error and notice lines.
import { createContext } from 'preact';
import { useContext, useEffect, useRef, useState } from 'preact/hooks';
import type { PgsEvent, WhoAmI } from './api';
import type { Equivalent } from './commands';

export interface Shared {
  who: WhoAmI;
  /** How often pages ask again (the daemon's sample interval). */
  pollMs: number;
  /** The newest events, newest first. */
  events: PgsEvent[];
  /** Grows with each event: pages fetch again at once when it changes. */
  eventCount: number;
}

export const SharedContext = createContext<Shared | null>(null);

export function useShared(): Shared {
  const shared = useContext(SharedContext);
  if (!shared) throw new Error('no shared context');
  return shared;
}

/**
 * Runs `load` now, every `ms`, and whenever a key changes; keeps the last
 * answer through errors (the error is shown beside it). Stops on unmount.
 */
export function usePoll<T>(load: () => Promise<T>, ms: number, keys: unknown[], enabled = true): { data: T | undefined; error: string | null; reload: () => void } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    if (!enabled) return undefined;
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      try {
        const value = await loadRef.current();
        if (!live) return;
        setData(value);
        setError(null);
      } catch (err) {
        if (live) setError((err as Error).message);
      }
      if (live) timer = setTimeout(run, ms);
    };
    void run();
    return () => {
      live = false;
      if (timer) clearTimeout(timer);
    };
  }, [ms, tick, enabled, ...keys]);
  return { data, error, reload: () => setTick((t) => t + 1) };
}

export function StateBadge(props: { state: string; health?: string }) {
  const failing = props.health === 'failing';
  return <span class={`badge state-${props.state}${failing ? ' failing' : ''}`}>{props.state}{failing ? ' · health failing' : ''}</span>;
}

export function CopyButton(props: { text: string; label: string }) {
  const [done, setDone] = useState(false);
  return (
    <button type="button" class="small" aria-label={`Copy ${props.label}`} onClick={async () => {
      try {
        await navigator.clipboard.writeText(props.text);
      } catch {
        // no clipboard (insecure origin or refused): select the text instead
        const range = document.createRange();
        const target = document.querySelector(`[data-copy="${CSS.escape(props.label)}"]`);
        if (target) {
          range.selectNodeContents(target);
          getSelection()?.removeAllRanges();
          getSelection()?.addRange(range);
        }
      }
      setDone(true);
      setTimeout(() => setDone(false), 1500);
    }}>{done ? 'Copied' : 'Copy'}</button>
  );
}

export function CopyLine(props: { label: string; text: string }) {
  return (
    <div class="copy-line">
      <span class="copy-label">{props.label}</span>
      <code data-copy={props.label} tabIndex={0}>{props.text}</code>
      <CopyButton text={props.text} label={props.label} />
    </div>
  );
}

export function Equivalents(props: { title: string; eq: Equivalent | null }) {
  if (!props.eq) return <p class="muted equivalents">Focus or run an action to see its pgs command and API call.</p>;
  return (
    <div class="equivalents" aria-live="polite">
      <p class="muted">{props.title}, from a shell:</p>
      {props.eq.pgs ? <CopyLine label="pgs" text={props.eq.pgs} /> : <p class="muted">No pgs command for this one: use the API.</p>}
      <CopyLine label="curl" text={props.eq.curl} />
      {(props.eq.then ?? []).map((line, i) => <CopyLine key={line} label={`then ${i + 1}`} text={line} />)}
    </div>
  );
}

export function ErrorLine(props: { error: string | null }) {
  return props.error ? <p class="error" role="alert">{props.error}</p> : null;
}

export function Notice(props: { text: string | null }) {
  return <p class="notice" role="status">{props.text ?? ''}</p>;
}
