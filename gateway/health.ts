/**
 * Active health checks from the gateway's own point of view: every replica endpoint in use is probed on
 * an interval; after `unhealthyThreshold` failed probes it is taken out of rotation, after
 * `healthyThreshold` good ones it comes back. Agents check their replicas too, but only a gateway can see
 * that a replica is unreachable from where the traffic comes from.
 */
import { Agent, request } from 'undici';
import { h2cAnswers, worthAskingOverH2 } from '../protocol/health-probe.js';
import { openUpstream, undiciConnect, upstreamAddress } from './dial.js';

export interface HealthCheckOptions {
  intervalMs: number;
  timeoutMs: number;
  path: string;
  unhealthyThreshold: number;
  healthyThreshold: number;
  /** Called when an endpoint changes state. */
  onChange: (endpoint: string, down: boolean) => void;
}

interface Probe {
  timer: NodeJS.Timeout;
  down: boolean;
  failures: number;
  successes: number;
}

export class ActiveHealthChecker {
  private readonly probes = new Map<string, Probe>();
  private readonly agent = new Agent({ connections: 2, keepAliveTimeout: 5_000, connect: { timeout: 2_000 } });
  /** Unix-socket and ingress endpoints need an agent of their own that dials them. */
  private readonly socketAgents = new Map<string, Agent>();
  private stopped = false;

  constructor(private readonly opts: HealthCheckOptions) {}

  isDown(endpoint: string): boolean {
    return this.probes.get(endpoint)?.down ?? false;
  }

  get downCount(): number {
    let n = 0;
    for (const p of this.probes.values()) if (p.down) n++;
    return n;
  }

  add(endpoint: string): void {
    if (this.stopped || this.probes.has(endpoint)) return;
    // Spread first probes over the interval so many replicas are not probed in lockstep.
    const probe: Probe = {
      timer: setTimeout(() => void this.probe(endpoint), Math.random() * this.opts.intervalMs),
      down: false,
      failures: 0,
      successes: 0,
    };
    probe.timer.unref();
    this.probes.set(endpoint, probe);
  }

  remove(endpoint: string): void {
    const probe = this.probes.get(endpoint);
    if (!probe) return;
    clearTimeout(probe.timer);
    this.probes.delete(endpoint);
    const agent = this.socketAgents.get(endpoint);
    this.socketAgents.delete(endpoint);
    void agent?.close().catch(() => {});
  }

  private socketAgent(endpoint: string): Agent {
    let agent = this.socketAgents.get(endpoint);
    if (!agent) {
      agent = new Agent({ connections: 1, keepAliveTimeout: 5_000, connect: undiciConnect(endpoint) });
      this.socketAgents.set(endpoint, agent);
    }
    return agent;
  }

  private async probe(endpoint: string): Promise<void> {
    let ok = false;
    try {
      const addr = upstreamAddress(endpoint);
      const res = await request(`${addr.origin}${this.opts.path}`, {
        dispatcher: addr.socketPath || addr.custom ? this.socketAgent(endpoint) : this.agent,
        headersTimeout: this.opts.timeoutMs,
        bodyTimeout: this.opts.timeoutMs,
        headers: { 'user-agent': 'allegra-gateway-health' },
      });
      await res.body.dump();
      ok = res.statusCode < 500;
    } catch (err) {
      // An h2c-only replica (a gRPC server) never answers HTTP/1: asked again over HTTP/2 (as agents do).
      ok = worthAskingOverH2(err) && (await this.askOverH2(endpoint));
    }
    const probe = this.probes.get(endpoint);
    if (!probe || this.stopped) return;
    if (ok) {
      probe.failures = 0;
      probe.successes++;
      if (probe.down && probe.successes >= this.opts.healthyThreshold) {
        probe.down = false;
        this.opts.onChange(endpoint, false);
      }
    } else {
      probe.successes = 0;
      probe.failures++;
      if (!probe.down && probe.failures >= this.opts.unhealthyThreshold) {
        probe.down = true;
        this.opts.onChange(endpoint, true);
      }
    }
    probe.timer = setTimeout(() => void this.probe(endpoint), this.opts.intervalMs);
    probe.timer.unref();
  }

  private async askOverH2(endpoint: string): Promise<boolean> {
    let socket: Awaited<ReturnType<typeof openUpstream>>;
    try {
      socket = await openUpstream(endpoint, this.opts.timeoutMs);
    } catch {
      return false;
    }
    return h2cAnswers(() => socket, this.opts.path, this.opts.timeoutMs, 'allegra-gateway-health');
  }

  async close(): Promise<void> {
    this.stopped = true;
    for (const p of this.probes.values()) clearTimeout(p.timer);
    this.probes.clear();
    const agents = [this.agent, ...this.socketAgents.values()];
    this.socketAgents.clear();
    await Promise.all(agents.map((a) => a.close().catch(() => {})));
  }
}
