/**
 * The router's login to a server over the network, as it will reach a
 * CloudNativePG cluster's read-write service: a real PostgreSQL 18 with TLS
 * (a certificate for the service's name from a CA of its own) and SCRAM.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { openRemoteBackend, RemoteLoginError, type RemoteTarget } from '../../src/router/remote-backend.js';
import { BackendMessage } from '../../src/protocol/constants.js';
import { MessageReader, parseDataRow, serializeQuery, serializeTerminate } from '../../src/protocol/messages.js';
import { startTlsPostgres, type TlsPostgres } from '../helpers/tls-postgres.js';

describe('a server session over TLS and SCRAM (the kubernetes runtime\'s clusters)', () => {
  let pg: TlsPostgres;
  let target: RemoteTarget;

  before(async () => {
    pg = await startTlsPostgres({ servername: 'acme-rw.pgs.svc', database: 'acme', ownerPassword: 'owner-' + 'x'.repeat(24) });
    target = { host: pg.host, port: pg.port, servername: pg.servername, ca: pg.ca, user: 'app', password: pg.ownerPassword, database: 'acme' };
  });
  after(async () => {
    await pg?.stop();
  });

  it('logs in as the owner over verified TLS; the session answers queries; start-up parameters arrive', async () => {
    const backend = await openRemoteBackend(target, new Map([['application_name', 'from-router']]));
    assert.equal(backend.params.get('application_name'), 'from-router');
    assert.match(backend.params.get('server_version') ?? '', /^18\./);
    assert.ok(backend.backendKey.length >= 8);
    assert.ok(backend.socket.encrypted);
    const reader = new MessageReader();
    const rows: (string | null)[][] = [];
    await new Promise<void>((resolve, reject) => {
      backend.socket.on('data', (c: Buffer) => {
        reader.push(c);
        for (let m = reader.next(); m; m = reader.next()) {
          if (m.type === BackendMessage.DataRow) rows.push(parseDataRow(m.payload));
          if (m.type === BackendMessage.ErrorResponse) reject(new Error(m.payload.toString()));
          if (m.type === BackendMessage.ReadyForQuery) resolve();
        }
      });
      backend.socket.write(serializeQuery("SELECT current_user, current_database(), (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())::text"));
    });
    assert.deepEqual(rows, [['app', 'acme', 'true']]);
    backend.socket.end(serializeTerminate());
  });

  it('a wrong password: the server\'s refusal, with its SQLSTATE, and no password in the message', async () => {
    const err = await openRemoteBackend({ ...target, password: 'wrong-password-123' }).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof RemoteLoginError);
    assert.equal(err.sqlState, '28P01');
    assert.match(err.message, /refused the router's login: password authentication failed for user "app"/);
    assert.doesNotMatch(err.message, /wrong-password/);
  });

  it('a server whose certificate is not from the cluster\'s CA, or not for the service\'s name, is not logged in to', async () => {
    const other = await startTlsPostgres({ servername: 'acme-rw.pgs.svc', database: 'acme', ownerPassword: 'x'.repeat(30) });
    try {
      await assert.rejects(openRemoteBackend({ ...target, ca: other.ca }), /TLS with the server at acme-rw\.pgs\.svc .* failed: (self-signed|unable to verify|unable to get)/);
    } finally {
      await other.stop();
    }
    await assert.rejects(openRemoteBackend({ ...target, servername: 'beta-rw.pgs.svc' }), /failed: Hostname\/IP does not match certificate's altnames/);
  });

  it('nothing listening: one line naming the service', async () => {
    await assert.rejects(openRemoteBackend({ ...target, port: 1 }), /the server at acme-rw\.pgs\.svc \(127\.0\.0\.1:1\) is not reachable/);
  });
});
