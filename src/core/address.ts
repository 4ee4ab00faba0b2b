import net from 'node:net';

/** An address as a client's socket reports it, plain: no zone, an IPv4-mapped IPv6 address as IPv4. */
export function plainAddress(address: string): string {
  const plain = address.replace(/%.*$/, '');
  return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(plain)?.[1] ?? plain;
}

/**
 * The network an address is counted in: its /24 (IPv4) or /64 (IPv6).
 * `loopbackWhole`: 127.0.0.0/8 and ::1 count as one network, `loopback`
 * (any local user may bind any of them); else loopback is split as any other.
 */
export function addressNetwork(address: string, options: { loopbackWhole?: boolean } = {}): string {
  const plain = plainAddress(address);
  if (net.isIPv4(plain)) {
    if (options.loopbackWhole && plain.startsWith('127.')) return 'loopback';
    return `${plain.split('.').slice(0, 3).join('.')}.0/24`;
  }
  if (!net.isIPv6(plain)) return address;
  const groups = expandIPv6(plain);
  if (options.loopbackWhole && groups.every((g, i) => g === (i === 7 ? 1 : 0))) return 'loopback';
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`;
}

function expandIPv6(address: string): number[] {
  const toGroups = (part: string): number[] => {
    if (part === '') return [];
    return part.split(':').flatMap((g) => {
      if (!g.includes('.')) return [parseInt(g, 16)];
      const [a, b, c, d] = g.split('.').map(Number) as [number, number, number, number];
      return [(a << 8) | b, (c << 8) | d];
    });
  };
  const [head, tail] = address.split('::') as [string, string | undefined];
  const front = toGroups(head);
  if (tail === undefined) return front;
  const back = toGroups(tail);
  return [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
}
