/**
 * One instance: its replicas per quorum member (with the actions), deployments, live logs, events, metrics,
 * domains and certificates, settings (team keys, governance, usage). Every action is the CLI's signed RPC;
 * a revoked instance says why its actions are disabled.
 */
import { html } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { MetricPoint } from '../protocol/metrics-point.js';
import { Chart } from './charts.js';
import { ErrorLine, enc, Outcome, type Signer, short, useAction, useData, when } from './common.js';
import { useVersion } from './live.js';

interface Replica {
  nodeId: string;
  slot: number;
  endpoint: string;
  healthy: boolean;
  version: number;
  restarts: number;
  lastError?: string;
  updatedAt: number;
}
interface Status {
  instance: {
    name: string;
    id: string;
    owner: string;
    state: 'running' | 'stopped';
    version: number;
    driver: string;
    cmd: string;
    port: number;
    replicas: { min: number; max: number };
    artifact: { sha256: string; size: number } | null;
    previous?: Array<{ version: number; artifact: { sha256: string }; cmd: string }>;
    immutable: boolean;
    revokedAt?: number;
    governance?: { threshold: number; keys: string[] };
    authorized: string[];
  };
  quorum: { id: string; members: string[] } | null;
  replicas: Replica[];
  routes: string[];
  members: Array<{ nodeId: string; version: number; phase: string; reason?: string }>;
  scale?: { desired: number; reason: string; panic: boolean } | null;
  urls?: string[];
}

const TABS = [
  ['replicas', 'Replicas'],
  ['deployments', 'Deployments'],
  ['logs', 'Logs'],
  ['events', 'Events'],
  ['metrics', 'Metrics'],
  ['domains', 'Domains'],
  ['settings', 'Settings'],
] as const;
export type Tab = (typeof TABS)[number][0];

export function replicaState(r: Replica): string {
  if (r.endpoint === '') return 'not running';
  return r.healthy ? 'running' : 'unhealthy';
}

export function InstanceView(props: { signer: Signer; name: string; tab: Tab }) {
  const { signer, name, tab } = props;
  const v = useVersion(`i:${name}`);
  const { data, error } = useData(() => signer.json<Status>('GET', `/v1/instances/${enc(name)}`), [name, v]);
  const spec = data?.instance;
  const revoked = spec?.immutable === true;
  return html`<section aria-labelledby="inst-title">
    <h1 id="inst-title">${name}</h1>
    <${ErrorLine} error=${error} />
    ${
      spec
        ? html`<p class="summary">
          <span>state <strong>${spec.state}</strong></span> · <span>version <strong>${spec.version}</strong></span> ·
          <span>driver ${spec.driver}</span> · <span>replicas ${spec.replicas.min}–${spec.replicas.max}</span>
          ${(data?.urls ?? []).map((u) => html` · <a href=${u} rel="noopener noreferrer">${u}</a>`)}
        </p>`
        : null
    }
    ${revoked && spec ? html`<${Revoked} spec=${spec} />` : null}
    <nav aria-label="Instance views" class="tabs">
      ${TABS.map(([id, label]) => html`<a href=${`#/i/${enc(name)}/${id}`} aria-current=${tab === id ? 'page' : undefined}>${label}</a>`)}
    </nav>
    ${data && tab === 'replicas' ? html`<${Replicas} signer=${signer} status=${data} revoked=${revoked} />` : null}
    ${data && tab === 'deployments' ? html`<${Deployments} signer=${signer} status=${data} version=${v} revoked=${revoked} />` : null}
    ${tab === 'logs' ? html`<${Logs} signer=${signer} name=${name} />` : null}
    ${tab === 'events' ? html`<${Events} signer=${signer} name=${name} version=${v} />` : null}
    ${tab === 'metrics' ? html`<${Metrics} signer=${signer} name=${name} />` : null}
    ${data && tab === 'domains' ? html`<${Domains} signer=${signer} status=${data} version=${v} revoked=${revoked} />` : null}
    ${data && tab === 'settings' ? html`<${Settings} signer=${signer} status=${data} version=${v} revoked=${revoked} />` : null}
  </section>`;
}

function Revoked(props: { spec: Status['instance'] }) {
  const g = props.spec.governance;
  return html`<p id="revoked-reason" class="banner" role="note">
    Revoked ${when(props.spec.revokedAt)}: the owner gave up ownership and the instance is immutable, so its actions are disabled here.
    ${g ? ` A change needs ${g.threshold} of ${g.keys.length} governance signatures: allegra propose / allegra approve.` : ' It has no governance policy: it can never change again.'}
  </p>`;
}

