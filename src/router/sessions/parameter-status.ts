/** A ParameterStatus payload (name NUL value NUL) into `params`. */
export function keepParameterStatus(params: Map<string, string>, payload: Buffer): void {
  const nul = payload.indexOf(0);
  if (nul <= 0) return;
  const end = payload.indexOf(0, nul + 1);
  params.set(payload.toString('utf8', 0, nul), payload.toString('utf8', nul + 1, end < 0 ? payload.length : end));
}
