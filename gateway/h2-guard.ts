/**
 * Per-connection HTTP/2 defences. Settings bound what one connection may hold (concurrent streams,
 * header list size, nghttp2's session memory); the reset guard closes connections whose client resets
 * streams faster than it lets them complete (HTTP/2 rapid reset, CVE-2023-44487, handled the way Envoy
 * and nginx do): a premature reset costs the client one frame and the gateway a request, so a client
 * that keeps doing it is sent GOAWAY (ENHANCE_YOUR_CALM) and its connection closed.
 */
import { constants, type Http2Session, type ServerHttp2Stream } from 'node:http2';

export interface H2Limits {
  /** Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: number;
  /** nghttp2's memory budget for one session, in MB; beyond it new streams are refused. */
  maxSessionMemoryMb: number;
  /** Resets within one second, beyond the streams completed in that second, that close the connection. */
  resetBurst: number;
}

export const DEFAULT_H2_LIMITS: H2Limits = { maxConcurrentStreams: 100, maxSessionMemoryMb: 10, resetBurst: 100 };

/** Options for `http2.createServer` / `createSecureServer`. */
export function h2ServerSettings(limits: H2Limits, maxHeaderBytes: number) {
  return {
    maxSessionMemory: limits.maxSessionMemoryMb,
    // Streams refused for exceeding the limits, and invalid frames, before nghttp2 closes the session.
    maxSessionRejectedStreams: 20,
    maxSessionInvalidFrames: 20,
    settings: { maxConcurrentStreams: limits.maxConcurrentStreams, maxHeaderListSize: maxHeaderBytes },
  };
}

/**
 * Watches one session's streams. Counts, per one-second window, streams the client aborted before the
 * response was complete and streams that completed; when aborts reach `resetBurst` and outnumber
 * completions, the session gets GOAWAY and is destroyed (a client that never reads would never see the
 * GOAWAY, so waiting for it to leave is no option). Returns nothing; the watch ends with the session.
 */
export function guardSession(session: Http2Session, limits: H2Limits, onAbuse: (resets: number) => void): void {
  let windowStart = performance.now();
  let resets = 0;
  let completed = 0;
  let closing = false;
  const roll = () => {
    const now = performance.now();
    if (now - windowStart >= 1_000) {
      windowStart = now;
      resets = 0;
      completed = 0;
    }
  };
  // Streams opened since a response last completed. A client may hold maxConcurrentStreams open while
  // it waits for answers; opening more than that (plus a few cancellations) without one answer means it
  // resets streams instead of waiting. That is caught here, as each HEADERS frame is parsed, because
  // 'aborted' events only come after the whole chunk read from the socket (thousands of streams, at
  // ~0.3 ms each in Node's HTTP/2 layer on this machine) was processed.
  let openedSinceAnswer = 0;
  const cut = (resetsSeen: number) => {
    if (closing) return;
    closing = true;
    onAbuse(resetsSeen);
    // GOAWAY and cut the connection and every stream on it now, so frames of the same chunk are dropped.
    if (!session.destroyed) session.destroy(undefined, constants.NGHTTP2_ENHANCE_YOUR_CALM);
  };
  session.on('stream', (stream: ServerHttp2Stream) => {
    if (++openedSinceAnswer > limits.maxConcurrentStreams + 20) return cut(openedSinceAnswer);
    let aborted = false;
    stream.once('aborted', () => {
      aborted = true;
      roll();
      resets++;
      if (resets >= limits.resetBurst && resets > completed) cut(resets);
    });
    stream.once('close', () => {
      if (aborted) return;
      openedSinceAnswer = 0;
      roll();
      completed++;
    });
  });
}
