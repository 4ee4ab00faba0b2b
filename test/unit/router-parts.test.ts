import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BackendMessage, FrontendMessage } from '../../src/protocol/constants.js';
import { MessageReader, typed } from '../../src/protocol/messages.js';
import { AuthFailures } from '../../src/router/auth-failures.js';
import { CancelKeys } from '../../src/router/cancel-keys.js';
import { parseSASLInitialResponse } from '../../src/router/client-auth.js';
import { greetingBytes, noticeBytes, sessionFailure } from '../../src/router/client-messages.js';
import type { TenantRoute } from '../../src/router/contract.js';
import { ServerSessionError } from '../../src/router/server-sessions.js';
import { ServerFull } from '../../src/router/server-slots.js';
import { TenantConnections, type TenantClient } from '../../src/router/tenant-connections.js';
import { noSuchTenant, refusalBeforeLogin, tenantLabel } from '../../src/router/tenant-choice.js';
import { labelUnder } from '../../src/router/tls-front.js';
import { PoolTimeout } from '../../src/router/transaction-pool.js';

const messages = (bytes: Buffer): { type: number; payload: Buffer }[] => {
  const reader = new MessageReader();
  reader.push(bytes);
  const out = [];
  for (let m = reader.next(); m; m = reader.next()) out.push({ type: m.type, payload: Buffer.from(m.payload) });
  return out;
};

describe('choosing the tenant', () => {
  it('a host name is one label under the domain, whatever its case and a final dot', () => {
    assert.equal(labelUnder('Shop-AB12.DB.Example.com.', 'db.example.com'), 'shop-ab12');
    assert.equal(labelUnder('shop-ab12.db.example.com', 'DB.example.com'), 'shop-ab12');
    assert.equal(labelUnder('a.b.db.example.com', 'db.example.com'), undefined);
    assert.equal(labelUnder('db.example.com', 'db.example.com'), undefined);
    assert.equal(labelUnder('.db.example.com', 'db.example.com'), undefined);
    assert.equal(labelUnder('shop.evil-db.example.com', 'db.example.com'), undefined);
    assert.equal(labelUnder('shopdb.example.com', 'db.example.com'), undefined);
  });

  it('SNI, the endpoint option, or both naming the same tenant; else the refusal that says why', () => {
    assert.deepEqual(tenantLabel('t-1.db.test', undefined, 'db.test'), { label: 't-1' });
    assert.deepEqual(tenantLabel(undefined, 'T-1', 'db.test'), { label: 't-1' });
    assert.deepEqual(tenantLabel('t-1.db.test', 'T-1', 'db.test'), { label: 't-1' });
    const reason = (r: ReturnType<typeof tenantLabel>): string | undefined => ('refusal' in r ? r.refusal.reason : undefined);
    assert.equal(reason(tenantLabel('t-1.db.test', 't-2', 'db.test')), 'host_mismatch');
    assert.equal(reason(tenantLabel('t-1.other.test', undefined, 'db.test')), 'unknown_host');
    assert.equal(reason(tenantLabel('t-1.other.test', 't-1', 'db.test')), 'unknown_host');
    const none = tenantLabel(undefined, undefined, 'db.test');
    assert.equal(reason(none), 'no_host');
    assert.ok('refusal' in none && none.refusal.hint?.includes('options=endpoint='));
    assert.match(noSuchTenant(undefined, 't-9', 'db.test').message, /"t-9\.db\.test": no such tenant/);
    assert.match(noSuchTenant('t-9.db.test', 't-9', 'db.test').message, /"t-9\.db\.test"/);
  });

  it('before the password: the allow-list first, then access, the user name, reserved roles, shutdown', () => {
    const tenant: TenantRoute = { id: 't-1', access: 'enabled', allow: { allows: (a) => a === '10.0.0.1' } };
    const reserved = new Set(['pgs_admin']);
    assert.equal(refusalBeforeLogin(tenant, '10.0.0.1', 'app', reserved, false), undefined);
    assert.equal(refusalBeforeLogin(tenant, '10.0.0.2', 'app', reserved, false)?.reason, 'address_not_allowed');
    // A refused address learns nothing else, even when access is disabled too.
    assert.equal(refusalBeforeLogin({ ...tenant, access: 'disabled' }, '10.0.0.2', 'app', reserved, false)?.reason, 'address_not_allowed');
    assert.equal(refusalBeforeLogin({ ...tenant, access: 'disabled' }, '10.0.0.1', 'app', reserved, false)?.reason, 'access_disabled');
    const noUser = refusalBeforeLogin(tenant, '10.0.0.1', '', reserved, false);
    assert.equal(noUser?.reason, 'auth_failed');
    assert.equal(noUser?.code, '28000');
    assert.equal(refusalBeforeLogin(tenant, '10.0.0.1', 'pgs_admin', reserved, false)?.reason, 'reserved_role');
    assert.equal(refusalBeforeLogin(tenant, '10.0.0.1', 'app', reserved, true)?.reason, 'shutting_down');
    assert.equal(refusalBeforeLogin({ id: 't-2', access: 'enabled' }, '192.0.2.7', 'app', reserved, false), undefined);
  });
});

