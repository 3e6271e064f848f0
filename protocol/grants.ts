/**
 * Grants: the owner's own signed requests, kept in the records they caused, so that a reader can check a
 * record against the key that was allowed to ask for it instead of trusting whoever wrote the registry.
 *
 * - An instance record keeps the signed `create` request: its id is derived from that request's signature,
 *   its owner is that request's signer and its name is the one the request asked for.
 * - A route record keeps the signed `create` and `expose` requests that made it; a gateway serves a host
 *   only for an instance whose owner (or a team key) signed a request naming that host, and takes TLS,
 *   port and policy from those requests rather than from the record.
 * Pure functions: no I/O, shared by gateways, agents and `allegra verify`.
 */
import { canonicalJson } from './records.js';
import { routePolicy } from './schemas.js';
import { envelopeOf, type KeyPair, SIGNATURE_HEADERS, type SignedEnvelope, sha256Hex, signRequest, verifyEnvelope } from './signing.js';
import type { InstanceSpec, RoutePolicy, RouteRecord } from './types.js';

export interface Grant {
  envelope: SignedEnvelope;
  /** The exact body of the signed request (small JSON for the requests kept as grants). */
  body: string;
}

/** Largest request body kept as a grant: grants are small JSON requests, never uploads. */
export const MAX_GRANT_BODY = 16 * 1024;

export type GrantCheck =
  | { ok: true; signer: string; path: string; method: string; body: Record<string, unknown> }
  | { ok: false; reason: string };

/** Verifies a grant's signature and that its body is the one signed. */
export function checkGrant(grant: Grant): GrantCheck {
  if (grant.body.length > MAX_GRANT_BODY) return { ok: false, reason: 'grant body too large' };
  const check = verifyEnvelope(grant.envelope);
  if (!check.ok) return check;
  if (sha256Hex(grant.body) !== check.bodySha256) return { ok: false, reason: 'grant body does not match its signed hash' };
  let body: unknown;
  try {
    body = grant.body === '' ? {} : JSON.parse(grant.body);
  } catch {
    return { ok: false, reason: 'grant body is not JSON' };
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { ok: false, reason: 'grant body is not an object' };
  return {
    ok: true,
    signer: check.publicKey,
    path: grant.envelope.path.split('?')[0] as string,
    method: grant.envelope.method,
    body: body as Record<string, unknown>,
  };
}

/** The instance id a create request yields: a hash of its signature, so the id binds owner, name and time. */
export function instanceIdFor(createGrant: Grant): string {
  const sig = createGrant.envelope.headers[SIGNATURE_HEADERS.signature] ?? '';
  return `i-${sha256Hex(`allegra-instance\n${sig}`).slice(0, 12)}`;
}

/** Checks that an instance record is what its owner's create request made: id, owner and name. */
export function checkInstance(spec: InstanceSpec): string | undefined {
  if (!spec.createGrant) return 'instance record carries no create request';
  const g = checkGrant(spec.createGrant);
  if (!g.ok) return `create request: ${g.reason}`;
  if (g.method !== 'POST' || g.path !== '/v1/instances') return 'create request is not a create';
  if (g.signer !== spec.owner) return 'owner is not the key that created the instance';
  if (g.body.name !== spec.name) return 'name is not the one the owner asked for';
  if (instanceIdFor(spec.createGrant) !== spec.id) return 'id does not derive from the create request';
  return undefined;
}

/**
 * The route a gateway may serve for `record`, derived from the owner-signed requests it carries, or the
 * reason it may not serve it. `instance` is the record of `record.instanceName`.
 */
export function routeFromGrants(record: RouteRecord, instance: InstanceSpec | undefined, baseDomain: string): RouteRecord | string {
  if (!instance || instance.id !== record.instanceId) return 'route names an instance that does not exist';
  const bad = checkInstance(instance);
  if (bad) return `instance ${instance.name}: ${bad}`;
  const allowed = new Set([instance.owner, ...instance.authorized]);
  const own = `${instance.name}.${baseDomain}`;
  let granted = false;
  let tls: RouteRecord['tls'];
  let port: number | undefined;
  let policy: RoutePolicy | undefined;
  for (const grant of record.grants ?? []) {
    const g = checkGrant(grant);
    if (!g.ok) return `grant: ${g.reason}`;
    if (!allowed.has(g.signer)) return 'grant is signed by a key that may not operate the instance';
    if (g.method === 'POST' && g.path === '/v1/instances' && g.body.name === instance.name) {
      if (record.host === own) granted = true;
      policy = routePolicyOf(g.body.policy);
    } else if (g.method === 'POST' && g.path === `/v1/instances/${encodeURIComponent(instance.name)}/expose`) {
      const host = typeof g.body.domain === 'string' ? g.body.domain.toLowerCase() : own;
      if (host !== record.host) return `grant exposes ${host}, not ${record.host}`;
      granted = true;
      tls = { redirectHttp: g.body.redirectHttp !== false };
      port = typeof g.body.port === 'number' ? g.body.port : undefined;
    } else {
      return `grant ${g.method} ${g.path} does not concern route ${record.host}`;
    }
  }
  if (!granted) return `no request of the instance's owner names ${record.host}`;
  const route: RouteRecord = { ...record, kind: record.host === own ? 'network' : 'custom' };
  delete route.tls;
  delete route.port;
  delete route.policy;
  if (tls) route.tls = tls;
  if (port !== undefined) route.port = port;
  if (policy) route.policy = policy;
  return route;
}

/** The route policy an owner asked for on create, if well formed (gateways only ever tighten their limits with it). */
function routePolicyOf(value: unknown): RoutePolicy | undefined {
  if (value === undefined) return undefined;
  const parsed = routePolicy.safeParse(value);
  return parsed.success && Object.keys(parsed.data).length > 0 ? parsed.data : undefined;
}

/**
 * Makes a grant the way the CLI's request would carry it: for tools that seed a registry without an agent
 * (tests, benchmarks, simulations). `audience` is the node id the request would have been sent to.
 */
export function makeGrant(keyPair: KeyPair, method: string, path: string, body: unknown, audience = 'seed'): Grant {
  const text = JSON.stringify(body);
  const headers = signRequest(keyPair, { method, path, audience, body: text, headers: { 'content-type': 'application/json' } });
  return { envelope: envelopeOf(method, path, headers), body: text };
}

/** A stable fingerprint of a grant list, for caching verification results. */
export function grantsFingerprint(grants: Grant[] | undefined): string {
  return sha256Hex(canonicalJson(grants ?? []));
}
