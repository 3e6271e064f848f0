/** Instance commands: thin wrappers that sign an RPC, then print its answer for people or scripts. */
import { createReadStream } from 'node:fs';
import { Transform } from 'node:stream';
import { request } from 'undici';
import { RpcClient } from '../protocol/client.js';
import { AUTOSCALE, REPLICA_LIMITS } from '../protocol/schemas.js';
import { type InstanceSpec, type InstanceStatus, type ReplicaLimits, type ReplicaRecord, STICKY_COOKIE } from '../protocol/types.js';
import { desiredReplicas } from '../router/scale.js';
import { type Bundle, bundle } from './bundle.js';
import { loadKey, resolveRpc } from './config.js';
import { checkName, type GlobalOpts } from './names.js';
import { CliError, mib, type Output, type Progress, progressBar, table } from './output.js';
import { packWasmApp } from './wasm-pack.js';

export type { GlobalOpts } from './names.js';

export function client(g: GlobalOpts): RpcClient {
  return new RpcClient(resolveRpc(g.rpc), loadKey(g.key), {
    // One line per switch, on stderr, so scripts reading --json stdout are unaffected.
    onFailover: (from, to, reason) => process.stderr.write(`allegra: agent ${from} did not answer (${reason}); using ${to}\n`),
  });
}

