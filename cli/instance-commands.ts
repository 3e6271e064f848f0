/** Instance commands: thin wrappers that sign an RPC, then print its answer for people or scripts. */
import { RpcClient } from '../protocol/client.js';
import { REPLICA_LIMITS } from '../protocol/schemas.js';
import type { InstanceSpec, InstanceStatus, ReplicaLimits } from '../protocol/types.js';
import { bundle } from './bundle.js';
import { loadKey, resolveRpc } from './config.js';
import { CliError, type Output, table } from './output.js';

export interface GlobalOpts {
  rpc?: string;
  key?: string;
  json?: boolean;
}

export function client(g: GlobalOpts): RpcClient {
  return new RpcClient(resolveRpc(g.rpc), loadKey(g.key), {
    // One line per switch, on stderr, so scripts reading --json stdout are unaffected.
    onFailover: (from, to, reason) => process.stderr.write(`allegra: agent ${from} did not answer (${reason}); using ${to}\n`),
  });
}

/** Parses `MIN:MAX` (or a single N meaning N:N). */
export function parseReplicas(value: string): { min: number; max: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(value.trim());
  if (!m) throw new CliError(`--replicas expects MIN:MAX, e.g. 2:5 (got "${value}")`, 2);
  const min = Number(m[1]);
  const max = m[2] === undefined ? min : Number(m[2]);
  if (max < 1 || min > max) throw new CliError(`--replicas ${value}: need 0 <= MIN <= MAX and MAX >= 1`, 2);
  return { min, max };
}

/** `--memory`, `--pids`, `--cpu-shares` → the spec's `limits`, checked against the network's bounds. */
export function limitsFrom(opts: { memory?: string; pids?: string; cpuShares?: string }): { limits?: ReplicaLimits } {
  const limits: ReplicaLimits = {};
  const flags = [
    ['memory', '--memory', 'memoryMb'],
    ['pids', '--pids', 'pids'],
    ['cpuShares', '--cpu-shares', 'cpuShares'],
  ] as const;
  for (const [opt, flag, field] of flags) {
    const raw = opts[opt];
    if (raw === undefined) continue;
    const n = Number(raw);
    const { min, max } = REPLICA_LIMITS[field];
    if (!Number.isInteger(n) || n < min || n > max)
      throw new CliError(`${flag} expects a whole number from ${min} to ${max} (got "${raw}")`, 2);
    limits[field] = n;
  }
  return Object.keys(limits).length > 0 ? { limits } : {};
}

