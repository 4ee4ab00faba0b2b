/**
 * Fair admission in the router of a real daemon (its defaults: 1,000 start-ups
 * at once, 64 per address): 1,000 idle TCP connections and 1,000 TLS
 * slow-loris connections (handshake done, start-up packet never finished)
 * from 127.0.1.x, each reopened as soon as the router closes it, do not keep
 * 50 clients from 127.0.0.1 out. Login times are printed, not asserted
 * (figures: bench/admission.js, docs/benchmarks.md).
 *
 * Needs about 2,100 file descriptors in this process and as many in the
 * daemon: `ulimit -n` of at least 8192 (checked first).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PgsHome, waitFor } from '../helpers/pgs.js';

interface Created { id: string; hostname: string; password: string }

const IDLE = 1_000;
const LORIS = 1_000;
/** Idle ones from 20 addresses (50 each: under the per-address limit), slow-loris ones from 10 (100 each: over it). */
const idleAddress = (i: number) => `127.0.1.${1 + (i % 20)}`;
const lorisAddress = (i: number) => `127.0.1.${101 + (i % 10)}`;
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]);
/** The first bytes of a start-up packet that says it is 200 bytes long. */
const PARTIAL_STARTUP = Buffer.from([0, 0, 0, 200, 0, 3, 0, 0, 0x75, 0x73]);

function openFiles(): number {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  return Number(line?.split(/\s+/)[3] ?? 0);
}

/** Keeps `count` connections made by `open` alive, opening another whenever one closes, until stopped. */
class Flood {
  private stopped = false;
  private readonly sockets = new Set<net.Socket>();
  opened = 0;
  closedByRouter = 0;
  constructor(private readonly count: number, private readonly open: (i: number) => net.Socket) {}

  start(): void {
    for (let i = 0; i < this.count; i++) this.keep(i);
  }

  private keep(i: number): void {
    if (this.stopped) return;
    const socket = this.open(i);
    this.opened++;
    this.sockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      this.sockets.delete(socket);
      if (this.stopped) return;
      this.closedByRouter++;
      setImmediate(() => this.keep(i));
    });
  }

  stop(): void {
    this.stopped = true;
    for (const socket of this.sockets) socket.destroy();
  }
}

