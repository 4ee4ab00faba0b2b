/**
 * A PostgreSQL 18 server on 127.0.0.1 as a CloudNativePG instance looks to a
 * client: TLS with a certificate for `<id>-rw.<namespace>.svc` from a CA of
 * its own, SCRAM passwords, a database owned by the role `app`, no trust.
 * The kubernetes runtime's tests dial it where the cluster's read-write
 * service would be. Runs as the unprivileged user `pgs` when the tests run
 * as root (PostgreSQL refuses root).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { embeddedPackageRoot } from '../../src/runtime/binaries.js';
import { ensureSystemUser, lookupUser } from '../../src/runtime/system-user.js';
import { waitFor } from './pgs.js';

export interface TlsPostgres {
  host: string;
  port: number;
  /** The CA the server's certificate comes from (as the cluster's `<id>-ca` secret holds it). */
  ca: Buffer;
  /** The CA's key (a second server of the cluster gets its certificate from the same CA). */
  caKey: Buffer;
  /** The name its certificate is for. */
  servername: string;
  ownerPassword: string;
  database: string;
  stop(): Promise<void>;
}

const freePort = () => new Promise<number>((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address() as net.AddressInfo;
    s.close(() => resolve(port));
  });
});

export async function startTlsPostgres(options: { servername: string; database: string; ownerPassword: string; ca?: { ca: Buffer; caKey: Buffer } }): Promise<TlsPostgres> {
  const dir = mkdtempSync(path.join(tmpdir(), 'pgs-tlspg-'));
  chmodSync(dir, 0o755);
  const asRoot = process.getuid?.() === 0;
  let owner: { uid: number; gid: number } | undefined;
  if (asRoot) {
    ensureSystemUser('pgs');
    owner = lookupUser('pgs');
  }
  // The binaries where the server's user can read them (the clone may sit in a closed folder).
  const bin = path.join(dir, 'pg');
  cpSync(path.join(embeddedPackageRoot(), 'native'), bin, { recursive: true, verbatimSymlinks: true });
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  if (options.ca) {
    writeFileSync(path.join(dir, 'ca.crt'), options.ca.ca);
    writeFileSync(path.join(dir, 'ca.key'), options.ca.caKey, { mode: 0o600 });
  } else {
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=test-cluster-ca', '-keyout', 'ca.key', '-out', 'ca.crt');
  }
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${options.servername}`, '-keyout', 'server.key', '-out', 'server.csr');
  writeFileSync(path.join(dir, 'ext'), `subjectAltName=DNS:${options.servername}\n`);
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'ext', '-out', 'server.crt');
  const superPassword = 'super-' + Math.random().toString(36).slice(2);
  writeFileSync(path.join(dir, 'pwfile'), `${superPassword}\n`);
  const data = path.join(dir, 'data');
  const give = (p: string, mode: number) => {
    chmodSync(p, mode);
    if (owner) chownSync(p, owner.uid, owner.gid);
  };
  give(path.join(dir, 'server.key'), 0o600);
  give(path.join(dir, 'server.crt'), 0o644);
  give(path.join(dir, 'pwfile'), 0o600);
  if (owner) execFileSync('chown', ['-R', `${owner.uid}:${owner.gid}`, bin]);
  if (owner) chownSync(dir, owner.uid, owner.gid);
  const asOwner = owner ? { uid: owner.uid, gid: owner.gid } : {};
  execFileSync(path.join(bin, 'bin', 'initdb'), ['-D', data, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${path.join(dir, 'pwfile')}`, '-E', 'UTF8', '--no-instructions'], { stdio: 'pipe', cwd: dir, ...asOwner });
  const port = await freePort();
  writeFileSync(path.join(data, 'postgresql.auto.conf'), [
    "listen_addresses = '127.0.0.1'", `port = ${port}`, `unix_socket_directories = '${dir}'`,
    'ssl = on', `ssl_cert_file = '${path.join(dir, 'server.crt')}'`, `ssl_key_file = '${path.join(dir, 'server.key')}'`,
    "password_encryption = 'scram-sha-256'", 'max_connections = 20', "shared_buffers = '16MB'", '',
  ].join('\n'));
  // Only TLS connections with a password, as CloudNativePG's pg_hba has them for applications.
  writeFileSync(path.join(data, 'pg_hba.conf'), 'local all postgres scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n');
  if (owner) execFileSync('chown', ['-R', `${owner.uid}:${owner.gid}`, data]);
  const server: ChildProcess = spawn(path.join(bin, 'bin', 'postgres'), ['-D', data], { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir, ...asOwner });
  let log = '';
  server.stderr?.setEncoding('utf8').on('data', (s: string) => { log += s; });
  await waitFor('the TLS server to accept connections', async () => log.includes('ready to accept connections') || server.exitCode !== null, 30_000);
  if (server.exitCode !== null) throw new Error(`postgres exited: ${log}`);
  // The owner role and its database, over the local socket as the superuser.
  const psql = (sql: string) => execFileSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', dir, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-c', sql], { env: { ...process.env, PGPASSWORD: superPassword }, stdio: 'pipe' });
  psql(`CREATE ROLE app LOGIN PASSWORD '${options.ownerPassword.replace(/'/g, "''")}'`);
  psql(`CREATE DATABASE "${options.database}" OWNER app`);
  return {
    host: '127.0.0.1', port, ca: readFileSync(path.join(dir, 'ca.crt')), caKey: readFileSync(path.join(dir, 'ca.key')), servername: options.servername, ownerPassword: options.ownerPassword, database: options.database,
    stop: async () => {
      server.kill('SIGINT');
      await waitFor('the TLS server to stop', async () => server.exitCode !== null || server.signalCode !== null, 30_000).catch(() => server.kill('SIGKILL'));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
