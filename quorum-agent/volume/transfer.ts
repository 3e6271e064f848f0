/**
 * Moves chunks between members over the agents' signed RPC (`/v1/volumes/:instance/chunks/:sha256`, quorum
 * members only): the
 * writer pushes, a member that missed something (or a new writer) pulls from the holders. Every chunk is
 * checked against its hash on arrival (BlobStore.write) and fsynced before it counts as held.
 */
import { RpcClient } from '../../protocol/client.js';
import type { KeyPair } from '../../protocol/signing.js';
import type { ClusterView } from '../../registry/cluster-view.js';
import type { ChunkStore } from './chunks.js';
import { MAX_BLOB_BYTES } from './layout.js';

const TIMEOUT_MS = 10_000;

const chunkPath = (instanceId: string, sha: string) => `/v1/volumes/${encodeURIComponent(instanceId)}/chunks/${sha}`;

export class ChunkTransfer {
  constructor(
    private readonly view: ClusterView,
    private readonly keyPair: KeyPair,
    private readonly selfId: string,
    private readonly store: ChunkStore,
  ) {}

  private client(nodeId: string): RpcClient | undefined {
    const node = this.view.node(nodeId);
    return node ? new RpcClient(node.rpc, this.keyPair, nodeId) : undefined;
  }

  /** Sends a chunk this node holds to `nodeId`; resolves true once the peer holds it. */
  async push(instanceId: string, nodeId: string, sha: string): Promise<boolean> {
    const client = this.client(nodeId);
    const bytes = this.store.readVerified(sha);
    if (!client || !bytes) return false;
    try {
      const res = await client.send({ method: 'PUT', path: chunkPath(instanceId, sha), body: { bytes }, timeoutMs: TIMEOUT_MS });
      await res.body.dump();
      return res.statusCode === 200;
    } catch {
      return false;
    }
  }

  /** Fetches one chunk from the first of `from` that has it; throws naming every failure. */
  async fetch(instanceId: string, sha: string, from: readonly string[]): Promise<void> {
    if (this.store.has(sha)) return;
    const failures: string[] = [];
    for (const nodeId of from) {
      if (nodeId === this.selfId) continue;
      const client = this.client(nodeId);
      if (!client) {
        failures.push(`${nodeId}: not live`);
        continue;
      }
      try {
        const res = await client.send({ method: 'GET', path: chunkPath(instanceId, sha), timeoutMs: TIMEOUT_MS });
        if (res.statusCode !== 200) {
          await res.body.dump();
          failures.push(`${nodeId}: HTTP ${res.statusCode}`);
          continue;
        }
        await this.store.write(res.body, { expected: sha, maxBytes: MAX_BLOB_BYTES });
        return;
      } catch (err) {
        failures.push(`${nodeId}: ${(err as Error).message}`);
      }
    }
    throw new Error(`no member could provide chunk ${sha.slice(0, 12)}… (${failures.join('; ') || 'no other member'})`);
  }

  /** Fetches every missing chunk of `shas`, a few at a time. */
  async fetchAll(instanceId: string, shas: Iterable<string>, from: readonly string[], concurrency = 4): Promise<void> {
    const missing = [...shas].filter((s) => !this.store.has(s));
    let next = 0;
    const worker = async () => {
      while (next < missing.length) {
        const sha = missing[next++] as string;
        await this.fetch(instanceId, sha, from);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, missing.length) }, worker));
  }
}
