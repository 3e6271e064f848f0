/**
 * The Allegra UI: the shell (sign-in, navigation, live connection) and the router over the URL's fragment
 * (`#/`, `#/i/NAME[/TAB]`, `#/network`). Everything on screen is rendered by Preact from data, so attacker
 * text (instance names, log lines) is always text, never markup.
 */
import { html } from 'htm/preact';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { short } from './common.js';
import { InstanceView, type Tab } from './instance.js';
import { InstanceList } from './list.js';
import { useConnected, watch } from './live.js';
import { NetworkView } from './network.js';
import { loadSession, type Session, Signer, signOut } from './session.js';

type Route = { view: 'list' } | { view: 'network' } | { view: 'instance'; name: string; tab: Tab };

function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  if (parts[0] === 'network') return { view: 'network' };
  if (parts[0] === 'i' && parts[1]) return { view: 'instance', name: parts[1], tab: (parts[2] as Tab) || 'replicas' };
  return { view: 'list' };
}

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

function skipToMain(e: Event): void {
  e.preventDefault();
  document.getElementById('main')?.focus();
}

function leave(): void {
  signOut();
  location.reload();
}

function SignedOut() {
  return html`<main id="main" tabindex="-1">
    <h1>Allegra</h1>
    <p>Not signed in. Run <code>allegra ui</code> and open the URL it prints: it signs you in for a short while
      without your key ever reaching the browser.</p>
  </main>`;
}

function Shell(props: { session: Session }) {
  const [signer] = useState(() => new Signer(props.session));
  const route = useRoute();
  const connected = useConnected();
  useEffect(() => {
    const stop = new AbortController();
    void watch(signer, stop.signal);
    return () => stop.abort();
  }, [signer]);
  useEffect(() => {
    const title = route.view === 'instance' ? `${route.name} · ${route.tab}` : route.view === 'network' ? 'Network' : 'Instances';
    document.title = `${title} — Allegra`;
  }, [route]);
  const expired = props.session.expiresAt < Date.now();
  return html`<div>
    <a class="skip" href="#main" onClick=${skipToMain}>Skip to content</a>
    <header>
      <strong class="brand">Allegra</strong>
      <nav aria-label="Main">
        <a href="#/" aria-current=${route.view === 'list' || route.view === 'instance' ? 'page' : undefined}>Instances</a>
        <a href="#/network" aria-current=${route.view === 'network' ? 'page' : undefined}>Network</a>
      </nav>
      <span class="who">signed in as <code title=${props.session.owner}>${short(props.session.owner, 16)}</code> until ${new Date(props.session.expiresAt).toLocaleTimeString()}</span>
      <span class=${`live ${connected ? 'on' : 'off'}`} role="status" aria-live="polite" data-live=${connected ? 'on' : 'off'}>${connected ? 'live' : 'reconnecting…'}</span>
      <button type="button" onClick=${leave}>Sign out</button>
    </header>
    ${expired ? html`<p class="banner" role="alert">This sign-in expired: run <code>allegra ui</code> again.</p>` : null}
    <main id="main" tabindex="-1">
      ${route.view === 'list' ? html`<${InstanceList} signer=${signer} />` : null}
      ${route.view === 'network' ? html`<${NetworkView} signer=${signer} />` : null}
      ${route.view === 'instance' ? html`<${InstanceView} key=${route.name} signer=${signer} name=${route.name} tab=${route.tab} />` : null}
    </main>
  </div>`;
}

const session = loadSession();
render(session ? html`<${Shell} session=${session} />` : html`<${SignedOut} />`, document.getElementById('app') as HTMLElement);
