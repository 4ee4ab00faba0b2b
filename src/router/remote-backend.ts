/**
 * A server session over the network, for servers the router does not share a
 * host with (the kubernetes runtime's clusters): TCP, then TLS that verifies
 * the server's certificate against the cluster's CA and the service's name,
 * then a login with SCRAM-SHA-256 as the database's owner, read to the first
 * ReadyForQuery. The client was authenticated by the router already; this
 * login is the router's own, with a password only it knows.
 */
import net from 'node:net';
import tls from 'node:tls';
import { ScramClient, SCRAM_SHA_256 } from '../auth/scram-client.js';
import { AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL, BackendMessage, PROTOCOL_3_0 } from '../protocol/constants.js';
import { MessageReader, parseErrorFields, serializeSASLInitialResponse, serializeSASLResponse, serializeSSLRequest } from '../protocol/messages.js';
import { encodeStartup } from '../protocol/startup.js';

export interface RemoteTarget {
  host: string;
  port: number;
  /** The name the server's certificate must carry (the read-write service's). */
  servername: string;
  /** The CA the server's certificate must come from. */
  ca: Buffer;
  user: string;
  password: string;
  database: string;
}

export interface RemoteBackend {
  socket: tls.TLSSocket;
  /** ParameterStatus values of the login. */
  params: Map<string, string>;
  /** BackendKeyData payload: pid and cancel secret. */
  backendKey: Buffer;
  /** Bytes the server sent after ReadyForQuery (none, normally). */
  rest: Buffer;
}

/** Why a login failed, in words a client can be shown (no password in it). */
export class RemoteLoginError extends Error {
  /** The server's SQLSTATE, when the server refused. */
  readonly sqlState: string | undefined;

  constructor(message: string, sqlState?: string) {
    super(message);
    this.sqlState = sqlState;
  }
}

const AUTH_NAMES: Record<number, string> = { 3: 'a password in the clear', 5: 'an MD5 password', 7: 'GSSAPI', 9: 'SSPI' };

/** Opens a session on the server at `target`: TLS, SCRAM, start-up parameters `params` besides user and database. */
export function openRemoteBackend(target: RemoteTarget, params: Map<string, string> = new Map(), timeoutMs = 10_000): Promise<RemoteBackend> {
  return new Promise((resolve, reject) => {
    const where = `${target.servername} (${target.host}:${target.port})`;
    let socket: net.Socket | tls.TLSSocket = net.connect({ host: target.host, port: target.port, noDelay: true });
    let settled = false;
    const fail = (message: string, sqlState?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(new RemoteLoginError(message, sqlState));
    };
    const timer = setTimeout(() => fail(`the server at ${where} did not let the router log in within ${timeoutMs} ms`), timeoutMs);
    socket.on('error', (e) => fail(`the server at ${where} is not reachable: ${e.message}`));
    socket.once('connect', () => socket.write(serializeSSLRequest()));
    socket.once('data', (answer: Buffer) => {
      if (answer[0] !== 0x53) return fail(`the server at ${where} does not speak TLS`);
      // Bytes after the 'S' would be read as if they came through TLS (CVE-2021-23222): refuse them.
      if (answer.length > 1) return fail(`the server at ${where} sent data before TLS began`);
      const raw = socket;
      const secure = tls.connect({ socket: raw, servername: target.servername, ca: target.ca, minVersion: 'TLSv1.2' });
      socket = secure;
      secure.on('error', (e) => fail(`TLS with the server at ${where} failed: ${e.message}`));
      secure.once('secureConnect', () => {
        secure.write(encodeStartup(PROTOCOL_3_0, new Map([['user', target.user], ['database', target.database], ...params])));
      });
      const reader = new MessageReader();
      const out: RemoteBackend = { socket: secure, params: new Map(), backendKey: Buffer.alloc(0), rest: Buffer.alloc(0) };
      let scram: ScramClient | undefined;
      const onData = (chunk: Buffer) => {
        reader.push(chunk);
        try {
          for (let m = reader.next(); m; m = reader.next()) {
            if (m.type === BackendMessage.ErrorResponse) {
              const fields = parseErrorFields(m.payload);
              return fail(`the server at ${where} refused the router's login: ${fields.M ?? 'an error'}`, fields.C);
            }
            if (m.type === BackendMessage.Authentication) {
              const code = m.payload.readInt32BE(0);
              if (code === AUTH_OK) continue;
              if (code === AUTH_SASL) {
                const mechanisms = m.payload.subarray(4).toString('utf8').split('\0').filter(Boolean);
                if (!mechanisms.includes(SCRAM_SHA_256)) return fail(`the server at ${where} offers ${mechanisms.join(', ')}, not ${SCRAM_SHA_256}`);
                scram = new ScramClient(target.password);
                secure.write(serializeSASLInitialResponse(SCRAM_SHA_256, scram.clientFirst()));
              } else if (code === AUTH_SASL_CONTINUE && scram) {
                secure.write(serializeSASLResponse(scram.clientFinal(m.payload.subarray(4).toString('utf8'))));
              } else if (code === AUTH_SASL_FINAL && scram) {
                scram.verifyServerFinal(m.payload.subarray(4).toString('utf8'));
              } else {
                return fail(`the server at ${where} asked for ${AUTH_NAMES[code] ?? `authentication code ${code}`}; the router logs in with ${SCRAM_SHA_256} only`);
              }
              continue;
            }
            if (m.type === BackendMessage.ParameterStatus) {
              const [name, value] = m.payload.toString('utf8').split('\0');
              if (name) out.params.set(name, value ?? '');
            } else if (m.type === BackendMessage.BackendKeyData) {
              out.backendKey = Buffer.from(m.payload);
            } else if (m.type === BackendMessage.ReadyForQuery) {
              secure.off('data', onData);
              out.rest = reader.drain();
              settled = true;
              clearTimeout(timer);
              resolve(out);
              return;
            }
          }
        } catch (e) {
          fail(`logging in to the server at ${where} failed: ${(e as Error).message}`);
        }
      };
      secure.on('data', onData);
    });
  });
}