/** Props for a control an immutable instance cannot use: disabled, with the reason read out. */
const lockedBy = (revoked: boolean) => (revoked ? { disabled: true, 'aria-describedby': 'revoked-reason' } : {});

function Replicas(props: { signer: Signer; status: Status; revoked: boolean }) {
  const { signer, status, revoked } = props;
  const spec = status.instance;
  const members = status.quorum?.members ?? [...new Set(status.replicas.map((r) => r.nodeId))];
  const lifecycle = useAction();
  const scale = useAction();
  const deploy = useAction();
  const [min, setMin] = useState(String(spec.replicas.min));
  const [max, setMax] = useState(String(spec.replicas.max));
  const [cmd, setCmd] = useState('');
  const [target, setTarget] = useState('');
  const [idle, setIdle] = useState('');
  const file = useRef<HTMLInputElement>(null);
  useEffect(() => {
    setMin(String(spec.replicas.min));
    setMax(String(spec.replicas.max));
  }, [spec.replicas.min, spec.replicas.max]);
  const path = `/v1/instances/${enc(spec.name)}`;
  const running = status.replicas.filter((r) => r.endpoint !== '');
  return html`<div>
    <h2>Replicas</h2>
    <p id="replica-count" aria-live="polite">${running.length} running, ${running.filter((r) => r.healthy).length} healthy (wanted ${spec.state === 'running' ? (status.scale?.desired ?? spec.replicas.min) : 0})</p>
    ${status.scale ? html`<p class="muted">Autoscaler: ${status.scale.desired} replicas${status.scale.panic ? ' (panic mode)' : ''} — ${status.scale.reason}</p>` : null}
    ${members.map((m) => {
      const mine = status.replicas.filter((r) => r.nodeId === m).sort((a, b) => a.slot - b.slot);
      const member = status.members.find((x) => x.nodeId === m);
      return html`<section class="member" aria-label=${`quorum member ${m}`}>
        <h3>Member <code>${m}</code> ${member ? html`<span class="muted">code ${member.phase}${member.reason ? `: ${member.reason}` : ''}</span>` : null}</h3>
        ${
          mine.length === 0
            ? html`<p class="muted">no replica here</p>`
            : html`<table><thead><tr><th scope="col">Replica</th><th scope="col">State</th><th scope="col">Version</th><th scope="col">Restarts</th><th scope="col">Last failure</th><th scope="col">Updated</th></tr></thead>
              <tbody>${mine.map((r) => {
                const s = replicaState(r);
                return html`<tr data-replica=${`${r.nodeId}.${r.slot}`} data-state=${s}>
                  <th scope="row">${r.slot}</th>
                  <td><span class=${`dot ${s === 'running' ? 'good' : s === 'unhealthy' ? 'warn' : 'bad'}`} aria-hidden="true"></span> ${s}</td>
                  <td>${r.version}</td><td>${r.restarts}</td><td>${r.lastError ?? '–'}</td><td>${when(r.updatedAt)}</td>
                </tr>`;
              })}</tbody></table>`
        }
      </section>`;
    })}
    <h2>Actions</h2>
    <div class="actions">
      <fieldset>
        <legend>Lifecycle</legend>
        <button type="button" ...${lockedBy(revoked)} disabled=${revoked || lifecycle.busy || spec.state === 'running'}
          onClick=${() => lifecycle.run('start', () => signer.json('POST', `${path}/start`))}>Start</button>
        <button type="button" ...${lockedBy(revoked)} disabled=${revoked || lifecycle.busy || spec.state === 'stopped'}
          onClick=${() => lifecycle.run('stop', () => signer.json('POST', `${path}/stop`))}>Stop</button>
        <${Outcome} message=${lifecycle.message} />
      </fieldset>
      <form onSubmit=${(e: Event) => {
        e.preventDefault();
        const body: Record<string, number> = { min: Number(min), max: Number(max) };
        if (target.trim()) body.target = Number(target);
        if (idle.trim()) body.idleSeconds = Number(idle);
        void scale.run('scale', () => signer.json('POST', `${path}/scale`, { json: body }));
      }}>
        <fieldset>
          <legend>Scale</legend>
          <label for="scale-min">Fewest replicas</label>
          <input id="scale-min" type="number" min="0" max="64" required value=${min} onInput=${(e: Event) => setMin((e.target as HTMLInputElement).value)} ...${lockedBy(revoked)} />
          <label for="scale-max">Most replicas</label>
          <input id="scale-max" type="number" min="1" max="64" required value=${max} onInput=${(e: Event) => setMax((e.target as HTMLInputElement).value)} ...${lockedBy(revoked)} />
          <label for="scale-target">Target requests in flight per replica (optional)</label>
          <input id="scale-target" type="number" min="1" value=${target} onInput=${(e: Event) => setTarget((e.target as HTMLInputElement).value)} ...${lockedBy(revoked)} />
          <label for="scale-idle">Idle seconds before scaling to zero (optional, with 0 fewest)</label>
          <input id="scale-idle" type="number" min="1" value=${idle} onInput=${(e: Event) => setIdle((e.target as HTMLInputElement).value)} ...${lockedBy(revoked)} />
          <button type="submit" ...${lockedBy(revoked)} disabled=${revoked || scale.busy}>Scale</button>
          <${Outcome} message=${scale.message} />
        </fieldset>
      </form>
      <form onSubmit=${(e: Event) => {
        e.preventDefault();
        const f = file.current?.files?.[0];
        void deploy.run('deploy', async () => {
          if (!f) throw new Error('choose a bundle first');
          await signer.ready();
          // The agent refuses bigger uploads; say so before reading the file into memory.
          if (f.size > signer.maxArtifactBytes)
            throw new Error(
              `the bundle is ${Math.ceil(f.size / 1048576)} MiB; the network takes at most ${Math.floor(signer.maxArtifactBytes / 1048576)} MiB`,
            );
          const bytes = new Uint8Array(await f.arrayBuffer());
          if (bytes[0] !== 0x1f || bytes[1] !== 0x8b)
            throw new Error('the bundle must be a gzipped tar (.tar.gz), as `tar czf app.tar.gz -C DIR .` makes it');
          const headers: Record<string, string> = cmd.trim() ? { 'x-allegra-cmd': encodeURIComponent(cmd.trim()) } : {};
          await signer.json('PUT', `${path}/code`, { bytes, headers });
        });
      }}>
        <fieldset>
          <legend>Deploy a new version</legend>
          <label for="deploy-file">Bundle (.tar.gz of the app directory)</label>
          <input id="deploy-file" type="file" accept=".tar.gz,.tgz,application/gzip" ref=${file} ...${lockedBy(revoked)} />
          <label for="deploy-cmd">Command (optional; inferred from the files when empty)</label>
          <input id="deploy-cmd" type="text" placeholder="node server.mjs" value=${cmd} onInput=${(e: Event) => setCmd((e.target as HTMLInputElement).value)} ...${lockedBy(revoked)} />
          <button type="submit" ...${lockedBy(revoked)} disabled=${revoked || deploy.busy}>${deploy.busy ? 'Deploying…' : 'Deploy'}</button>
          <${Outcome} message=${deploy.message} />
        </fieldset>
      </form>
    </div>
  </div>`;
}

