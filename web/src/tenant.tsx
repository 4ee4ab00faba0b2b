// One tenant: its state and health with the reason, its last hour or day
// (connections, transactions per second, wakes and suspends), its settings,
// connection strings, log lines, and every action with its pgs and curl
// equivalents. Nothing here wakes a suspended tenant unless asked to.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, type BackupList, type Connection, type History, type Patch, type Tenant } from './api';
import { TimeChart, type Marker } from './chart';
import { equivalent, type Equivalent } from './commands';
import { QueriesPanel } from './queries';
import { formatConnection } from '../../src/core/connect-strings.js';
import { RecoveryPanel } from './recovery';
import { ago, autosuspend, bytes, clock, number, parseDuration, parseSize, seconds, sizeArg } from './format';
import { CopyLine, Equivalents, ErrorLine, Notice, StateBadge, useShared, usePoll } from './ui';

function markersOf(history: History, id: string): Marker[] {
  const series = history.tenants[id];
  if (!series?.state) return [];
  const out: Marker[] = [];
  series.state.forEach((state, i) => {
    const at = history.times[i] as number;
    if ((series.wakes?.[i] ?? 0) > 0) out.push({ at, kind: 'wake' });
    const before = i > 0 ? series.state?.[i - 1] : null;
    if (state === 'suspended' && before !== 'suspended' && before !== null && before !== undefined) out.push({ at, kind: 'suspend' });
  });
  return out;
}

function Fact(props: { label: string; children: ComponentChildren }) {
  return <div class="fact"><dt>{props.label}</dt><dd>{props.children}</dd></div>;
}

function SettingsForm(props: { tenant: Tenant; onSaved: () => void; setEq: (eq: Equivalent) => void }) {
  const t = props.tenant;
  const initial = {
    autosuspend: autosuspend(t.autosuspendSeconds), maxConnections: String(t.maxConnections), memory: sizeArg(t.memoryBytes),
    cpus: t.cpus === null ? 'off' : String(t.cpus), disk: sizeArg(t.diskBytes), pool: t.pool, poolSize: String(t.poolSize),
  };
  const [form, setForm] = useState(initial);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  useEffect(() => setForm(initial), [t.id, JSON.stringify(initial)]);

  const build = (): { patch: Patch; args: string[] } | string => {
    const patch: Patch = {};
    const args: string[] = [];
    if (form.autosuspend !== initial.autosuspend) {
      const s = parseDuration(form.autosuspend);
      if (s === undefined) return 'autosuspend: write 30s, 5m, 1h or off';
      patch.autosuspend = s;
      args.push(`--autosuspend ${form.autosuspend.trim()}`);
    }
    if (form.maxConnections !== initial.maxConnections) {
      const n = Number(form.maxConnections);
      if (!Number.isInteger(n) || n < 5 || n > 10000) return 'max connections: a whole number from 5 to 10000';
      patch.maxConnections = n;
      args.push(`--max-connections ${n}`);
    }
    for (const [key, field, flag] of [['memory', 'memoryBytes', '--memory'], ['disk', 'diskBytes', '--disk']] as const) {
      if (form[key] !== initial[key]) {
        const size = parseSize(form[key]);
        if (size === undefined) return `${key}: write a size such as 512M or 2G, or off`;
        patch[field] = size;
        args.push(`${flag} ${form[key].trim()}`);
      }
    }
    if (form.cpus !== initial.cpus) {
      const c = form.cpus.trim() === 'off' ? null : Number(form.cpus);
      if (c !== null && !(c >= 0.01 && c <= 1024)) return 'cpus: a number of cores such as 0.5 or 2, or off';
      patch.cpus = c;
      args.push(`--cpus ${form.cpus.trim()}`);
    }
    if (form.pool !== initial.pool) {
      patch.pool = form.pool;
      args.push(`--pool ${form.pool}`);
    }
    if (form.poolSize !== initial.poolSize) {
      const n = Number(form.poolSize);
      if (!Number.isInteger(n) || n < 1) return 'pool size: a whole number, at least 1';
      patch.poolSize = n;
      args.push(`--pool-size ${n}`);
    }
    return { patch, args };
  };
  const eqOf = (built: ReturnType<typeof build>) => (typeof built === 'string' ? null : equivalent(`pgs config ${t.id} ${built.args.join(' ') || '--autosuspend 5m'}`, 'PATCH', `/v1/tenants/${t.id}`, Object.keys(built.patch).length ? built.patch : { autosuspend: 300 }));
  const input = (key: keyof typeof form, label: string, help: string) => (
    <div class="field">
      <label for={`set-${key}`}>{label}</label>
      <input id={`set-${key}`} value={form[key]} aria-describedby={`set-${key}-help`} onInput={(e) => setForm({ ...form, [key]: (e.target as HTMLInputElement).value })} />
      <span id={`set-${key}-help`} class="muted">{help}</span>
    </div>
  );
  return (
    <form class="settings" onSubmit={async (e) => {
      e.preventDefault();
      setNotice(null);
      const built = build();
      if (typeof built === 'string') return setError(built);
      if (Object.keys(built.patch).length === 0) return setError('nothing changed');
      const eq = eqOf(built);
      if (eq) props.setEq(eq);
      try {
        await api('PATCH', `/v1/tenants/${t.id}`, built.patch);
        setError(null);
        setNotice('Saved.');
        props.onSaved();
      } catch (err) {
        setError((err as Error).message);
      }
    }} onFocusIn={() => { const eq = eqOf(build()); if (eq) props.setEq(eq); }}>
      {input('autosuspend', 'Autosuspend', '30s, 5m, 1h or off')}
      {input('maxConnections', 'Max connections', '5 to 10000; at the next start')}
      {input('memory', 'Memory', '512M, 2G or off')}
      {input('cpus', 'CPUs', '0.5, 2 or off')}
      {input('disk', 'Disk quota', '10G or off')}
      <div class="field">
        <label for="set-pool">Pooling</label>
        <select id="set-pool" value={form.pool} onChange={(e) => setForm({ ...form, pool: (e.target as HTMLSelectElement).value as 'session' | 'transaction' })}>
          <option value="session">session</option>
          <option value="transaction">transaction</option>
        </select>
        <span class="muted">new connections get the new mode</span>
      </div>
      {input('poolSize', 'Pool size', 'server sessions in transaction mode')}
      <button type="submit">Save settings</button>
      <Notice text={notice} />
      <ErrorLine error={error} />
    </form>
  );
}