/** `cookie` (set by the gateway), `cookie:NAME` (the app's own) or `header:NAME` (CLI.md `--sticky`). */
export function parseSticky(value: string): { cookie: string; insert?: true } | { header: string } {
  const m = /^(cookie|header)(?::([A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}))?$/.exec(value.trim());
  if (!m || (m[1] === 'header' && !m[2])) throw new CliError(`--sticky expects cookie, cookie:NAME or header:NAME (got "${value}")`, 2);
  if (m[1] === 'header') return { header: (m[2] as string).toLowerCase() };
  return m[2] ? { cookie: m[2] } : { cookie: STICKY_COOKIE, insert: true };
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

/** `--memory`, `--pids`, `--cpu-shares` (and a VM's `--vcpus`, `--disk`) → the spec's `limits`, checked against the network's bounds. */
export function limitsFrom(opts: { memory?: string; pids?: string; cpuShares?: string; vcpus?: string; disk?: string }): {
  limits?: ReplicaLimits;
} {
  const limits: ReplicaLimits = {};
  const flags = [
    ['memory', '--memory', 'memoryMb'],
    ['pids', '--pids', 'pids'],
    ['cpuShares', '--cpu-shares', 'cpuShares'],
    ['vcpus', '--vcpus', 'vcpus'],
    ['disk', '--disk', 'diskMb'],
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

export { checkName } from './names.js';

export const instancePath = (name: string, rest = '') => `/v1/instances/${encodeURIComponent(checkName(name))}${rest}`;

/** The largest upload the agent accepts (its unsigned /v1/health says), so a too-large app is refused before a byte is sent. */
async function uploadLimit(rpc: RpcClient): Promise<number> {
  await rpc.audience();
  try {
    const res = await request(new URL('/v1/health', rpc.baseUrl), { headersTimeout: 5_000, bodyTimeout: 5_000 });
    const body = (await res.body.json()) as { maxArtifactBytes?: unknown };
    return typeof body.maxArtifactBytes === 'number' ? body.maxArtifactBytes : DEFAULT_UPLOAD_LIMIT;
  } catch {
    return DEFAULT_UPLOAD_LIMIT;
  }
}

/** The network's default limit of one upload (gzipped), documented in README and docs/CLI.md. */
export const DEFAULT_UPLOAD_LIMIT = 256 * 1024 * 1024;

export async function createCommand(
  name: string,
  opts: {
    driver?: string;
    replicas?: string;
    from?: string;
    cmd?: string;
    port?: string;
    memory?: string;
    vcpus?: string;
    disk?: string;
    pids?: string;
    cpuShares?: string;
    volume?: boolean;
    sticky?: string;
  },
  g: GlobalOpts,
  out: Output,
): Promise<void> {
  checkName(name);
  const sticky = opts.sticky === undefined ? undefined : parseSticky(opts.sticky);
  const port = opts.port === undefined ? 0 : Number(opts.port);
  if (opts.port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535))
    throw new CliError(`--port expects a port number from 1 to 65535 (got "${opts.port}")`, 2);
  const body = {
    name,
    driver: opts.driver ?? 'process',
    cmd: opts.cmd ?? '',
    port,
    ...(opts.replicas ? { replicas: parseReplicas(opts.replicas) } : {}),
    ...limitsFrom(opts),
    ...(opts.volume ? { volume: true } : {}),
    ...(sticky ? { policy: { sticky } } : {}),
  };
  const rpc = client(g);
  const created = await rpc.call<{ instance: InstanceSpec; url: string }>({ method: 'POST', path: '/v1/instances', body: { json: body } });
  let deployed: DeployResult | undefined;
  if (opts.from) deployed = await deployTo(rpc, name, opts.from, opts.cmd, out, true, created.instance.driver);
  out.result({ id: created.instance.id, name, url: created.url, instance: deployed?.instance ?? created.instance }, () =>
    [
      `created ${name} (${created.instance.id})`,
      `  url: ${created.url}`,
      ...(deployed
        ? [`  deployed version ${deployed.instance.version}`]
        : [`  next: allegra deploy ${name} DIR   (the app listens on $PORT${port ? `, here ${port}` : ', 3000 in a sandbox'})`]),
    ].join('\n'),
  );
}

export interface DeployResult {
  instance: InstanceSpec;
  artifact: { sha256: string; size: number; holders: string[] };
  quorum: { id: string; members: string[] };
}

/**
 * Packs `path` to a temporary file within the agent's upload limit, with progress; a wasm app is bundled
 * into its one module first (cli/wasm-pack.ts).
 */
export async function packFor(
  rpc: RpcClient,
  path: string,
  progress: Progress,
  driver: InstanceSpec['driver'] = 'process',
): Promise<Bundle> {
  const maxBytes = await uploadLimit(rpc);
  if (driver === 'wasm') {
    progress.update(`bundling ${path} as a wasm app`);
    return packWasmApp(path, { maxBytes });
  }
  return bundle(path, { maxBytes, onProgress: (bytes, files) => progress.update(`packing ${path}: ${files} files, ${mib(bytes)}`) });
}

/** Streams a packed app from disk to `path` (a deploy or a deploy proposal), with a progress bar. */
export function upload<T>(rpc: RpcClient, path: string, packed: Bundle, cmd: string | undefined, progress: Progress): Promise<T> {
  let sent = 0;
  let shown = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      sent += chunk.length;
      // Redrawing on every 64 KiB chunk would cost more than the upload: about 100 steps.
      if (sent - shown >= packed.size / 100 || sent === packed.size) {
        shown = sent;
        progress.update(`uploading ${progressBar(sent, packed.size)}`);
      }
      cb(null, chunk);
    },
  });
  const headers: Record<string, string> = cmd === undefined ? {} : { 'x-allegra-cmd': encodeURIComponent(cmd) };
  return rpc.call<T>({
    method: 'PUT',
    path,
    body: { stream: createReadStream(packed.file).pipe(counter), sha256: packed.sha256, size: packed.size },
    headers,
    timeoutMs: 300_000,
  });
}

async function deployTo(
  rpc: RpcClient,
  name: string,
  path: string,
  cmd: string | undefined,
  out: Output,
  wait = true,
  driver?: InstanceSpec['driver'],
): Promise<DeployResult> {
  const progress = out.progress(`packing ${path}`);
  let packed: Bundle | undefined;
  try {
    // A wasm app is bundled here, where its imports resolve, into the one module the network compiles.
    const kind = driver ?? (await rpc.call<InstanceStatus>({ method: 'GET', path: instancePath(name) })).instance.driver;
    packed = await packFor(rpc, path, progress, kind);
    const result = await upload<DeployResult>(rpc, instancePath(name, '/code'), packed, cmd, progress);
    progress.update(`version ${result.instance.version} committed: held by ${result.artifact.holders.length} quorum members`);
    // Compiling a wasm app to a component takes tens of seconds on each member the first time; a VM boots
    // for tens of seconds under TCG (software emulation, where the host has no usable KVM).
    if (wait) await waitForRollout(rpc, name, result.instance, (text) => progress.update(text), kind === 'process' ? 60_000 : 300_000);
    progress.succeed(`deployed ${name} version ${result.instance.version}`);
    return result;
  } catch (err) {
    progress.fail(`deploy of ${name} failed`);
    throw err;
  } finally {
    packed?.cleanup();
  }
}

