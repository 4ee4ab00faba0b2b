// The pgs dashboard: log in with an API token (kept in this tab's session
// storage only), then the host overview, the tenants table and a page per
// tenant, all drawn from the daemon's REST API.
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, checkToken, followEvents, onUnauthorized, savedWho, setToken, token, type History, type PgsEvent, type WhoAmI } from './api';
import { Overview } from './overview';
import { TenantPage } from './tenant';
import { TenantsPage } from './tenants';
import { SharedContext } from './ui';

const EVENTS_KEPT = 100;

function useRoute(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const changed = () => setHash(location.hash);
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  return hash.replace(/^#/, '') || '/';
}

function Login(props: { reason: string | null; onLogin: (who: WhoAmI) => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string | null>(props.reason);
  const [busy, setBusy] = useState(false);
  return (
    <main id="main" class="login">
      <h1>pgs</h1>
      <p>One PostgreSQL server per tenant, behind one TLS port.</p>
      <form onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        try {
          const who = await checkToken(value.trim());
          setToken(value.trim(), who);
          props.onLogin(who);
        } catch (err) {
          setError((err as Error).message);
        } finally {
          setBusy(false);
        }
      }}>
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="off" required value={value} onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
        <button type="submit" disabled={busy || value.trim() === ''}>Log in</button>
        {error ? <p class="error" role="alert">{error}</p> : null}
      </form>
      <p class="muted">Make a token on the daemon's host: <code>pgs token create NAME --scope admin</code> (or <code>--scope read</code> to look only). It stays in this browser tab only and is forgotten when the tab closes.</p>
    </main>
  );
}

function App() {
  const route = useRoute();
  const [who, setWho] = useState<WhoAmI | null>(savedWho);
  const [checking, setChecking] = useState(token() !== null && savedWho() === null);
  const [reason, setReason] = useState<string | null>(null);
  const [pollMs, setPollMs] = useState(10_000);
  const [events, setEvents] = useState<PgsEvent[]>([]);
  const [eventCount, setEventCount] = useState(0);

  useEffect(() => {
    onUnauthorized((message) => {
      setToken(null);
      setWho(null);
      setReason(`Logged out: ${message}`);
    });
    const saved = token();
    if (saved === null) return;
    // Checked again at every load; the page draws meanwhile with who it was (a revoked token then logs out).
    checkToken(saved).then((w) => {
      setToken(saved, w);
      setWho(w);
    }, (err: Error) => {
      setToken(null);
      setWho(null);
      setReason(err.message);
    }).finally(() => setChecking(false));
  }, []);

  useEffect(() => {
    if (!who) return undefined;
    const stop = new AbortController();
    api<History>('GET', '/v1/history?tenants=none').then((h) => setPollMs(Math.min(10_000, Math.max(1_000, h.intervalSeconds * 1000))), () => undefined);
    void followEvents((event) => {
      setEvents((list) => [event, ...list].slice(0, EVENTS_KEPT));
      setEventCount((n) => n + 1);
    }, stop.signal);
    return () => stop.abort();
  }, [who]);

  if (checking) return <p class="boot">Checking the token…</p>;
  if (!who) return <Login reason={reason} onLogin={(w) => { setReason(null); setWho(w); }} />;

  const tenantMatch = /^\/tenants\/([a-z][a-z0-9-]*)$/.exec(route);
  const page = tenantMatch ? <TenantPage id={tenantMatch[1] as string} />
    : route.startsWith('/tenants') ? <TenantsPage />
      : <Overview />;
  const here = tenantMatch || route.startsWith('/tenants') ? 'tenants' : 'overview';
  return (
    <SharedContext.Provider value={{ who, pollMs, events, eventCount }}>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>Skip to content</a>
      <header class="top">
        <a class="brand" href="#/">pgs</a>
        <nav aria-label="Main">
          <a href="#/" aria-current={here === 'overview' ? 'page' : undefined}>Overview</a>
          <a href="#/tenants" aria-current={here === 'tenants' ? 'page' : undefined}>Tenants</a>
        </nav>
        <span class="who">{who.name ?? 'socket'} · {who.scope}</span>
        <button type="button" class="small" onClick={() => { setToken(null); setWho(null); setReason(null); }}>Log out</button>
      </header>
      <main id="main" tabIndex={-1}>{page}</main>
    </SharedContext.Provider>
  );
}

const root = document.getElementById('app') as HTMLElement;
root.textContent = ''; // the "Loading" line of index.html
render(<App />, root);
