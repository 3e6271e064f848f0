/** Small pieces every view uses: loading data that follows live changes, dates, action feedback. */
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, type Signer } from './session.js';

export type Loaded<T> = { data?: T; error?: string };

/** Loads with `fetcher` whenever any of `deps` (live versions included) changes; keeps the last good data. */
export function useData<T>(fetcher: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<Loaded<T>>({});
  useEffect(() => {
    let current = true;
    fetcher().then(
      (data) => current && setState({ data }),
      (err: Error) => current && setState((s) => ({ data: s.data, error: err.message })),
    );
    return () => {
      current = false;
    };
  }, deps);
  return state;
}

export const when = (t: number | null | undefined) => (t ? new Date(t).toLocaleString() : '–');
export const short = (key: string, n = 12) => (key.length > n ? `${key.slice(0, n)}…` : key);

export function ErrorLine(props: { error?: string }) {
  return props.error ? html`<p class="error" role="alert">${props.error}</p>` : null;
}

/**
 * Runs a signed action and reports its outcome in a live region: the agent's one-line message on failure
 * (the message the CLI prints), `done` on success.
 */
export function useAction(): {
  busy: boolean;
  message: { ok: boolean; text: string } | null;
  run: (label: string, action: () => Promise<unknown>) => Promise<void>;
} {
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  const run = async (label: string, action: () => Promise<unknown>) => {
    setBusy(true);
    setMessage(null);
    try {
      await action();
      setMessage({ ok: true, text: `${label}: done` });
    } catch (err) {
      const text =
        err instanceof ApiError
          ? `${label} refused (${err.status} ${err.code}): ${err.message}`
          : `${label} failed: ${(err as Error).message}`;
      setMessage({ ok: false, text });
    } finally {
      setBusy(false);
    }
  };
  return { busy, message, run };
}

export function Outcome(props: { message: { ok: boolean; text: string } | null }) {
  const m = props.message;
  return html`<p class=${m && !m.ok ? 'error' : 'ok'} role=${m && !m.ok ? 'alert' : 'status'} aria-live="polite">${m?.text ?? ''}</p>`;
}

export const enc = encodeURIComponent;
export type { Signer };
