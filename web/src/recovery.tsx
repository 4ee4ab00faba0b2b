// A tenant's data in other forms, from its page: restore (to a backup or a
// time, in place or as a new tenant), branch, and export as a download. Each
// shows its pgs command and curl call; an in-place restore, which replaces
// the data, waits for the tenant's id to be typed.
import { useState } from 'preact/hooks';
import { api, download, operation, type BackupList, type Export, type Tenant } from './api';
import { curl, equivalent, shellQuote, type Equivalent } from './commands';
import { Equivalents, ErrorLine, Notice } from './ui';

type Target = 'latest' | 'backup' | 'time';

const ID = /^[a-z][a-z0-9-]{0,39}$/;

function validId(id: string): boolean {
  return ID.test(id) && !id.endsWith('-');
}

export function RecoveryPanel(props: { id: string; backups: BackupList; disabled: boolean; onChanged: () => void }) {
  const { id, backups } = props;
  /** Which form's pgs command and curl calls show (worked out from what is typed now). */
  const [shown, setShown] = useState<'restore' | 'branch' | 'export' | null>(null);
  const [exportName, setExportName] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState<string | null>(null);
  const [phase, setPhase] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [made, setMade] = useState<string | null>(null);
  const [target, setTarget] = useState<Target>('latest');
  const [backup, setBackup] = useState('');
  const [time, setTime] = useState('');
  const [asNew, setAsNew] = useState(true);
  const [asId, setAsId] = useState(`${id}-restored`.slice(0, 40));
  const [confirm, setConfirm] = useState('');
  const [branchId, setBranchId] = useState(`${id}-branch`.slice(0, 40));
  const [branchAt, setBranchAt] = useState('');
  const newest = [...backups.backups].reverse();
  const chosenBackup = backup || newest[0]?.id || '';

  const restoreRequest = (): { body: { backup?: string; time?: string; as?: string }; args: string[] } | string => {
    const body: { backup?: string; time?: string; as?: string } = {};
    const args: string[] = [];
    if (target === 'backup') {
      if (!chosenBackup) return 'there is no backup to restore';
      body.backup = chosenBackup;
      args.push(`--backup ${chosenBackup}`);
    } else if (target === 'time') {
      if (time.trim() === '') return 'write the time to restore to, such as 2026-11-30 14:01:59';
      body.time = time.trim();
      args.push(`--time ${shellQuote(time.trim())}`);
    }
    if (asNew) {
      if (!validId(asId)) return 'the new tenant\'s id: a lower-case letter, then letters, digits and -, at most 40';
      body.as = asId;
      args.push(`--as ${asId}`);
    }
    return { body, args };
  };
  const restoreEq = (): Equivalent | null => {
    const r = restoreRequest();
    return typeof r === 'string' ? null : equivalent(['pgs restore', id, ...r.args].join(' '), 'POST', `/v1/tenants/${id}/restore`, r.body);
  };
  const branchBody = () => ({ id: branchId, ...(branchAt.trim() ? { at: branchAt.trim() } : {}) });
  const branchEq = () => equivalent(`pgs branch ${id} ${branchId}${branchAt.trim() ? ` --at ${shellQuote(branchAt.trim())}` : ''}`, 'POST', `/v1/tenants/${id}/branch`, branchBody());
  const exportEq = (name = '<name from the answer>'): Equivalent => ({
    ...equivalent(`pgs export ${id}`, 'POST', `/v1/tenants/${id}/export`),
    then: [curl('GET', `/v1/exports/${name}`, undefined, name), curl('DELETE', `/v1/exports/${name}`)],
  });
  const eq = shown === 'restore' ? restoreEq() : shown === 'branch' ? branchEq() : shown === 'export' ? exportEq(exportName) : null;

  const run = async (label: string, kind: NonNullable<typeof shown>, work: () => Promise<string>) => {
    setShown(kind);
    setBusy(label);
    setPhase(null);
    setError(null);
    setNotice(null);
    setMade(null);
    try {
      setNotice(await work());
      props.onChanged();
    } catch (err) {
      setError(`${label}: ${(err as Error).message}`);
    } finally {
      setBusy(null);
      setPhase(null);
    }
  };
  const off = props.disabled || busy !== null;
  const inPlaceConfirmed = asNew || confirm === id;

  return (
    <div class="panel recovery">
      <h2>Restore, branch, export</h2>

      <form class="recovery-form" aria-label="Restore" onFocusIn={() => setShown('restore')} onSubmit={(e) => {
        e.preventDefault();
        const r = restoreRequest();
        if (typeof r === 'string') return setError(`Restore: ${r}`);
        if (!inPlaceConfirmed) return setError(`Restore: type ${id} to replace its data`);
        void run('Restore', 'restore', async () => {
          const t = await operation<Tenant>('POST', `/v1/tenants/${id}/restore`, r.body, setPhase);
          setConfirm('');
          if (r.body.as) {
            setMade(r.body.as);
            return `Restored ${id} as ${t.id} (${t.state})`;
          }
          return `Restored ${id} in place (${t.state}); the state before is kept as a backup`;
        });
      }}>
        <h3>Restore</h3>
        <div class="field">
          <label for="restore-target">To</label>
          <select id="restore-target" value={target} onChange={(e) => setTarget((e.target as HTMLSelectElement).value as Target)}>
            <option value="latest">the latest point</option>
            <option value="backup" disabled={newest.length === 0}>the end of a backup</option>
            <option value="time">a point in time</option>
          </select>
        </div>
        {target === 'backup' ? (
          <div class="field">
            <label for="restore-backup">Backup</label>
            <select id="restore-backup" value={chosenBackup} onChange={(e) => setBackup((e.target as HTMLSelectElement).value)}>
              {newest.map((b) => <option key={b.id} value={b.id}>{b.id} ({new Date(b.finishedAt).toLocaleString()})</option>)}
            </select>
          </div>
        ) : null}
        {target === 'time' ? (
          <div class="field">
            <label for="restore-time">Time</label>
            <input id="restore-time" value={time} placeholder="2026-11-30 14:01:59" aria-describedby="restore-time-help" onInput={(e) => setTime((e.target as HTMLInputElement).value)} />
            <span id="restore-time-help" class="muted">local time of the daemon, or with Z or an offset</span>
          </div>
        ) : null}
        <div class="field">
          <label for="restore-where">Where</label>
          <select id="restore-where" value={asNew ? 'as' : 'in-place'} onChange={(e) => setAsNew((e.target as HTMLSelectElement).value === 'as')}>
            <option value="as">as a new tenant</option>
            <option value="in-place">in place (replaces {id}'s data)</option>
          </select>
        </div>
        {asNew ? (
          <div class="field">
            <label for="restore-as">New tenant id</label>
            <input id="restore-as" value={asId} autocomplete="off" onInput={(e) => setAsId((e.target as HTMLInputElement).value)} />
          </div>
        ) : (
          <div class="field">
            <label for="restore-confirm">Type {id} to replace its data</label>
            <input id="restore-confirm" value={confirm} autocomplete="off" aria-describedby="restore-confirm-help" onInput={(e) => setConfirm((e.target as HTMLInputElement).value)} />
            <span id="restore-confirm-help" class="muted">its sessions end; the state before is kept as a backup</span>
          </div>
        )}
        <button type="submit" class={asNew ? undefined : 'destructive'} disabled={off || !inPlaceConfirmed || backups.window === null}>{busy === 'Restore' ? 'Restoring…' : asNew ? 'Restore as new tenant' : `Restore ${id} in place`}</button>
      </form>

      <form class="recovery-form" aria-label="Branch" onFocusIn={() => setShown('branch')} onSubmit={(e) => {
        e.preventDefault();
        if (!validId(branchId)) return setError('Branch: the new tenant\'s id: a lower-case letter, then letters, digits and -, at most 40');
        const body = branchBody();
        void run('Branch', 'branch', async () => {
          const t = await operation<Tenant>('POST', `/v1/tenants/${id}/branch`, body, setPhase);
          setMade(t.id);
          return `Branched ${id} as ${t.id} (${t.state})`;
        });
      }}>
        <h3>Branch</h3>
        <div class="field">
          <label for="branch-id">New tenant id</label>
          <input id="branch-id" value={branchId} autocomplete="off" onInput={(e) => setBranchId((e.target as HTMLInputElement).value)} />
        </div>
        <div class="field">
          <label for="branch-at">As it was at</label>
          <input id="branch-at" value={branchAt} placeholder="now" aria-describedby="branch-at-help" onInput={(e) => setBranchAt((e.target as HTMLInputElement).value)} />
          <span id="branch-at-help" class="muted">empty: its data now</span>
        </div>
        <button type="submit" disabled={off}>{busy === 'Branch' ? 'Branching…' : 'Branch'}</button>
      </form>

      <div class="recovery-form" role="group" aria-label="Export">
        <h3>Export</h3>
        <p class="muted">One checksummed file (a fresh backup and the settings) to import on another host with <code>pgs import</code>. Passwords are inside as SCRAM verifiers: guard it like the data.</p>
        <button type="button" disabled={off} onFocus={() => setShown('export')} onMouseEnter={() => setShown('export')} onClick={() => run('Export', 'export', async () => {
          const made = await operation<Export>('POST', `/v1/tenants/${id}/export`, undefined, setPhase);
          setExportName(made.name);
          try {
            await download(made.download, made.name);
          } finally {
            await api('DELETE', made.download).catch(() => undefined);
          }
          return `Exported ${id} to ${made.name} (sha256 ${made.sha256})`;
        })}>{busy === 'Export' ? 'Exporting…' : 'Export and download'}</button>
      </div>

      {busy && phase ? <p class="muted" role="status">{busy}: {phase}</p> : null}
      <Notice text={notice} />
      {made ? <p><a href={`#/tenants/${made}`}>Open {made}</a></p> : null}
      <ErrorLine error={error} />
      <Equivalents title="This action" eq={eq} />
    </div>
  );
}
