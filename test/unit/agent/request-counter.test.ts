/** The usage relay's request counter, fed the byte streams clients send, split at every possible point. */
import { describe, expect, it } from 'vitest';
import { RequestCounter } from '../../../quorum-agent/usage/requests.js';

function countSplit(data: Buffer, every: number): number {
  const c = new RequestCounter();
  for (let i = 0; i < data.length; i += every) c.push(data.subarray(i, i + every));
  return c.count;
}

const h1 = Buffer.from(
  [
    'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
    // A body that looks like requests must not be counted.
    'POST /items HTTP/1.1\r\nHost: a\r\nContent-Length: 36\r\n\r\nGET /fake HTTP/1.1\r\nHost: a\r\n\r\n\r\n\r\n',
    'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\nX-Trailer: 1\r\n\r\n',
    'GET /last HTTP/1.1\r\nHost: a\r\n\r\n',
  ].join(''),
);

function h2Frame(type: number, stream: number, payload = Buffer.alloc(3)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

describe('RequestCounter', () => {
  it('counts HTTP/1 requests on a keep-alive connection, skipping bodies by length and chunks', () => {
    for (const every of [1, 2, 7, 64, h1.length]) expect(countSplit(h1, every)).toBe(4);
  });

  it('counts HTTP/2 streams opened by HEADERS frames after the preface', () => {
    const h2 = Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
      h2Frame(0x4, 0), // SETTINGS
      h2Frame(0x1, 1),
      h2Frame(0x0, 1, Buffer.alloc(100)), // DATA
      h2Frame(0x1, 3),
      h2Frame(0x1, 3), // trailers of stream 3: not a new request
      h2Frame(0x1, 5),
    ]);
    for (const every of [1, 5, 9, 1000]) expect(countSplit(h2, every)).toBe(3);
  });

  it('counts an upgrade once and then treats the connection as a tunnel', () => {
    const ws = Buffer.from('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\n\r\n');
    expect(countSplit(ws, 3)).toBe(1);
  });
});
