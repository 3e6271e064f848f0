/**
 * TLS identities from Ed25519 keys. A node and a gateway each present a self-signed certificate made from
 * the same key they sign requests and records with; peers do not trust a CA, they pin the key: a gateway
 * accepts a node only if the certificate's key is the one in `nodes/<id>`, a node accepts a gateway only
 * if its key is in a live `gateways/<id>` record. TLS 1.3 then gives both authentication and encryption
 * between machines.
 */
import { createPublicKey, webcrypto, type X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import * as x509 from '@peculiar/x509';
import { type KeyPair, publicKeyToHex } from './signing.js';

export interface IdentityCert {
  certPem: string;
  keyPem: string;
}

const ED25519 = { name: 'Ed25519' };

/** A long-lived self-signed certificate for `keyPair`; its subject is only a label, the key is what counts. */
export async function identityCert(keyPair: KeyPair, commonName: string): Promise<IdentityCert> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const pkcs8 = keyPair.privateKey.export({ format: 'der', type: 'pkcs8' });
  const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, ED25519, false, ['sign']);
  const spki = createPublicKey(keyPair.privateKey).export({ format: 'der', type: 'spki' });
  const publicKey = await webcrypto.subtle.importKey('spki', spki, ED25519, true, ['verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(keyPair.publicKeyHex.slice(0, 16), 'hex').toString('hex'),
    name: `CN=${commonName.replace(/[^A-Za-z0-9._-]/g, '-')}`,
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + 10 * 365 * 86_400_000),
    signingAlgorithm: ED25519,
    keys: { privateKey, publicKey } as unknown as Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['keys'],
  });
  return { certPem: cert.toString('pem'), keyPem: keyPair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() };
}

/** The hex Ed25519 key of the peer's certificate, or undefined when it presented none (or another kind). */
export function peerKeyHex(socket: TLSSocket): string | undefined {
  const cert: X509Certificate | undefined = socket.getPeerX509Certificate();
  if (cert?.publicKey.asymmetricKeyType !== 'ed25519') return undefined;
  try {
    return publicKeyToHex(cert.publicKey);
  } catch {
    return undefined;
  }
}
