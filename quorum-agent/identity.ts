/** A node's persistent identity: a random id and an Ed25519 key kept in its data dir. */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPair, type KeyPair, keyPairFromPem, privateKeyToPem } from '../protocol/signing.js';

export interface NodeIdentity {
  id: string;
  keyPair: KeyPair;
}

export function loadOrCreateIdentity(dataDir: string): NodeIdentity {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, 'node.json');
  if (existsSync(file)) {
    const saved = JSON.parse(readFileSync(file, 'utf8')) as { id: string; key: string };
    return { id: saved.id, keyPair: keyPairFromPem(saved.key) };
  }
  const identity = { id: `n-${randomBytes(4).toString('hex')}`, keyPair: generateKeyPair() };
  writeFileSync(file, JSON.stringify({ id: identity.id, key: privateKeyToPem(identity.keyPair) }), { mode: 0o600 });
  return identity;
}
