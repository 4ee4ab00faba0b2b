// Every tenant in one table: filter, sort, pages of 50, a sparkline of each
// visible tenant's connections (one history request per refresh for the rows
// shown), and actions on several at once; a form to create one.
import { useMemo, useState } from 'preact/hooks';
import { api, type Created, type History, type Tenant } from './api';
import { Sparkline } from './chart';
import { equivalent, type Equivalent } from './commands';
import { ago, bytes, number, parseDuration } from './format';
import { CopyLine, Equivalents, ErrorLine, Notice, StateBadge, useShared, usePoll } from './ui';

const PAGE = 50;

/** What the selected tenants can have done to them at once, each as its pgs command (none for suspend) and API call. */
const BULK: { label: string; pgs: (id: string) => string | null; method: string; path: (id: string) => string; body?: unknown }[] = [
  { label: 'Suspend', pgs: () => null, method: 'POST', path: (id) => `/v1/tenants/${id}/suspend` },
  { label: 'Enable access', pgs: (id) => `pgs enable-access ${id}`, method: 'PATCH', path: (id) => `/v1/tenants/${id}`, body: { access: 'enabled' } },
  { label: 'Disable access', pgs: (id) => `pgs disable-access ${id}`, method: 'PATCH', path: (id) => `/v1/tenants/${id}`, body: { access: 'disabled' } },
];
type SortKey = 'id' | 'hostname' | 'state' | 'access' | 'connections' | 'size' | 'active';

