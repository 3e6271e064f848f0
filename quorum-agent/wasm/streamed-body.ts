/**
 * How a response the app streams is sent: collected while it is short and quick, chunked once it is not.
 */
import type { ServerResponse } from 'node:http';

/** A streamed response is held back this long, or up to this many bytes, before it is sent chunked. */
const STREAM_FLUSH_MS = 20;
const STREAM_BUFFER_BYTES = 64 * 1024;

/**
 * The body of a response the app streams. Small, quick bodies are collected and sent as one response
 * with a length (and a response over the limit can still be refused with a 502); a body still running
 * after STREAM_FLUSH_MS or past STREAM_BUFFER_BYTES is sent as it comes, chunked. Once the head is out, a
 * failure can only cut the response: the connection is closed without the final chunk.
 */
export class StreamedBody {
  head: { status: number; headers: [string, string][] } | undefined;
  private chunks: Uint8Array[] = [];
  bytes = 0;
  flowing = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly res: ServerResponse,
    private readonly noBody: boolean,
    private readonly writeHead: (status: number, headers: [string, string][], length: number | null) => void,
  ) {}

  start(status: number, headers: [string, string][]): void {
    this.head = { status, headers };
    this.timer = setTimeout(() => this.flow(), STREAM_FLUSH_MS);
  }

  chunk(bytes: Uint8Array): void {
    this.bytes += bytes.length;
    if (this.flowing) {
      if (!this.noBody && !this.res.destroyed) this.res.write(bytes);
      return;
    }
    this.chunks.push(bytes);
    if (this.bytes > STREAM_BUFFER_BYTES) this.flow();
  }

  /** The collected body, when it never started flowing. */
  collected(): Uint8Array {
    clearTimeout(this.timer);
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
  }

  end(): void {
    clearTimeout(this.timer);
    if (!this.res.destroyed) this.res.end();
  }

  cut(): void {
    clearTimeout(this.timer);
    this.res.destroy();
  }

  private flow(): void {
    if (this.flowing || !this.head || this.res.destroyed) return;
    this.flowing = true;
    this.writeHead(this.head.status, this.head.headers, null);
    for (const c of this.chunks) if (!this.noBody) this.res.write(c);
    this.chunks = [];
  }
}
