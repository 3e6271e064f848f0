import { connect } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import type { Registry } from '../../../protocol/registry.js';
import { MAX_STATE_CONNECTIONS, StateApi } from '../../../quorum-agent/state/api.js';
import type { StateCopy } from '../../../quorum-agent/state/copy.js';
import type { StateWriter } from '../../../quorum-agent/state/writer.js';
import { tempDir } from '../../helpers/tmp.js';

// The copy, writer and registry are never reached: these tests only ask for an endpoint that does not exist.
const api = new StateApi({
  registry: {} as Registry,
  copy: {} as StateCopy,
  writer: {} as StateWriter,
  quota: { maxBytes: 1024, maxKeys: 10 },
  log: pino({ level: 'silent' }),
});
const dir = tempDir('allegra-state-api-');
const socketPath = join(dir.path, 'api.sock');

afterAll(async () => {
  await api.close();
  dir.cleanup();
});

describe('the state API server', () => {
  it('keeps an idle connection open longer than clients keep theirs (so a client never reuses one being closed)', async () => {
    await api.listen(socketPath);
    const socket = connect(socketPath);
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    // One request answered (404, keep-alive), then the connection sits idle as an app's pooled one does.
    const answered = new Promise<string>((resolve) => socket.once('data', (d) => resolve(d.toString('latin1'))));
    socket.write('GET /v1/nothing HTTP/1.1\r\nhost: state\r\n\r\n');
    expect(await answered).toMatch(/^HTTP\/1\.1 404 /);
    let closedAt = 0;
    socket.once('close', () => {
      closedAt = Date.now();
    });
    // Node's http.Agent drops its idle sockets after 5 s, undici after 4 s: the server must still hold it at 6 s.
    await new Promise((r) => setTimeout(r, 6_000));
    expect(closedAt).toBe(0);
    socket.destroy();
  }, 10_000);

  it('bounds how many connections one instance holds: one past the limit is closed at once', async () => {
    const open = async () => {
      const socket = connect(socketPath);
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      return socket;
    };
    const held = [];
    for (let i = 0; i < MAX_STATE_CONNECTIONS; i++) held.push(await open());
    const extra = await open();
    const closed = await new Promise<boolean>((resolve) => {
      extra.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 2_000);
    });
    expect(closed).toBe(true);
    // The ones within the limit are still open.
    expect(held.every((s) => !s.destroyed)).toBe(true);
    for (const s of [...held, extra]) s.destroy();
  }, 20_000);
});
