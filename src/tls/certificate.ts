import { X509Certificate, createPrivateKey, webcrypto } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { PgsError } from '../core/errors.js';

/**
 * The router's wildcard certificate for `*.<domain>`. `pgs setup` makes a
 * self-signed one (ECDSA P-256) when none is given; a given pair is checked
 * (parses, key matches, names cover the tenants' host names) before it is used.
 */
export interface CertificateInfo {
  subject: string;
  names: string[];
  validTo: Date;
  fingerprint256: string;
}

export async function generateSelfSigned(domain: string, days = 825): Promise<{ certPem: string; keyPem: string }> {
  const x509 = await import('@peculiar/x509');
  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(notBefore.getTime() + days * 86_400_000);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1'),
    name: `CN=*.${domain}, O=pgs self-signed`,
    notBefore,
    notAfter,
    keys: keys as CryptoKeyPair,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension([
        { type: 'dns', value: `*.${domain}` },
        { type: 'dns', value: domain },
      ]),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', (keys as CryptoKeyPair).privateKey);
  const keyPem = createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }).toString();
  return { certPem: cert.toString('pem'), keyPem };
}

/** Reads and checks a certificate + key pair; throws CERT_INVALID with a reason a person can act on. */
export async function checkCertificatePair(certFile: string, keyFile: string, domain: string): Promise<CertificateInfo> {
  let certPem: string;
  let keyPem: string;
  try {
    certPem = await fs.readFile(certFile, 'utf8');
  } catch (err) {
    throw new PgsError('CERT_INVALID', `cannot read the certificate ${certFile}: ${(err as Error).message}`);
  }
  try {
    keyPem = await fs.readFile(keyFile, 'utf8');
  } catch (err) {
    throw new PgsError('CERT_INVALID', `cannot read the key ${keyFile}: ${(err as Error).message}`);
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new PgsError('CERT_INVALID', `${certFile} is not a PEM certificate (${(err as Error).message})`);
  }
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new PgsError('CERT_INVALID', `${keyFile} is not a PEM private key (${(err as Error).message})`);
  }
  if (!cert.checkPrivateKey(key)) {
    throw new PgsError('CERT_INVALID', `the key ${keyFile} does not belong to the certificate ${certFile}`);
  }
  const validTo = new Date(cert.validTo);
  if (validTo.getTime() < Date.now()) {
    throw new PgsError('CERT_INVALID', `the certificate ${certFile} expired on ${validTo.toISOString()}`);
  }
  const probe = `tenant-abc123.${domain}`;
  const names = (cert.subjectAltName ?? '').split(',').map((s) => s.trim().replace(/^DNS:/, '')).filter((s) => s.length > 0);
  // OpenSSL's check refuses a wildcard right under a single label (*.localhost); libpq, which
  // is what verifies for psql and most drivers, takes it. So the libpq rule decides.
  if (cert.checkHost(probe) === undefined && !names.some((name) => libpqNameMatches(name.toLowerCase(), probe))) {
    throw new PgsError('CERT_INVALID', `the certificate ${certFile} does not cover tenant host names such as ${probe}: it needs the name *.${domain}`);
  }
  return { subject: cert.subject, names, validTo, fingerprint256: cert.fingerprint256 };
}

/** libpq's rule: a name matches exactly, or `*.rest` matches one label followed by `.rest`. */
export function libpqNameMatches(name: string, host: string): boolean {
  if (name === host) return true;
  if (!name.startsWith('*.')) return false;
  const dot = host.indexOf('.');
  return dot > 0 && host.slice(dot) === name.slice(1);
}
