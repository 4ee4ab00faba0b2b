import assert from 'node:assert/strict';
import { promises as fs, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { PgsHome, ROOT, psql, waitFor } from '../helpers/pgs.js';

/**
 * The dashboard end to end in a real browser: Debian's Chromium driven by
 * playwright-core, against a real daemon, real tenants and psql. Every page
 * is checked with axe-core (light and dark) and saved as a screenshot in
 * test-results/dashboard/.
 */
const CHROMIUM = process.env.PGS_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = path.join(ROOT, 'test-results', 'dashboard');
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** The tenants' host names resolve nowhere here: libpq connects to loopback and still sends the name (SNI). */
const LOOPBACK = { PGHOSTADDR: '127.0.0.1' };

interface Created { id: string; hostname: string; password: string; url: string }
interface Listed { id: string; state: string; wakes: number; access: string }

describe('dashboard in a browser', () => {
  let pgs: PgsHome;
  let base: string;
  let adminToken: string;
  let readToken: string;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  /** Console errors, page errors, failed requests and error answers nobody expected. */
  const problems: string[] = [];
  /** Answers with this status for this path ('*': any) are the test's own doing (a wrong or revoked token). */
  let expected: { status: number; path: string } | null = null;

  const watch = (p: Page) => {
    p.on('console', (message) => {
      if (message.type() !== 'error') return;
      if (expected && message.text().includes(`status of ${expected.status}`)) return;
      problems.push(`console: ${message.text()}`);
    });
    p.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    p.on('requestfailed', (request) => {
      // A page that closes or reloads cuts what it was asking (the event stream, a poll); nothing else may fail.
      if (/ERR_ABORTED/.test(request.failure()?.errorText ?? '')) return;
      problems.push(`request failed: ${request.method()} ${request.url()} ${request.failure()?.errorText ?? ''}`);
    });
    p.on('response', (response) => {
      const url = new URL(response.url());
      if (response.status() < 400) return;
      if (expected && expected.status === response.status() && (expected.path === '*' || url.pathname === expected.path)) return;
      const what = `answer ${response.status()}: ${response.request().method()} ${url.pathname}${url.search}`;
      problems.push(what);
      // The daemon's reason, beside it (read after the fact).
      void response.text().then((text) => problems.push(`${what}: ${text.slice(0, 300)}`), () => undefined);
    });
  };

  const shot = async (name: string, p: Page = page) => {
    await fs.mkdir(SHOTS, { recursive: true });
    await p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  };

  /** axe-core on the page as it is: no violations at all. */
  const accessible = async (what: string, p: Page = page) => {
    // Evaluated by the test driver, not by the page: the page's own policy allows no inline script.
    if (!(await p.evaluate(() => 'axe' in window))) await p.evaluate(AXE);
    const violations = await p.evaluate(async () => {
      const result = await (window as unknown as { axe: { run(): Promise<{ violations: { id: string; impact: string; nodes: { target: string[] }[] }[] }> } }).axe.run();
      return result.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
    });
    assert.deepEqual(violations, [], `${what}: accessibility violations`);
  };

  const list = async () => pgs.json<Listed[]>(['list']);
  const connect = async (created: Pick<Created, 'id' | 'hostname'>, password: string) => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: created.id, password, ssl: { servername: created.hostname, rejectUnauthorized: false } });
    await client.connect();
    return client;
  };
  let port: number;
  let shop: Pick<Created, 'id' | 'hostname' | 'url'> & { password: string };

  before(async () => {
    pgs = await PgsHome.make({ PGS_HISTORY_INTERVAL: '1s' });
    port = await pgs.setup();
    await pgs.json<Created>(['create', 'existing', '--autosuspend', 'off']);
    adminToken = (await pgs.json<{ token: string }>(['token', 'create', 'web', '--scope', 'admin'])).token;
    readToken = (await pgs.json<{ token: string }>(['token', 'create', 'viewer', '--scope', 'read'])).token;
    const status = await pgs.api<{ api: string }>('GET', '/v1/status');
    base = `http://${status.body.api}`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'light' });
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
    page = await context.newPage();
    watch(page);
  });

  after(async () => {
    await browser?.close();
    await pgs.destroy();
  });

  it('serves the page with a strict content security policy and small assets', async () => {
    const res = await fetch(`${base}/`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'none'; script-src 'self'/);
    const html = await res.text();
    const script = /src="(\/assets\/app\.js\?v=[0-9a-f]+)"/.exec(html)?.[1];
    assert.ok(script, html);
    const js = await fetch(`${base}${script}`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(js.status, 200);
    assert.equal(js.headers.get('content-encoding'), 'gzip');
    assert.equal((await fetch(`${base}/assets/..%2Fpackage.json`)).status, 404);
    // The API stays closed: the page is public, the data is not.
    assert.equal((await fetch(`${base}/v1/tenants`)).status, 401);
  });

  it('refuses a wrong token and logs in with a right one, kept in session storage only', async () => {
    await page.goto(`${base}/`);
    await page.getByLabel('API token').fill('pgs_not_a_real_token');
    expected = { status: 401, path: '/v1/whoami' };
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').filter({ hasText: 'not valid' }).waitFor();
    expected = null;
    assert.equal(await page.evaluate(() => sessionStorage.getItem('pgs.token')), null);
    await shot('login-refused');
    await accessible('login');
    await page.getByLabel('API token').fill(adminToken);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('pgs.token')), adminToken);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    // A reload keeps the session (same tab).
    await page.reload();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await page.getByText('Servers running / budget').waitFor();
    const disk = await page.locator('.card', { hasText: 'Disk free' }).locator('.card-value').innerText();
    assert.match(disk, /^[\d.]+ (KiB|MiB|GiB|TiB)$/, 'the data root\'s free disk');
    await shot('overview');
    await accessible('overview');
  });

  it('creates a tenant from the page and lists it', async () => {
    await page.goto(`${base}/#/tenants`);
    await page.getByRole('link', { name: 'existing', exact: true }).waitFor();
    await page.getByText('New tenant').click();
    await page.getByLabel('Id').fill('webshop');
    await page.getByLabel('Autosuspend').fill('off');
    await page.getByText('pgs create webshop --autosuspend off').waitFor();
    await page.getByRole('button', { name: 'Create' }).click();
    const secret = page.locator('.secret');
    await secret.getByText('Tenant webshop is ready').waitFor({ timeout: 60_000 });
    const password = await secret.locator('code[data-copy="password"]').innerText();
    const url = await secret.locator('code[data-copy="URI"]').innerText();
    assert.match(password, /^\S{32}$/);
    assert.match(url, /sslmode=require/);
    await page.getByRole('link', { name: 'webshop', exact: true }).waitFor();
    const listed = (await list()).find((t) => t.id === 'webshop');
    assert.ok(listed, 'the tenant exists');
    const hostname = (await pgs.json<{ id: string; hostname: string }[]>(['list'])).find((t) => t.id === 'webshop')?.hostname ?? '';
    // From here on the password comes from PGPASSWORD, not from the URI shown at creation.
    shop = { id: 'webshop', hostname, url: `postgresql://postgres@${hostname}:${port}/webshop?sslmode=require`, password };
    const ok = await psql(url, 'SELECT 1', password, LOOPBACK);
    assert.equal(ok.code, 0, ok.stderr);
    await shot('tenants');
    await accessible('tenants');
    // Several at once: select one, turn its access off and on.
    await page.getByLabel('Select existing').check();
    await page.getByRole('button', { name: 'Disable access' }).click();
    await page.getByText('Disable access: 1 of 1 done').waitFor();
    await page.getByText('pgs disable-access existing', { exact: true }).waitFor();
    assert.equal((await list()).find((t) => t.id === 'existing')?.access, 'disabled');
    await page.getByRole('button', { name: 'Enable access' }).click();
    await page.getByText('Enable access: 1 of 1 done').waitFor();
    assert.equal((await list()).find((t) => t.id === 'existing')?.access, 'enabled');
    await page.getByLabel('Select existing').uncheck();
  });

  it('turns access off and on: psql is refused, then accepted', async () => {
    await page.getByRole('link', { name: 'webshop', exact: true }).click();
    await page.getByRole('heading', { name: /webshop/ }).waitFor();
    await page.getByRole('button', { name: 'Disable access' }).click();
    await page.getByRole('button', { name: 'Enable access' }).waitFor();
    await page.getByText('pgs disable-access webshop').waitFor();
    assert.equal((await list()).find((t) => t.id === 'webshop')?.access, 'disabled');
    const refused = await psql(shop.url, 'SELECT 1', shop.password, LOOPBACK);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /disabled|not accepting|refused/i);
    await page.getByRole('button', { name: 'Enable access' }).click();
    await page.getByRole('button', { name: 'Disable access' }).waitFor();
    const accepted = await psql(shop.url, 'SELECT 1', shop.password, LOOPBACK);
    assert.equal(accepted.code, 0, accepted.stderr);
  });

  it('rotates the password: the new one works, the old one does not', async () => {
    await page.getByRole('button', { name: 'Rotate password' }).click();
    const fresh = await page.locator('code[data-copy="new password"]').innerText();
    assert.match(fresh, /^\S{32}$/);
    assert.notEqual(fresh, shop.password);
    await page.getByText(`pgs passwd webshop`).waitFor();
    const good = await psql(shop.url, 'SELECT 1', fresh, LOOPBACK);
    assert.equal(good.code, 0, good.stderr);
    const old = await psql(shop.url, 'SELECT 1', shop.password, LOOPBACK);
    assert.notEqual(old.code, 0);
    assert.match(old.stderr, /password authentication failed/);
    shop.password = fresh;
  });

  it('draws the transactions it saw: the plotted series has points and a peak', async () => {
    const client = await connect(shop, shop.password);
    try {
      const tps = page.locator('figure', { hasText: 'Transactions per second' });
      await waitFor('the TPS chart to plot traffic', async () => {
        for (let i = 0; i < 200; i++) await client.query('SELECT 1');
        const summary = await tps.locator('.chart-summary').innerText();
        const peak = Number(/peak ([\d,.]+)/.exec(summary)?.[1]?.replace(/,/g, '') ?? '0');
        return peak >= 10;
      }, 30_000);
      const points = (await tps.getAttribute('data-points')) ?? '';
      assert.ok(Number(points) >= 1, `points plotted: ${points}`);
      // uPlot drew it: the plotting canvas exists with the size of its box.
      const canvas = await tps.locator('canvas').boundingBox();
      assert.ok(canvas && canvas.width > 100 && canvas.height > 100);
      const connections = page.locator('figure', { hasText: 'Connections' }).first();
      await waitFor('the connections chart to show the client', async () => /peak [1-9]/.test(await connections.locator('.chart-summary').innerText()), 15_000);
      // Some seconds of traffic for the picture (samples are 1 s apart here).
      await waitFor('15 samples of traffic', async () => {
        for (let i = 0; i < 100; i++) await client.query('SELECT 1');
        return Number(await tps.getAttribute('data-points')) >= 15;
      }, 60_000);
      // Titles name what is drawn; the sentences read as such (no uPlot legend of dashes).
      assert.deepEqual(await page.locator('figure.chart figcaption').allInnerTexts(), ['Connections', 'Transactions per second']);
      assert.equal(await page.locator('.u-legend').count(), 0);
      assert.match(await connections.locator('.chart-summary').innerText(), /^Now (1 connection|\d+ connections), peak [1-9]\d* since \d\d?:\d\d:\d\d( [AP]M)?\. \d+ wakes? \(solid lines?\), \d+ suspends? \(dashed\)\.$/);
      assert.match(await tps.locator('.chart-summary').innerText(), /^Now [\d,.]+ tx\/s, peak [\d,.]+ since /);
      // The point under the pointer, as a sentence.
      await connections.locator('.plot').scrollIntoViewIfNeeded();
      // Moved at each try: a poll's new data can redraw the chart between the move and the read.
      let nudge = 0;
      let readout = '';
      await waitFor('the readout under the pointer', async () => {
        const plotBox = await connections.locator('.plot').boundingBox(); // where it is in the viewport now
        assert.ok(plotBox);
        await page.mouse.move(plotBox.x + plotBox.width * (0.8 - (nudge++ % 5) * 0.02), plotBox.y + plotBox.height / 2);
        readout = await connections.locator('.chart-readout').innerText();
        return /^At \d\d?:\d\d:\d\d( [AP]M)?: (1 connection|[\d,.]+ connections)$/.test(readout);
      }, 10_000).catch((err: Error) => assert.fail(`${err.message}; it reads ${JSON.stringify(readout)}`));
      // The time axis runs from webshop's first sample (made after the daemon started), not over a whole hour.
      const history = (await pgs.api<{ times: number[]; tenants: Record<string, { state: (string | null)[] }> }>('GET', '/v1/history?range=1h&tenant=webshop')).body;
      const first = history.times[history.tenants.webshop?.state.findIndex((state) => state !== null) ?? -1];
      assert.ok(first !== undefined, JSON.stringify(history).slice(0, 200));
      const from = Number(await connections.getAttribute('data-from'));
      const to = Number(await connections.getAttribute('data-to'));
      assert.ok(Math.abs(from - first) <= 1, `the axis starts at ${from}, the first sample is ${first}`);
      assert.ok(to - from < 3_600_000 / 2, `the axis spans ${(to - from) / 1000} s of a fresh daemon, not an hour`);
    } finally {
      await client.end();
    }
    await page.mouse.move(0, 0);
    await shot('tenant');
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: path.join(SHOTS, 'tenant-top.png') }); // the README's picture
    await accessible('tenant page');
  });

  it('takes a backup from the page and lists it with the restorable window', async () => {
    const client = await connect(shop, shop.password);
    await client.query('CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)');
    await client.end();
    await page.getByRole('button', { name: 'Back up now' }).click();
    await page.getByText('Back up now: done').waitFor({ timeout: 60_000 });
    await page.getByText(/^Restorable from /).waitFor();
    await page.getByText('pgs backup webshop', { exact: true }).waitFor();
    const listed = await pgs.json<{ backups: { id: string; reason: string }[] }>(['backups', 'webshop']);
    const manual = listed.backups.find((b) => b.reason === 'manual');
    assert.ok(manual, JSON.stringify(listed));
    await page.getByRole('cell', { name: manual.id }).waitFor();
  });

  it('shows a statement the tenant ran in its Queries panel, ordered by calls, and resets them', async () => {
    const client = await connect(shop, shop.password);
    try {
      for (let i = 0; i < 3; i++) await client.query('SELECT $1::text AS dashboard_marker', [String(i)]);
    } finally {
      await client.end();
    }
    const panel = page.locator('.panel.queries');
    await panel.getByRole('button', { name: 'Calls' }).click();
    assert.equal(await panel.getByRole('button', { name: 'Calls' }).getAttribute('aria-pressed'), 'true');
    const row = panel.getByRole('row', { name: /dashboard_marker/ });
    await row.waitFor({ timeout: 30_000 });
    assert.match(await row.locator('td').first().innerText(), /SELECT \$1::text AS dashboard_marker/);
    assert.equal(await row.locator('td').nth(1).innerText(), '3');
    await accessible('tenant page with queries');
    await panel.screenshot({ path: path.join(SHOTS, 'tenant-queries.png') });
    await panel.getByRole('button', { name: 'Reset statistics' }).click();
    await panel.getByText('Query statistics reset.').waitFor();
    await row.waitFor({ state: 'detached' });
    await panel.getByText(`pgs config webshop --reset-queries`, { exact: true }).waitFor();
  });

  it('shows the connection strings pgs url prints, and pgs restart for Restart', async () => {
    const psqlLine = (await pgs.ok(['url', 'webshop', '--format', 'psql'])).trim();
    assert.match(psqlLine, /hostaddr=127\.0\.0\.1/, 'the names resolve nowhere here, so pgs url adds hostaddr');
    assert.equal(await page.locator('code[data-copy="psql"]').innerText(), psqlLine);
    assert.equal(await page.locator('code[data-copy="URI"]').innerText(), (await pgs.ok(['url', 'webshop'])).trim());
    const connected = await psql(psqlLine, 'SELECT 1', shop.password); // no PGHOSTADDR: the line connects as shown
    assert.equal(connected.code, 0, connected.stderr);
    await page.getByRole('button', { name: 'Restart' }).hover();
    await page.locator('code[data-copy="pgs"]', { hasText: 'pgs restart webshop' }).waitFor();
    const before = (await pgs.json<{ id: string; pid: number }[]>(['list'])).find((t) => t.id === 'webshop')?.pid;
    assert.equal((await pgs.ok(['restart', 'webshop'])).trim(), 'Restarted webshop');
    const after = (await pgs.json<{ id: string; pid: number; state: string }[]>(['list'])).find((t) => t.id === 'webshop');
    assert.equal(after?.state, 'running');
    assert.notEqual(after?.pid, before, 'a new postmaster');
  });

  it('restores as a new tenant, branches and exports from the page', async () => {
    const client = await connect(shop, shop.password);
    await client.query('INSERT INTO orders VALUES (2)'); // after the backup: only what reaches now has it
    await client.end();
    const count = async (id: string) => {
      const hostname = (await pgs.json<{ id: string; hostname: string }[]>(['list'])).find((t) => t.id === id)?.hostname;
      assert.ok(hostname, `${id} is listed`);
      const c = await connect({ id, hostname }, shop.password); // same roles and passwords
      try {
        return Number((await c.query('SELECT count(*) AS n FROM orders')).rows[0].n);
      } finally {
        await c.end();
      }
    };
    const manual = (await pgs.json<{ backups: { id: string; reason: string }[] }>(['backups', 'webshop'])).backups.find((b) => b.reason === 'manual');
    assert.ok(manual);
    const restore = page.getByRole('form', { name: 'Restore' });
    const shown = page.locator('.recovery code[data-copy="pgs"]');

    // In place replaces the data: only once the id is typed.
    await restore.getByLabel('To').selectOption('backup');
    await restore.getByLabel('Backup').selectOption(manual.id);
    await restore.getByLabel('Where').selectOption('in-place');
    const inPlace = restore.getByRole('button', { name: 'Restore webshop in place' });
    assert.equal(await inPlace.isDisabled(), true);
    await restore.getByLabel('Type webshop to replace its data').fill('webshop');
    assert.equal(await inPlace.isDisabled(), false);
    await page.locator('.recovery code[data-copy="pgs"]', { hasText: `pgs restore webshop --backup ${manual.id}` }).waitFor();
    assert.equal(await shown.innerText(), `pgs restore webshop --backup ${manual.id}`);

    // --as: a new tenant with the backup's data; webshop untouched.
    await restore.getByLabel('Where').selectOption('as');
    await restore.getByLabel('New tenant id').fill('webshop-old');
    await restore.getByLabel('New tenant id').focus();
    await page.locator('.recovery code[data-copy="pgs"]', { hasText: `pgs restore webshop --backup ${manual.id} --as webshop-old` }).waitFor();
    const restoreCurl = await page.locator('.recovery code[data-copy="curl"]').innerText();
    assert.ok(restoreCurl.startsWith('curl -X POST ') && restoreCurl.includes(`-d '{"backup":"${manual.id}","as":"webshop-old"}'`) && restoreCurl.endsWith('/v1/tenants/webshop/restore'), restoreCurl);
    await restore.getByRole('button', { name: 'Restore as new tenant' }).click();
    await page.getByText(/^Restored webshop as webshop-old \(running\)$/).waitFor({ timeout: 120_000 });
    await page.getByRole('link', { name: 'Open webshop-old' }).waitFor();
    assert.equal(await count('webshop-old'), 1);
    assert.equal(await count('webshop'), 2);

    // Branch: webshop's data now.
    const branch = page.getByRole('form', { name: 'Branch' });
    await branch.getByLabel('New tenant id').fill('webshop-dev');
    await branch.getByLabel('New tenant id').focus();
    await page.locator('.recovery code[data-copy="pgs"]', { hasText: 'pgs branch webshop webshop-dev' }).waitFor();
    await branch.getByRole('button', { name: 'Branch' }).click();
    await page.getByText(/^Branched webshop as webshop-dev \(running\)$/).waitFor({ timeout: 120_000 });
    assert.equal(await count('webshop-dev'), 2);

    // Export: a download that pgs import takes.
    const exportButton = page.getByRole('button', { name: 'Export and download' });
    await exportButton.hover();
    await page.locator('.recovery code[data-copy="pgs"]', { hasText: 'pgs export webshop' }).waitFor();
    const downloading = page.waitForEvent('download', { timeout: 120_000 });
    await exportButton.click();
    const file = await downloading;
    await page.getByText(/^Exported webshop to \S+\.pgs \(sha256 [0-9a-f]{64}\)$/).waitFor({ timeout: 60_000 });
    const name = file.suggestedFilename();
    assert.match(name, /^webshop-.*\.pgs$/);
    assert.match(await page.locator('.recovery code[data-copy="then 1"]').innerText(), new RegExp(`^curl -o ${name.replace(/\./g, '\\.')} .*/v1/exports/${name.replace(/\./g, '\\.')}'?$`));
    const saved = path.join(await fs.mkdtemp(path.join(pgs.home, 'download-')), name);
    await file.saveAs(saved);
    await pgs.ok(['import', saved, '--as', 'webshop-copy']);
    assert.equal(await count('webshop-copy'), 2);
    // The daemon keeps no copy once downloaded.
    assert.equal((await pgs.api('GET', `/v1/exports/${name}`)).status, 404);
    await page.evaluate(() => window.scrollTo(0, 0));
  });

  it('keeps a suspended tenant suspended while its page polls', async () => {
    await pgs.json<Created>(['create', 'sleepy', '--autosuspend', '2s']);
    await waitFor('sleepy to be suspended', async () => (await list()).find((t) => t.id === 'sleepy')?.state === 'suspended', 30_000);
    const wakes = (await list()).find((t) => t.id === 'sleepy')?.wakes;
    await page.goto(`${base}/#/tenants/sleepy`);
    await page.locator('h1 .badge', { hasText: 'suspended' }).waitFor();
    const asked: string[] = [];
    const count = (r: { url(): string }) => { if (r.url().includes('sleepy')) asked.push(r.url()); };
    page.on('request', count);
    // Its polls (each sample interval, 1 s) must not wake it: wait for 20 of them, however long they take.
    await waitFor('20 polls of the suspended tenant\'s page', async () => asked.length >= 20, 60_000);
    page.off('request', count);
    assert.ok(asked.length >= 20, `the page kept asking (${asked.length} requests)`);
    const now = (await list()).find((t) => t.id === 'sleepy');
    assert.equal(now?.state, 'suspended');
    assert.equal(now?.wakes, wakes);
    await page.getByText(/^Not running now, peak [\d,.]+ tx\/s since /).waitFor();
    await shot('tenant-suspended');
  });

  it('is usable 360 px wide and in the dark theme', async () => {
    const narrow = await context.newPage();
    watch(narrow);
    await narrow.setViewportSize({ width: 360, height: 780 });
    await narrow.goto(`${base}/`);
    await narrow.evaluate((t) => sessionStorage.setItem('pgs.token', t), adminToken); // a new tab: log in again
    await narrow.goto(`${base}/#/tenants`);
    await narrow.reload();
    await narrow.getByRole('link', { name: 'webshop', exact: true }).waitFor();
    const overflow = await narrow.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(overflow <= 360, `the page is ${overflow} px wide at 360`);
    await shot('tenants-360', narrow);
    await narrow.close();
    const dark = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'dark' });
    const darkPage = await dark.newPage();
    watch(darkPage);
    await darkPage.goto(`${base}/`);
    await darkPage.evaluate((t) => sessionStorage.setItem('pgs.token', t), adminToken);
    for (const [hash, name, ready] of [['#/', 'overview-dark', 'Servers running / budget'], ['#/tenants', 'tenants-dark', 'webshop'], ['#/tenants/webshop', 'tenant-dark', 'Server log']] as const) {
      await darkPage.goto(`${base}/${hash}`);
      await darkPage.reload();
      await darkPage.getByText(ready, { exact: true }).first().waitFor();
      await shot(name, darkPage);
      await accessible(`${name}`, darkPage);
    }
    await dark.close();
  });

  it('a read token sees everything and can change nothing', async () => {
    const viewer = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const p = await viewer.newPage();
    watch(p);
    await p.goto(`${base}/`);
    await p.getByLabel('API token').fill(readToken);
    await p.getByRole('button', { name: 'Log in' }).click();
    await p.getByText('viewer · read').waitFor();
    await p.goto(`${base}/#/tenants/webshop`);
    await p.getByText('Server log').waitFor();
    assert.equal(await p.getByRole('button', { name: 'Stop' }).count(), 0);
    assert.equal(await p.getByRole('button', { name: /Delete/ }).count(), 0);
    await p.getByRole('heading', { name: 'Queries' }).waitFor();
    assert.equal(await p.getByRole('button', { name: 'Reset statistics' }).count(), 0);
    // Revoked: the next load draws from what it knew, checks the token again, and logs out with the daemon's reason.
    await pgs.ok(['token', 'revoke', 'viewer']);
    expected = { status: 401, path: '*' }; // every request of that load is refused until the page logs out
    await p.reload();
    await p.getByRole('alert').filter({ hasText: 'not valid' }).waitFor();
    await p.getByLabel('API token').waitFor();
    assert.equal(await p.evaluate(() => sessionStorage.getItem('pgs.token')), null);
    // Closed before 401s count as errors again: a request of that load may still be under way.
    await viewer.close();
    expected = null;
  });

  it('deletes a tenant only when its id is typed', async () => {
    await page.goto(`${base}/#/tenants/webshop`);
    const button = page.getByRole('button', { name: 'Delete webshop' });
    await button.waitFor();
    await page.getByLabel('Type webshop to delete it').fill('webshoq');
    assert.equal(await button.isDisabled(), true);
    await page.getByLabel('Type webshop to delete it').fill('webshop');
    await page.getByText('pgs remove webshop --yes').waitFor();
    await button.click();
    await page.getByText('Tenant webshop was deleted').waitFor({ timeout: 60_000 });
    assert.equal((await list()).some((t) => t.id === 'webshop'), false);
    await page.goto(`${base}/#/tenants`);
    await page.getByRole('link', { name: 'existing', exact: true }).waitFor();
    assert.equal(await page.getByRole('link', { name: 'webshop', exact: true }).count(), 0);
  });

  it('had no console errors, failed requests or error answers on any page', () => {
    assert.deepEqual(problems, []);
  });
});
