/**
 * The control plane attacked from outside, on a real devnet: captured and replayed requests, tampered
 * commands and queries, unsigned and oversized bodies, uploads that lie about their signer or content, and
 * hostile artifacts (compression bomb, links out of the app, 200k files, not gzip). Every attack must be
 * refused with a clear error, cost the agents no memory worth mentioning, lose no committed data and leave
 * another tenant's app answering.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RpcClient } from '../../protocol/client.js';
import { keyPairFromPem, SIGNATURE_HEADERS, sha256Hex, signRequest } from '../../protocol/signing.js';
import type { InstanceStatus } from '../../protocol/types.js';
import { cliJson, DEVNET_FREE_PORTS, type DevnetInfo, startDevnet, stopDevnet } from '../helpers/cli.js';
import { tgzOf, writeBombTgz, writeManyFilesTgz } from '../helpers/tarballs.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

describe('control plane under attack', () => {
  const dir = tempDir('allegra-attack-cp-');
  const env = { ALLEGRA_HOME: `${dir.path}/home` };
  const dataDir = `${dir.path}/devnet`;
  let devnet: Awaited<ReturnType<typeof startDevnet>>;
  let info: DevnetInfo;
  let owner: ReturnType<typeof keyPairFromPem>;
  /** Gets demo from the gateway all along: another tenant must keep answering whatever the attack. */
  let probe: { stop(): Promise<{ ok: number; failed: number }> };

  const send = (rpc: string, method: string, path: string, headers: Record<string, string>, body?: string | Buffer) =>
    request(new URL(path, rpc), { method: method as 'GET', headers, body }).then(async (r) => ({
      status: r.statusCode,
      text: await r.body.text(),
    }));

  const signedFor = (audience: string, method: string, path: string, body?: string, headers: Record<string, string> = {}) =>
    signRequest(owner, {
      method,
      path,
      audience,
      body,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    });

  const blobFiles = () =>
    info.agents.flatMap((_, i) => {
      const blobs = join(dataDir, `agent-${i}`, 'blobs');
      return [...readdirSync(blobs).filter((f) => f !== 'tmp'), ...readdirSync(join(blobs, 'tmp')).map((f) => `tmp/${f}`)].map(
        (f) => `${i}/${f}`,
      );
    });

  beforeAll(async () => {
    devnet = await startDevnet([...DEVNET_FREE_PORTS, '--data', dataDir], env);
    info = devnet.info;
    owner = keyPairFromPem(readFileSync(`${env.ALLEGRA_HOME}/key`, 'utf8'));
    await cliJson(['create', 'victim', '--replicas', '1:1'], env);
    let stop = false;
    let ok = 0;
    let failed = 0;
    const loop = (async () => {
      while (!stop) {
        try {
          const r = await request(`${info.http}/`, { headers: { host: 'demo.localhost' }, headersTimeout: 5_000 });
          await r.body.dump();
          if (r.statusCode === 200) ok++;
          else failed++;
        } catch {
          failed++;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    probe = {
      stop: async () => {
        stop = true;
        await loop;
        return { ok, failed };
      },
    };
  }, 90_000);

  afterAll(async () => {
    await probe?.stop();
    await stopDevnet(devnet);
    dir.cleanup();
  });

  it('a captured deploy is useless at another agent, with or without another command, and cannot be replayed', async () => {
    const [a, b] = info.agents as [DevnetInfo['agents'][0], DevnetInfo['agents'][0]];
    const code = tgzOf([
      { path: 'server.mjs', body: "import http from 'node:http';http.createServer((q,s)=>s.end('v')).listen(process.env.PORT)" },
    ]);
    const path = '/v1/instances/victim/code';
    const headers = signRequest(owner, {
      method: 'PUT',
      path,
      audience: a.node,
      body: code,
      headers: { 'content-type': 'application/octet-stream', 'x-allegra-cmd': 'node%20server.mjs' },
    });
    const evil = { ...headers, 'x-allegra-cmd': encodeURIComponent('id; cat ../../node.json') };
    const atB = await send(b.rpc, 'PUT', path, evil, code);
    expect(atB.status).toBe(401);
    expect(atB.text).toMatch(/bad signature|addressed to node/);
    expect((await send(b.rpc, 'PUT', path, headers, code)).status).toBe(401);
    expect((await send(a.rpc, 'PUT', path, evil, code)).status).toBe(401);
    // The genuine request works once at its own agent, never twice.
    const genuine = await send(a.rpc, 'PUT', path, headers, code);
    expect(genuine.status, genuine.text).toBe(200);
    const replay = await send(a.rpc, 'PUT', path, headers, code);
    expect(replay.status).toBe(401);
    expect(replay.text).toMatch(/replayed/);
  });

  it('replayed stop and delete are refused at every other agent; tampered queries are refused', async () => {
    const [a, ...others] = info.agents as DevnetInfo['agents'];
    for (const [method, path] of [
      ['POST', '/v1/instances/victim/stop'],
      ['DELETE', '/v1/instances/victim'],
    ] as const) {
      const headers = signedFor(a.node, method, path);
      for (const o of others) {
        const r = await send(o.rpc, method, path, headers);
        expect(r.status, `${method} ${path} replayed to ${o.node}`).toBe(401);
        expect(JSON.parse(r.text).error.code).toBe('unauthenticated');
      }
    }
    const status = signedFor(a.node, 'GET', '/v1/instances/victim');
    expect((await send(a.rpc, 'GET', '/v1/instances/victim?x=1', status)).status).toBe(401);
    const s = await cliJson<InstanceStatus>(['status', 'victim'], env);
    expect(s.instance.state).toBe('running');
  });

  it('answers an unsigned 600 MB body with 401 before reading it, without growing', async () => {
    const agent = info.agents[0] as DevnetInfo['agents'][0];
    const before = rssOf(agent.pid);
    const url = new URL(agent.rpc);
    const { status, sent } = await new Promise<{ status: number; sent: number }>((resolve) => {
      const socket = connect(Number(url.port), url.hostname);
      let sent = 0;
      let answer = '';
      const chunk = Buffer.alloc(MiB, 0x61);
      const pump = () => {
        while (sent < 600 * MiB && answer === '') {
          sent += chunk.length;
          if (!socket.write(chunk)) return void socket.once('drain', pump);
        }
      };
      socket.on('connect', () => {
        socket.write(`POST /v1/instances HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${600 * MiB}\r\n\r\n`);
        pump();
      });
      socket.on('data', (d) => {
        answer += d.toString();
      });
      const done = () => resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(answer)?.[1] ?? 0), sent });
      socket.on('close', done);
      socket.on('error', () => {});
      setTimeout(() => socket.destroy(), 10_000);
    });
    expect(status).toBe(401);
    expect(sent).toBeLessThan(600 * MiB);
    expect(rssOf(agent.pid) - before).toBeLessThan(64 * MiB);
  });

  it('refuses oversized signed bodies with 413, and uploads that lie about signer or content store nothing', async () => {
    const agent = info.agents[0] as DevnetInfo['agents'][0];
    const huge = JSON.stringify({ name: 'huge', cmd: 'x'.repeat(300 * 1024) });
    const big = await send(agent.rpc, 'POST', '/v1/instances', signedFor(agent.node, 'POST', '/v1/instances', huge), huge);
    expect(big.status).toBe(413);
    expect(JSON.parse(big.text).error.message).toMatch(/exceeds the limit/);

    const before = blobFiles();
    const code = tgzOf([{ path: 'x.js', body: 'x' }]);
    const path = '/v1/instances/victim/code';
    const good = signRequest(owner, {
      method: 'PUT',
      path,
      audience: agent.node,
      body: code,
      headers: { 'content-type': 'application/octet-stream' },
    });
    // The owner's key, someone else's signature.
    const forged = { ...good, [SIGNATURE_HEADERS.signature]: Buffer.alloc(64, 1).toString('base64') };
    const r1 = await send(agent.rpc, 'PUT', path, forged, code);
    expect(r1.status).toBe(401);
    // A real signature, other bytes than the signed ones.
    const swapped = tgzOf([{ path: 'x.js', body: 'evil' }]);
    const r2 = await send(agent.rpc, 'PUT', path, signRequest(owner, { method: 'PUT', path, audience: agent.node, body: code }), swapped);
    expect(r2.status).toBe(400);
    expect(r2.text).toMatch(/signed/);
    expect(blobFiles()).toEqual(before);
    expect(sha256Hex(code)).not.toBe(sha256Hex(swapped));
  });

  it('refuses hostile artifacts at upload with the reason, commits nothing, and keeps the agents small', async () => {
    const rpc = new RpcClient(info.rpc, owner);
    const before = await cliJson<InstanceStatus>(['status', 'victim'], env);
    const bombFile = join(dir.path, 'bomb.tgz');
    await writeBombTgz(bombFile, 1024 * MiB);
    const manyFile = join(dir.path, 'many.tgz');
    await writeManyFilesTgz(manyFile, 200_000);
    const rss = info.agents.map((a) => rssOf(a.pid));
    const cases: Array<[string, Buffer, RegExp]> = [
      ['bomb', readFileSync(bombFile), /expands more than|more than \d+ bytes/],
      ['200k files', readFileSync(manyFile), /more than 50000 entries/],
      [
        'link to the node key',
        tgzOf([{ path: 'key', type: 'SymbolicLink', linkpath: '/root/.allegra/devnet/agent-0/node.json' }]),
        /outside/,
      ],
      ['dot-dot', tgzOf([{ path: '../../../../tmp/pwned', body: 'x' }]), /climbs out/],
      ['hard link', tgzOf([{ path: 'h', type: 'Link', linkpath: '../node.json' }]), /hard link/],
      ['not gzip', Buffer.from('not a tarball, just thirty b.'), /not a gzipped tar/],
    ];
    for (const [what, bytes, reason] of cases) {
      const err = await rpc.call({ method: 'PUT', path: '/v1/instances/victim/code', body: { bytes }, timeoutMs: 60_000 }).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message, what).toMatch(/^artifact refused: /);
      expect(err?.message, what).toMatch(reason);
    }
    const after = await cliJson<InstanceStatus>(['status', 'victim'], env);
    expect(after.instance.version).toBe(before.instance.version);
    expect(after.instance.artifact?.sha256).toBe(before.instance.artifact?.sha256);
    for (const [i, a] of info.agents.entries()) expect(rssOf(a.pid) - (rss[i] as number), `agent ${i} RSS`).toBeLessThan(200 * MiB);
    expect(existsSync('/tmp/pwned')).toBe(false);
  }, 90_000);

  it('deleting an instance removes its code, logs and blobs on every member; the other tenant never noticed', async () => {
    const s = await cliJson<InstanceStatus>(['status', 'victim'], env);
    const sha = s.instance.artifact?.sha256 as string;
    const id = s.instance.id;
    await waitFor(() => info.agents.some((_, i) => existsSync(join(dataDir, `agent-${i}`, 'apps', id))), { what: 'app unpacked' });
    await cliJson(['delete', 'victim'], env);
    await waitFor(
      () =>
        info.agents.every(
          (_, i) =>
            !existsSync(join(dataDir, `agent-${i}`, 'apps', id)) &&
            !existsSync(join(dataDir, `agent-${i}`, 'logs', id)) &&
            !existsSync(join(dataDir, `agent-${i}`, 'blobs', sha)),
        ),
      { timeoutMs: 15_000, what: 'every member cleaned up' },
    );
    const { ok, failed } = await probe.stop();
    expect(failed).toBe(0);
    expect(ok).toBeGreaterThan(20);
  });
});
