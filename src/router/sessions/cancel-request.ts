import net from 'node:net';
import tls from 'node:tls';
import { serializeCancelRequest, serializeSSLRequest } from '../../protocol/messages.js';
import { isRemote, type BackendAddress } from './backend-address.js';

/** Sends a CancelRequest for backend `pid` to the server: over its socket, or over TLS to a server on the network. */
export function cancelOn(address: BackendAddress, pid: number, secret: Buffer): void {
  if (!isRemote(address)) {
    const socket = net.connect(address);
    socket.on('error', () => socket.destroy());
    socket.end(serializeCancelRequest(pid, secret));
    return;
  }
  const raw = net.connect({ host: address.host, port: address.port });
  raw.setTimeout(10_000, () => raw.destroy());
  raw.on('error', () => raw.destroy());
  raw.once('connect', () => raw.write(serializeSSLRequest()));
  raw.once('data', (answer: Buffer) => {
    if (answer.length !== 1 || answer[0] !== 0x53) {
      raw.destroy();
      return;
    }
    const secure = tls.connect({ socket: raw, servername: address.servername, ca: address.ca, minVersion: 'TLSv1.2' });
    secure.on('error', () => secure.destroy());
    secure.once('secureConnect', () => secure.end(serializeCancelRequest(pid, secret)));
  });
}
