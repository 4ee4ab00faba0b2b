import { PgsError } from './errors.js';

/** `ADDR:PORT` or `[v6]:PORT`, as `pgs setup --api-listen` takes it; the port may be 0 (any free one). */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (!host || !Number.isInteger(port) || port > 65535) {
    throw new PgsError('INVALID_SETTING', `invalid API address ${JSON.stringify(text)}: ADDR:PORT such as 127.0.0.1:5480, [::1]:5480 or 0.0.0.0:5480, or off`);
  }
  return { host, port };
}

/** Loopback addresses: the API is served over plain HTTP only on these. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
