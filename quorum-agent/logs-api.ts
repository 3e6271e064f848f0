/**
 * `GET /v1/instances/:name/logs?since=MS&follow=1&limit=N`: the output of every replica on every member of
 * the instance's quorum, merged by time, as JSON lines `{t, node, replica, stream, line}`. The CLI and the
 * UI read this same API. The agent asked reads its own files and asks each other member for theirs
 * (`…/logs/member`), signing as a node and passing on the caller's own signed request: a member serves
 * an instance's logs only to a node that shows a fresh request of a key allowed to read them.
 */
import { join } from 'node:path';
import type { Hono } from 'hono';
import { RpcClient } from '../protocol/client.js';
import { AllegraError } from '../protocol/errors.js';
import { type KeyPair, SIGNATURE_HEADERS, type SignedEnvelope, verifyEnvelope } from '../protocol/signing.js';
import type { ClusterView } from '../registry/cluster-view.js';
import type { InstanceService } from './instances.js';
import { followLogs, readLogs, type SlotLine } from './logs.js';
import type { SignedRequests } from './rpc.js';

export interface LogsDeps {
  nodeId: string;
  keyPair: KeyPair;
  service: InstanceService;
  view: ClusterView;
  dataDir: string;
}

/** One line as the API sends it. */
export interface ApiLogLine {
  t: number;
  node: string;
  replica: number;
  stream: 'out' | 'err';
  line: string;
}

const DELEGATION = 'x-allegra-on-behalf-of';
const DEFAULT_LIMIT = 1_000;
const MAX_LIMIT = 10_000;
/** How old a passed-on user request may be: long enough for one fan-out, too short to be worth stealing. */
const DELEGATION_MAX_AGE_MS = 60_000;

function query(url: string): { since: number; follow: boolean; limit: number } {
  const q = new URL(url).searchParams;
  const since = Number(q.get('since') ?? 0);
  const limit = Number(q.get('limit') ?? DEFAULT_LIMIT);
  if (!Number.isFinite(since) || since < 0) throw new AllegraError('bad_request', 'since must be a time in milliseconds');
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT)
    throw new AllegraError('bad_request', `limit must be from 1 to ${MAX_LIMIT}`);
  return { since, follow: q.get('follow') === '1', limit };
}

const ndjson = (lines: unknown[]) => lines.map((l) => `${JSON.stringify(l)}\n`).join('');

