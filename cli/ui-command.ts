/**
 * `allegra ui [--open|--print] [--ttl DURATION]`: the dashboard's URL with a short-lived sign-in.
 *
 * A fresh session key pair is made here and the user's key signs a delegation to it (protocol/delegation.ts);
 * the URL's fragment carries the session's private key and the delegation. Browsers never send a fragment to
 * a server, the page moves it into its tab's session storage and drops it from the address bar, and the
 * user's own key never leaves this process. Whoever holds the URL acts for the user until it expires.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { delegate, encodeDelegation, MAX_DELEGATION_MS } from '../protocol/delegation.js';
import { publicKeyToHex } from '../protocol/signing.js';
import { loadKey, resolveRpc } from './config.js';
import type { GlobalOpts } from './instance-commands.js';
import { CliError, type Output } from './output.js';

const DEFAULT_TTL_MS = 60 * 60 * 1000;
const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000 };
/** PKCS#8 DER prefix of an Ed25519 private key; the 32-byte seed follows. */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export function parseTtl(value: string | undefined): number {
  if (value === undefined) return DEFAULT_TTL_MS;
  const m = /^(\d{1,6})([smh])$/.exec(value.trim());
  const ms = m ? Number(m[1]) * (UNITS[m[2] as string] as number) : Number.NaN;
  if (!(ms >= 60_000 && ms <= MAX_DELEGATION_MS))
    throw new CliError(`--ttl expects a duration from 1m to 12h, like 30m or 2h (got "${value}")`, 2);
  return ms;
}

/** A session key: its 32-byte seed (what the browser signs with) and its public key. */
export function sessionKey(): { seedHex: string; publicKeyHex: string; privateKey: ReturnType<typeof createPrivateKey> } {
  const seed = randomBytes(32);
  const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  return { seedHex: seed.toString('hex'), publicKeyHex: publicKeyToHex(createPublicKey(privateKey)), privateKey };
}

/** The first agent that answers its health check: the UI is served by it and signs for its node id. */
async function reachableAgent(urls: string[]): Promise<string> {
  for (const url of urls) {
    try {
      const res = await fetch(new URL('/v1/health', url), { signal: AbortSignal.timeout(5_000) });
      if (res.ok) return url;
    } catch {
      // next agent
    }
  }
  throw new CliError(`no agent answered at ${urls.join(', ')}`, 1);
}

function opener(): string | undefined {
  const candidates = [process.env.BROWSER, 'xdg-open', 'open'].filter((c): c is string => Boolean(c));
  return candidates.find((c) => spawnSync('sh', ['-c', `command -v "$0"`, c]).status === 0);
}

export async function uiCommand(opts: { open?: boolean; print?: boolean; ttl?: string }, g: GlobalOpts, out: Output): Promise<void> {
  if (opts.open && opts.print) throw new CliError('--open and --print exclude each other', 2);
  const ttlMs = parseTtl(opts.ttl);
  const owner = loadKey(g.key);
  const agent = await reachableAgent(resolveRpc(g.rpc));
  const session = sessionKey();
  const delegation = delegate(owner, session.publicKeyHex, ttlMs);
  const url = `${new URL('/ui/', agent).toString()}#k=${session.seedHex}&d=${encodeDelegation(delegation)}`;
  const expiresAt = new Date(delegation.expiresAt).toISOString();
  // CLI.md: open it where a browser exists (a display and an opener), unless --print; --open insists.
  const hasDisplay = Boolean(process.env.DISPLAY || process.env.WAYLAND_DISPLAY || process.platform === 'darwin');
  const launcher = opts.print ? undefined : opener();
  let opened = false;
  if (opts.open && !launcher) throw new CliError('--open: no browser found (set BROWSER); the URL is printed with --print', 2);
  if (launcher && (opts.open || hasDisplay)) {
    spawn(launcher, [url], { stdio: 'ignore', detached: true })
      .on('error', () => {})
      .unref();
    opened = true;
  }
  out.result(
    { url, expiresAt, owner: owner.publicKeyHex, session: session.publicKeyHex, opened },
    () =>
      `${url}\n\nsigned in as ${owner.publicKeyHex.slice(0, 16)}… until ${expiresAt}; anyone holding this URL acts for your key until then${opened ? ' (opened in your browser)' : ''}`,
  );
}
