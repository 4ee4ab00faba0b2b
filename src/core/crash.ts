/**
 * Fault injection for the tests of what survives a `kill -9`: a process
 * started with `PGS_CRASH_AT=name[,name...]` kills itself (SIGKILL, as a
 * power cut would end it) when it reaches a point of that name. Unset, as
 * everywhere but in those tests, every call is one Set lookup.
 */
const points = new Set((process.env.PGS_CRASH_AT ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''));

export function crashPoint(name: string): void {
  if (points.has(name)) process.kill(process.pid, 'SIGKILL');
}

export function crashPointSet(name: string): boolean {
  return points.has(name);
}