interface HistoryRecord {
  seq: number;
  at: number;
  op: string;
  author: string;
  detail: Record<string, unknown>;
}

function Deployments(props: { signer: Signer; status: Status; version: number; revoked: boolean }) {
  const spec = props.status.instance;
  const name = spec.name;
  const { data, error } = useData(
    () => props.signer.json<{ records: HistoryRecord[] }>('GET', `/v1/instances/${enc(name)}/history`),
    [name, props.version],
  );
  const rollback = useAction();
  const kept = new Set((spec.previous ?? []).map((p) => p.version));
  const deploys = (data?.records ?? []).filter((r) => r.op === 'deploy' || r.op === 'rollback' || r.op === 'governance').reverse();
  return html`<div>
    <h2>Deployments</h2>
    <${ErrorLine} error=${error} />
    <p class="muted">Every version, signed by its author and hash-chained (<code>allegra history ${name} --verify</code> checks the chain).
      The last ${kept.size || 'few'} earlier versions stay on the quorum: rolling back puts one back as a new version, without an upload.</p>
    <${Outcome} message=${rollback.message} />
    ${
      deploys.length === 0
        ? html`<p>No deployment yet.</p>`
        : html`<table><thead><tr><th scope="col">Version</th><th scope="col">When</th><th scope="col">What</th><th scope="col">Artifact</th><th scope="col">Command</th><th scope="col">Signed by</th><th scope="col"><span class="sr-only">Action</span></th></tr></thead>
          <tbody>${deploys.map((r) => {
            const version = Number(r.detail.version);
            const current = version === spec.version;
            return html`<tr data-version=${String(version)}><th scope="row">${Number.isFinite(version) ? version : '–'}${current ? ' (running)' : ''}</th><td>${when(r.at)}</td>
              <td>${r.op === 'rollback' ? `rollback to ${String(r.detail.to)}` : r.op}</td>
              <td><code>${short(String(r.detail.artifact ?? ''), 16)}</code></td>
              <td><code>${String(r.detail.cmd ?? '')}</code></td><td><code>${short(r.author)}</code></td>
              <td>${
                !current && kept.has(version)
                  ? html`<button type="button" ...${lockedBy(props.revoked)} disabled=${props.revoked || rollback.busy}
                    onClick=${() => rollback.run(`roll back to version ${version}`, () => props.signer.json('POST', `/v1/instances/${enc(name)}/rollback`, { json: { version } }))}>Roll back to ${version}</button>`
                  : null
              }</td></tr>`;
          })}</tbody></table>`
    }
  </div>`;
}