describe('fair admission: floods of start-ups from 127.0.1.x keep no client of 127.0.0.1 out', () => {
  let pgs: PgsHome;
  let port: number;
  let tenant: Created;

  before(async () => {
    assert.ok(openFiles() >= 8192, `this test holds ~2,100 sockets here and as many in the daemon: raise ulimit -n to 8192 or more (it is ${openFiles()})`);
    pgs = await PgsHome.make({ PGS_RUNNING_SPARES: '0' });
    port = await pgs.setup();
    tenant = await pgs.json<Created>(['create', 'fair', '--max-connections', '100']);
  });
  after(async () => {
    await pgs?.destroy();
  });

  it('1,000 idle TCP and 1,000 TLS slow-loris connections, reopened as closed: all 50 logins from 127.0.0.1 succeed', async () => {
    const idle = new Flood(IDLE, (i) => net.connect({ port, host: '127.0.0.1', localAddress: idleAddress(i) }));
    let handshakes = 0;
    const loris = new Flood(LORIS, (i) => {
      const raw = net.connect({ port, host: '127.0.0.1', localAddress: lorisAddress(i) });
      raw.once('connect', () => raw.write(SSL_REQUEST));
      raw.once('data', (answer) => {
        if (answer[0] !== 0x53) return;
        const secure = tls.connect({ socket: raw, servername: tenant.hostname, rejectUnauthorized: false });
        secure.on('error', () => raw.destroy());
        secure.on('close', () => raw.destroy());
        secure.resume(); // reads the router's FATAL and its close, as a client would
        secure.once('secureConnect', () => {
          handshakes++;
          secure.write(PARTIAL_STARTUP); // and never the rest
        });
      });
      return raw;
    });
    const metrics = async () => (await pgs.api<string>('GET', '/metrics')).text;
    const value = (text: string, series: string) => Number(new RegExp(`^${series.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    // The slow-loris connections first, so that they hold the slots with TLS up; then the idle ones keep coming too.
    loris.start();
    try {
      await waitFor('the slow-loris connections to fill the start-up slots, TLS up', async () => handshakes >= 900 && value(await metrics(), 'pgs_router_startups_pending') >= 990, 30_000);
      idle.start();
      const logins: number[] = [];
      const failures: string[] = [];
      const login = async (): Promise<void> => {
        const began = performance.now();
        const client = new pg.Client({
          host: '127.0.0.1', port, user: 'postgres', database: 'fair', password: tenant.password,
          ssl: { servername: tenant.hostname, rejectUnauthorized: false }, connectionTimeoutMillis: 30_000,
        });
        client.on('error', () => undefined);
        try {
          await client.connect();
          logins.push(performance.now() - began);
          const { rows } = await client.query<{ one: number }>('select 1 as one');
          assert.equal(rows[0]?.one, 1);
        } catch (err) {
          failures.push((err as Error).message);
        } finally {
          await client.end().catch(() => undefined);
        }
      };
      // 50 clients, 10 at a time, a wave every 2 s: over 10 s of flood, through the handshake deadline's closes.
      for (let wave = 0; wave < 5; wave++) {
        const started = Date.now();
        await Promise.all(Array.from({ length: 10 }, () => login()));
        await new Promise((r) => setTimeout(r, Math.max(0, 2_000 - (Date.now() - started))));
      }
      const during = await metrics();
      const sorted = [...logins].sort((a, b) => a - b);
      const ms = (x: number | undefined) => `${(x ?? NaN).toFixed(0)} ms`;
      console.log(`logins from 127.0.0.1 during the flood: ${logins.length} of 50; min ${ms(sorted[0])}, median ${ms(sorted[Math.floor(sorted.length / 2)])}, max ${ms(sorted.at(-1))}`);
      console.log(`flood: idle TCP opened ${idle.opened} (closed by the router ${idle.closedByRouter}), TLS slow-loris opened ${loris.opened} (closed ${loris.closedByRouter}, handshakes done ${handshakes})`);
      console.log(`shed: ${value(during, 'pgs_router_startups_shed_total{why="global_limit"}')} at the global limit (the oldest, or a newcomer of the busiest network), ${value(during, 'pgs_router_startups_shed_total{why="address_limit"}')} closed after waiting behind their address's 64; pending now ${value(during, 'pgs_router_startups_pending')}`);
      assert.deepEqual(failures, [], 'no login failed');
      assert.equal(logins.length, 50);
      assert.ok(idle.opened >= IDLE && loris.opened >= LORIS, 'the flood opened all its connections');
      assert.ok(value(during, 'pgs_router_startups_shed_total{why="global_limit"}') > 0, 'the global limit shed');
      // Once per interval (10 s) the log names the network shed, and the metrics do.
      const log = path.join(pgs.home, 'daemon.log');
      await waitFor('the shed to be logged', async () => (await readFile(log, 'utf8')).includes('"message":"start-ups shed"'), 15_000);
      const lines = (await readFile(log, 'utf8')).split('\n').filter((l) => l.includes('"message":"start-ups shed"'));
      const first = JSON.parse(lines[0] ?? '{}') as { networks?: Record<string, number>; atGlobalLimit?: number };
      assert.ok((first.networks?.['127.0.1.0/24'] ?? 0) > 0, lines[0]);
      assert.equal(first.networks?.['127.0.0.0/24'], undefined, 'no client of 127.0.0.1 was shed');
      assert.ok(lines.length <= 6, `one line per interval, not one per connection (${lines.length})`);
      assert.ok(value(await metrics(), 'pgs_router_startups_shed_networks{network="127.0.1.0/24"}') > 0);
    } finally {
      idle.stop();
      loris.stop();
    }
    await waitFor('the start-ups to end', async () => value(await metrics(), 'pgs_router_startups_pending') === 0, 10_000);
  });
});