export async function createCommand(
  name: string,
  opts: {
    driver?: string;
    replicas?: string;
    from?: string;
    cmd?: string;
    port?: string;
    memory?: string;
    pids?: string;
    cpuShares?: string;
    volume?: boolean;
  },
  g: GlobalOpts,
  out: Output,
): Promise<void> {
  const rpc = client(g);
  const port = opts.port === undefined ? 0 : Number(opts.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CliError(`--port must be a port number (got "${opts.port}")`, 2);
  const body = {
    name,
    driver: opts.driver ?? 'process',
    cmd: opts.cmd ?? '',
    port,
    ...(opts.replicas ? { replicas: parseReplicas(opts.replicas) } : {}),
    ...limitsFrom(opts),
    ...(opts.volume ? { volume: true } : {}),
  };
  const created = await rpc.call<{ instance: InstanceSpec; url: string }>({ method: 'POST', path: '/v1/instances', body: { json: body } });
  let deployed: DeployResult | undefined;
  if (opts.from) deployed = await deployTo(rpc, name, opts.from, opts.cmd, out);
  out.result({ id: created.instance.id, name, url: created.url, instance: deployed?.instance ?? created.instance }, () =>
    [
      `created ${name} (${created.instance.id})`,
      `  url: ${created.url}`,
      ...(deployed ? [`  deployed version ${deployed.instance.version}`] : []),
    ].join('\n'),
  );
}

interface DeployResult {
  instance: InstanceSpec;
  artifact: { sha256: string; size: number; holders: string[] };
  quorum: { id: string; members: string[] };
}

async function deployTo(
  rpc: RpcClient,
  name: string,
  path: string,
  cmd: string | undefined,
  out: Output,
  wait = true,
): Promise<DeployResult> {
  const progress = out.progress(`packing ${path}`);
  try {
    const packed = await bundle(path);
    progress.update(`uploading ${(packed.bytes.length / 1024).toFixed(1)} KiB (${packed.files} files) and replicating to the quorum`);
    const headers: Record<string, string> = cmd === undefined ? {} : { 'x-allegra-cmd': encodeURIComponent(cmd) };
    const result = await rpc.call<DeployResult>({
      method: 'PUT',
      path: `/v1/instances/${encodeURIComponent(name)}/code`,
      body: { bytes: packed.bytes },
      headers,
      timeoutMs: 120_000,
    });
    if (wait) await waitForRollout(rpc, name, result.instance, (text) => progress.update(text));
    progress.succeed(`deployed ${name} version ${result.instance.version}`);
    return result;
  } catch (err) {
    progress.fail(`deploy of ${name} failed`);
    throw err;
  }
}

/** Waits until every desired replica runs the new version and is healthy. */
async function waitForRollout(
  rpc: RpcClient,
  name: string,
  spec: InstanceSpec,
  update: (text: string) => void,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const want = spec.state === 'running' ? spec.replicas.min : 0;
  for (;;) {
    const status = await rpc.call<InstanceStatus>({ method: 'GET', path: `/v1/instances/${encodeURIComponent(name)}` });
    const ready = status.replicas.filter((r) => r.version >= spec.version && r.healthy).length;
    update(`rolling out version ${spec.version}: ${ready}/${want} replicas healthy`);
    if (ready >= want) return;
    if (Date.now() > deadline)
      throw new CliError(
        `rollout of ${name} version ${spec.version} not complete after ${timeoutMs / 1000}s (${ready}/${want} replicas healthy); see \`allegra status ${name}\``,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}

export async function deployCommand(
  name: string,
  path: string,
  opts: { cmd?: string; wait?: boolean },
  g: GlobalOpts,
  out: Output,
): Promise<void> {
  const result = await deployTo(client(g), name, path, opts.cmd, out, opts.wait !== false);
  out.result({ name, version: result.instance.version, artifact: result.artifact, quorum: result.quorum }, () =>
    [
      `deployed ${name} version ${result.instance.version}`,
      `  artifact: sha256:${result.artifact.sha256.slice(0, 16)}… (${result.artifact.size} bytes)`,
      `  held by ${result.artifact.holders.length} of ${result.quorum.members.length} quorum members`,
    ].join('\n'),
  );
}

export async function listCommand(g: GlobalOpts, out: Output): Promise<void> {
  const { instances } = await client(g).call<{ instances: InstanceSpec[] }>({ method: 'GET', path: '/v1/instances' });
  out.result({ instances }, () =>
    instances.length === 0
      ? 'no instances'
      : table(
          ['NAME', 'ID', 'STATE', 'VERSION', 'REPLICAS', 'DRIVER'],
          instances.map((i) => [i.name, i.id, i.state, String(i.version), `${i.replicas.min}:${i.replicas.max}`, i.driver]),
        ),
  );
}

export async function statusCommand(name: string, g: GlobalOpts, out: Output): Promise<void> {
  const s = await client(g).call<InstanceStatus>({ method: 'GET', path: `/v1/instances/${encodeURIComponent(name)}` });
  out.result(s, () => {
    const i = s.instance;
    const lines = [
      `${i.name} (${i.id})`,
      `  state:    ${i.state}${i.immutable ? ' (immutable)' : ''}`,
      `  version:  ${i.version}${i.artifact ? `  artifact sha256:${i.artifact.sha256.slice(0, 16)}…` : ''}`,
      `  driver:   ${i.driver}  cmd: ${i.cmd || '(inferred from files)'}`,
      `  quorum:   ${s.quorum ? `${s.quorum.id} [${s.quorum.members.join(', ')}]` : 'none yet'}`,
      `  routes:   ${s.routes.join(', ') || 'none'}`,
      `  replicas: ${s.replicas.filter((r) => r.healthy).length} healthy of ${s.replicas.length} (want ${i.state === 'running' ? i.replicas.min : 0})`,
    ];
    for (const m of s.members ?? []) {
      const why = m.reason ? `: ${m.reason}` : '';
      const state = m.state
        ? `; state at revision ${m.state.revision}, ${m.state.matches ? 'matches' : 'DOES NOT MATCH'} (${m.state.keys} keys, ${m.state.bytes} of ${m.state.quotaBytes} bytes${m.state.repairs ? `, ${m.state.repairs} repairs` : ''})`
        : '';
      const v = m.volume;
      const volume = v
        ? `; volume ${v.role === 'writing' ? 'WRITER' : v.role}, snapshot ${v.seq}${v.capturedAt ? ` of ${new Date(v.capturedAt).toISOString()}` : ''} ${v.complete ? 'held whole' : 'INCOMPLETE'}${v.problem ? ` (${v.problem})` : ''}`
        : '';
      lines.push(
        `  member ${m.nodeId}: code ${m.phase}${why}${m.retryAt ? ` (retrying at ${new Date(m.retryAt).toISOString()})` : ''}${state}${volume}`,
      );
    }
    if (s.replicas.length > 0) {
      lines.push(
        table(
          ['  NODE', 'SLOT', 'ENDPOINT', 'HEALTHY', 'VERSION', 'PID', 'RESTARTS'],
          s.replicas.map((r) => [
            `  ${r.nodeId}`,
            String(r.slot),
            r.endpoint,
            r.healthy ? 'yes' : 'no',
            String(r.version),
            String(r.pid ?? '-'),
            String(r.restarts),
          ]),
        ),
      );
      for (const r of s.replicas.filter((x) => x.lastError)) lines.push(`  ${r.nodeId} slot ${r.slot}: ${r.lastError}`);
    }
    return lines.join('\n');
  });
}

export async function lifecycleCommand(action: 'start' | 'stop' | 'delete', name: string, g: GlobalOpts, out: Output): Promise<void> {
  const rpc = client(g);
  const path = `/v1/instances/${encodeURIComponent(name)}`;
  if (action === 'delete') {
    await rpc.call({ method: 'DELETE', path });
    out.result({ name, deleted: true }, () => `deleted ${name}`);
    return;
  }
  const { instance } = await rpc.call<{ instance: InstanceSpec }>({ method: 'POST', path: `${path}/${action}` });
  out.result(
    { name, state: instance.state, version: instance.version },
    () => `${name} is ${instance.state === 'running' ? 'starting' : 'stopping'} (version ${instance.version})`,
  );
}
