/**
 * Guessing API tokens over TCP never keeps a valid token out: wrong tokens
 * are limited per address, per network (loopback is one) and per token
 * prefix, and only further wrong tokens get 429.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { PgsHome } from '../helpers/pgs.js';

interface Answer { status: number; retryAfter: string | undefined; body: { code?: string; detail?: string } }

function get(address: string, token: string, localAddress?: string): Promise<Answer> {
  const host = address.slice(0, address.lastIndexOf(':'));
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method: 'GET', path: '/v1/status', headers: { authorization: `Bearer ${token}` }, ...(localAddress ? { localAddress } : {}), agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (s: string) => { text += s; });
      res.on('end', () => {
        const retry = res.headers['retry-after'];
        resolve({ status: res.statusCode ?? 0, retryAfter: Array.isArray(retry) ? retry[0] : retry, body: JSON.parse(text) as Answer['body'] });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** A daemon with its API on 127.0.0.1 (any port) and an admin token. */
async function daemon(): Promise<{ pgs: PgsHome; address: string; admin: string }> {
  const pgs = await PgsHome.make();
  await pgs.setup();
  await pgs.ok(['start']);
  const status = await pgs.json<{ api: string | null }>(['status']);
  assert.ok(status.api, 'the API listens on TCP');
  const admin = (await pgs.json<{ token: string }>(['token', 'create', 'root-admin', '--scope', 'admin'])).token;
  return { pgs, address: status.api, admin };
}

describe('token guessing from one address never locks a valid token out', () => {
  let d: Awaited<ReturnType<typeof daemon>>;
  before(async () => { d = await daemon(); });
  after(async () => { await d?.pgs.destroy(); });

  it('ten different wrong tokens, then the valid admin token is served at once; the eleventh wrong token waits', async () => {
    for (let i = 0; i < 10; i++) assert.equal((await get(d.address, `pgs_guess${String(i).padStart(3, '0')}xxxxxxxx`)).status, 401);
    const valid = await get(d.address, d.admin);
    assert.equal(valid.status, 200, JSON.stringify(valid.body));
    const eleventh = await get(d.address, 'pgs_guess010xxxxxxxx');
    assert.equal(eleventh.status, 429);
    assert.equal(eleventh.body.code, 'rate_limited');
    assert.ok(Number(eleventh.retryAfter) >= 1 && Number(eleventh.retryAfter) <= 60, eleventh.retryAfter);
    // The guesser keeps waiting; the valid token keeps being served, from any local address.
    assert.equal((await get(d.address, 'pgs_guess011xxxxxxxx')).status, 429);
    assert.equal((await get(d.address, d.admin)).status, 200);
    assert.equal((await get(d.address, d.admin, '127.0.0.7')).status, 200);
  });
});

describe('hopping across loopback addresses does not get round the limit', () => {
  let d: Awaited<ReturnType<typeof daemon>>;
  before(async () => { d = await daemon(); });
  after(async () => { await d?.pgs.destroy(); });

  it('wrong tokens from 127.0.0.2 to 127.0.0.12 are limited as one network; a valid token from it is served', async () => {
    const answers: number[] = [];
    for (let i = 2; i <= 12; i++) answers.push((await get(d.address, `pgs_hop${String(i).padStart(5, '0')}yyyyyyyy`, `127.0.0.${i}`)).status);
    assert.deepEqual(answers, [...new Array<number>(10).fill(401), 429]);
    // Another /24 of loopback is the same host.
    const other = await get(d.address, 'pgs_hop99999yyyyyyyy', '127.1.2.3');
    assert.equal(other.status, 429);
    assert.match(other.body.detail ?? '', /too many failed authentications from loopback: try again in \d+ s/);
    assert.equal((await get(d.address, d.admin, '127.0.0.12')).status, 200);
    assert.equal((await get(d.address, d.admin, '127.1.2.3')).status, 200);
  });
});
