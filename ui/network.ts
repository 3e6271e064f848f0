/** The operators' view: nodes, regions and capacity, quorums, gateways, certificates, gateway events. */
import { html } from 'htm/preact';
import { ErrorLine, type Signer, short, useData, when } from './common.js';
import { useVersion } from './live.js';

interface NetworkAnswer {
  node: string;
  network: { baseDomain: string; quorumSize: number };
  nodes: Array<{ id: string; region: string; capacity: number; load: number; rpc: string; startedAt: number; machine: string | null }>;
  regions: Array<{ region: string; nodes: number; capacity: number; load: number }>;
  quorums: Array<{ id: string; members: string[]; capacity: number; instances: number }>;
  gateways: Array<{ id: string; machine: string | null; startedAt: number; metrics: string | null }>;
  certificates: Array<{ host: string; state: string; detail: string; notAfter: number | null; issuer: string | null }>;
  events: Array<{ t: number; kind: string; text: string }>;
}

export function NetworkView(props: { signer: Signer }) {
  const v = useVersion('network');
  const { data, error } = useData(() => props.signer.json<NetworkAnswer>('GET', '/v1/ui/network'), [v]);
  return html`<section aria-labelledby="net-title">
    <h1 id="net-title">Network</h1>
    <${ErrorLine} error=${error} />
    ${
      data
        ? html`<p>Base domain <code>${data.network.baseDomain}</code>, quorums of ${data.network.quorumSize}; this page is served by node <code>${data.node}</code>.</p>
          <h2>Regions</h2>
          <table><thead><tr><th scope="col">Region</th><th scope="col">Nodes</th><th scope="col">Replicas running / slots</th></tr></thead>
            <tbody>${data.regions.map((r) => html`<tr><th scope="row">${r.region}</th><td>${r.nodes}</td><td><meter min="0" max=${r.capacity} value=${r.load} aria-label=${`load of ${r.region}`}></meter> ${r.load} / ${r.capacity}</td></tr>`)}</tbody></table>
          <h2>Nodes</h2>
          <table><thead><tr><th scope="col">Node</th><th scope="col">Region</th><th scope="col">Load / capacity</th><th scope="col">RPC</th><th scope="col">Up since</th></tr></thead>
            <tbody>${data.nodes.map((n) => html`<tr data-node=${n.id}><th scope="row"><code>${n.id}</code></th><td>${n.region}</td><td>${n.load} / ${n.capacity}</td><td>${n.rpc}</td><td>${when(n.startedAt)}</td></tr>`)}</tbody></table>
          <h2>Quorums</h2>
          <table><thead><tr><th scope="col">Quorum</th><th scope="col">Members</th><th scope="col">Capacity</th><th scope="col">Instances</th></tr></thead>
            <tbody>${data.quorums.map((q) => html`<tr><th scope="row"><code>${q.id}</code></th><td>${q.members.map((m) => html`<code>${short(m)}</code> `)}</td><td>${q.capacity}</td><td>${q.instances}</td></tr>`)}</tbody></table>
          <h2>Gateways</h2>
          <table><thead><tr><th scope="col">Gateway</th><th scope="col">Machine</th><th scope="col">Up since</th><th scope="col">Metrics</th></tr></thead>
            <tbody>${data.gateways.map((g) => html`<tr><th scope="row"><code>${short(g.id, 16)}</code></th><td>${g.machine ? short(g.machine) : '–'}</td><td>${when(g.startedAt)}</td><td>${g.metrics ? 'sampled' : 'not published'}</td></tr>`)}</tbody></table>
          <h2>Certificates</h2>
          ${
            data.certificates.length === 0
              ? html`<p>No certificate yet (<code>allegra expose NAME</code>).</p>`
              : html`<table><thead><tr><th scope="col">Host</th><th scope="col">Status</th><th scope="col">Issuer</th><th scope="col">Expires</th></tr></thead>
                <tbody>${data.certificates.map((c) => html`<tr><th scope="row">${c.host}</th><td>${c.state}${c.detail ? ` — ${c.detail}` : ''}</td><td>${c.issuer ?? '–'}</td><td>${when(c.notAfter)}</td></tr>`)}</tbody></table>`
          }
          <h2>Gateway events</h2>
          ${data.events.length === 0 ? html`<p>No ejections or failovers seen.</p>` : html`<ul>${data.events.map((e) => html`<li><time>${when(e.t)}</time> ${e.text}</li>`)}</ul>`}`
        : null
    }
  </section>`;
}