export function TenantPage(props: { id: string }) {
  const { id } = props;
  const { pollMs, eventCount, who, events } = useShared();
  const [range, setRange] = useState<'1h' | '1d'>('1h');
  const [eq, setEq] = useState<Equivalent | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [password, setPassword] = useState<string | null>(null);
  const [confirm, setConfirm] = useState('');
  const [gone, setGone] = useState(false);
  const admin = who.scope === 'admin';
  // While it is being deleted and after, nothing asks for it again.
  const live = !gone && busy !== 'Delete';

  const tenant = usePoll(() => api<Tenant>('GET', `/v1/tenants/${id}`), pollMs, [id, eventCount], live);
  const history = usePoll(() => api<History>('GET', `/v1/history?range=${range}&tenant=${id}`), pollMs, [id, range], live);
  const logs = usePoll(() => api<{ lines: string[] }>('GET', `/v1/tenants/${id}/logs?lines=40`), pollMs * 3, [id], live);
  const connection = usePoll(() => api<Connection>('GET', `/v1/tenants/${id}/connection`), 3_600_000, [id], live);
  const backups = usePoll(() => api<BackupList>('GET', `/v1/tenants/${id}/backups`), pollMs * 6, [id, eventCount], live);
  const logBox = useRef<HTMLPreElement>(null);
  useEffect(() => {
    if (logBox.current) logBox.current.scrollTop = logBox.current.scrollHeight; // the newest lines in view
  }, [logs.data]);

  const notFound = tenant.error !== null && /no tenant/i.test(tenant.error);
  if (gone) return <section><h1>{id}</h1><p role="status">Tenant {id} was deleted. Its backups stay: <code>pgs restore {id}</code> brings it back. <a href="#/tenants">All tenants</a></p></section>;
  if (!tenant.data) return <section><h1>{id}</h1><ErrorLine error={tenant.error} />{notFound ? <p><a href="#/tenants">All tenants</a></p> : tenant.error ? null : <p>Loading…</p>}</section>;
  const t = tenant.data;

  const run = async (label: string, e: Equivalent, work: () => Promise<unknown>, after?: (result: unknown) => void) => {
    setEq(e);
    setBusy(label);
    setActionError(null);
    setNotice(null);
    try {
      const result = await work();
      after?.(result);
      if (!after) setNotice(`${label}: done`);
      if (label !== 'Delete') tenant.reload();
    } catch (err) {
      setActionError(err instanceof ApiError ? `${label}: ${err.message}` : `${label}: ${(err as Error).message}`);
    } finally {
      setBusy(null);
    }
  };
  const action = (name: 'start' | 'stop' | 'restart' | 'suspend' | 'wake', label: string, pgs: string | null, enabled: boolean) => {
    const e = equivalent(pgs, 'POST', `/v1/tenants/${id}/${name}`);
    return <button type="button" disabled={!enabled || busy !== null} onFocus={() => setEq(e)} onMouseEnter={() => setEq(e)} onClick={() => run(label, e, () => api('POST', `/v1/tenants/${id}/${name}`))}>{busy === label ? `${label}…` : label}</button>;
  };
  const nextAccess = t.access === 'enabled' ? 'disabled' : 'enabled';
  const accessEq = equivalent(`pgs ${t.access === 'enabled' ? 'disable' : 'enable'}-access ${id}`, 'PATCH', `/v1/tenants/${id}`, { access: nextAccess });
  const passwordEq = equivalent(`pgs passwd ${id}`, 'POST', `/v1/tenants/${id}/password`, {});
  const deleteEq = equivalent(`pgs remove ${id} --yes`, 'DELETE', `/v1/tenants/${id}`);
  const backupEq = equivalent(`pgs backup ${id}`, 'POST', `/v1/tenants/${id}/backups`);
  const h = history.data;
  const series = h?.tenants[id];
  const markers = h ? markersOf(h, id) : [];
  const firstSample = Math.max(0, series?.state?.findIndex((state) => state !== null) ?? 0); // the tenant's first, when made after the daemon started
  const reason = t.healthError ?? t.lastError ?? t.archivingError ?? t.limitsNotEnforced;
  const mine = events.filter((e) => e.tenant === id).slice(0, 10);
  const conn = connection.data;

  return (
    <section>
      <p class="crumbs"><a href="#/tenants">Tenants</a> / {id}</p>
      <h1>{id} <StateBadge state={t.state} health={t.health} /></h1>
      <ErrorLine error={tenant.error} />
      {reason ? <p class="reason" role="note">{reason}</p> : null}
      <dl class="facts">
        <Fact label="Host name"><code>{t.hostname}</code></Fact>
        <Fact label="Access">{t.access}</Fact>
        <Fact label="Health">{t.health}{t.healthCheckedAt ? ` (checked ${ago(t.healthCheckedAt)})` : ''}</Fact>
        <Fact label="Connections">{t.connections === null ? '—' : `${number(t.connections)} of ${t.maxClientConnections ?? t.maxConnections}`}</Fact>
        <Fact label="Uptime">{seconds(t.uptimeSeconds)}</Fact>
        <Fact label="Last active">{t.lastActiveAt === undefined ? '—' : ago(t.lastActiveAt)}</Fact>
        <Fact label="Size">{bytes(t.diskUsedBytes)}{t.diskBytes !== null ? ` of ${bytes(t.diskBytes)}${t.disk && t.disk !== 'ok' ? ` (${t.disk})` : ''}` : ''}</Fact>
        <Fact label="Wakes / restarts">{t.wakes} / {t.restarts}</Fact>
        <Fact label="Autosuspend">{autosuspend(t.autosuspendSeconds)}</Fact>
        <Fact label="Limits">{`memory ${t.memoryBytes === null ? 'none' : bytes(t.memoryBytes)} · cpus ${t.cpus ?? 'none'} · max connections ${t.maxConnections}`}{t.usage ? ` · using ${bytes(t.usage.memoryBytes)} (${t.usage.memorySource === 'cgroup' ? 'cgroup' : 'PSS'})` : ''}</Fact>
        <Fact label="Pooling">{t.pool === 'transaction' ? `transaction, ${t.poolSize} server sessions` : 'session'}</Fact>
        <Fact label="Backups">{`${t.backupSchedule}, keep ${t.backupRetain} · last ${t.lastBackupAt ? ago(t.lastBackupAt) : 'never'} · archiving ${t.archiving}`}</Fact>
      </dl>

      <div class="range" role="group" aria-label="Chart range">
        <button type="button" aria-pressed={range === '1h'} onClick={() => setRange('1h')}>Last hour</button>
        <button type="button" aria-pressed={range === '1d'} onClick={() => setRange('1d')}>Last day</button>
      </div>
      <ErrorLine error={history.error} />
      {h && series ? (
        <div class="charts">
          <TimeChart title="Connections" first={firstSample} times={h.times} lines={[{ label: 'connections', values: series.connections ?? [], color: '--series-1', unit: 'connections', one: 'connection' }]} markers={markers} />
          <TimeChart title="Transactions per second" first={firstSample} times={h.times} lines={[{ label: 'TPS', values: series.tps ?? [], color: '--series-3', unit: 'tx/s' }]} markers={markers} />
        </div>
      ) : h ? <p class="muted">No samples yet: the daemon samples every {h.intervalSeconds} s.</p> : null}

      <QueriesPanel id={id} admin={admin} live={live} />

      {admin ? (
        <div class="panel actions-panel">
          <h2>Actions</h2>
          <div class="actions" role="group" aria-label="Server actions">
            {action('start', 'Start', `pgs start ${id}`, t.state === 'stopped' || t.state === 'crashed')}
            {action('stop', 'Stop', `pgs stop ${id}`, t.state !== 'stopped')}
            {action('restart', 'Restart', `pgs restart ${id}`, t.state === 'running')}
            {action('suspend', 'Suspend', null, t.state === 'running')}
            {action('wake', 'Wake', `pgs start ${id}`, t.state === 'suspended')}
            <button type="button" disabled={busy !== null} onFocus={() => setEq(accessEq)} onMouseEnter={() => setEq(accessEq)} onClick={() => run(t.access === 'enabled' ? 'Disable access' : 'Enable access', accessEq, () => api('PATCH', `/v1/tenants/${id}`, { access: nextAccess }))}>{t.access === 'enabled' ? 'Disable access' : 'Enable access'}</button>
            <button type="button" disabled={busy !== null} onFocus={() => setEq(passwordEq)} onMouseEnter={() => setEq(passwordEq)} onClick={() => run('Rotate password', passwordEq, () => api<{ password: string }>('POST', `/v1/tenants/${id}/password`, {}), (r) => setPassword((r as { password: string }).password))}>Rotate password</button>
          </div>
          <Notice text={notice} />
          <ErrorLine error={actionError} />
          {password ? (
            <div class="secret" role="status">
              <p><strong>The new password</strong> is shown this once; pgs does not keep it. Connections made with the old one stay open.</p>
              <CopyLine label="new password" text={password} />
              <button type="button" class="small" onClick={() => setPassword(null)}>Hide it</button>
            </div>
          ) : null}
          <Equivalents title="This action" eq={eq} />
        </div>
      ) : null}

      <h2>Backups</h2>
      <ErrorLine error={backups.error} />
      {backups.data ? (
        <div>
          <p>
            {backups.data.window ? `Restorable from ${new Date(backups.data.window.earliest).toLocaleString()} to ${new Date(backups.data.window.latest).toLocaleString()}` : 'Not restorable yet: no backup.'}
            {' '}<span class="muted">(<code>pgs restore {id} --time T</code>)</span>
          </p>
          {backups.data.lastFailure ? <p class="error">The last backup failed {ago(backups.data.lastFailure.at)}: {backups.data.lastFailure.error}</p> : null}
          {backups.data.backups.length > 0 ? (
            <div class="table-wrap">
              <table>
                <caption class="visually-hidden">Backups of {id}, newest first</caption>
                <thead><tr><th scope="col">Finished</th><th scope="col">Kind</th><th scope="col">Why</th><th scope="col">Size</th><th scope="col">Id</th></tr></thead>
                <tbody>
                  {[...backups.data.backups].reverse().slice(0, 10).map((b) => (
                    <tr key={b.id}><td>{new Date(b.finishedAt).toLocaleString()}</td><td>{b.kind}</td><td>{b.reason}</td><td class="num">{bytes(b.bytes)}</td><td><code>{b.id}</code></td></tr>
                  ))}
                </tbody>
              </table>
            </div>
          ) : null}
          {admin ? (
            <div class="actions">
              <button type="button" disabled={busy !== null} onFocus={() => setEq(backupEq)} onMouseEnter={() => setEq(backupEq)} onClick={() => run('Back up now', backupEq, () => api('POST', `/v1/tenants/${id}/backups`), () => { setNotice('Back up now: done'); backups.reload(); })}>{busy === 'Back up now' ? 'Backing up…' : 'Back up now'}</button>
            </div>
          ) : null}
          {admin ? <RecoveryPanel id={id} backups={backups.data} disabled={busy !== null} onChanged={() => { backups.reload(); tenant.reload(); }} /> : null}
        </div>
      ) : null}

      <h2>Connect</h2>
      <ErrorLine error={connection.error} />
      {conn ? (
        <div class="connect">
          <CopyLine label="URI" text={conn.uri} />
          <CopyLine label="psql" text={formatConnection(conn, 'psql', { hostaddr: conn.hostaddr })} />
          <CopyLine label="JDBC" text={conn.jdbc} />
          <p class="muted">The password is not part of these: use the one given at creation or the last rotation.{conn.sslrootcert ? ` The certificate is self-signed: for verify-full, give clients ${conn.sslrootcert}.` : ''}</p>
        </div>
      ) : null}

      {admin ? (
        <div class="panel">
          <h2>Settings</h2>
          <SettingsForm tenant={t} onSaved={tenant.reload} setEq={setEq} />
        </div>
      ) : null}

      <h2>Recent events</h2>
      {mine.length === 0 ? <p class="muted">None since the daemon started.</p> : (
        <ul class="events">{mine.map((e) => <li key={e.id}><time dateTime={e.at}>{clock(Date.parse(e.at))}</time> {e.type}{e.state ? `: ${e.state}` : ''}{e.access ? `: ${e.access}` : ''}{e.reason ? ` (${e.reason})` : ''}</li>)}</ul>
      )}

      <h2>Server log</h2>
      <ErrorLine error={logs.error} />
      <pre class="logs" ref={logBox} tabIndex={0} aria-label="The last lines of the server's log">{logs.data ? (logs.data.lines.length ? logs.data.lines.join('\n') : '(empty)') : 'Loading…'}</pre>

      {admin ? (
        <div class="panel danger">
          <h2>Delete</h2>
          <p>Stops the server and deletes its data. Its backups stay until deleted with <code>pgs backups {id} --delete</code>.</p>
          <form onSubmit={(e) => {
            e.preventDefault();
            if (confirm !== id) return;
            void run('Delete', deleteEq, () => api('DELETE', `/v1/tenants/${id}`), () => setGone(true));
          }}>
            <div class="field">
              <label for="confirm-delete">Type {id} to delete it</label>
              <input id="confirm-delete" autocomplete="off" value={confirm} onInput={(e) => setConfirm((e.target as HTMLInputElement).value)} onFocus={() => setEq(deleteEq)} />
            </div>
            <button type="submit" class="destructive" disabled={confirm !== id || busy !== null}>Delete {id}</button>
          </form>
        </div>
      ) : null}
    </section>
  );
}
