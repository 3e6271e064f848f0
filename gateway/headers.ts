/**
 * Header handling for proxied requests and responses: hop-by-hop headers (RFC 9110 §7.6.1, plus those the
 * Connection header names) are dropped; the gateway sets X-Forwarded-For/-Proto/-Host, RFC 7239 Forwarded
 * and x-request-id. Forwarding headers sent by the client are kept (and appended to) only when the peer
 * is a configured trusted proxy; from anyone else they are replaced, so a client cannot spoof its address.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
  'http2-settings',
]);
const FORWARDING = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded']);

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The client's x-request-id when it is a valid one, else a fresh id (for answers made before admission). */
export function requestIdOf(headers: Record<string, string | string[] | undefined>): string {
  const given = headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : crypto.randomUUID();
}

function connectionListed(raw: string[]): Set<string> | null {
  let listed: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 10 && name.toLowerCase() === 'connection') {
      for (const token of (raw[i + 1] as string).split(',')) {
        const t = token.trim().toLowerCase();
        if (t) (listed ??= new Set()).add(t);
      }
    }
  }
  return listed;
}

export interface ForwardingContext {
  /** Address of the client as seen by the gateway (after PROXY protocol, if any). */
  clientIp: string;
  proto: string;
  /** Normalized host the request was routed by. */
  host: string;
  /** The Host header sent upstream: the validated authority the request was routed by. */
  authority: string;
  /** The peer is a trusted proxy: keep the forwarding headers it sent and append to them. */
  trusted: boolean;
  mintId: () => string;
  /** Keep the Upgrade/Connection pair (WebSocket handshakes). */
  upgrade?: boolean;
}

function forwardedFor(ip: string): string {
  return ip.includes(':') ? `"[${ip}]"` : ip;
}

/** Builds the flat [name, value, …] header list sent upstream, and returns the request id in use. */
export function upstreamRequestHeaders(raw: string[], ctx: ForwardingContext): { headers: string[]; requestId: string } {
  const listed = connectionListed(raw);
  let requestId: string | undefined;
  let xff: string | undefined;
  let xfp: string | undefined;
  let xfh: string | undefined;
  let fwd: string | undefined;
  // Exactly one Host, first: the authority the request was validated and routed by (validate.ts), never
  // a client header that validation did not see (e.g. :authority vs Host on HTTP/2, absolute-form targets).
  const out: string[] = ctx.authority ? ['host', ctx.authority] : [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    if (name.charCodeAt(0) === 58 /* ':' HTTP/2 pseudo-header */) continue;
    const lower = name.toLowerCase();
    if (lower === 'host') continue;
    if (lower === 'x-request-id') {
      if (requestId === undefined && REQUEST_ID.test(value)) requestId = value;
      continue;
    }
    if (FORWARDING.has(lower)) {
      if (!ctx.trusted) continue;
      if (lower === 'x-forwarded-for') xff = xff ? `${xff}, ${value}` : value;
      else if (lower === 'x-forwarded-proto') xfp ??= value;
      else if (lower === 'x-forwarded-host') xfh ??= value;
      else fwd = fwd ? `${fwd}, ${value}` : value;
      continue;
    }
    if (lower === 'expect') continue; // the gateway answered 100-continue itself
    // The Workers edge's credential toward the gateways: never passed on, whoever sent it.
    if (lower === 'x-allegra-edge') continue;
    if (HOP_BY_HOP.has(lower) || listed?.has(lower)) {
      if (ctx.upgrade && (lower === 'upgrade' || lower === 'connection')) out.push(name, value);
      continue;
    }
    out.push(name, value);
  }
  requestId ??= ctx.mintId();
  const hop = `for=${forwardedFor(ctx.clientIp)};proto=${ctx.proto};host="${ctx.host}"`;
  out.push(
    'x-forwarded-for',
    xff ? `${xff}, ${ctx.clientIp}` : ctx.clientIp,
    'x-forwarded-proto',
    xfp ?? ctx.proto,
    'x-forwarded-host',
    xfh ?? ctx.host,
    'forwarded',
    fwd ? `${fwd}, ${hop}` : hop,
    'x-request-id',
    requestId,
  );
  return { headers: out, requestId };
}

/** Copies upstream response headers for the client, without hop-by-hop ones. */
export function clientResponseHeaders(
  headers: Record<string, string | string[] | undefined>,
  requestId: string,
  close: boolean,
): Record<string, string | string[]> {
  const connection = headers.connection;
  const listed = connection
    ? new Set(
        String(connection)
          .split(',')
          .map((t) => t.trim().toLowerCase()),
      )
    : null;
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined || HOP_BY_HOP.has(name) || listed?.has(name)) continue;
    out[name] = v;
  }
  out['x-request-id'] = requestId;
  if (close) out.connection = 'close';
  return out;
}

/** Whether `ip` is covered by one of the trusted proxy entries (exact addresses or IPv4 CIDRs). */
export function makeTrustCheck(entries: string[]): (ip: string) => boolean {
  if (entries.length === 0) return () => false;
  const exact = new Set<string>();
  const cidrs: Array<{ base: number; mask: number }> = [];
  for (const e of entries) {
    const [addr, bits] = e.split('/');
    if (bits === undefined) exact.add(normalizeIp(e));
    else {
      const n = ipv4ToInt(addr ?? '');
      const b = Number(bits);
      if (n === null || !(b >= 0 && b <= 32)) throw new Error(`invalid trusted proxy "${e}": use an address or an IPv4 CIDR`);
      const mask = b === 0 ? 0 : (~0 << (32 - b)) >>> 0;
      cidrs.push({ base: (n & mask) >>> 0, mask });
    }
  }
  return (ip) => {
    const norm = normalizeIp(ip);
    if (exact.has(norm)) return true;
    const n = ipv4ToInt(norm);
    return n !== null && cidrs.some((c) => (n & c.mask) >>> 0 === c.base);
  };
}

function normalizeIp(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

function ipv4ToInt(ip: string): number | null {
  const parts = ip.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    const v = Number(p);
    if (!Number.isInteger(v) || v < 0 || v > 255 || p === '') return null;
    n = n * 256 + v;
  }
  return n >>> 0;
}
