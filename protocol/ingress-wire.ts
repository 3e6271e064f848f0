/**
 * The node ingress's wire protocol, shared by the agent (server) and the gateway (client). After a mutual
 * TLS 1.3 handshake (each side pins the other's Ed25519 key, see identity-cert.ts), the gateway sends one
 * line naming what it wants, and the node answers one line:
 *
 *   ALLEGRA-INGRESS/1 REPLICA <instanceId> <slot>\n  →  OK\n, then the connection is the replica's
 *                                                       (raw bytes both ways), or ERR <reason>\n and close
 *   ALLEGRA-INGRESS/1 PING\n                          →  PONG\n (repeatable: node liveness)
 *
 * Lines are ASCII and at most MAX_LINE bytes; a peer that sends more, or nothing within the deadline,
 * is disconnected.
 */
export const INGRESS_MAGIC = 'ALLEGRA-INGRESS/1';
export const MAX_LINE = 256;
export const LINE_DEADLINE_MS = 5_000;

export type IngressRequest = { op: 'replica'; instanceId: string; slot: number } | { op: 'ping' };

const ID = /^[a-z0-9-]{1,64}$/;

export function encodeRequest(req: IngressRequest): string {
  return req.op === 'ping' ? `${INGRESS_MAGIC} PING\n` : `${INGRESS_MAGIC} REPLICA ${req.instanceId} ${req.slot}\n`;
}

export function parseRequest(line: string): IngressRequest | undefined {
  const parts = line.split(' ');
  if (parts[0] !== INGRESS_MAGIC) return undefined;
  if (parts[1] === 'PING' && parts.length === 2) return { op: 'ping' };
  if (parts[1] === 'REPLICA' && parts.length === 4) {
    const [, , instanceId, slotText] = parts as [string, string, string, string];
    const slot = Number(slotText);
    if (ID.test(instanceId) && /^\d{1,4}$/.test(slotText)) return { op: 'replica', instanceId, slot };
  }
  return undefined;
}

/**
 * Collects one `\n`-terminated line from a stream's chunks. Returns the line and whatever followed it in
 * the same chunk (bytes that belong to the next protocol layer), or `null` while incomplete; throws past
 * MAX_LINE.
 */
export class LineReader {
  private buffered: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): { line: string; rest: Buffer } | null {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const nl = this.buffered.indexOf(0x0a);
    if (nl < 0) {
      if (this.buffered.length > MAX_LINE) throw new Error('ingress line too long');
      return null;
    }
    if (nl > MAX_LINE) throw new Error('ingress line too long');
    const line = this.buffered.subarray(0, nl).toString('latin1');
    const rest = this.buffered.subarray(nl + 1);
    this.buffered = Buffer.alloc(0);
    return { line, rest };
  }
}
