import { lookup } from 'node:dns/promises';

/** Whether `hostname` resolves on this machine (false after `timeoutMs`). */
export async function resolves(hostname: string, timeoutMs = 1_000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      lookup(hostname).then(() => true, () => false),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The hostaddr connection strings need here: 127.0.0.1 when the name does not resolve on this machine. */
export async function localHostaddr(hostname: string): Promise<string | null> {
  return (await resolves(hostname)) ? null : '127.0.0.1';
}
