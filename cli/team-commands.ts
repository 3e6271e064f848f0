/** `allegra auth add|remove|list NAME [PUBKEY]`: the team keys that may operate an instance besides its owner. */
import { ed25519FromSsh } from '../protocol/openssh.js';
import { client, type GlobalOpts, instancePath } from './instance-commands.js';
import { CliError, type Output } from './output.js';

/** A public key as `allegra keys show` prints it (64 hex characters), or an `ssh-ed25519 AAAA…` line. */
export function parsePublicKey(value: string): string {
  const v = value.trim();
  if (/^[0-9a-fA-F]{64}$/.test(v)) return v.toLowerCase();
  const fromSsh = ed25519FromSsh(v);
  if (fromSsh) return fromSsh;
  throw new CliError(
    `expected a public key: 64 hex characters (allegra keys show) or an ssh-ed25519 line (got "${value.slice(0, 40)}")`,
    2,
  );
}

interface KeysAnswer {
  owner: string;
  keys: string[];
  changed?: boolean;
  immutable?: boolean;
}

export async function authCommand(
  action: 'add' | 'remove' | 'list',
  name: string,
  pubkey: string | undefined,
  g: GlobalOpts,
  out: Output,
): Promise<void> {
  const rpc = client(g);
  if (action === 'list') {
    const r = await rpc.call<KeysAnswer>({ method: 'GET', path: instancePath(name, '/auth') });
    out.result(r, () =>
      [`owner ${r.owner}`, ...r.keys.map((k) => `team  ${k}`), ...(r.keys.length === 0 ? ['no team keys'] : [])].join('\n'),
    );
    return;
  }
  if (!pubkey) throw new CliError(`allegra auth ${action} NAME PUBKEY: the public key is missing`, 2);
  const key = parsePublicKey(pubkey);
  const r = await rpc.call<KeysAnswer>({ method: 'POST', path: instancePath(name, '/auth'), body: { json: { [action]: key } } });
  out.result(r, () =>
    r.changed === false
      ? `${key.slice(0, 16)}… already may operate ${name}; nothing changed`
      : action === 'add'
        ? `added team key ${key.slice(0, 16)}… to ${name} (${r.keys.length} team keys)`
        : `removed team key ${key.slice(0, 16)}… from ${name}: it is refused from now on, SSH included`,
  );
}
