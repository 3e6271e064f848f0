/**
 * The gateway's identity toward node ingresses and its view of which nodes answer.
 *
 * Identity: a fresh Ed25519 key per gateway process, its self-signed TLS certificate, and a `gateways/<id>`
 * record under the gateway's lease. Node ingresses admit only keys of live gateway records, so a gateway that
 * dies stops being admitted when its lease expires, and knowing an address gives nobody a way in.
 *
 * Liveness: a lease expires only after seconds, and a machine whose cable is cut does not even refuse
 * connections, it just stops answering. So the gateway pings every node it routes to through that node's
 * ingress (one persistent connection, one small line a second); a node that misses `failures` pings in a
 * row leaves rotation at once for every replica it holds, and comes back on the first answer.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { identityCert } from '../protocol/identity-cert.js';
import { keys } from '../protocol/keys.js';
import type { Lease, Registry } from '../protocol/registry.js';
import { generateKeyPair } from '../protocol/signing.js';
import type { GatewayRecord } from '../protocol/types.js';
import { INGRESS, parseIngressEndpoint, registerOpener } from './dial.js';
import { IngressDialer, type IngressNode } from './ingress-dialer.js';

export interface NodeLinkOptions {
  registry: Registry;
  log: Logger;
  machineId?: string;
  nodeOf: (nodeId: string) => IngressNode | undefined;
  /** Called when a node stops or starts answering its pings. */
  onNodeChange: (nodeId: string, down: boolean) => void;
  pingIntervalMs?: number;
  /** Consecutive missed pings that take a node out of rotation. */
  failures?: number;
  leaseTtlMs?: number;
}

interface Tracked {
  refs: number;
  down: boolean;
  missed: number;
  socket?: TLSSocket;
  timer?: NodeJS.Timeout;
}

export class NodeLink {
  readonly id = `gw-${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  private readonly keyPair = generateKeyPair();
  private dialer: IngressDialer | null = null;
  private lease: Lease | null = null;
  private readonly nodes = new Map<string, Tracked>();
  private stopped = false;

  constructor(private readonly opts: NodeLinkOptions) {}

  private metricsUrl: string | undefined;
  private readonly startedAt = Date.now();

  /** Names the admin port's metrics in the gateway's record (known only once the admin server listens). */
  async publishMetrics(url: string): Promise<void> {
    this.metricsUrl = url;
    if (this.lease && !this.stopped) await this.announceOn(this.lease);
  }

  /** Publishes the gateway's record and makes `ingress:` endpoints dialable. */
  async start(): Promise<this> {
    const cert = await identityCert(this.keyPair, this.id);
    this.dialer = new IngressDialer(cert, this.opts.nodeOf);
    const dialer = this.dialer;
    registerOpener(INGRESS, async (endpoint) => {
      const target = parseIngressEndpoint(endpoint);
      if (!target) throw Object.assign(new Error(`bad ingress endpoint ${endpoint}`), { code: 'ECONNREFUSED' });
      return dialer.replica(target.nodeId, target.instanceId, target.slot);
    });
    await this.announce();
    return this;
  }

  private async announce(): Promise<void> {
    const lease = await this.opts.registry.grantLease(this.opts.leaseTtlMs ?? 3_000);
    this.lease = lease;
    await this.announceOn(lease);
    lease.onLost(() => {
      if (this.stopped) return;
      this.opts.log.warn('gateway lease lost; announcing again');
      const retry = () => void this.announce().catch(() => setTimeout(retry, 500).unref());
      retry();
    });
  }

  private async announceOn(lease: Lease): Promise<void> {
    const record: GatewayRecord = {
      id: this.id,
      publicKey: this.keyPair.publicKeyHex,
      startedAt: this.startedAt,
      ...(this.opts.machineId ? { machine: this.opts.machineId } : {}),
      ...(this.metricsUrl ? { metrics: this.metricsUrl } : {}),
    };
    await this.opts.registry.put(keys.gateway(this.id), JSON.stringify(record), { lease: lease.id });
  }

  /** The gateway's lease (its records live under it), undefined while it is being re-granted. */
  get leaseId(): string | undefined {
    return this.lease?.id;
  }

  /** Starts pinging a node while some replica of it is in use (reference-counted). */
  track(nodeId: string): void {
    const t = this.nodes.get(nodeId);
    if (t) {
      t.refs++;
      return;
    }
    const tracked: Tracked = { refs: 1, down: false, missed: 0 };
    this.nodes.set(nodeId, tracked);
    this.schedule(nodeId, tracked, 0);
  }

  untrack(nodeId: string): void {
    const t = this.nodes.get(nodeId);
    if (!t || --t.refs > 0) return;
    clearTimeout(t.timer);
    t.socket?.destroy();
    this.nodes.delete(nodeId);
    if (t.down) this.opts.onNodeChange(nodeId, false);
  }

  isDown(nodeId: string): boolean {
    return this.nodes.get(nodeId)?.down ?? false;
  }

  private schedule(nodeId: string, t: Tracked, delay: number): void {
    if (this.stopped) return;
    t.timer = setTimeout(() => void this.ping(nodeId, t), delay);
    t.timer.unref();
  }

  private async ping(nodeId: string, t: Tracked): Promise<void> {
    const interval = this.opts.pingIntervalMs ?? 1_000;
    const dialer = this.dialer;
    if (!dialer || this.nodes.get(nodeId) !== t) return;
    let ok = false;
    try {
      const answered = dialer.ping(nodeId, t.socket);
      const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('ping timed out')), interval).unref());
      const { socket } = await Promise.race([answered, timeout]);
      t.socket = socket;
      ok = true;
    } catch {
      t.socket?.destroy();
      t.socket = undefined;
    }
    if (this.nodes.get(nodeId) !== t) return;
    if (ok) {
      t.missed = 0;
      if (t.down) {
        t.down = false;
        this.opts.log.info({ node: nodeId }, 'node answers again');
        this.opts.onNodeChange(nodeId, false);
      }
    } else if (++t.missed >= (this.opts.failures ?? 2) && !t.down) {
      t.down = true;
      this.opts.log.warn({ node: nodeId }, 'node stopped answering; its replicas leave rotation');
      this.opts.onNodeChange(nodeId, true);
    }
    this.schedule(nodeId, t, interval);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.nodes.values()) {
      clearTimeout(t.timer);
      t.socket?.destroy();
    }
    this.nodes.clear();
    try {
      await this.lease?.revoke();
    } catch {
      /* registry gone: the lease expires by itself */
    }
  }
}
