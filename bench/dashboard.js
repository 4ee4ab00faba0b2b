#!/usr/bin/env node
// bench/dashboard: the dashboard with a fleet. In a fresh PGS_HOME it makes
// --tenants tenants (through the API, autosuspend 30s so that most end up
// suspended, as on a real host), then opens the page in Debian's Chromium
// (playwright-core) and times, per page load (median of --loads):
//   first contentful paint of the overview, and the overview with every card
//   and chart drawn from the daemon's answers (the page is usable then);
//   the tenants table with 1,000 tenants: first rows drawn, and a filter
//   keystroke to the table redrawn;
// and the size of the shipped assets (raw and gzip) from dist/web.
// Usage: npm run build && node bench/dashboard.js [--tenants 1000] [--loads 5]
/* global sessionStorage, performance -- functions given to page.evaluate run in the browser */
import { readdirSync, statSync } from 'node:fs';
import http from 'node:http';
import { cpus, totalmem } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { benchHome, quantile } from './lib.js';

const { values } = parseArgs({ options: { tenants: { type: 'string', default: '1000' }, loads: { type: 'string', default: '5' } } });
const fleet = Number(values.tenants);
const loads = Number(values.loads);
const bench = benchHome();
const pgs = (...args) => bench.pgs(...args).stdout;
const median = (xs) => quantile(xs, 0.5);

function post(address, token, urlPath, body) {
  const [host, port] = address.split(':');
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port: Number(port), method: 'POST', path: urlPath, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, (res) => {
      res.resume();
      res.on('end', () => ((res.statusCode ?? 500) >= 300 ? reject(new Error(`${urlPath}: ${res.statusCode}`)) : resolve()));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

let browser;
try {
  pgs('setup', '--port', '55998', '--api-listen', '127.0.0.1:0');
  pgs('start');
  const address = JSON.parse(pgs('status', '--json')).api;
  const token = JSON.parse(pgs('token', 'create', 'bench', '--scope', 'admin', '--json')).token;
  const madeAt = Date.now();
  for (let i = 0; i < fleet; i += 2) {
    await Promise.all([i, i + 1].filter((n) => n < fleet).map((n) => post(address, token, '/v1/tenants', { id: `t${String(n).padStart(4, '0')}`, autosuspend: 30 })));
  }
  const fleetSeconds = (Date.now() - madeAt) / 1000;
  await sleep(40_000); // the idle ones suspend; a few history samples exist

  browser = await chromium.launch({
    executablePath: process.env.PGS_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const base = `http://${address}`;
  const fcp = [];
  const overview = [];
  const tableFirst = [];
  const filterMs = [];
  for (let i = 0; i < loads; i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-US' });
    // Logged in (the token and who it is, as the page keeps them after a log-in): each load is a return to the page.
    await context.addInitScript((t) => {
      sessionStorage.setItem('pgs.token', t);
      sessionStorage.setItem('pgs.who', JSON.stringify({ kind: 'token', name: 'bench', scope: 'admin' }));
    }, token);
    const page = await context.newPage();
    page.setDefaultTimeout(120_000);
    const started = Date.now();
    await page.goto(`${base}/`);
    await page.locator('.card', { hasText: 'Tenants' }).getByText(fleet.toLocaleString('en-US'), { exact: true }).waitFor();
    await page.locator('figure[data-points]').nth(2).waitFor();
    overview.push(Date.now() - started);
    fcp.push(await page.evaluate(() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN));

    const listStarted = Date.now();
    await page.goto(`${base}/#/tenants`);
    await page.getByText(`${fleet} of ${fleet} tenants`).waitFor();
    await page.getByRole('link', { name: 't0000', exact: true }).waitFor();
    tableFirst.push(Date.now() - listStarted);
    const filterStarted = await page.evaluate(() => performance.now());
    await page.getByLabel('Filter').fill(`t${String(fleet - 1).padStart(4, '0')}`);
    await page.getByText(`1 of ${fleet} tenants`).waitFor();
    filterMs.push((await page.evaluate(() => performance.now())) - filterStarted);
    await context.close();
  }

  const dir = path.join(bench.root, 'dist', 'web');
  const files = [];
  const walk = (sub) => {
    for (const name of readdirSync(path.join(dir, sub))) {
      const rel = path.join(sub, name);
      if (statSync(path.join(dir, rel)).isDirectory()) walk(rel);
      else if (!rel.endsWith('.gz')) files.push(rel);
    }
  };
  walk('');
  const raw = files.reduce((n, f) => n + statSync(path.join(dir, f)).size, 0);
  const gz = files.reduce((n, f) => n + statSync(path.join(dir, `${f}.gz`)).size, 0);

  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, ${browser.version()}`);
  console.log(`fleet: ${fleet} tenants made in ${fleetSeconds.toFixed(0)} s; ${JSON.parse(pgs('status', '--json')).running} servers running when measured`);
  console.log(`overview: first contentful paint median ${median(fcp).toFixed(0)} ms (${fcp.map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`overview: every card and chart drawn from the API, from navigation: median ${median(overview)} ms (${overview.join(', ')})`);
  console.log(`tenants table with ${fleet}: first page of rows drawn, from navigation: median ${median(tableFirst)} ms (${tableFirst.join(', ')})`);
  console.log(`tenants table: filter typed to table redrawn: median ${median(filterMs).toFixed(0)} ms (${filterMs.map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`assets: ${files.length} files, ${(raw / 1024).toFixed(1)} KiB, ${(gz / 1024).toFixed(1)} KiB gzipped (${files.join(', ')})`);
} finally {
  await browser?.close();
  bench.remove();
}
