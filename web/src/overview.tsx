// The host at a glance: tenants by state, connections, wakes, the running
// budget, disk; the last hour of the whole host; what just happened.
import { api, type History, type Status } from './api';
import { TimeChart } from './chart';
import { setCaCert } from './commands';
import { bytes, clock, number, seconds } from './format';
import { ErrorLine, useShared, usePoll } from './ui';

function Card(props: { label: string; value: string; detail?: string; warn?: boolean }) {
  return (
    <div class={`card${props.warn ? ' warn' : ''}`}>
      <span class="card-label">{props.label}</span>
      <span class="card-value">{props.value}</span>
      {props.detail ? <span class="card-detail">{props.detail}</span> : null}
    </div>
  );
}

export function Overview() {
  const { pollMs, events, eventCount } = useShared();
  const { data, error } = usePoll(async () => {
    const [status, history] = await Promise.all([
      api<Status>('GET', '/v1/status'),
      api<History>('GET', '/v1/history?range=1h&tenants=none'),
    ]);
    setCaCert(status.certificateSelfSigned ? status.certificate : null);
    return { status, history };
  }, pollMs, [eventCount]);

  if (!data) return <section><h1>Overview</h1><ErrorLine error={error} />{error ? null : <p>Loading…</p>}</section>;
  const { status, history } = data;
  const count = (state: string) => status.tenants.filter((t) => t.state === state).length;
  const failing = status.tenants.filter((t) => t.health === 'failing').length;
  const lastTen = Math.max(1, Math.round(600 / history.intervalSeconds));
  const wakesRecent = history.host.wakes.slice(-lastTen).reduce((a, b) => a + b, 0);
  const minutes = (Math.min(lastTen, history.host.wakes.length) * history.intervalSeconds) / 60;
  const disk = status.disk;
  const diskLow = disk !== null && disk.freeBytes < disk.totalBytes * 0.1;
  return (
    <section>
      <h1>Overview</h1>
      <ErrorLine error={error} />
      <div class="cards">
        <Card label="Tenants" value={number(status.tenants.length)} detail={`${count('running')} running · ${count('suspended')} suspended · ${count('stopped')} stopped`} />
        <Card label="Crashed or failing" value={number(count('crashed') + failing)} detail={`${count('crashed')} crashed · ${failing} failing health checks`} warn={count('crashed') + failing > 0} />
        <Card label="Connections now" value={number(status.connections)} />
        <Card label="Wakes per minute" value={minutes > 0 ? number(wakesRecent / minutes, 1) : '—'} detail="over the last 10 minutes" />
        <Card label="Wake time p50 / p95" value={`${seconds(status.wakesLastHour.p50Seconds)} / ${seconds(status.wakesLastHour.p95Seconds)}`} detail={`${status.wakesLastHour.count} wakes in the last hour`} />
        <Card label="Servers running / budget" value={`${status.running} / ${status.maxRunning}`} detail="tenants' and spare servers" warn={status.running >= status.maxRunning} />
        <Card label="Disk free" value={disk ? bytes(disk.freeBytes) : '—'} detail={disk ? `of ${bytes(disk.totalBytes)} at ${disk.path}` : undefined} warn={diskLow} />
      </div>
      <div class="charts">
        <TimeChart title="Connections and running servers" times={history.times} lines={[
          { label: 'connections', values: history.host.connections, color: '--series-1', unit: 'connections', one: 'connection' },
          { label: 'running', values: history.host.running, color: '--series-2', unit: 'servers running', one: 'server running' },
        ]} />
        <TimeChart title="Transactions per second" times={history.times} lines={[{ label: 'TPS', values: history.host.tps, color: '--series-3', unit: 'tx/s' }]} />
        <TimeChart title={`Wakes per ${history.intervalSeconds} s`} times={history.times} lines={[{ label: 'wakes', values: history.host.wakes, color: '--series-4', unit: 'wakes', one: 'wake' }]} />
      </div>
      <h2>Events</h2>
      {events.length === 0 ? <p class="muted">Nothing has happened since the daemon started. Tenants created, started, suspended, woken or changed show up here as it happens.</p> : (
        <ul class="events" aria-live="polite">
          {events.slice(0, 30).map((e) => (
            <li key={e.id}>
              <time dateTime={e.at}>{clock(Date.parse(e.at))}</time>{' '}
              <a href={`#/tenants/${e.tenant}`}>{e.tenant}</a>{' '}
              <span>{e.type}{e.state ? `: ${e.state}` : ''}{e.access ? `: ${e.access}` : ''}{e.reason ? ` (${e.reason})` : ''}</span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