export function logRoutes(deps: LogsDeps): (app: Hono, requests: SignedRequests) => void {
  const dirOf = (instanceId: string) => join(deps.dataDir, 'logs', instanceId);
  const local = (instanceId: string, since: number, limit: number): ApiLogLine[] =>
    readLogs(dirOf(instanceId), since, limit).map((l) => toApi(deps.nodeId, l));

  /** A stream of JSON lines: the backlog, then (following) what is appended, until the client leaves. */
  const respond = (backlog: Promise<ApiLogLine[]>, live?: (push: (lines: ApiLogLine[]) => void) => () => void): Response => {
    let stop: (() => void) | undefined;
    const encoder = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        const lines = await backlog.catch((err: Error) => {
          controller.error(err);
          return undefined;
        });
        if (!lines) return;
        controller.enqueue(encoder.encode(ndjson(lines)));
        if (!live) return controller.close();
        controller.enqueue(encoder.encode(ndjson([{ live: true }])));
        stop = live((more) => {
          try {
            controller.enqueue(encoder.encode(ndjson(more)));
          } catch {
            stop?.();
          }
        });
      },
      cancel() {
        stop?.();
      },
    });
    return new Response(body, { headers: { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' } });
  };

  return (app, { signedNoBody }) => {
    app.get('/v1/instances/:name/logs', async (c) => {
      const { signer, envelope } = await signedNoBody(c);
      const { spec } = await deps.service.authorized(c.req.param('name'), signer);
      const { since, follow, limit } = query(c.req.url);
      const members = (deps.view.quorumOf(spec.id)?.members ?? [deps.nodeId]).filter((m) => m === deps.nodeId || deps.view.node(m));
      const peers = members.filter((m) => m !== deps.nodeId);
      const streams = peers.map((m) => memberStream(deps, m, spec.name, envelope, since, limit, follow));
      const backlog = Promise.all([
        Promise.resolve(members.includes(deps.nodeId) ? local(spec.id, since, limit) : []),
        // A member that does not answer in time leaves its lines out rather than holding up everyone's.
        ...streams.map((s) => Promise.race([s.backlog, new Promise<ApiLogLine[]>((r) => setTimeout(() => r([]), 5_000).unref())])),
      ]).then((parts) =>
        parts
          .flat()
          .sort((a, b) => a.t - b.t)
          .slice(-limit),
      );
      if (!follow) return respond(backlog);
      return respond(backlog, (push) => {
        const stopLocal = followLogs(dirOf(spec.id), (lines) => push(lines.map((l) => toApi(deps.nodeId, l))));
        for (const s of streams) s.onLive(push);
        return () => {
          stopLocal();
          for (const s of streams) s.stop();
        };
      });
    });

    /** A member's own lines, for another node passing on a reader's request. */
    app.get('/v1/instances/:name/logs/member', async (c) => {
      const { signer } = await signedNoBody(c);
      if (!deps.view.nodeByKey(signer)) throw new AllegraError('forbidden', 'only nodes of the network may ask for a member’s logs');
      const user = delegatedReader(c.req.header(DELEGATION), c.req.param('name'));
      const { spec } = await deps.service.authorized(c.req.param('name'), user);
      const { since, follow, limit } = query(c.req.url);
      const backlog = Promise.resolve(local(spec.id, since, limit));
      if (!follow) return respond(backlog);
      return respond(backlog, (push) => followLogs(dirOf(spec.id), (lines) => push(lines.map((l) => toApi(deps.nodeId, l)))));
    });
  };
}

/** The key of the reader whose request a node passes on, after checking that request. */
function delegatedReader(header: string | undefined, name: string): string {
  if (!header) throw new AllegraError('forbidden', 'a member’s logs need the reader’s own signed request');
  let envelope: SignedEnvelope;
  try {
    envelope = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as SignedEnvelope;
  } catch {
    throw new AllegraError('bad_request', 'malformed reader request');
  }
  const check = verifyEnvelope(envelope);
  if (!check.ok) throw new AllegraError('unauthenticated', `reader request: ${check.reason}`);
  const path = envelope.path.split('?')[0];
  if (envelope.method !== 'GET' || path !== `/v1/instances/${encodeURIComponent(name)}/logs`)
    throw new AllegraError('forbidden', 'the reader request is not a request for these logs');
  const age = Date.now() - Number(envelope.headers[SIGNATURE_HEADERS.timestamp]);
  if (!(Math.abs(age) <= DELEGATION_MAX_AGE_MS)) throw new AllegraError('unauthenticated', 'the reader request is too old; ask again');
  return check.publicKey;
}

function toApi(node: string, l: SlotLine): ApiLogLine {
  return { t: l.t, node, replica: l.replica, stream: l.s, line: l.m };
}

/** A remote member's lines: its backlog (empty if it does not answer), then its live lines when following. */
function memberStream(
  deps: LogsDeps,
  nodeId: string,
  name: string,
  reader: SignedEnvelope,
  since: number,
  limit: number,
  follow: boolean,
): { backlog: Promise<ApiLogLine[]>; onLive: (push: (lines: ApiLogLine[]) => void) => void; stop: () => void } {
  const node = deps.view.node(nodeId);
  let push: ((lines: ApiLogLine[]) => void) | undefined;
  const pendingLive: ApiLogLine[] = [];
  let destroy: (() => void) | undefined;
  let stopped = false;
  const backlog = (async (): Promise<ApiLogLine[]> => {
    if (!node) return [];
    const client = new RpcClient(node.rpc, deps.keyPair, nodeId);
    const res = await client.send({
      method: 'GET',
      path: `/v1/instances/${encodeURIComponent(name)}/logs/member?since=${since}&limit=${limit}${follow ? '&follow=1' : ''}`,
      headers: { [DELEGATION]: Buffer.from(JSON.stringify(reader)).toString('base64url') },
      timeoutMs: follow ? 0 : 15_000,
    });
    if (res.statusCode !== 200) {
      await res.body.dump();
      return [];
    }
    destroy = () => res.body.destroy();
    if (stopped) destroy();
    return new Promise<ApiLogLine[]>((resolve) => {
      const lines: ApiLogLine[] = [];
      let live = false;
      let buffered = '';
      const settle = () => {
        if (!live) {
          live = true;
          resolve(lines);
        }
      };
      res.body.setEncoding('utf8');
      res.body.on('data', (chunk: string) => {
        buffered += chunk;
        const parts = buffered.split('\n');
        buffered = parts.pop() ?? '';
        const fresh: ApiLogLine[] = [];
        for (const p of parts) {
          if (!p) continue;
          try {
            const v = JSON.parse(p) as ApiLogLine & { live?: boolean };
            if (v.live) settle();
            else (live ? fresh : lines).push(v);
          } catch {
            /* skip a malformed line */
          }
        }
        if (fresh.length > 0) {
          if (push) push(fresh);
          else pendingLive.push(...fresh);
        }
      });
      res.body.on('end', settle);
      res.body.on('error', settle);
    });
  })().catch(() => []);
  return {
    backlog,
    onLive: (p) => {
      push = p;
      if (pendingLive.length > 0) p(pendingLive.splice(0));
    },
    stop: () => {
      stopped = true;
      destroy?.();
    },
  };
}
