/**
 * The Workers transport: one `fetch` per attempt to an origin — a Node gateway, by hostname on 443 in
 * production (Workers cannot fetch raw IPs, and other ports are rewritten). Workers cannot set Host, so the
 * host the request is for travels in X-Forwarded-Host, and the edge proves itself to the origin with its
 * token (x-allegra-edge); the origin then routes by that host and trusts the forwarding headers.
 */
import type { AttemptHandle, AttemptRequest, AttemptSink, Transport } from '../gateway/transport.js';
import type { Upstream } from '../gateway/upstream.js';
import type { WorkersPort } from './workers-port.js';

export class FetchTransport implements Transport<WorkersPort> {
  readonly name = 'fetch';

  constructor(private readonly edgeToken: string) {}

  send(port: WorkersPort, req: AttemptRequest, upstream: Upstream, sink: AttemptSink): AttemptHandle {
    const abort = new AbortController();
    let timedOut = false;
    let stopped = false;
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, req.tryTimeoutMs);
    const headers = new Headers();
    for (let i = 0; i < req.headers.length; i += 2) {
      const name = req.headers[i] as string;
      if (name.toLowerCase() === 'host') continue;
      headers.append(name, req.headers[i + 1] as string);
    }
    headers.set('x-allegra-edge', this.edgeToken);
    const body = req.body as ReadableStream<Uint8Array> | null;
    fetch(new URL(req.path, upstream.endpoint), { method: req.method, headers, body, redirect: 'manual', signal: abort.signal }).then(
      (res) => {
        clearTimeout(timer);
        if (stopped) return void res.body?.cancel().catch(() => {});
        const fields: Record<string, string> = {};
        res.headers.forEach((v, k) => {
          fields[k] = v;
        });
        const out = sink.head(res.status, fields);
        if (out === null) return void res.body?.cancel().catch(() => {});
        const outHeaders = new Headers();
        for (const [k, v] of Object.entries(out)) for (const one of Array.isArray(v) ? v : [v]) outHeaders.append(k, one);
        port.respondWith(new Response(res.body, { status: res.status, statusText: res.statusText, headers: outHeaders }));
        // The platform streams the body from here; the request's work in the engine is done.
        sink.end();
      },
      (err: Error) => {
        clearTimeout(timer);
        if (stopped) return;
        stopped = true;
        // fetch does not say whether the origin received anything: a failure before any answer counts as a
        // lost connection (retried only when the request is idempotent and has no body, outside the budget:
        // such retries are bounded by what a dead origin held); a timeout is told apart.
        const code = (err as { code?: string }).code;
        sink.fail(err, code === 'ALLEGRA_BODY_TOO_LARGE' ? 'body-too-large' : timedOut ? 'timeout' : 'connection-lost');
      },
    );
    return {
      abort: () => {
        stopped = true;
        clearTimeout(timer);
        abort.abort();
      },
    };
  }
}