async function allTenants(): Promise<Tenant[]> {
  const out: Tenant[] = [];
  let cursor: string | null = null;
  do {
    const page: { items: Tenant[]; nextCursor: string | null } = await api('GET', `/v1/tenants?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
    out.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor);
  return out;
}

function sortValue(t: Tenant, key: SortKey): string | number {
  switch (key) {
    case 'connections': return t.connections ?? -1;
    case 'size': return t.diskUsedBytes ?? -1;
    case 'active': return t.lastActiveAt ? Date.parse(t.lastActiveAt) : 0;
    default: return t[key];
  }
}

function CreateForm(props: { onCreated: () => void }) {
  const [id, setId] = useState('');
  const [suspend, setSuspend] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [created, setCreated] = useState<Created | null>(null);
  const body = () => {
    const seconds = suspend.trim() === '' ? undefined : parseDuration(suspend);
    return { id: id.trim(), ...(seconds !== undefined ? { autosuspend: seconds } : {}) };
  };
  const eq = () => equivalent(`pgs create ${id.trim() || '<id>'}${suspend.trim() ? ` --autosuspend ${suspend.trim()}` : ''}`, 'POST', '/v1/tenants', body());
  return (
    <details class="panel create">
      <summary>New tenant</summary>
      <form onSubmit={async (e) => {
        e.preventDefault();
        if (suspend.trim() !== '' && parseDuration(suspend) === undefined) {
          setError('autosuspend: write 30s, 5m, 1h or off');
          return;
        }
        setBusy(true);
        setError(null);
        try {
          setCreated(await api<Created>('POST', '/v1/tenants', body()));
          setId('');
          props.onCreated();
        } catch (err) {
          setError((err as Error).message);
        } finally {
          setBusy(false);
        }
      }}>
        <div class="field">
          <label for="new-id">Id</label>
          <input id="new-id" required pattern="[a-z][a-z0-9\-]*" maxLength={40} value={id} aria-describedby="new-id-help" onInput={(e) => setId((e.target as HTMLInputElement).value)} />
          <span id="new-id-help" class="muted">a-z first, then a-z, 0-9 and -; at most 40</span>
        </div>
        <div class="field">
          <label for="new-suspend">Autosuspend</label>
          <input id="new-suspend" placeholder="5m" value={suspend} aria-describedby="new-suspend-help" onInput={(e) => setSuspend((e.target as HTMLInputElement).value)} />
          <span id="new-suspend-help" class="muted">30s, 5m, 1h or off (default 5m)</span>
        </div>
        <button type="submit" disabled={busy}>{busy ? 'Creating…' : 'Create'}</button>
        <ErrorLine error={error} />
      </form>
      <Equivalents title="Creating it" eq={eq()} />
      {created ? (
        <div class="secret" role="status">
          <p><strong>Tenant {created.id} is ready.</strong> Its password is shown this once; pgs does not keep it.</p>
          <CopyLine label="password" text={created.password} />
          <CopyLine label="URI" text={created.url} />
        </div>
      ) : null}
    </details>
  );
}

export function TenantsPage() {
  const { pollMs, eventCount, who } = useShared();
  const [filter, setFilter] = useState('');
  const [state, setState] = useState('');
  const [sort, setSort] = useState<{ key: SortKey; up: boolean }>({ key: 'id', up: true });
  const [page, setPage] = useState(0);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [notice, setNotice] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [eq, setEq] = useState<Equivalent | null>(null);
  const list = usePoll(allTenants, pollMs, [eventCount]);

  const rows = useMemo(() => {
    const needle = filter.trim().toLowerCase();
    const found = (list.data ?? []).filter((t) => (state === '' || t.state === state || (state === 'failing' && t.health === 'failing')) && (needle === '' || t.id.includes(needle) || t.hostname.includes(needle)));
    found.sort((a, b) => {
      const x = sortValue(a, sort.key);
      const y = sortValue(b, sort.key);
      const order = x < y ? -1 : x > y ? 1 : a.id < b.id ? -1 : 1;
      return sort.up ? order : -order;
    });
    return found;
  }, [list.data, filter, state, sort]);
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  const current = Math.min(page, pages - 1);
  const shown = rows.slice(current * PAGE, current * PAGE + PAGE);
  const shownIds = shown.map((t) => t.id).join(',');
  const sparks = usePoll(async () => {
    if (shownIds === '') return null;
    const query = shownIds.split(',').map((id) => `tenant=${id}`).join('&');
    return api<History>('GET', `/v1/history?range=1h&field=connections&${query}`);
  }, pollMs, [shownIds]);

  const admin = who.scope === 'admin';
  const chosen = [...selected].filter((id) => (list.data ?? []).some((t) => t.id === id));
  const bulk = async (label: string, one: (id: string) => Promise<unknown>) => {
    setNotice(null);
    setActionError(null);
    const failed: string[] = [];
    for (const id of chosen) {
      try {
        await one(id);
      } catch (err) {
        failed.push(`${id}: ${(err as Error).message}`);
      }
    }
    setNotice(`${label}: ${chosen.length - failed.length} of ${chosen.length} done`);
    if (failed.length > 0) setActionError(failed.join('; '));
    list.reload();
  };
  const bulkEq = (pgs: (id: string) => string | null, method: string, path: (id: string) => string, body?: unknown): Equivalent => {
    const first = chosen[0] ?? '<id>';
    const cmd = pgs(first);
    return equivalent(cmd === null ? null : chosen.length > 1 ? `for id in ${chosen.join(' ')}; do ${pgs('$id')}; done` : cmd, method, path(first), body);
  };
  const sortButton = (key: SortKey, label: string) => (
    <th scope="col" aria-sort={sort.key === key ? (sort.up ? 'ascending' : 'descending') : 'none'}>
      <button type="button" class="sort" onClick={() => setSort({ key, up: sort.key === key ? !sort.up : true })}>{label}{sort.key === key ? (sort.up ? ' ▲' : ' ▼') : ''}</button>
    </th>
  );

  return (
    <section>
      <h1>Tenants</h1>
      <ErrorLine error={list.error} />
      {admin ? <CreateForm onCreated={list.reload} /> : null}
      <div class="filters" role="search">
        <div class="field">
          <label for="filter">Filter</label>
          <input id="filter" type="search" placeholder="id or host name" value={filter} onInput={(e) => { setFilter((e.target as HTMLInputElement).value); setPage(0); }} />
        </div>
        <div class="field">
          <label for="state">State</label>
          <select id="state" value={state} onChange={(e) => { setState((e.target as HTMLSelectElement).value); setPage(0); }}>
            <option value="">all</option>
            {['running', 'suspended', 'stopped', 'starting', 'stopping', 'crashed', 'failing'].map((s) => <option key={s} value={s}>{s === 'failing' ? 'health failing' : s}</option>)}
          </select>
        </div>
        <span class="muted count">{list.data ? `${rows.length} of ${list.data.length} tenants` : 'Loading…'}</span>
      </div>
      {admin ? (
        <div class="bulk" aria-label="Actions on the selected tenants" role="group">
          <span>{chosen.length} selected</span>
          {BULK.map((b) => {
            const eqOf = () => bulkEq(b.pgs, b.method, b.path, b.body);
            return (
              <button key={b.label} type="button" disabled={chosen.length === 0} onFocus={() => setEq(eqOf())} onClick={() => {
                setEq(eqOf());
                void bulk(b.label, (id) => api(b.method, b.path(id), b.body));
              }}>{b.label}</button>
            );
          })}
        </div>
      ) : null}
      <Notice text={notice} />
      <ErrorLine error={actionError} />
      <div class="table-wrap">
        <table class="tenants">
          <caption class="visually-hidden">Tenants, page {current + 1} of {pages}</caption>
          <thead>
            <tr>
              {admin ? (
                <th scope="col"><input type="checkbox" aria-label="Select every tenant on this page" checked={shown.length > 0 && shown.every((t) => selected.has(t.id))} onChange={(e) => {
                  const next = new Set(selected);
                  for (const t of shown) {
                    if ((e.target as HTMLInputElement).checked) next.add(t.id);
                    else next.delete(t.id);
                  }
                  setSelected(next);
                }} /></th>
              ) : null}
              {sortButton('id', 'Id')}
              {sortButton('hostname', 'Host name')}
              {sortButton('state', 'State')}
              {sortButton('access', 'Access')}
              {sortButton('connections', 'Connections')}
              <th scope="col">Last hour</th>
              {sortButton('size', 'Size')}
              {sortButton('active', 'Last active')}
            </tr>
          </thead>
          <tbody>
            {shown.map((t) => (
              <tr key={t.id}>
                {admin ? (
                  <td><input type="checkbox" aria-label={`Select ${t.id}`} checked={selected.has(t.id)} onChange={(e) => {
                    const next = new Set(selected);
                    if ((e.target as HTMLInputElement).checked) next.add(t.id);
                    else next.delete(t.id);
                    setSelected(next);
                  }} /></td>
                ) : null}
                <td><a href={`#/tenants/${t.id}`}>{t.id}</a></td>
                <td class="host">{t.hostname}</td>
                <td><StateBadge state={t.state} health={t.health} /></td>
                <td>{t.access}</td>
                <td class="num">{number(t.connections)}</td>
                <td><Sparkline values={sparks.data?.tenants[t.id]?.connections ?? []} label={`${t.id} connections, last hour`} /></td>
                <td class="num">{bytes(t.diskUsedBytes)}</td>
                <td>{t.lastActiveAt === undefined ? '—' : ago(t.lastActiveAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {rows.length === 0 && list.data ? <p class="muted">{list.data.length === 0 ? 'No tenants yet: create one above, or with "pgs create <id>".' : 'No tenant matches the filter.'}</p> : null}
      <nav class="pager" aria-label="Pages">
        <button type="button" disabled={current === 0} onClick={() => setPage(current - 1)}>Previous</button>
        <span>Page {current + 1} of {pages}</span>
        <button type="button" disabled={current >= pages - 1} onClick={() => setPage(current + 1)}>Next</button>
      </nav>
      {admin ? <Equivalents title="The selected action" eq={eq} /> : null}
    </section>
  );
}
