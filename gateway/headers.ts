/**
 * Header handling for proxied requests and responses: hop-by-hop headers (RFC 9110 §7.6.1, plus those
 * the Connection header names) are dropped; forwarding headers are set by the gateway.
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
]);
/** Request headers the gateway sets itself; client-sent values are replaced. */
const GATEWAY_SET = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-id', 'expect']);

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function connectionListed(raw: string[]): Set<string> | null {
  let listed: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).length === 10 && (raw[i] as string).toLowerCase() === 'connection') {
      for (const token of (raw[i + 1] as string).split(',')) {
        const t = token.trim().toLowerCase();
        if (t) (listed ??= new Set()).add(t);
      }
    }
  }
  return listed;
}

/** Builds the flat [name, value, …] header list sent upstream. Returns the request id in use too. */
export function upstreamRequestHeaders(
  raw: string[],
  ctx: { clientIp: string; proto: string; host: string; mintId: () => string },
): { headers: string[]; requestId: string } {
  const listed = connectionListed(raw);
  const out: string[] = [];
  let requestId: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const lower = name.toLowerCase();
    if (lower === 'x-request-id') {
      const v = raw[i + 1] as string;
      if (requestId === undefined && REQUEST_ID.test(v)) requestId = v;
      continue;
    }
    if (HOP_BY_HOP.has(lower) || GATEWAY_SET.has(lower) || listed?.has(lower)) continue;
    out.push(name, raw[i + 1] as string);
  }
  requestId ??= ctx.mintId();
  out.push('x-forwarded-for', ctx.clientIp, 'x-forwarded-proto', ctx.proto, 'x-forwarded-host', ctx.host, 'x-request-id', requestId);
  return { headers: out, requestId };
}

/** Copies upstream response headers for the client, without hop-by-hop ones. */
export function clientResponseHeaders(
  headers: Record<string, string | string[] | undefined>,
  requestId: string,
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
  return out;
}