interface LogLine {
  t: number;
  node: string;
  replica: number;
  stream: 'out' | 'err';
  line: string;
}
const MAX_LINES = 2_000;

function Logs(props: { signer: Signer; name: string }) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [state, setState] = useState('connecting');
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const stop = new AbortController();
    setLines([]);
    (async () => {
      while (!stop.signal.aborted) {
        try {
          const res = await props.signer.send('GET', `/v1/instances/${enc(props.name)}/logs?follow=1&limit=500`, { signal: stop.signal });
          setState('live');
          const reader = (res.body as ReadableStream<BufferSource>).pipeThrough(new TextDecoderStream()).getReader();
          let buffer = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            const parts = buffer.split('\n');
            buffer = parts.pop() ?? '';
            const fresh = parts.flatMap((p) => {
              const l = JSON.parse(p) as LogLine | { live: true };
              return 'line' in l ? [l] : [];
            });
            if (fresh.length) setLines((old) => [...old, ...fresh].slice(-MAX_LINES));
          }
        } catch (err) {
          if (stop.signal.aborted) return;
          setState(`reconnecting (${(err as Error).message})`);
        }
        await new Promise((r) => setTimeout(r, 1_000));
      }
    })();
    return () => stop.abort();
  }, [props.name]);
  useEffect(() => {
    const el = box.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [lines]);
  return html`<div>
    <h2>Logs <span class="muted">(${state}; every quorum member, merged by time)</span></h2>
    <div class="logs" ref=${box} role="log" aria-label=${`log lines of ${props.name}`} tabindex="0">
      ${lines.map(
        (l) =>
          html`<div class=${`line ${l.stream}`}><time>${new Date(l.t).toISOString().slice(11, 23)}</time> <span class="muted">${short(l.node, 8)}/${l.replica}</span> <span class="text">${l.line}</span></div>`,
      )}
    </div>
  </div>`;
}

interface UiEvent {
  t: number;
  kind: string;
  text: string;
}

function Events(props: { signer: Signer; name: string; version: number }) {
  const path = `/v1/instances/${enc(props.name)}`;
  const live = useData(
    () => props.signer.json<{ events: UiEvent[]; network: UiEvent[] }>('GET', `/v1/ui/instances/${enc(props.name)}/events`),
    [props.name, props.version],
  );
  const hist = useData(() => props.signer.json<{ records: HistoryRecord[] }>('GET', `${path}/history`), [props.name, props.version]);
  const events: UiEvent[] = [
    ...(live.data?.events ?? []),
    ...(live.data?.network ?? []).map((e) => ({ ...e, text: `${e.text} (network-wide)` })),
    ...(hist.data?.records ?? []).map((r) => ({
      t: r.at,
      kind: `history: ${r.op}`,
      text: `${r.op} signed by ${short(r.author)}${r.detail.version ? `, version ${r.detail.version}` : ''}`,
    })),
  ].sort((a, b) => b.t - a.t);
  return html`<div>
    <h2>Events</h2>
    <${ErrorLine} error=${live.error ?? hist.error} />
    <p class="muted">Operations from the signed history; replica, scaling and cold-start events as this node saw them since it started watching.</p>
    <ol class="events">${events.slice(0, 300).map((e) => html`<li><time>${when(e.t)}</time> <span class="badge">${e.kind}</span> ${e.text}</li>`)}</ol>
  </div>`;
}

