/**
 * The client's side of a request on Workers (gateway/transport.ts `ClientPort`): a fetch event's Request,
 * and the Response the handler returns, settled by whichever of the engine's answers comes first.
 */
import type { ClientPort, RequestView } from '../gateway/transport.js';

/** Headers that Cloudflare adds on the way in, or that only the edge may set on the way out. */
const EDGE_ONLY = new Set([
  'x-allegra-edge',
  'cf-connecting-ip',
  'cf-ray',
  'cf-visitor',
  'cf-ipcountry',
  'cf-worker',
  'cdn-loop',
  'x-real-ip',
]);

export class WorkersPort implements ClientPort {
  readonly req: RequestView;
  readonly hasBody: boolean;
  readonly response: Promise<Response>;
  private settle!: (res: Response | Promise<Response>) => void;
  private sent = false;

  constructor(
    readonly request: Request,
    private readonly notFoundApp: (request: Request) => Response | Promise<Response>,
  ) {
    const url = new URL(request.url);
    const rawHeaders: string[] = [];
    const headers: Record<string, string> = {};
    request.headers.forEach((value, name) => {
      if (EDGE_ONLY.has(name)) return;
      rawHeaders.push(name, value);
      headers[name] = value;
    });
    this.req = { method: request.method, url: `${url.pathname}${url.search}`, httpVersionMajor: 1, rawHeaders, headers };
    this.hasBody = request.body !== null;
    this.response = new Promise((r) => {
      this.settle = r;
    });
  }

  /** The replica's (origin's) response, handed to the platform to stream. */
  respondWith(res: Response): void {
    if (this.sent) return;
    this.sent = true;
    this.settle(res);
  }

  /** Workers tells a handler nothing when its client leaves; the platform cancels the subrequests. */
  onClose(): void {}

  error(status: number, requestId: string, message: string, extra: Record<string, string> = {}): void {
    if (this.sent) return;
    this.sent = true;
    const headers: Record<string, string> = {
      'content-type': 'text/plain; charset=utf-8',
      'x-request-id': requestId,
      'cache-control': 'no-store',
    };
    for (const [k, v] of Object.entries(extra)) if (k !== 'connection') headers[k] = v;
    this.settle(new Response(`${message}\n`, { status, headers }));
  }

  notFound(requestId: string): void {
    if (this.sent) return;
    this.sent = true;
    const headers = new Headers(this.request.headers);
    headers.set('x-request-id', requestId);
    this.settle(Promise.resolve(this.notFoundApp(new Request(this.request, { headers }))));
  }

  destroy(): void {}

  /** The body as a stream; bodies without Content-Length fail past `maxBytes` as they arrive. */
  openBody(maxBytes: number): ReadableStream<Uint8Array> | null {
    const body = this.request.body;
    if (!body || !Number.isFinite(maxBytes)) return body;
    let seen = 0;
    return body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          seen += chunk.byteLength;
          if (seen > maxBytes)
            controller.error(Object.assign(new Error(`request body exceeds ${maxBytes} bytes`), { code: 'ALLEGRA_BODY_TOO_LARGE' }));
          else controller.enqueue(chunk);
        },
      }),
    );
  }

  /** A stream cannot be rewound: once an attempt took the body, it is consumed (engine: no replay). */
  bodyConsumed(): boolean {
    return this.request.bodyUsed;
  }

  abandonBody(): void {
    void this.request.body?.cancel().catch(() => {});
  }
}