describe('what pgs says to clients', () => {
  it('a session that could not be had: pgs\'s limit, the server\'s own error, a full pool, or "not available"', () => {
    const full = sessionFailure(new ServerFull('t-1', 5), 't-1');
    assert.ok(full.kind === 'refuse' && full.refusal.reason === 'too_many_connections' && !full.unexpected);
    assert.match(full.kind === 'refuse' ? full.refusal.hint ?? '' : '', /--max-connections/);
    const fields = { S: 'FATAL', V: 'FATAL', C: '3D000', M: 'database "x" does not exist' };
    assert.deepEqual(sessionFailure(new ServerSessionError(fields), 't-1'), { kind: 'server', fields });
    const pool = sessionFailure(new PoolTimeout('no free server session within 30000 ms'), 't-1');
    assert.ok(pool.kind === 'refuse' && pool.refusal.message.endsWith('for tenant t-1 (its transaction pool is full)') && !pool.unexpected);
    const other = sessionFailure(new Error('ECONNREFUSED'), 't-1');
    assert.deepEqual(other, { kind: 'refuse', refusal: { reason: 'tenant_unavailable', message: 'the server of tenant t-1 is not available' }, unexpected: true });
  });

  it('a greeting: the parameters, the key, the notice if any, then ReadyForQuery idle', () => {
    const parameters = typed(BackendMessage.ParameterStatus, Buffer.from('TimeZone\0UTC\0'));
    const key = typed(BackendMessage.BackendKeyData, Buffer.alloc(8, 1));
    assert.deepEqual(messages(greetingBytes(parameters, key, undefined)).map((m) => m.type), [BackendMessage.ParameterStatus, BackendMessage.BackendKeyData, BackendMessage.ReadyForQuery]);
    const withNotice = messages(greetingBytes(parameters, key, 'over quota'));
    assert.deepEqual(withNotice.map((m) => m.type), [BackendMessage.ParameterStatus, BackendMessage.BackendKeyData, BackendMessage.NoticeResponse, BackendMessage.ReadyForQuery]);
    assert.ok((withNotice[2]?.payload.toString() ?? '').includes('Mover quota'));
    assert.equal(withNotice[3]?.payload.toString(), 'I');
    assert.ok(noticeBytes('x').includes(Buffer.from('C01000')));
  });

  it('SASLInitialResponse: mechanism and data, or a protocol violation', () => {
    const initial = (mechanism: string, data: Buffer | undefined, length = data?.length ?? -1): { type: number; payload: Buffer } => {
      const len = Buffer.alloc(4);
      len.writeInt32BE(length);
      return { type: FrontendMessage.SASLResponse, payload: Buffer.concat([Buffer.from(`${mechanism}\0`), len, data ?? Buffer.alloc(0)]) };
    };
    assert.deepEqual(parseSASLInitialResponse(initial('SCRAM-SHA-256', Buffer.from('n,,n=,r=abc'))), { mechanism: 'SCRAM-SHA-256', data: 'n,,n=,r=abc' });
    assert.deepEqual(parseSASLInitialResponse(initial('SCRAM-SHA-256', undefined)), { mechanism: 'SCRAM-SHA-256', data: '' });
    assert.throws(() => parseSASLInitialResponse(initial('SCRAM-SHA-256', Buffer.from('abc'), 5)), /the length does not match/);
    assert.throws(() => parseSASLInitialResponse({ type: FrontendMessage.SASLResponse, payload: Buffer.from('SCRAM') }), /malformed/);
    assert.throws(() => parseSASLInitialResponse({ type: FrontendMessage.Query, payload: Buffer.from('x\0') }), /expected SASL response/);
  });
});

