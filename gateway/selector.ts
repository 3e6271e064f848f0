/**
 * Replica selection (the "select" phase), shared by plain HTTP, gRPC and WebSocket handshakes: the
 * route's sticky choice when it asks for one (cookie or header), P2C otherwise, skipping replicas this
 * request already tried, replicas at their in-flight cap and replicas on which this client already holds
 * its share. `ReplicaLoad` is the per-replica half of the accounting (the balancer keeps the latency and
 * ejection half); every transport starts and ends its attempts through it, so caps hold across all of them.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Balancer } from '../router/balancer.js';
import type { Upstream } from './routing.js';

export interface ReplicaCaps {
  /** Attempts in flight on one replica before it counts as full. */
  perReplica: number;
  /** Attempts one client address may have in flight on one replica. */
  perClient: number;
}

interface Load {
  inFlight: number;
  byClient: Map<string, number>;
}

/** In-flight attempts per replica and per client on it. */
export class ReplicaLoad {
  private readonly loads = new Map<string, Load>();

  inFlight(id: string): number {
    return this.loads.get(id)?.inFlight ?? 0;
  }

  /** Whether one more attempt by `client` on replica `id` stays within the caps. */
  hasRoom(id: string, client: string, caps: ReplicaCaps): boolean {
    const load = this.loads.get(id);
    if (!load) return true;
    return load.inFlight < caps.perReplica && (load.byClient.get(client) ?? 0) < caps.perClient;
  }

  start(id: string, client: string): void {
    let load = this.loads.get(id);
    if (!load) this.loads.set(id, (load = { inFlight: 0, byClient: new Map() }));
    load.inFlight++;
    load.byClient.set(client, (load.byClient.get(client) ?? 0) + 1);
  }

  end(id: string, client: string): void {
    const load = this.loads.get(id);
    if (!load) return;
    load.inFlight--;
    const n = (load.byClient.get(client) ?? 1) - 1;
    if (n <= 0) load.byClient.delete(client);
    else load.byClient.set(client, n);
    if (load.inFlight <= 0) this.loads.delete(id);
  }
}

export interface StickyPolicy {
  stickyCookie: string | undefined;
  stickyHeader: string | undefined;
  stickyInsert?: boolean;
}

/**
 * The session of a request: its sticky key, and the cookie value the gateway mints for a client that has
 * none on a route whose cookie the gateway owns. A minted value is random; the replica it maps to (by the
 * balancer's sticky hashing) serves the request, and the answer sets the cookie, so the client's next
 * requests land there too — and when replicas are added, only the sessions that hash to the new ones move.
 */
export function sessionOf(headers: IncomingHttpHeaders, policy: StickyPolicy): { key: string | undefined; minted: string | undefined } {
  const key = stickyKeyOf(headers, policy);
  if (key !== undefined || !policy.stickyInsert || !policy.stickyCookie) return { key, minted: undefined };
  const minted = randomBytes(12).toString('base64url');
  return { key: minted, minted };
}

/** The Set-Cookie of a minted session. */
export function sessionCookie(name: string, value: string): string {
  return `${name}=${value}; Path=/; HttpOnly; SameSite=Lax`;
}

/** The session key of a request for a route with sticky sessions, if it carries one. */
export function stickyKeyOf(headers: IncomingHttpHeaders, policy: StickyPolicy): string | undefined {
  const { stickyHeader, stickyCookie } = policy;
  if (stickyHeader) {
    const v = headers[stickyHeader];
    if (typeof v === 'string' && v) return v;
  }
  if (stickyCookie) {
    const cookie = headers.cookie;
    if (cookie) {
      for (const part of cookie.split(';')) {
        const eq = part.indexOf('=');
        if (eq > 0 && part.slice(0, eq).trim() === stickyCookie) return part.slice(eq + 1).trim();
      }
    }
  }
  return undefined;
}

export type Selection = { upstream: Upstream } | { upstream: undefined; full: boolean };

/**
 * Picks a replica for one attempt. `tried` collects replicas this request must not use again (tried
 * before, or found full); it is created on demand so the common first pick allocates nothing.
 */
export function selectReplica(
  balancer: Balancer<Upstream>,
  load: ReplicaLoad,
  caps: ReplicaCaps,
  client: string,
  stickyKey: string | undefined,
  tried: { set: Set<string> | null },
): Selection {
  let full = false;
  for (let i = 0; i < 4; i++) {
    const exclude = tried.set ?? undefined;
    const u = stickyKey !== undefined ? balancer.pickSticky(stickyKey, exclude) : balancer.pick(exclude);
    if (!u) return { upstream: undefined, full };
    if (load.hasRoom(u.id, client, caps)) return { upstream: u };
    // Full replica (or this client's share of it is): skip it for this request and look for another.
    full = true;
    (tried.set ??= new Set()).add(u.id);
  }
  return { upstream: undefined, full };
}
