/**
 * The CLI's Ed25519 key as OpenSSH sees it. The key file is PKCS#8 PEM, which OpenSSH cannot read, so the
 * CLI writes the same key material beside it in OpenSSH's own format (`openssh-key-v1`, unencrypted), and
 * public keys are shown as `ssh-ed25519 AAAA…` lines. Encoding per OpenSSH's PROTOCOL.key; node:crypto only.
 */
import { createPublicKey, randomBytes } from 'node:crypto';
import type { KeyPair } from './signing.js';

function sshString(data: Buffer | string): Buffer {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length);
  return Buffer.concat([len, bytes]);
}

const KEY_TYPE = 'ssh-ed25519';

/** The SSH wire form of an Ed25519 public key: string "ssh-ed25519", string key. */
export function publicKeyBlob(publicKeyHex: string): Buffer {
  return Buffer.concat([sshString(KEY_TYPE), sshString(Buffer.from(publicKeyHex, 'hex'))]);
}

/** `ssh-ed25519 AAAA… comment`: an authorized_keys / known_hosts line. */
export function sshPublicKeyLine(publicKeyHex: string, comment = ''): string {
  return `${KEY_TYPE} ${publicKeyBlob(publicKeyHex).toString('base64')}${comment ? ` ${comment}` : ''}`;
}

/** The raw 32-byte key (hex) of an `ssh-ed25519 AAAA…` line or wire blob; undefined for anything else. */
export function ed25519FromSsh(input: string | Buffer): string | undefined {
  let blob: Buffer;
  if (typeof input === 'string') {
    const m = /^ssh-ed25519\s+([A-Za-z0-9+/=]+)(\s.*)?$/.exec(input.trim());
    if (!m) return undefined;
    blob = Buffer.from(m[1] as string, 'base64');
  } else blob = input;
  try {
    const typeLen = blob.readUInt32BE(0);
    if (blob.subarray(4, 4 + typeLen).toString() !== KEY_TYPE) return undefined;
    const keyLen = blob.readUInt32BE(4 + typeLen);
    const key = blob.subarray(8 + typeLen, 8 + typeLen + keyLen);
    return keyLen === 32 && key.length === 32 && blob.length === 8 + typeLen + keyLen ? key.toString('hex') : undefined;
  } catch {
    return undefined;
  }
}

/** The private key in OpenSSH format (what `ssh -i FILE` reads), unencrypted like the PEM it mirrors. */
export function openSshPrivateKey(keyPair: KeyPair, comment = 'allegra'): string {
  const jwk = keyPair.privateKey.export({ format: 'jwk' });
  if (!jwk.d) throw new Error('not an Ed25519 private key');
  const seed = Buffer.from(jwk.d, 'base64url');
  const pub = Buffer.from(keyPair.publicKeyHex, 'hex');
  const blob = publicKeyBlob(keyPair.publicKeyHex);
  const check = randomBytes(4);
  let priv = Buffer.concat([
    check,
    check,
    sshString(KEY_TYPE),
    sshString(pub),
    // OpenSSH keeps the 64-byte "secret key" of the reference implementation: seed then public key.
    sshString(Buffer.concat([seed, pub])),
    sshString(comment),
  ]);
  const pad = (8 - (priv.length % 8)) % 8;
  priv = Buffer.concat([priv, Buffer.from(Array.from({ length: pad }, (_, i) => i + 1))]);
  const body = Buffer.concat([
    Buffer.from('openssh-key-v1\0'),
    sshString('none'),
    sshString('none'),
    sshString(''),
    Buffer.from([0, 0, 0, 1]),
    sshString(blob),
    sshString(priv),
  ]);
  const lines = body.toString('base64').match(/.{1,70}/g) ?? [];
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines.join('\n')}\n-----END OPENSSH PRIVATE KEY-----\n`;
}

/** Checks that `hex` is what node:crypto derives as the public key of the pair (guards against a mixed-up pair). */
export function samePublicKey(keyPair: KeyPair): boolean {
  const jwk = createPublicKey(keyPair.privateKey).export({ format: 'jwk' });
  return Buffer.from(jwk.x ?? '', 'base64url').toString('hex') === keyPair.publicKeyHex;
}
