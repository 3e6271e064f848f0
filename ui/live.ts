/**
 * Live updates: one signed server-sent-events stream (`/v1/ui/watch`, read with fetch because EventSource
 * cannot send the signature headers) whose change notices bump per-instance and network counters; views
 * re-read what they show when their counter moves. The stream is re-signed and reopened when it ends (the
 * agent closes it after 10 minutes or at the sign-in's expiry) or fails.
 */
import { useEffect, useState } from 'preact/hooks';
import type { Signer } from './session.js';

type Listener = () => void;
const versions = new Map<string, number>();
const listeners = new Set<Listener>();
let connected = false;

function bump(key: string): void {
  versions.set(key, (versions.get(key) ?? 0) + 1);
}

function emit(): void {
  for (const l of listeners) l();
}

/** Re-renders the caller whenever the counter of `key` (`i:NAME`, `list`, `network`) moves. */
export function useVersion(key: string): number {
  const [, set] = useState(0);
  useEffect(() => {
    const l = () => set((n) => n + 1);
    listeners.add(l);
    return () => {
      listeners.delete(l);
    };
  }, [key]);
  return versions.get(key) ?? 0;
}

export function useConnected(): boolean {
  useVersion('connection');
  return connected;
}

function setConnected(value: boolean): void {
  connected = value;
  bump('connection');
  emit();
}

function handle(event: string, data: string): void {
  if (event !== 'change') return;
  const change = JSON.parse(data) as { instances: string[]; network: boolean };
  for (const name of change.instances) bump(`i:${name}`);
  if (change.instances.length > 0) bump('list');
  if (change.network) bump('network');
  emit();
}

export async function watch(signer: Signer, stop: AbortSignal): Promise<void> {
  while (!stop.aborted) {
    try {
      const res = await signer.send('GET', '/v1/ui/watch', { signal: stop, headers: { accept: 'text/event-stream' } });
      const reader = (res.body as ReadableStream<BufferSource>).pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = 'message';
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
          }
          if (event === 'hello') {
            setConnected(true);
            // Whatever changed while we were away: read everything again.
            for (const key of [...versions.keys()]) bump(key);
            bump('list');
            bump('network');
            emit();
          } else handle(event, data.join('\n'));
        }
      }
    } catch {
      // reconnect below
    }
    setConnected(false);
    if (!stop.aborted) await new Promise((r) => setTimeout(r, 1_000));
  }
}
