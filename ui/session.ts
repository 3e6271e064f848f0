/**
 * The browser's sign-in and request signing. `allegra ui` puts a session key (32-byte seed) and the owner's
 * delegation in the URL's fragment; they move into this tab's sessionStorage (gone when the tab closes) and
 * out of the address bar and history at once. Every request is signed exactly as the CLI signs
 * (protocol/signing.ts, ALLEGRA-ED25519-V2) with @noble/ed25519, carrying the delegation in a signed header.
 * WebCrypto is avoided on purpose: it exists only in secure contexts, and an agent reached over plain HTTP on
 * a LAN address is not one.
 */
import * as ed from '@noble/ed25519';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes, randomBytes } from '@noble/hashes/utils.js';

ed.hashes.sha512 = sha512;

const STORAGE = 'allegra.session';
const SCHEME = 'ALLEGRA-ED25519-V2';

export interface Session {
  seed: Uint8Array;
  publicKey: string;
  delegation: string;
  owner: string;
  expiresAt: number;
}

function decodeDelegation(d: string): { owner: string; expiresAt: number } {
  const json = JSON.parse(atob(d.replace(/-/g, '+').replace(/_/g, '/')));
  return { owner: String(json.owner), expiresAt: Number(json.expiresAt) };
}

/** Takes a sign-in from the fragment (then drops it from the URL), else the one this tab already holds. */
export function loadSession(): Session | undefined {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const k = fragment.get('k');
  const d = fragment.get('d');
  if (k && d && /^[0-9a-f]{64}$/.test(k) && /^[A-Za-z0-9_-]{1,1024}$/.test(d)) {
    sessionStorage.setItem(STORAGE, JSON.stringify({ k, d }));
    history.replaceState(null, '', `${location.pathname}#/`);
  }
  const stored = sessionStorage.getItem(STORAGE);
  if (!stored) return undefined;
  try {
    const { k: seedHex, d: delegation } = JSON.parse(stored) as { k: string; d: string };
    const seed = hexToBytes(seedHex);
    const { owner, expiresAt } = decodeDelegation(delegation);
    return { seed, publicKey: bytesToHex(ed.getPublicKey(seed)), delegation, owner, expiresAt };
  } catch {
    sessionStorage.removeItem(STORAGE);
    return undefined;
  }
}

export function signOut(): void {
  sessionStorage.removeItem(STORAGE);
}

/** An RPC error as the agent states it (`{error:{code,message}}`), with its HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function base64(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export class Signer {
  private audience: Promise<string> | null = null;
  /** Largest upload the agent accepts (from its health answer). */
  maxArtifactBytes = 256 * 1024 * 1024;
  /** Agent clock minus ours, when they differ by more than a few seconds (signatures allow 30 s). */
  private skew = 0;

  constructor(readonly session: Session) {}

  private node(): Promise<string> {
    this.audience ??= fetch('/v1/health').then(async (res) => {
      const date = Date.parse(res.headers.get('date') ?? '');
      if (Number.isFinite(date) && Math.abs(date - Date.now()) > 5_000) this.skew = date - Date.now();
      const body = (await res.json()) as { node: string; maxArtifactBytes?: number };
      if (typeof body.maxArtifactBytes === 'number') this.maxArtifactBytes = body.maxArtifactBytes;
      return body.node;
    });
    return this.audience;
  }

  /** Learns the agent's node id and limits (once). */
  async ready(): Promise<void> {
    await this.node();
  }

  /** The signed headers for one request (the CLI's canonical form). */
  async headers(method: string, path: string, body: Uint8Array, extra: Record<string, string> = {}): Promise<Record<string, string>> {
    const h: Record<string, string> = {};
    for (const [k, v] of Object.entries(extra)) h[k.toLowerCase()] = v;
    h['x-allegra-key'] = this.session.publicKey;
    h['x-allegra-audience'] = await this.node();
    h['x-allegra-timestamp'] = String(Date.now() + this.skew);
    h['x-allegra-nonce'] = bytesToHex(randomBytes(16));
    h['x-allegra-content-sha256'] = bytesToHex(sha256(body));
    h['x-allegra-delegation'] = this.session.delegation;
    const names = Object.keys(h)
      .filter((n) => (n.startsWith('x-allegra-') && n !== 'x-allegra-signature') || n === 'content-type')
      .sort();
    const canonical = [SCHEME, method.toUpperCase(), path, JSON.stringify(names.map((n) => [n, h[n]]))].join('\n');
    h['x-allegra-signature'] = base64(ed.sign(new TextEncoder().encode(canonical), this.session.seed));
    return h;
  }

  /** A signed request; resolves to the response, or throws the agent's error. */
  async send(
    method: string,
    path: string,
    opts: { json?: unknown; bytes?: Uint8Array; headers?: Record<string, string>; signal?: AbortSignal } = {},
  ): Promise<Response> {
    const body = opts.bytes ?? (opts.json === undefined ? new Uint8Array() : new TextEncoder().encode(JSON.stringify(opts.json)));
    const extra = { ...opts.headers };
    if (opts.json !== undefined) extra['content-type'] = 'application/json';
    if (opts.bytes) extra['content-type'] = 'application/octet-stream';
    const headers = await this.headers(method, path, body, extra);
    const res = await fetch(path, {
      method,
      headers,
      body: method === 'GET' || body.length === 0 ? undefined : (body as BufferSource),
      signal: opts.signal,
      cache: 'no-store',
    });
    if (!res.ok) {
      const err = (await res.json().catch(() => undefined)) as { error?: { code: string; message: string } } | undefined;
      throw new ApiError(res.status, err?.error?.code ?? 'http', err?.error?.message ?? `${res.status} ${res.statusText}`);
    }
    return res;
  }

  async json<T>(
    method: string,
    path: string,
    opts: { json?: unknown; bytes?: Uint8Array; headers?: Record<string, string> } = {},
  ): Promise<T> {
    return (await (await this.send(method, path, opts)).json()) as T;
  }
}