function Metrics(props: { signer: Signer; name: string }) {
  const [points, setPoints] = useState<MetricPoint[]>([]);
  const [error, setError] = useState<string | undefined>();
  useEffect(() => {
    let current = true;
    const load = () =>
      props.signer.json<{ points: MetricPoint[] }>('GET', `/v1/ui/instances/${enc(props.name)}/metrics`).then(
        (d) => {
          if (!current) return;
          setPoints(d.points);
          setError(undefined);
        },
        (e: Error) => current && setError(e.message),
      );
    void load();
    const timer = setInterval(load, 2_000);
    return () => {
      current = false;
      clearInterval(timer);
    };
  }, [props.name]);
  const times = points.map((p) => p.t / 1000);
  const ms = (v: number | null) => (v === null ? null : Math.round(v * 100000) / 100);
  return html`<div>
    <h2>Metrics <span class="muted">(from the gateways, every 2 s, last 10 minutes)</span></h2>
    <${ErrorLine} error=${error} />
    ${points.length < 2 ? html`<p class="muted">Collecting samples… plots appear after the first two.</p>` : null}
    <div class="charts">
      <${Chart} title="Requests per second" unit="req/s" times=${times} series=${[{ label: 'requests/s', values: points.map((p) => p.rps), color: '#2563eb' }]} />
      <${Chart} title="Latency" unit="ms" times=${times} series=${[
        { label: 'p50', values: points.map((p) => ms(p.p50)), color: '#16a34a' },
        { label: 'p99', values: points.map((p) => ms(p.p99)), color: '#dc2626' },
      ]} />
      <${Chart} title="5xx per second" unit="5xx/s" times=${times} series=${[{ label: '5xx/s', values: points.map((p) => p.errors5xx), color: '#b91c1c' }]} />
      <${Chart} title="Replicas in rotation" unit="replicas" times=${times} series=${[{ label: 'replicas', values: points.map((p) => p.inRotation), color: '#7c3aed' }]} />
      <${Chart} title="Cold starts" unit="count" times=${times} series=${[{ label: 'cold starts', values: points.map((p) => p.coldStarts), color: '#ea580c' }]} />
    </div>
  </div>`;
}

function Domains(props: { signer: Signer; status: Status; version: number; revoked: boolean }) {
  const name = props.status.instance.name;
  const certs = useData(
    () =>
      props.signer.json<{
        certificates: Array<{
          host: string;
          status: { state: string; detail: string } | null;
          notAfter: number | null;
          issuer: string | null;
        }>;
      }>('GET', `/v1/instances/${enc(name)}/certificates`),
    [name, props.version],
  );
  const expose = useAction();
  const [domain, setDomain] = useState('');
  const [port, setPort] = useState('');
  return html`<div>
    <h2>Domains and certificates</h2>
    <${ErrorLine} error=${certs.error} />
    <table><thead><tr><th scope="col">Host</th><th scope="col">Certificate</th><th scope="col">Issuer</th><th scope="col">Expires</th></tr></thead>
      <tbody>${(certs.data?.certificates ?? props.status.routes.map((host) => ({ host, status: null, notAfter: null, issuer: null }))).map(
        (c) =>
          html`<tr><th scope="row">${c.host}</th><td>${c.status ? `${c.status.state}${c.status.detail ? ` — ${c.status.detail}` : ''}` : c.notAfter ? 'issued' : 'none (plain HTTP)'}</td><td>${c.issuer ?? '–'}</td><td>${when(c.notAfter)}</td></tr>`,
      )}</tbody></table>
    <form onSubmit=${(e: Event) => {
      e.preventDefault();
      const body: Record<string, unknown> = {};
      if (domain.trim()) body.domain = domain.trim();
      if (port.trim()) body.port = Number(port);
      void expose.run('expose', () => props.signer.json('POST', `/v1/instances/${enc(name)}/expose`, { json: body }));
    }}>
      <fieldset>
        <legend>Expose over HTTPS</legend>
        <label for="expose-domain">Custom domain (optional; empty: the network's own name)</label>
        <input id="expose-domain" type="text" placeholder="shop.example.com" value=${domain} onInput=${(e: Event) => setDomain((e.target as HTMLInputElement).value)} ...${lockedBy(props.revoked)} />
        <label for="expose-port">Port the app listens on (optional check)</label>
        <input id="expose-port" type="number" min="1" max="65535" value=${port} onInput=${(e: Event) => setPort((e.target as HTMLInputElement).value)} ...${lockedBy(props.revoked)} />
        <button type="submit" ...${lockedBy(props.revoked)} disabled=${props.revoked || expose.busy}>Expose</button>
        <${Outcome} message=${expose.message} />
      </fieldset>
    </form>
  </div>`;
}

