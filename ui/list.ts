/** The instance list: every instance the signed-in key may operate, with its health. */
import { html } from 'htm/preact';
import { ErrorLine, type Signer, useData } from './common.js';
import { useVersion } from './live.js';

export interface ListedInstance {
  name: string;
  id: string;
  state: 'running' | 'stopped';
  version: number;
  driver: string;
  immutable: boolean;
  replicas: { min: number; max: number };
  running: { healthy: number; total: number; want: number };
}

export function health(r: ListedInstance['running'], state: string): { label: string; cls: string } {
  if (state === 'stopped') return { label: 'stopped', cls: 'idle' };
  if (r.want === 0 && r.total === 0) return { label: 'scaled to zero', cls: 'idle' };
  if (r.healthy >= Math.max(1, r.want)) return { label: `healthy (${r.healthy}/${r.want})`, cls: 'good' };
  if (r.healthy > 0) return { label: `degraded (${r.healthy}/${r.want} healthy)`, cls: 'warn' };
  return { label: `down (0/${r.want} healthy)`, cls: 'bad' };
}

export function InstanceList(props: { signer: Signer }) {
  const v = useVersion('list');
  const { data, error } = useData(() => props.signer.json<{ instances: ListedInstance[] }>('GET', '/v1/instances'), [v]);
  const rows = data?.instances ?? [];
  return html`<section aria-labelledby="list-title">
    <h1 id="list-title">Instances</h1>
    <${ErrorLine} error=${error} />
    ${data && rows.length === 0 ? html`<p>No instances yet: <code>allegra create NAME</code> makes one; it appears here at once.</p>` : null}
    ${
      rows.length > 0
        ? html`<table>
          <caption class="sr-only">Your instances and their health</caption>
          <thead><tr><th scope="col">Name</th><th scope="col">Health</th><th scope="col">State</th><th scope="col">Version</th><th scope="col">Replicas</th><th scope="col">Driver</th></tr></thead>
          <tbody>
            ${rows
              .sort((a, b) => a.name.localeCompare(b.name))
              .map((i) => {
                const h = health(i.running, i.state);
                return html`<tr data-instance=${i.name}>
                  <th scope="row"><a href=${`#/i/${encodeURIComponent(i.name)}`}>${i.name}</a>${i.immutable ? html` <span class="badge">revoked</span>` : null}</th>
                  <td><span class=${`dot ${h.cls}`} aria-hidden="true"></span> ${h.label}</td>
                  <td>${i.state}</td>
                  <td>${i.version}</td>
                  <td>${i.running.total} (min ${i.replicas.min}, max ${i.replicas.max})</td>
                  <td>${i.driver}</td>
                </tr>`;
              })}
          </tbody>
        </table>`
        : null
    }
  </section>`;
}
