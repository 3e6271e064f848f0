/**
 * The validate phase: what a request must satisfy before it is routed, for plain requests, upgrades and
 * HTTP/2 alike. Node's parser already refuses malformed framing (CL+TE, bad chunks, obs-fold…); these
 * are the rules a proxy adds on top, each of which was used to make the gateway and a replica disagree:
 *  - one Host (RFC 9112 §3.2); on HTTP/2, Host may not contradict :authority (RFC 9113 §8.3.1);
 *  - Host is `name[:port]` with a name of letters, digits, `-`, `_` and `.` (or an IPv6 literal) and a
 *    port of 1–5 digits up to 65535: userinfo (`a@b`) and anything else are refused;
 *  - an absolute-form target (`GET http://demo.localhost/`) routes by its authority, which must agree with
 *    Host (RFC 9112 §3.2.2), and is sent on in origin form; other targets must be origin form;
 *  - Connection may not nominate Host or the headers that frame and type the body: dropping them as
 *    hop-by-hop would hand the replica a request other than the one the gateway routed.
 */
import { normalizeHost } from '../protocol/keys.js';

/** What the validate phase established about a request. */
export interface ValidatedTarget {
  /** Normalized host the route is looked up by. */
  host: string;
  /** Host header value to send upstream (with the port, as the client gave it). */
  authority: string;
  /** Origin-form target. */
  path: string;
}

export type Validation = ({ ok: true } & ValidatedTarget) | { ok: false; message: string };

/** End-to-end headers the gateway relies on; a `Connection` header may not ask for their removal. */
const PROTECTED = new Set(['host', 'content-length', 'content-type']);

const NAME = /^[a-z0-9_](?:[a-z0-9_.-]{0,252})$/i;
const IPV6 = /^\[[0-9a-f:.]{2,45}\]$/i;
const PORT = /^[0-9]{1,5}$/;

/** Checks a Host or :authority value: `name[:port]`. Returns the problem, or null when it is acceptable. */
export function authorityProblem(value: string): string | null {
  if (value.includes('@')) return 'userinfo is not allowed in Host';
  let name = value;
  let port: string | undefined;
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end < 0) return 'invalid IPv6 literal in Host';
    name = value.slice(0, end + 1);
    const rest = value.slice(end + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return 'invalid Host';
      port = rest.slice(1);
    }
    if (!IPV6.test(name)) return 'invalid IPv6 literal in Host';
  } else {
    const colon = value.indexOf(':');
    if (colon >= 0) {
      name = value.slice(0, colon);
      port = value.slice(colon + 1);
    }
    if (!NAME.test(name)) return 'invalid host name in Host';
  }
  if (port !== undefined && (!PORT.test(port) || Number(port) > 65535)) return 'invalid port in Host';
  return null;
}

interface RequestLike {
  url?: string;
  method?: string;
  httpVersionMajor: number;
  rawHeaders: string[];
  headers: Record<string, string | string[] | undefined>;
}

/**
 * `forwardedHost`: the host a trusted edge forwarded the request for (from X-Forwarded-Host, for edges that
 * cannot set Host, such as Cloudflare Workers); it is checked like a Host and routes the request.
 */
export function validateRequest(req: RequestLike, forwardedHost?: string): Validation {
  let hostHeader: string | undefined;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 4 && name.toLowerCase() === 'host') {
      // Node keeps the first of several Host headers and drops the rest; a proxy must refuse instead.
      if (hostHeader !== undefined) return { ok: false, message: 'more than one Host header' };
      hostHeader = (raw[i + 1] as string).trim();
    } else if (name.length === 10 && name.toLowerCase() === 'connection') {
      for (const token of (raw[i + 1] as string).split(',')) {
        const t = token.trim().toLowerCase();
        if (PROTECTED.has(t)) return { ok: false, message: `Connection may not nominate ${t}` };
      }
    }
  }
  let authority = hostHeader;
  if (req.httpVersionMajor === 2) {
    const pseudo = req.headers[':authority'] as string | undefined;
    if (pseudo !== undefined) {
      if (hostHeader !== undefined && normalizeHost(hostHeader) !== normalizeHost(pseudo))
        return { ok: false, message: 'Host header does not match :authority' };
      authority = pseudo;
    }
  }
  if (forwardedHost !== undefined) authority = forwardedHost.trim();
  if (authority !== undefined && authority !== '') {
    const problem = authorityProblem(authority);
    if (problem) return { ok: false, message: problem };
  }

  let path = req.url ?? '/';
  if (path.charCodeAt(0) !== 47 /* '/' */) {
    const absolute = /^https?:\/\/([^/?#]*)(.*)$/i.exec(path);
    if (!absolute) return { ok: false, message: 'request target must be origin-form or absolute-form' };
    const target = absolute[1] as string;
    const problem = authorityProblem(target);
    if (problem) return { ok: false, message: `${problem.replace('Host', 'the request target')}` };
    // RFC 9112 §3.2.2: the target's authority wins over Host, and a proxy must not forward a disagreement.
    if (authority !== undefined && authority !== '' && normalizeHost(authority) !== normalizeHost(target))
      return { ok: false, message: 'Host header does not match the request target' };
    authority = target;
    const rest = absolute[2] as string;
    path = rest === '' || rest.startsWith('?') ? `/${rest}` : rest;
    if (path.charCodeAt(0) !== 47) return { ok: false, message: 'invalid request target' };
  }
  return { ok: true, host: normalizeHost(authority), authority: authority ?? '', path };
}
