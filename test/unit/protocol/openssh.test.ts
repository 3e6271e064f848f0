import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, describe, expect, it } from 'vitest';
import { ed25519FromSsh, openSshPrivateKey, sshPublicKeyLine } from '../../../protocol/openssh.js';
import { generateKeyPair } from '../../../protocol/signing.js';
import { tempDir } from '../../helpers/tmp.js';

describe('the CLI key in OpenSSH form', () => {
  const dir = tempDir('allegra-openssh-');
  afterAll(() => dir.cleanup());

  it('writes a private key that OpenSSH reads as the same Ed25519 key', () => {
    const kp = generateKeyPair();
    const file = join(dir.path, 'key.openssh');
    writeFileSync(file, openSshPrivateKey(kp), { mode: 0o600 });
    // ssh-keygen -y derives the public key from the private file: it must be ours.
    const derived = execFileSync('ssh-keygen', ['-y', '-f', file], { encoding: 'utf8' }).trim();
    expect(derived.split(' ').slice(0, 2).join(' ')).toBe(sshPublicKeyLine(kp.publicKeyHex));
    expect(ed25519FromSsh(derived)).toBe(kp.publicKeyHex);
    const parsed = ssh2.utils.parseKey(openSshPrivateKey(kp));
    expect(parsed instanceof Error ? parsed.message : parsed.type).toBe('ssh-ed25519');
  });

  it('reads only well-formed ssh-ed25519 public keys', () => {
    const kp = generateKeyPair();
    expect(ed25519FromSsh(`${sshPublicKeyLine(kp.publicKeyHex)} me@host`)).toBe(kp.publicKeyHex);
    expect(ed25519FromSsh('ssh-rsa AAAAB3NzaC1yc2E=')).toBeUndefined();
    expect(ed25519FromSsh(`ssh-ed25519 ${Buffer.from('garbage').toString('base64')}`)).toBeUndefined();
  });
});
