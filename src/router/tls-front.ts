import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { certificateHash as channelBindingHash } from '../auth/scram-server.js';

/**
 * The router's face to the network: the certificate connections are served
 * (and its channel-binding hash), the domain tenants are named under, and the
 * listening socket, which can move to another port without dropping what is open.
 */
export class TlsFront {
  private domainSuffix: string;
  private secureContext: tls.SecureContext;
  private certHash: Buffer | undefined;
  private server: net.Server;

  constructor(domain: string, cert: string | Buffer, key: string | Buffer, private readonly onConnection: (socket: net.Socket) => void) {
    this.domainSuffix = `.${domain.toLowerCase()}`;
    this.secureContext = makeSecureContext(cert, key);
    this.certHash = leafHash(cert);
    this.server = net.createServer({ noDelay: true }, onConnection);
  }

  listen(port: number, host?: string): Promise<net.AddressInfo> {
    return listenOn(this.server, port, host);
  }

  /** Opens the new listener first and closes the old one only once it works (open connections stay); on failure nothing changed. */
  async move(port: number, host?: string): Promise<net.AddressInfo> {
    const next = net.createServer({ noDelay: true }, this.onConnection);
    const address = await listenOn(next, port, host);
    const old = this.server;
    this.server = next;
    old.close();
    return address;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo | null)?.port ?? 0;
  }

  /** Stops listening; resolves when the listener is closed. */
  close(): Promise<void> {
    return new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  setDomain(domain: string): void {
    this.domainSuffix = `.${domain.toLowerCase()}`;
  }

  get domain(): string {
    return this.domainSuffix.slice(1);
  }

  /** Swaps the certificate for new connections; a pair that does not load throws and the old one stays. */
  setCertificate(cert: string | Buffer, key: string | Buffer): void {
    this.secureContext = makeSecureContext(cert, key);
    this.certHash = leafHash(cert);
  }

  /** The channel-binding data of the certificate connections get now (tls-server-end-point). */
  get certificateHash(): Buffer | undefined {
    return this.certHash;
  }

  get context(): tls.SecureContext {
    return this.secureContext;
  }

  /** Tenant label from an SNI host name, or undefined when the name is not under the domain. */
  labelOf(hostname: string): string | undefined {
    return labelUnder(hostname, this.domain);
  }
}

/** The first label of `hostname` when the rest is `domain` (case and a final dot aside); undefined when it is not one label under it. */
export function labelUnder(hostname: string, domain: string): string | undefined {
  const suffix = `.${domain.toLowerCase()}`;
  const name = hostname.toLowerCase().replace(/\.$/, '');
  if (!name.endsWith(suffix)) return undefined;
  const label = name.slice(0, -suffix.length);
  return label.length > 0 && !label.includes('.') ? label : undefined;
}

function listenOn(server: net.Server, port: number, host?: string): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, () => {
      server.off('error', reject);
      resolve(server.address() as net.AddressInfo);
    });
  });
}

/** The tls-server-end-point hash of the first (leaf) certificate of a PEM chain. */
function leafHash(cert: string | Buffer): Buffer | undefined {
  try {
    return channelBindingHash(new X509Certificate(cert).raw);
  } catch {
    return undefined;
  }
}

function makeSecureContext(cert: string | Buffer, key: string | Buffer): tls.SecureContext {
  return tls.createSecureContext({ cert, key, minVersion: 'TLSv1.2' });
}