describe('counts the router keeps', () => {
  it('cancel keys: each one found until unregistered, a forged one never; a route may have no backend now', () => {
    const keys = new CancelKeys();
    const target = { address: '/tmp/.s.PGSQL.5432', pid: 42, secret: Buffer.alloc(4, 9) };
    const one = keys.register(target, 4);
    const two = keys.register(() => undefined, 32);
    assert.equal(one.secret.length, 4);
    assert.equal(two.secret.length, 32);
    assert.notEqual(one.key, two.key);
    assert.deepEqual(keys.find(one.pid, one.secret), { known: true, target });
    assert.deepEqual(keys.find(two.pid, two.secret), { known: true, target: undefined });
    const forged = Buffer.from(one.secret);
    forged[0] = (forged[0] as number) ^ 1;
    assert.deepEqual(keys.find(one.pid, forged), { known: false, target: undefined });
    keys.unregister(one.key);
    assert.equal(keys.find(one.pid, one.secret).known, false);
    assert.equal(keys.size, 1);
  });

  it('login failures: the wait grows with the worst key\'s failures, up to the most', () => {
    const failures = new AuthFailures(100, 250);
    assert.equal(failures.note(['a:1', 't:x']), 100);
    assert.equal(failures.note(['a:2', 't:x']), 200);
    assert.equal(failures.note(['a:3', 't:y']), 100);
    assert.equal(failures.note(['a:1', 't:x']), 250);
  });

  it('tenant connections: pgs\'s limit, the tenant\'s, each with its hint; forget frees the place', () => {
    interface Client extends TenantClient { closed: string[]; notices: string[] }
    const client = (address = '10.0.0.1'): Client => {
      const c: Client = { address, tenantId: undefined, closed: [], notices: [], closeWith: (r) => c.closed.push(r.message), notify: (m) => c.notices.push(m) };
      return c;
    };
    const tenants = new TenantConnections<Client>(3, 2);
    const t: TenantRoute = { id: 't-1', access: 'enabled', maxConnections: 5 };
    const [a, b, c] = [client(), client('10.0.0.2'), client()];
    assert.equal(tenants.admit(a, t), undefined);
    assert.equal(a.tenantId, 't-1');
    assert.equal(tenants.admit(b, t), undefined);
    const over = tenants.admit(c, t);
    assert.equal(over?.message, 'too many connections for tenant t-1 (limit 2)');
    assert.equal(over?.hint, undefined); // pgs's own limit per tenant, not one the tenant can raise
    assert.equal(tenants.count('t-1'), 2);
    tenants.forget(b);
    assert.equal(tenants.count('t-1'), 1);
    const own = new TenantConnections<Client>(100, 100);
    const small: TenantRoute = { id: 't-2', access: 'enabled', maxConnections: 1 };
    assert.equal(own.admit(client(), small), undefined);
    assert.match(own.admit(client(), small)?.hint ?? '', /--max-connections N raises it/);
    assert.match(own.admit(client(), { ...small, maxClientConnections: 1 })?.hint ?? '', /--max-client-conn N/);
    // In transaction mode the server's limit does not bound clients.
    assert.equal(own.admit(client(), { ...small, pool: 'transaction' }), undefined);
    assert.equal(tenants.admit(client(), { id: 't-3', access: 'enabled' }), undefined);
    assert.equal(tenants.admit(client(), { id: 't-4', access: 'enabled' }), undefined);
    assert.equal(tenants.admit(client(), { id: 't-5', access: 'enabled' })?.message, 'too many connections to pgs');
    assert.equal(tenants.notice('t-1', 'hello'), 1);
    assert.deepEqual(a.notices, ['hello']);
    assert.equal(tenants.closeUnallowed('t-1', { allows: (x) => x === '10.0.0.1' }), 0);
    assert.equal(tenants.closeUnallowed('t-1', { allows: () => false }), 1);
    assert.deepEqual(a.closed, ['connections from 10.0.0.1 are no longer allowed for tenant t-1']);
    tenants.countTransaction('t-1');
    tenants.countTransaction('t-1');
    assert.equal(tenants.transactionCount('t-1'), 2);
    assert.equal(tenants.transactionCount('t-9'), 0);
    assert.ok((tenants.lastUsed('t-1') ?? 0) > 0);
  });
});
