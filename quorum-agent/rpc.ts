/**
 * The agent's signed RPC API (Hono). Every route but `/v1/health` checks the signature over the request's
 * headers (which name the body's SHA-256, the audience and every `x-allegra-*` header) before it reads a
 * byte of the body; then reads at most the route's body limit and checks the body against the signed hash.
 * Instance routes authorize the signer against the instance's owner and team keys, blob routes against
 * the keys of registered nodes. Uploads stream to a temporary file and become a blob only once they hash
 * to the signed value.
 */
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { type Context, Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { AllegraError } from '../protocol/errors.js';
import type { Grant } from '../protocol/grants.js';
import { createInstanceRequest, exposeRequest, rollbackRequest, scaleRequest } from '../protocol/schemas.js';
import type { RequestVerifier, SignedEnvelope } from '../protocol/signing.js';
import type { ClusterView } from '../registry/cluster-view.js';
import { type ArtifactLimits, ArtifactRefused, inspectArtifact } from './artifacts.js';
import { BlobHashMismatchError, type BlobStore, BlobTooLargeError } from './blobs.js';
import type { DomainVerifier } from './domains.js';
import { type BlobPusher, type InstanceService, urlOf } from './instances.js';
import { bodyStream, checkDeclaredLength, JSON_BODY_LIMIT, rawPath, readBody } from './rpc-body.js';

/** A signed request, checked: its signer, declared body hash and envelope (for the history). */
export interface Signed {
  signer: string;
  bodySha256: string;
  envelope: SignedEnvelope;
}

/** How routes check requests; shared with the routes of other modules (rpc-operations.ts). */
export interface SignedRequests {
  signed(c: Context): Signed;
  signedNoBody(c: Context): Promise<Signed & { grant: Grant }>;
  signedJson(c: Context): Promise<Signed & { body: Uint8Array; grant: Grant }>;
}

export interface RpcDeps {
  nodeId: string;
  service: InstanceService;
  view: ClusterView;
  blobs: BlobStore;
  verifier: RequestVerifier;
  pushTo: BlobPusher;
  log: Logger;
  /** Largest artifact (compressed) accepted by a deploy or a blob push. */
  maxArtifactBytes: number;
  artifactLimits: ArtifactLimits;
  domains: DomainVerifier;
  /** More routes (history, auth, revoke, logs, usage…), mounted beside the core ones. */
  extraRoutes?: (app: Hono, requests: SignedRequests) => void;
}

function parseJson(body: Uint8Array): unknown {
  if (body.length === 0) return {};
  try {
    return JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    throw new AllegraError('bad_request', 'request body is not valid JSON');
  }
}

export function parseWith<T>(schema: z.ZodType<T>, body: Uint8Array): T {
  const parsed = schema.safeParse(parseJson(body));
  if (!parsed.success)
    throw new AllegraError('bad_request', parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
  return parsed.data;
}

export function createRpcApp(deps: RpcDeps): Hono {
  const app = new Hono();
  const { service, verifier } = deps;

  /** Checks the signature over the headers; nothing of the body has been read yet. */
  const signed = (c: Context): Signed => {
    const result = verifier.verify({ method: c.req.method, path: rawPath(c), headers: c.req.header() });
    if (!result.ok) throw new AllegraError('unauthenticated', result.reason);
    return { signer: result.publicKey, bodySha256: result.bodySha256, envelope: result.envelope };
  };
  /** A signed request without a body (GET, DELETE, actions); its grant has an empty body. */
  const signedNoBody = async (c: Context): Promise<Signed & { grant: Grant }> => {
    const s = signed(c);
    await readBody(c, 0, s.bodySha256);
    return { ...s, grant: { envelope: s.envelope, body: '' } };
  };
  /** A signed JSON request: its body, read within the limit and matching the signed hash. */
  const signedJson = async (c: Context): Promise<Signed & { body: Uint8Array; grant: Grant }> => {
    const s = signed(c);
    const body = await readBody(c, JSON_BODY_LIMIT, s.bodySha256);
    return { ...s, body, grant: { envelope: s.envelope, body: Buffer.from(body).toString('utf8') } };
  };

  app.onError((err, c) => {
    if (err instanceof AllegraError) {
      // Refusals can come before the body was read (an upload to a revoked or unknown instance): never read it.
      if ([400, 401, 403, 404, 413].includes(err.status)) lingerThenClose(c);
      return c.json({ error: { code: err.code, message: err.message } }, err.status as ContentfulStatusCode);
    }
    deps.log.error({ err }, 'rpc handler failed');
    return c.json({ error: { code: 'internal', message: 'internal error' } }, 500);
  });
  app.notFound((c) =>
    c.json({ error: { code: 'not_found', message: `no such endpoint: ${c.req.method} ${new URL(c.req.url).pathname}` } }, 404),
  );

  // Unsigned: the node id (the audience of signed requests) and the largest upload, checked by the CLI first.
  app.get('/v1/health', (c) => c.json({ ok: true, node: deps.nodeId, maxArtifactBytes: deps.maxArtifactBytes }));

  app.post('/v1/instances', async (c) => {
    const { signer, body, grant } = await signedJson(c);
    const spec = await service.create(signer, parseWith(createInstanceRequest, body), grant);
    const network = deps.view.network();
    return c.json({ instance: spec, url: urlOf(`${spec.name}.${network.baseDomain}`, false, network) }, 201);
  });

  app.get('/v1/instances', async (c) => {
    const { signer } = await signedNoBody(c);
    return c.json({ instances: await service.list(signer) });
  });

  app.get('/v1/instances/:name', async (c) => {
    const { signer } = await signedNoBody(c);
    return c.json(await service.status(c.req.param('name'), signer));
  });

  for (const [action, state] of [
    ['start', 'running'],
    ['stop', 'stopped'],
  ] as const) {
    app.post(`/v1/instances/:name/${action}`, async (c) => {
      const { signer, grant } = await signedNoBody(c);
      const { spec, changed } = await service.setState(c.req.param('name'), signer, state, grant);
      return c.json({ instance: spec, changed });
    });
  }

  app.post('/v1/instances/:name/scale', async (c) => {
    const { signer, body, grant } = await signedJson(c);
    return c.json({ instance: await service.scale(c.req.param('name'), signer, parseWith(scaleRequest, body), grant) });
  });

  app.post('/v1/instances/:name/expose', async (c) => {
    const { signer, body, grant } = await signedJson(c);
    return c.json(await service.expose(c.req.param('name'), signer, parseWith(exposeRequest, body), deps.domains, grant));
  });

  /** Puts an earlier version's code back (one of the last ones the spec keeps), as a new version. */
  app.post('/v1/instances/:name/rollback', async (c) => {
    const { signer, body, grant } = await signedJson(c);
    const spec = await service.rollback(c.req.param('name'), signer, parseWith(rollbackRequest, body).version, grant);
    return c.json({ instance: spec, artifact: spec.artifact });
  });

  app.get('/v1/instances/:name/certificates', async (c) => {
    const { signer } = await signedNoBody(c);
    return c.json({ certificates: await service.certificates(c.req.param('name'), signer) });
  });

  app.delete('/v1/instances/:name', async (c) => {
    const { signer } = await signedNoBody(c);
    await service.delete(c.req.param('name'), signer);
    return c.json({ deleted: c.req.param('name') });
  });

  /**
   * Deploy: the body is the artifact (a gzipped tar). The signature (over its declared hash and the
   * `x-allegra-cmd` header) and the signer's right to deploy are checked before a byte is accepted; the
   * upload streams to a temporary file and is kept only if it hashes to the signed value; it is inspected
   * (size, entries, links, expansion) before anything is committed.
   */
  app.put('/v1/instances/:name/code', async (c) => {
    const name = c.req.param('name');
    const { signer, bodySha256, envelope } = signed(c);
    await service.authorizedToChange(name, signer);
    const blob = await receiveArtifact(c, deps, bodySha256);
    const cmd = c.req.header('x-allegra-cmd');
    const deployed = await service.deploy(
      name,
      signer,
      blob,
      cmd === undefined ? undefined : decodeURIComponent(cmd),
      deps.pushTo,
      envelope,
    );
    return c.json({ instance: deployed.spec, quorum: deployed.quorum, artifact: deployed.spec.artifact });
  });

  deps.extraRoutes?.(app, { signed, signedNoBody, signedJson });

  /** Peer replication: only registered nodes may push or pull blobs. */
  const requireNode = (signer: string) => {
    if (!deps.view.nodeByKey(signer)) throw new AllegraError('forbidden', 'only nodes of the network may replicate blobs');
  };

  app.put('/v1/blobs/:sha256', async (c) => {
    const sha256 = c.req.param('sha256');
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new AllegraError('bad_request', 'blob id must be a SHA-256 hex digest');
    const { signer, bodySha256 } = signed(c);
    requireNode(signer);
    if (bodySha256 !== sha256) throw new AllegraError('bad_request', 'signed body hash does not name this blob');
    checkDeclaredLength(c, deps.maxArtifactBytes);
    if (!deps.blobs.has(sha256)) await receiveBlob(deps, bodyStream(c, deps.maxArtifactBytes), sha256);
    return c.json({ stored: sha256 });
  });

  app.get('/v1/blobs/:sha256', async (c) => {
    const { signer } = await signedNoBody(c);
    requireNode(signer);
    const sha256 = c.req.param('sha256');
    if (!deps.blobs.has(sha256)) throw new AllegraError('not_found', `blob ${sha256} not held here`);
    const stream = Readable.toWeb(deps.blobs.read(sha256)) as unknown as ReadableStream;
    return new Response(stream, {
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(deps.blobs.size(sha256)) },
    });
  });

  return app;
}

/**
 * A refused request's body may still be on its way. Closing at once would make the kernel answer the
 * unread bytes with a reset that destroys our own answer before the client reads it; reading the rest
 * would let a client keep us busy. So: answer, let Node discard what arrives (never buffered), and cut
 * the connection if the body is still coming after a short linger.
 */
function lingerThenClose(c: Context): void {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (!incoming || incoming.complete) return;
  const timer = setTimeout(() => {
    if (!incoming.complete) incoming.socket.destroy();
  }, LINGER_MS);
  timer.unref();
  incoming.once('end', () => clearTimeout(timer));
}

const LINGER_MS = 2_000;

/** Streams an upload into the blob store; it is kept only if it hashes to `expected`. */
/**
 * An uploaded artifact: streamed to a blob within the size limit, kept only if its bytes match the signed
 * hash and it unpacks within the artifact limits (else removed, unless an instance already refers to it).
 */
export async function receiveArtifact(c: Context, deps: RpcDeps, bodySha256: string): Promise<{ sha256: string; size: number }> {
  checkDeclaredLength(c, deps.maxArtifactBytes);
  const blob = await receiveBlob(deps, bodyStream(c, deps.maxArtifactBytes), bodySha256);
  try {
    await inspectArtifact(deps.blobs.path(blob.sha256), deps.artifactLimits);
  } catch (err) {
    if (!deps.service.references(blob.sha256)) deps.blobs.remove(blob.sha256);
    if (err instanceof ArtifactRefused) throw new AllegraError('bad_request', `artifact refused: ${err.message}`);
    throw err;
  }
  return blob;
}

export async function receiveBlob(deps: RpcDeps, source: Readable, expected: string): Promise<{ sha256: string; size: number }> {
  try {
    return await deps.blobs.write(source, { expected, maxBytes: deps.maxArtifactBytes });
  } catch (err) {
    if (err instanceof AllegraError) throw err;
    if (err instanceof BlobTooLargeError) throw new AllegraError('too_large', err.message);
    if (err instanceof BlobHashMismatchError) throw new AllegraError('bad_request', `upload refused: ${err.message}`);
    throw err;
  }
}
