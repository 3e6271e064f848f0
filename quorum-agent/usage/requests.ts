/**
 * Counts the requests on one client→replica byte stream without buffering it: HTTP/1.x heads (bodies are
 * skipped by Content-Length or chunked framing), HTTP/2 streams (a HEADERS frame opening a new client
 * stream, after the connection preface). An upgrade (WebSocket) counts once and then is a tunnel. A stream
 * it cannot frame (a head past 64 KiB, a malformed chunk) stops being counted, never blocked: the relay
 * forwards every byte whatever this says.
 */
const MAX_HEAD = 64 * 1024;
const H2_PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

type State =
  | { kind: 'head'; buf: string }
  | { kind: 'body'; left: number }
  | { kind: 'chunk-size'; line: string }
  | { kind: 'chunk-data'; left: number }
  | { kind: 'chunk-crlf'; left: number }
  | { kind: 'trailers'; buf: string }
  | { kind: 'h2'; header: Buffer; headerLen: number; skip: number }
  | { kind: 'opaque' };

export class RequestCounter {
  count = 0;
  private state: State = { kind: 'head', buf: '' };
  private lastStream = 0;
  /** Nothing read yet but (part of) what could be the HTTP/2 preface. */
  private fresh = true;

  push(data: Buffer): void {
    let at = 0;
    while (at < data.length) {
      const s = this.state;
      switch (s.kind) {
        case 'opaque':
          return;
        case 'head': {
          const take = data.subarray(at).toString('latin1');
          const text = s.buf + take;
          // HTTP/2 with prior knowledge opens the connection with its preface (possibly split across reads).
          if (this.fresh) {
            if (H2_PREFACE.startsWith(text)) {
              s.buf = text;
              return;
            }
            this.fresh = false;
            if (text.startsWith(H2_PREFACE)) {
              at += H2_PREFACE.length - s.buf.length;
              this.state = { kind: 'h2', header: Buffer.alloc(9), headerLen: 0, skip: 0 };
              continue;
            }
          }
          const end = text.indexOf('\r\n\r\n');
          if (end < 0) {
            if (text.length > MAX_HEAD) this.state = { kind: 'opaque' };
            else s.buf = text;
            return;
          }
          const consumed = end + 4 - s.buf.length;
          at += consumed;
          this.onHead(text.slice(0, end));
          break;
        }
        case 'body': {
          const n = Math.min(s.left, data.length - at);
          at += n;
          s.left -= n;
          if (s.left === 0) this.state = { kind: 'head', buf: '' };
          break;
        }
        case 'chunk-size': {
          const nl = data.indexOf(0x0a, at);
          if (nl < 0) {
            s.line += data.subarray(at).toString('latin1');
            if (s.line.length > 1024) this.state = { kind: 'opaque' };
            return;
          }
          const line = (s.line + data.subarray(at, nl).toString('latin1')).trim();
          at = nl + 1;
          const size = Number.parseInt(line.split(';')[0] ?? '', 16);
          if (!Number.isFinite(size) || size < 0) this.state = { kind: 'opaque' };
          else if (size === 0) this.state = { kind: 'trailers', buf: '' };
          else this.state = { kind: 'chunk-data', left: size };
          break;
        }
        case 'chunk-data': {
          const n = Math.min(s.left, data.length - at);
          at += n;
          s.left -= n;
          if (s.left === 0) this.state = { kind: 'chunk-crlf', left: 2 };
          break;
        }
        case 'chunk-crlf': {
          const n = Math.min(s.left, data.length - at);
          at += n;
          s.left -= n;
          if (s.left === 0) this.state = { kind: 'chunk-size', line: '' };
          break;
        }
        case 'trailers': {
          // After the last chunk: trailer lines, then an empty line.
          const text = s.buf + data.subarray(at).toString('latin1');
          const end = text.startsWith('\r\n') ? 0 : text.indexOf('\r\n\r\n');
          if (end < 0) {
            if (text.length > MAX_HEAD) this.state = { kind: 'opaque' };
            else s.buf = text;
            return;
          }
          at += (end === 0 ? 2 : end + 4) - s.buf.length;
          this.state = { kind: 'head', buf: '' };
          break;
        }
        case 'h2': {
          if (s.skip > 0) {
            const n = Math.min(s.skip, data.length - at);
            at += n;
            s.skip -= n;
            break;
          }
          const n = Math.min(9 - s.headerLen, data.length - at);
          data.copy(s.header, s.headerLen, at, at + n);
          at += n;
          s.headerLen += n;
          if (s.headerLen < 9) return;
          const length = s.header.readUIntBE(0, 3);
          const type = s.header[3];
          const stream = s.header.readUInt32BE(5) & 0x7fffffff;
          if (type === 0x1 && stream % 2 === 1 && stream > this.lastStream) {
            this.lastStream = stream;
            this.count++;
          }
          s.headerLen = 0;
          s.skip = length;
          break;
        }
      }
    }
  }

  private onHead(head: string): void {
    const lines = head.split('\r\n');
    // Blank lines before a request line are allowed (RFC 9112 §2.2).
    if (!lines[0]) {
      this.state = { kind: 'head', buf: '' };
      return;
    }
    this.count++;
    let length = 0;
    let chunked = false;
    let upgrade = false;
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon < 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line
        .slice(colon + 1)
        .trim()
        .toLowerCase();
      if (name === 'content-length') length = Number(value) || 0;
      else if (name === 'transfer-encoding' && value.split(',').pop()?.trim() === 'chunked') chunked = true;
      else if (name === 'upgrade') upgrade = true;
    }
    if (upgrade) this.state = { kind: 'opaque' };
    else if (chunked) this.state = { kind: 'chunk-size', line: '' };
    else if (length > 0) this.state = { kind: 'body', left: length };
    else this.state = { kind: 'head', buf: '' };
  }
}