/** Replicas an instance should have now: the autoscaler's decision within the bounds, else the minimum. */
/** What the agents aim at: the autoscaler's decision within the bounds (router/scale.ts, as they compute it). */
function wantedReplicas(s: InstanceStatus): number {
  return desiredReplicas(s.instance, s.scale ?? undefined);
}

/** Waits until every desired replica runs the new version and is healthy; says why when they are not. */
async function waitForRollout(
  rpc: RpcClient,
  name: string,
  spec: InstanceSpec,
  update: (text: string) => void,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await rpc.call<InstanceStatus>({ method: 'GET', path: instancePath(name) });
    const want = spec.state === 'running' ? wantedReplicas(status) : 0;
    const ready = status.replicas.filter((r) => r.version >= spec.version && r.healthy).length;
    const why = lastReason(status);
    update(`rolling out version ${spec.version}: ${ready}/${want} replicas healthy${why ? ` (${why})` : ''}`);
    if (ready >= want) return;
    if (Date.now() > deadline)
      throw new CliError(
        `rollout of ${name} version ${spec.version} not complete after ${timeoutMs / 1000}s (${ready}/${want} replicas healthy${why ? `; ${why}` : ''}); see \`allegra status ${name}\` and \`allegra logs ${name}\``,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The most telling reason a rollout is not done: a member that cannot prepare the code, else a replica's last failure. */
function lastReason(status: InstanceStatus): string | undefined {
  const member = status.members.find((m) => m.phase === 'failed' && m.reason);
  if (member) return `${member.nodeId}: ${member.reason}`;
  const replica = status.replicas.find((r) => r.version >= status.instance.version && !r.healthy && r.lastError);
  return replica ? `${replica.nodeId} replica ${replica.slot}: ${replica.lastError}` : undefined;
}

export async function deployCommand(
  name: string,
  path: string,
  opts: { cmd?: string; wait?: boolean },
  g: GlobalOpts,
  out: Output,
): Promise<void> {
  checkName(name);
  const result = await deployTo(client(g), name, path, opts.cmd, out, opts.wait !== false);
  out.result({ name, version: result.instance.version, artifact: result.artifact, quorum: result.quorum }, () =>
    [
      `deployed ${name} version ${result.instance.version}`,
      `  artifact: sha256:${result.artifact.sha256.slice(0, 16)}… (${mib(result.artifact.size)})`,
      `  held by ${result.artifact.holders.length} of ${result.quorum.members.length} quorum members`,
    ].join('\n'),
  );
}

type Listed = InstanceSpec & { running?: { healthy: number; total: number; want: number } };

export async function listCommand(g: GlobalOpts, out: Output): Promise<void> {
  const { instances } = await client(g).call<{ instances: Listed[] }>({ method: 'GET', path: '/v1/instances' });
  out.result({ instances }, () =>
    instances.length === 0
      ? 'no instances'
      : table(
          ['NAME', 'ID', 'STATE', 'VERSION', 'REPLICAS', 'DRIVER'],
          instances.map((i) => [
            i.name,
            i.id,
            i.immutable ? `${i.state} (revoked)` : i.state,
            String(i.version),
            // Running replicas, not the bounds: what a developer asks `list` first.
            i.running ? `${i.running.healthy}/${i.running.want} healthy` : '-',
            i.driver,
          ]),
        ),
  );
}

/** What a replica is doing, from its record: running (healthy), starting, unhealthy, or down (with a reason). */
export function replicaState(r: ReplicaRecord): string {
  if (r.endpoint === '') return r.lastError?.startsWith('refused') ? 'refused' : 'down';
  if (r.healthy) return 'running';
  return r.lastError ? 'unhealthy' : 'starting';
}

export async function statusCommand(name: string, g: GlobalOpts, out: Output): Promise<void> {
  const s = await client(g).call<InstanceStatus>({ method: 'GET', path: instancePath(name) });
  out.result(s, () => {
    const i = s.instance;
    const governance = i.governance ? `; changes need ${i.governance.threshold} of ${i.governance.keys.length} governance keys` : '';
    const lines = [
      `${i.name} (${i.id})`,
      `  state:    ${i.state}${i.immutable ? ` (immutable: ownership revoked${governance})` : ''}`,
      `  version:  ${i.version === 0 ? '0 (nothing deployed yet)' : i.version}${i.artifact ? `  artifact sha256:${i.artifact.sha256.slice(0, 16)}…` : ''}`,
      `  driver:   ${i.driver}${i.driver === 'process' ? `  cmd: ${i.cmd || '(inferred from files)'}  port: ${i.port || '$PORT (3000 in a sandbox)'}` : ''}`,
      `  quorum:   ${s.quorum ? `${s.quorum.id} [${s.quorum.members.join(', ')}]` : 'none yet'}`,
      `  urls:     ${(s.urls ?? s.routes).join('  ') || 'none'}`,
      `  replicas: ${s.replicas.filter((r) => r.healthy).length} healthy of ${s.replicas.length} (want ${i.state === 'running' ? wantedReplicas(s) : 0}; bounds ${i.replicas.min}:${i.replicas.max})`,
    ];
    if (i.replicas.max > i.replicas.min) {
      const a = i.autoscale;
      lines.push(
        `  scaling:  target ${a?.target ?? AUTOSCALE.target.default} in flight per replica${i.replicas.min === 0 ? `, to zero after ${a?.idleSeconds ?? AUTOSCALE.idleSeconds.default} s idle` : ''}` +
          (s.scale ? `; now ${s.scale.desired}${s.scale.panic ? ' (panic)' : ''}: ${s.scale.reason}` : ''),
      );
    }
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
      // VM replicas say how they run: KVM, or TCG (emulated, much slower) where the host has no usable KVM.
      const vm = s.replicas.some((r) => r.accel !== undefined);
      lines.push(
        table(
          ['  MEMBER', 'REPLICA', 'STATE', 'HEALTHY', 'VERSION', 'RESTARTS', ...(vm ? ['ACCEL'] : []), 'LAST FAILURE'],
          [...s.replicas]
            .sort((a, b) => a.slot - b.slot)
            .map((r) => [
              `  ${r.nodeId}`,
              String(r.slot),
              replicaState(r),
              r.healthy ? 'yes' : 'no',
              String(r.version),
              String(r.restarts),
              ...(vm ? [r.accel ? `vm/${r.accel}` : '-'] : []),
              r.lastError ?? '-',
            ]),
        ),
      );
    }
    if (s.replicas.some((r) => r.lastError)) lines.push(`  output of the replicas: allegra logs ${i.name}`);
    return lines.join('\n');
  });
}

export async function lifecycleCommand(action: 'start' | 'stop' | 'delete', name: string, g: GlobalOpts, out: Output): Promise<void> {
  const rpc = client(g);
  const path = instancePath(name);
  if (action === 'delete') {
    await rpc.call({ method: 'DELETE', path });
    out.result({ name, deleted: true }, () => `deleted ${name}`);
    return;
  }
  const { instance, changed } = await rpc.call<{ instance: InstanceSpec; changed?: boolean }>({
    method: 'POST',
    path: `${path}/${action}`,
  });
  const already = changed === false;
  out.result({ name, state: instance.state, version: instance.version, changed: !already }, () =>
    already
      ? `${name} is already ${instance.state === 'running' ? 'running' : 'stopped'}; nothing changed`
      : `${name} is ${instance.state === 'running' ? 'starting' : 'stopping'}`,
  );
}

/** `allegra rollback NAME VERSION`: put an earlier version's code back (one the spec still keeps), as a new version. */
export async function rollbackCommand(name: string, version: string, g: GlobalOpts, out: Output): Promise<void> {
  const to = Number(version);
  if (!Number.isInteger(to) || to < 1) throw new CliError(`VERSION is a version number from allegra history (got "${version}")`, 2);
  const { instance } = await client(g).call<{ instance: InstanceSpec }>({
    method: 'POST',
    path: `${instancePath(name)}/rollback`,
    body: { json: { version: to } },
  });
  out.result(
    { name, version: instance.version, rolledBackTo: to, artifact: instance.artifact?.sha256 ?? null },
    () => `${name}: version ${instance.version} runs the code of version ${to}`,
  );
}
