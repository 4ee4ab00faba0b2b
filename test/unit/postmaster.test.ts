import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parsePostmasterPid, type PostmasterPid } from '../../src/runtime/postmaster.js';

/** postmaster.pid as PostgreSQL 18 writes it: 8 lines, the status padded to 8 characters. */
function pidFile(status: string, pid = 48213): string {
  return [
    String(pid),
    '/var/lib/pgs/tenants/acme/data',
    '1735689600',
    '5432',
    '/var/lib/pgs/tenants/acme',
    '',
    '  5432001     98306',
    status,
    '',
  ].join('\n');
}

const base: Omit<PostmasterPid, 'status'> = {
  pid: 48213,
  dataDir: '/var/lib/pgs/tenants/acme/data',
  startedAt: 1735689600,
  port: 5432,
  socketDir: '/var/lib/pgs/tenants/acme',
};

describe('parsePostmasterPid', () => {
  const statuses: readonly (readonly [line: string, status: PostmasterPid['status']])[] = [
    ['ready   ', 'ready'],
    ['starting', 'starting'],
    ['stopping', 'stopping'],
    ['standby ', 'standby'],
    ['', 'unknown'],
    ['running ', 'unknown'],
  ];
  for (const [line, status] of statuses) {
    it(`status line ${JSON.stringify(line)} → ${status}`, () => {
      assert.deepEqual(parsePostmasterPid(pidFile(line)), { ...base, status });
    });
  }

  it('a file cut short after the pid line (still being written) is unknown, not an error', () => {
    const parsed = parsePostmasterPid('48213\n/var/lib/pgs/tenants/acme/data\n');
    assert.equal(parsed?.pid, 48213);
    assert.equal(parsed?.dataDir, '/var/lib/pgs/tenants/acme/data');
    assert.equal(parsed?.status, 'unknown');
  });

  it('a listen address on line 6 does not shift the other fields', () => {
    const text = pidFile('ready   ').replace('/var/lib/pgs/tenants/acme\n\n', '/var/lib/pgs/tenants/acme\nlocalhost\n');
    assert.deepEqual(parsePostmasterPid(text), { ...base, status: 'ready' });
  });

  const garbage: readonly string[] = ['', '\n', 'hello', 'abc\n/data\n', '0\n/data\n', '-1\n/data\n', '\0\0\0\0'];
  for (const text of garbage) {
    it(`garbage ${JSON.stringify(text)} → undefined`, () => {
      assert.equal(parsePostmasterPid(text), undefined);
    });
  }
});
