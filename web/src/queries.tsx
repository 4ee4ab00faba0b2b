// A tenant's top statements (pg_stat_statements through GET /v1/tenants/{id}/queries):
// by total time, mean time or calls; a suspended tenant's last sample, said as such
// (reading never wakes it); a reset for admin tokens.
import { useState } from 'preact/hooks';
import type { QueriesJson } from '../../src/api/schemas.js';
import { api } from './api';
import { equivalent, type Equivalent } from './commands';
import { ago, number } from './format';
import { Equivalents, ErrorLine, Notice, useShared, usePoll } from './ui';

type Order = 'total' | 'mean' | 'calls';
const ORDERS: [Order, string][] = [['total', 'Total time'], ['mean', 'Mean time'], ['calls', 'Calls']];

function ms(value: number): string {
  if (value < 1) return `${value.toFixed(3)} ms`;
  if (value < 1000) return `${value.toFixed(1)} ms`;
  return `${number(value / 1000, 2)} s`;
}

export function QueriesPanel(props: { id: string; admin: boolean; live: boolean }) {
  const { id, admin, live } = props;
  const { pollMs } = useShared();
  const [order, setOrder] = useState<Order>('total');
  const [eq, setEq] = useState<Equivalent | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const queries = usePoll(() => api<QueriesJson>('GET', `/v1/tenants/${id}/queries?order=${order}&limit=20`), pollMs * 3, [id, order], live);
  const resetEq = equivalent(`pgs config ${id} --reset-queries`, 'POST', `/v1/tenants/${id}/queries/reset`);
  const q = queries.data;

  const reset = async () => {
    setEq(resetEq);
    setBusy(true);
    setError(null);
    setNotice(null);
    try {
      await api('POST', `/v1/tenants/${id}/queries/reset`);
      setNotice('Query statistics reset.');
      queries.reload();
    } catch (err) {
      setError(`Reset: ${(err as Error).message}`);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="panel queries" aria-labelledby="queries-title">
      <h2 id="queries-title">Queries</h2>
      <div class="range" role="group" aria-label="Order queries by">
        {ORDERS.map(([value, label]) => <button key={value} type="button" aria-pressed={order === value} onClick={() => setOrder(value)}>{label}</button>)}
      </div>
      <ErrorLine error={queries.error} />
      {q?.sample ? (
        <p class="muted" role="note">{q.sampledAt ? `The server is not running: the last sample, from ${new Date(q.sampledAt).toLocaleString()} (${ago(q.sampledAt)}).` : 'The server is not running and no sample was taken yet.'}</p>
      ) : null}
      {q ? (q.items.length === 0 ? <p class="muted">No statements counted yet.</p> : (
        <div class="table-wrap">
          <table>
            <caption class="visually-hidden">Top statements of {id} by {ORDERS.find(([value]) => value === order)?.[1].toLowerCase()}</caption>
            <thead><tr><th scope="col">Query</th><th scope="col">Calls</th><th scope="col">Total</th><th scope="col">Mean</th><th scope="col">Rows</th></tr></thead>
            <tbody>
              {q.items.map((s) => (
                <tr key={s.queryId + s.query}>
                  <td><code class="query" style={{ whiteSpace: 'pre-wrap', wordBreak: 'break-word' }}>{s.query}</code></td>
                  <td class="num">{number(s.calls)}</td>
                  <td class="num">{ms(s.totalMs)}</td>
                  <td class="num">{ms(s.meanMs)}</td>
                  <td class="num">{number(s.rows)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )) : queries.error ? null : <p>Loading…</p>}
      <p class="muted">The tenant's own statements since the last reset, constants as $1, $2… (<code>pgs queries {id}</code>).</p>
      {admin ? (
        <div class="actions">
          <button type="button" disabled={busy} onFocus={() => setEq(resetEq)} onMouseEnter={() => setEq(resetEq)} onClick={() => void reset()}>{busy ? 'Resetting…' : 'Reset statistics'}</button>
        </div>
      ) : null}
      <Notice text={notice} />
      <ErrorLine error={error} />
      {admin ? <Equivalents title="Reset" eq={eq} /> : null}
    </div>
  );
}