interface UsageRecord {
  nodeId: string;
  requests: number;
  bytesIn: number;
  bytesOut: number;
  cpuSeconds: number;
  replicaSeconds: number;
  at: number;
}

function Settings(props: { signer: Signer; status: Status; version: number; revoked: boolean }) {
  const name = props.status.instance.name;
  const path = `/v1/instances/${enc(name)}`;
  const team = useData(() => props.signer.json<{ owner: string; keys: string[] }>('GET', `${path}/auth`), [name, props.version]);
  const usage = useData(() => props.signer.json<{ records: UsageRecord[] }>('GET', `${path}/usage`), [name, props.version]);
  const keys = useAction();
  const [key, setKey] = useState('');
  const g = props.status.instance.governance;
  return html`<div>
    <h2>Team keys</h2>
    <${ErrorLine} error=${team.error} />
    <p>Owner <code>${team.data?.owner ?? props.status.instance.owner}</code></p>
    <ul class="keys" aria-label="team keys">
      ${(team.data?.keys ?? []).map(
        (k) => html`<li data-key=${k}><code>${k}</code>
          <button type="button" ...${lockedBy(props.revoked)} disabled=${props.revoked || keys.busy} aria-label=${`Remove team key ${short(k, 16)}`}
            onClick=${() => keys.run('remove key', () => props.signer.json('POST', `${path}/auth`, { json: { remove: k } }))}>Remove</button></li>`,
      )}
      ${team.data && team.data.keys.length === 0 ? html`<li class="muted">no team key: only the owner operates this instance</li>` : null}
    </ul>
    <form onSubmit=${(e: Event) => {
      e.preventDefault();
      void keys.run('add key', async () => {
        await props.signer.json('POST', `${path}/auth`, { json: { add: key.trim().toLowerCase() } });
        setKey('');
      });
    }}>
      <fieldset>
        <legend>Add a team key</legend>
        <label for="team-key">Public key (64 hex characters, as <code>allegra keys show</code> prints it)</label>
        <input id="team-key" type="text" required pattern="[0-9a-fA-F]{64}" value=${key} onInput=${(e: Event) => setKey((e.target as HTMLInputElement).value)} ...${lockedBy(props.revoked)} />
        <button type="submit" ...${lockedBy(props.revoked)} disabled=${props.revoked || keys.busy}>Add key</button>
        <${Outcome} message=${keys.message} />
      </fieldset>
    </form>
    <h2>Governance</h2>
    ${
      props.status.instance.immutable
        ? html`<p>Revoked ${when(props.status.instance.revokedAt)}. ${g ? html`Changes need ${g.threshold} of: ${g.keys.map((k) => html`<code>${short(k)}</code> `)}` : 'No governance policy: it never changes again.'}</p>`
        : html`<p>Not revoked: the owner and team keys operate it. <code>allegra revoke ${name} --yes [--governance M:KEYS]</code> gives up ownership for good (the UI never does this).</p>`
    }
    <h2>Usage</h2>
    <${ErrorLine} error=${usage.error} />
    ${
      (usage.data?.records ?? []).length === 0
        ? html`<p class="muted">No usage recorded yet (each node reports every 10 s).</p>`
        : html`<table><thead><tr><th scope="col">Node</th><th scope="col">Requests</th><th scope="col">Bytes in / out</th><th scope="col">CPU seconds</th><th scope="col">Replica hours</th></tr></thead>
          <tbody>${(usage.data?.records ?? []).map(
            (u) =>
              html`<tr><th scope="row"><code>${short(u.nodeId)}</code></th><td>${u.requests}</td><td>${u.bytesIn} / ${u.bytesOut}</td><td>${u.cpuSeconds.toFixed(2)}</td><td>${(u.replicaSeconds / 3600).toFixed(3)}</td></tr>`,
          )}</tbody></table>`
    }
  </div>`;
}
