/**
 * The agent's signed RPC API (Hono). Every route verifies the Ed25519 signature over the exact body
 * before acting; instance routes then authorize the signer against the instance's owner and team keys,
 * blob routes against the keys of registered nodes.
 */
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { type Context, Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Logger } from 'pino';
import { AllegraError } from '../protocol/errors.js';
import { createInstanceRequest, exposeRequest } from '../protocol/schemas.js';
import { type RequestVerifier, SIGNATURE_HEADERS } from '../protocol/signing.js';
import type { ClusterView } from '../registry/cluster-view.js';
import { type BlobStore, BlobTooLargeError } from './blobs.js';
import type { DomainVerifier } from './domains.js';
import type { BlobPusher, InstanceService } from './instances.js';

export interface RpcDeps {
  nodeId: string;
  service: InstanceService;
  view: ClusterView;
  blobs: BlobStore;
  verifier: RequestVerifier;
  pushTo: BlobPusher;
  log: Logger;
  maxArtifactBytes: number;
  domains: DomainVerifier;
}

function pathOf(c: Context): string {
  const url = new URL(c.req.url);
  return `${url.pathname}${url.search}`;
}

/** Verifies the signature over a fully read body; returns the body and the signer's key. */
async function signedBody(c: Context, verifier: RequestVerifier): Promise<{ signer: string; body: Uint8Array }> {
  const body = new Uint8Array(await c.req.arrayBuffer());
  const result = verifier.verify({ method: c.req.method, path: pathOf(c), body, headers: (n) => c.req.header(n) });
  if (!result.ok) throw new AllegraError('unauthenticated', result.reason);
  return { signer: result.publicKey, body };
}

function parseJson(body: Uint8Array): unknown {
  if (body.length === 0) return {};
  try {
    return JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    throw new AllegraError('bad_request', 'request body is not valid JSON');
  }
}

function bodyStream(c: Context): Readable {
  const web = c.req.raw.body;
  if (!web) return Readable.from([]);
  return Readable.fromWeb(web as unknown as WebReadableStream<Uint8Array>);
}

export function createRpcApp(deps: RpcDeps): Hono {
  const app = new Hono();
  const { service, verifier } = deps;

  app.onError((err, c) => {
    if (err instanceof AllegraError) return c.json({ error: { code: err.code, message: err.message } }, err.status as ContentfulStatusCode);
    deps.log.error({ err }, 'rpc handler failed');
    return c.json({ error: { code: 'internal', message: 'internal error' } }, 500);
  });
  app.notFound((c) =>
    c.json({ error: { code: 'not_found', message: `no such endpoint: ${c.req.method} ${new URL(c.req.url).pathname}` } }, 404),
  );

  app.get('/v1/health', (c) => c.json({ ok: true, node: deps.nodeId }));

  app.post('/v1/instances', async (c) => {
    const { signer, body } = await signedBody(c, verifier);
    const parsed = createInstanceRequest.safeParse(parseJson(body));
    if (!parsed.success)
      throw new AllegraError('bad_request', parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
    const spec = await service.create(signer, parsed.data);
    return c.json({ instance: spec, url: `http://${spec.name}.${deps.view.network().baseDomain}` }, 201);
  });

  app.get('/v1/instances', async (c) => {
    const { signer } = await signedBody(c, verifier);
    return c.json({ instances: await service.list(signer) });
  });

  app.get('/v1/instances/:name', async (c) => {
    const { signer } = await signedBody(c, verifier);
    return c.json(await service.status(c.req.param('name'), signer));
  });

  for (const [action, state] of [
    ['start', 'running'],
    ['stop', 'stopped'],
  ] as const) {
    app.post(`/v1/instances/:name/${action}`, async (c) => {
      const { signer } = await signedBody(c, verifier);
      return c.json({ instance: await service.setState(c.req.param('name'), signer, state) });
    });
  }

  app.post('/v1/instances/:name/expose', async (c) => {
    const { signer, body } = await signedBody(c, verifier);
    const parsed = exposeRequest.safeParse(parseJson(body));
    if (!parsed.success)
      throw new AllegraError('bad_request', parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
    return c.json(await service.expose(c.req.param('name'), signer, parsed.data, deps.domains));
  });

  app.get('/v1/instances/:name/certificates', async (c) => {
    const { signer } = await signedBody(c, verifier);
    return c.json({ certificates: await service.certificates(c.req.param('name'), signer) });
  });

  app.delete('/v1/instances/:name', async (c) => {
    const { signer } = await signedBody(c, verifier);
    await service.delete(c.req.param('name'), signer);
    return c.json({ deleted: c.req.param('name') });
  });

  /** Deploy: the body is the artifact (a gzipped tar), streamed to disk and hashed on the way. */
  app.put('/v1/instances/:name/code', async (c) => {
    const name = c.req.param('name');
    const claimed = c.req.header(SIGNATURE_HEADERS.key) ?? '';
    // Authorize the claimed key before accepting bytes, so strangers cannot fill the disk; the claim
    // itself is verified against the signature once the body's hash is known.
    await service.authorized(name, claimed);
    const declared = Number(c.req.header('content-length') ?? Number.NaN);
    if (declared > deps.maxArtifactBytes)
      throw new AllegraError('bad_request', `artifact of ${declared} bytes exceeds the limit of ${deps.maxArtifactBytes}`);
    let blob: { sha256: string; size: number };
    try {
      blob = await deps.blobs.write(bodyStream(c), { maxBytes: deps.maxArtifactBytes });
    } catch (err) {
      if (err instanceof BlobTooLargeError) throw new AllegraError('bad_request', err.message);
      throw err;
    }
    const result = verifier.verify({
      method: c.req.method,
      path: pathOf(c),
      body: { sha256: blob.sha256 },
      headers: (n) => c.req.header(n),
    });
    if (!result.ok) throw new AllegraError('unauthenticated', result.reason);
    const cmd = c.req.header('x-allegra-cmd');
    const deployed = await service.deploy(
      name,
      result.publicKey,
      blob,
      cmd === undefined ? undefined : decodeURIComponent(cmd),
      deps.pushTo,
    );
    return c.json({ instance: deployed.spec, quorum: deployed.quorum, artifact: deployed.spec.artifact });
  });

  /** Peer replication: only registered nodes may push or pull blobs. */
  const requireNode = (signer: string) => {
    if (!deps.view.nodeByKey(signer)) throw new AllegraError('forbidden', 'only nodes of the network may replicate blobs');
  };

  app.put('/v1/blobs/:sha256', async (c) => {
    const sha256 = c.req.param('sha256');
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new AllegraError('bad_request', 'blob id must be a SHA-256 hex digest');
    requireNode(c.req.header(SIGNATURE_HEADERS.key) ?? '');
    const result = verifier.verify({ method: 'PUT', path: pathOf(c), body: { sha256 }, headers: (n) => c.req.header(n) });
    if (!result.ok) throw new AllegraError('unauthenticated', result.reason);
    if (!deps.blobs.has(sha256)) await deps.blobs.write(bodyStream(c), { expected: sha256, maxBytes: deps.maxArtifactBytes });
    return c.json({ stored: sha256 });
  });

  app.get('/v1/blobs/:sha256', async (c) => {
    const { signer } = await signedBody(c, verifier);
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
