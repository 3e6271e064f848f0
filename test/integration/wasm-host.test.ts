/**
 * The wasm runtime end to end, on the built output: a Hono app compiled with componentize-js (once per
 * test run: the compile cache is kept in the OS temp dir, keyed by the app's hash and the toolchain) and
 * served by a real wasm host process on Unix sockets; many instances in one host; memory and time limits
 * that refuse one request while other instances keep answering; compile errors; unload.
 */
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as Wasm from '../../quorum-agent/wasm/index.js';
import { tempDir, waitFor } from '../helpers/tmp.js';

const DIST = fileURLToPath(new URL('../../dist/quorum-agent/wasm/index.js', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/wasm-app/', import.meta.url));
const HONO = fileURLToPath(new URL('../../node_modules/hono/', import.meta.url));
/** Shared by test runs: a compile takes 20–60 s on a busy 2-core machine, a cache hit milliseconds. */
const CACHE = join(tmpdir(), 'allegra-wasm-test-cache');

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  ms: number;
}

const agents = new Map<string, Agent>();
async function call(
  socketPath: string,
  path: string,
  opts: { method?: string; body?: Buffer | string; headers?: Record<string, string> } = {},
): Promise<Reply> {
  let agent = agents.get(socketPath);
  if (!agent) agents.set(socketPath, (agent = new Agent({ connect: { socketPath } })));
  const t = performance.now();
  const res = await request(`http://app.test${path}`, {
    dispatcher: agent,
    method: (opts.method ?? 'GET') as 'GET',
    body: opts.body,
    headers: opts.headers,
  });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body, ms: performance.now() - t };
}

describe('wasm host', () => {
  let wasm: typeof Wasm;
  let tmp: ReturnType<typeof tempDir>;
  let compiled: Wasm.CompiledApp;
  let host: Wasm.WasmHostClient;
  const sock = (name: string) => join(tmp.path, 's', `${name}.sock`);
  const logOf = (name: string) => join(tmp.path, 'logs', `${name}.log`);
  const load = (name: string, extra: Partial<Wasm.LoadRequest> = {}) =>
    host.load({
      replicaId: name,
      artifactDir: compiled.dir,
      socketPath: sock(name),
      logFile: logOf(name),
      env: { ALLEGRA_INSTANCE: name },
      ...extra,
    });

  beforeAll(async () => {
    wasm = (await import(DIST)) as typeof Wasm;
    tmp = tempDir('allegra-wasm-');
    const app = join(tmp.path, 'app');
    cpSync(FIXTURE, app, { recursive: true });
    cpSync(HONO, join(app, 'node_modules', 'hono'), { recursive: true });
    mkdirSync(join(tmp.path, 's'));
    compiled = await wasm.compileApp({ source: app, cacheDir: CACHE, timeoutMs: 240_000 });
    host = await wasm.WasmHostClient.start({ logFile: join(tmp.path, 'host.log') });
  }, 300_000);

  afterAll(async () => {
    await Promise.all([...agents.values()].map((a) => a.close()));
    await host?.stop();
    tmp?.cleanup();
  });

  it('compiles once per artifact: the second compile is a cache hit with the same key', async () => {
    const again = await wasm.compileApp({ source: join(tmp.path, 'app'), cacheDir: CACHE });
    expect(again.cached).toBe(true);
    expect(again.key).toBe(compiled.key);
    expect(again.key.startsWith(compiled.manifest.sha256)).toBe(true);
    expect(compiled.manifest.coreModules.length).toBeGreaterThan(0);
  });

  it('serves a Hono app on its own socket: status, headers, bodies, env and logs', async () => {
    const loaded = await load('alpha');
    expect(loaded.endpoint).toBe(`unix:${sock('alpha')}`);

    const hello = await call(sock('alpha'), '/');
    expect(hello.status).toBe(200);
    expect(hello.body.toString()).toBe('hello from alpha');

    const json = await call(sock('alpha'), '/json?q=42', { headers: { 'user-agent': 'wasm-test' } });
    expect(json.status).toBe(201);
    expect(json.headers['content-type']).toMatch(/^application\/json/);
    expect(json.headers['x-app']).toBe('wasm-fixture');
    expect(json.headers['set-cookie']).toBe('a=1');
    expect(JSON.parse(json.body.toString())).toEqual({ method: 'GET', path: '/json', query: '42', ua: 'wasm-test' });

    const bytes = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7) & 0xff));
    const echo = await call(sock('alpha'), '/echo', { method: 'POST', body: bytes, headers: { 'content-type': 'application/x-test' } });
    expect(echo.status).toBe(200);
    expect(echo.headers['content-type']).toBe('application/x-test');
    expect(echo.headers['x-length']).toBe(String(bytes.length));
    expect(echo.body.equals(bytes)).toBe(true);

    const big = await call(sock('alpha'), '/big?bytes=2000000');
    expect(big.status).toBe(200);
    expect(big.body.length).toBe(2_000_000);

    const log = await call(sock('alpha'), '/log');
    expect(log.status).toBe(200);
    await waitFor(() => existsSync(logOf('alpha')) && readFileSync(logOf('alpha'), 'utf8').includes('stderr line from alpha'), {
      what: 'guest log lines',
    });
    expect(readFileSync(logOf('alpha'), 'utf8')).toContain('stdout line from alpha');
  });

  it('streams a response the app produces over time, chunk by chunk', async () => {
    const agent = new Agent({ connect: { socketPath: sock('alpha') } });
    try {
      const t = performance.now();
      const res = await request('http://app.test/stream?gap=400', { dispatcher: agent });
      expect(res.statusCode).toBe(200);
      expect(res.headers['transfer-encoding']).toBe('chunked');
      const arrivals: { at: number; text: string }[] = [];
      for await (const chunk of res.body) arrivals.push({ at: performance.now() - t, text: Buffer.from(chunk).toString() });
      expect(arrivals.map((a) => a.text).join('')).toBe('first second third');
      // The first part reached the client while the app was still sleeping before the later ones.
      const total = arrivals[arrivals.length - 1]!.at;
      expect(arrivals[0]!.text.startsWith('first')).toBe(true);
      expect(arrivals[0]!.at).toBeLessThan(total - 500);
    } finally {
      await agent.close();
    }
    // A quick body is still sent whole, with its length — when it is complete within the host's 20 ms flush
    // window, which a loaded 2-core machine can miss now and then (it is then sent chunked, still whole).
    const quick = [];
    for (let i = 0; i < 5; i++) quick.push(await call(sock('alpha'), '/stream?gap=0'));
    for (const q of quick) expect(q.body.toString()).toBe('first second third');
    expect(quick.map((q) => q.headers['content-length'])).toContain('18');
  });

  it('bounds request and response bodies with a clear reason', async () => {
    await load('bounded', { limits: { maxRequestBytes: 1000, maxResponseBytes: 4096 } });
    const tooBig = await call(sock('bounded'), '/echo', { method: 'POST', body: Buffer.alloc(5000, 1) });
    expect(tooBig.status).toBe(413);
    expect(tooBig.headers['x-allegra-wasm-error']).toBe('too-large');
    expect(tooBig.body.toString()).toContain('exceeds 1000 bytes');
    const bigAnswer = await call(sock('bounded'), '/big?bytes=10000');
    expect(bigAnswer.status).toBe(502);
    expect(bigAnswer.headers['x-allegra-wasm-error']).toBe('response-too-large');
    expect((await call(sock('bounded'), '/')).status).toBe(200);
    // A streamed body that outgrows the limit after its head went out is cut short: the client sees the
    // response break, never a complete one.
    const floodAgent = new Agent({ connect: { socketPath: sock('bounded') } });
    const flood = await request('http://app.test/flood', { dispatcher: floodAgent });
    expect(flood.statusCode).toBe(200);
    expect(flood.headers['transfer-encoding']).toBe('chunked');
    await expect(flood.body.text()).rejects.toThrow();
    await floodAgent.close();
    const stats = (await host.stats()).replicas.find((r) => r.id === 'bounded')!;
    expect(stats.refused['response-too-large']).toBe(2);
    expect((await call(sock('bounded'), '/')).status).toBe(200);
    await host.unload('bounded');
  });

  it('runs one request at a time per replica behind a bounded queue, refusing the excess with 503', async () => {
    await load('queue', { limits: { maxQueue: 1 } });
    const agents4 = Array.from({ length: 4 }, () => new Agent({ connect: { socketPath: sock('queue') } }));
    try {
      const replies = await Promise.all(
        agents4.map(async (dispatcher) => {
          const res = await request('http://app.test/stream?gap=250', { dispatcher });
          return { status: res.statusCode, code: res.headers['x-allegra-wasm-error'], body: await res.body.text() };
        }),
      );
      const served = replies.filter((r) => r.status === 200);
      const busy = replies.filter((r) => r.status === 503);
      expect(served.length).toBe(2); // the running one and the one queued behind it
      for (const r of served) expect(r.body).toBe('first second third');
      expect(busy.length).toBe(2);
      for (const r of busy) expect(r.code).toBe('busy');
    } finally {
      await Promise.all(agents4.map((a) => a.close()));
    }
    await host.unload('queue');
  });

  it('grants no network: outgoing fetch fails inside the guest', async () => {
    const res = await call(sock('alpha'), '/outgoing');
    expect(res.status).toBe(502);
    expect(res.body.toString()).toContain('outgoing HTTP is not granted');
  });

  it('holds 20 instances in one host, each answering its own responses, and unload frees them', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `many-${i}`);
    const threadsBefore = threadsOf(host.pid);
    for (let i = 0; i < names.length; i += 5) await Promise.all(names.slice(i, i + 5).map((n) => load(n)));
    const stats = await host.stats();
    expect(stats.replicas.filter((r) => r.id.startsWith('many-')).length).toBe(20);
    // One worker thread per replica (the two spares counted before may have been taken and not yet replaced).
    expect(threadsOf(host.pid)).toBeGreaterThanOrEqual(threadsBefore + 20 - 2);
    // Interleaved, concurrent requests: every instance answers with its own name.
    const replies = await Promise.all(names.flatMap((n) => [call(sock(n), '/'), call(sock(n), '/')]));
    replies.forEach((r, i) => {
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe(`hello from ${names[Math.floor(i / 2)]}`);
    });
    const health = await host.health();
    for (const n of names) expect(health.replicas[n]).toBe(true);

    for (const n of names) {
      await agents.get(sock(n))?.close();
      agents.delete(sock(n));
      await host.unload(n);
    }
    const after = await host.stats();
    expect(after.replicas.some((r) => r.id.startsWith('many-'))).toBe(false);
    for (const n of names) expect(existsSync(sock(n))).toBe(false);
    await expect(call(sock('many-0'), '/')).rejects.toThrow();
    // Their worker threads are gone too (spares aside).
    await waitFor(() => threadsOf(host.pid) <= threadsBefore + 2, { what: 'worker threads to exit', timeoutMs: 10_000 });
    await expect(host.unload('many-0')).rejects.toThrow(/not loaded/);
  });

  it('refuses a request over its memory limit without harming other instances or the next request', async () => {
    await load('hog', { limits: { memoryBytes: 48 * 1024 * 1024, timeoutMs: 10_000 } });
    const [hog, other] = await Promise.all([call(sock('hog'), '/alloc?mb=200'), call(sock('alpha'), '/')]);
    expect(hog.status).toBe(503);
    expect(hog.headers['x-allegra-wasm-error']).toBe('memory');
    expect(hog.body.toString()).toContain('memory limit of 48 MiB');
    expect(other.status).toBe(200);
    // The exhausted instance was replaced: the same replica answers again, from a fresh snapshot.
    const next = await call(sock('hog'), '/alloc?mb=1');
    expect(next.status).toBe(200);
    expect(next.body.toString()).toBe('holding 1 MiB');
    const stats = (await host.stats()).replicas.find((r) => r.id === 'hog')!;
    expect(stats.memoryLimitBytes).toBe(48 * 1024 * 1024);
    expect(stats.refused['memory']).toBe(1);
  });

  it('stops an endless loop at its time limit while other instances keep answering', async () => {
    await load('looper', { limits: { timeoutMs: 800 } });
    const looping = call(sock('looper'), '/loop');
    // While the looper's worker spins, another instance answers many requests.
    const during: Reply[] = [];
    const until = Date.now() + 500;
    while (Date.now() < until) during.push(await call(sock('alpha'), '/'));
    const loop = await looping;
    expect(during.length).toBeGreaterThan(2);
    for (const r of during) expect(r.status).toBe(200);
    expect(loop.status).toBe(504);
    expect(loop.headers['x-allegra-wasm-error']).toBe('timeout');
    expect(loop.body.toString()).toContain('time limit of 800 ms');
    expect(loop.ms).toBeGreaterThanOrEqual(800);
    expect(loop.ms).toBeLessThan(800 + 5_000);
    // A fresh worker took over: the replica serves again.
    const next = await call(sock('looper'), '/');
    expect(next.status).toBe(200);
    expect(next.body.toString()).toBe('hello from looper');
    const stats = (await host.stats()).replicas.find((r) => r.id === 'looper')!;
    expect(stats.workerRestarts).toBe(1);
  });

  it('instantiates per request when asked, with a fresh instance each time', async () => {
    await load('fresh', { mode: 'per-request' });
    const a = await call(sock('fresh'), '/alloc?mb=1');
    const b = await call(sock('fresh'), '/alloc?mb=1');
    expect(a.body.toString()).toBe('holding 1 MiB');
    // State does not survive between requests: the hoard is empty again.
    expect(b.body.toString()).toBe('holding 1 MiB');
    expect(Number(b.headers['x-allegra-instantiate-ms'])).toBeGreaterThan(0);
    await host.unload('fresh');
  });

  it('a fresh load takes over the instance a warmed spare made ahead, with its own env and log', async () => {
    await waitFor(async () => (await host.stats()).readySpares >= 1, { what: 'a warmed spare worker', timeoutMs: 20_000 });
    const loaded = await load('adopter');
    expect(loaded.adopted).toBe(true);
    expect(loaded.instantiateMs).toBeNull();
    const hello = await call(sock('adopter'), '/');
    expect(hello.body.toString()).toBe('hello from adopter');
    expect((await call(sock('adopter'), '/log')).status).toBe(200);
    await waitFor(() => existsSync(logOf('adopter')) && readFileSync(logOf('adopter'), 'utf8').includes('stdout line from adopter'), {
      what: 'the adopted instance logging to its replica log',
    });
    await host.unload('adopter');
  });

  it('loads lazily: the first request instantiates', async () => {
    const loaded = await load('lazy', { eager: false });
    expect(loaded.instantiateMs).toBeNull();
    const first = await call(sock('lazy'), '/');
    expect(first.status).toBe(200);
    expect(Number(first.headers['x-allegra-instantiate-ms'])).toBeGreaterThan(0);
    const second = await call(sock('lazy'), '/');
    expect(second.headers['x-allegra-instantiate-ms']).toBeUndefined();
    await host.unload('lazy');
  });

  it('refuses bad load requests with a reason', async () => {
    await expect(load('alpha')).rejects.toThrow(/already loaded/);
    await expect(host.load({ replicaId: 'x', artifactDir: tmp.path, socketPath: sock('x'), logFile: logOf('x') })).rejects.toThrow(
      /no compiled artifact/,
    );
    await expect(load('tiny', { limits: { memoryBytes: 1024 } })).rejects.toThrow(/limits\.memoryBytes/);
    await expect(load('rel', { socketPath: 'relative.sock' })).rejects.toThrow(/absolute/);
    // A path that is not a socket is never deleted to make room for one.
    const precious = join(tmp.path, 'precious.txt');
    writeFileSync(precious, 'keep me');
    await expect(load('clobber', { socketPath: precious })).rejects.toThrow(/not a socket/);
    expect(readFileSync(precious, 'utf8')).toBe('keep me');
    expect((await host.stats()).replicas.some((r) => r.id === 'clobber')).toBe(false);
  });

  it('exits when the process that started it dies (no host outlives its agent)', async () => {
    const script = `import(${JSON.stringify(DIST)}).then(async (w) => { const h = await w.WasmHostClient.start(); process.stdout.write(h.pid + '\\n'); setInterval(() => {}, 1000); });`;
    const parent = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const hostPid = await new Promise<number>((resolve, reject) => {
        parent.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
        parent.once('exit', (code) => reject(new Error(`parent exited early (${code})`)));
      });
      expect(alive(hostPid)).toBe(true);
      parent.kill('SIGKILL');
      await waitFor(() => !alive(hostPid), { what: 'the orphaned wasm host to exit', timeoutMs: 10_000 });
    } finally {
      parent.kill('SIGKILL');
    }
  });

  describe('compile errors', () => {
    const broken = (name: string, source: string): string => {
      const dir = join(tmp.path, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'index.js'), source);
      return dir;
    };

    it('a syntax error names the file and problem', async () => {
      const dir = broken('syntax', 'export default { fetch(req) { return new Response("x" }\n');
      const err = await wasm.compileApp({ source: dir, cacheDir: join(tmp.path, 'cache') }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(wasm.CompileError);
      expect((err as Wasm.CompileError).stage).toBe('bundle');
      expect((err as Error).message).toMatch(/index\.js/);
      expect((err as Error).message).not.toContain(tmp.path);
    });

    it('an import of a Node built-in or outside the app directory is refused', async () => {
      const fsUser = broken(
        'builtin',
        'import { readFileSync } from "node:fs";\nexport default { fetch() { return new Response(readFileSync("/etc/passwd")); } };\n',
      );
      await expect(wasm.compileApp({ source: fsUser, cacheDir: join(tmp.path, 'cache') })).rejects.toThrow(/node:fs.*not available/);
      const escaper = broken(
        'escape',
        'import secret from "../outside.js";\nexport default { fetch() { return new Response(secret); } };\n',
      );
      writeFileSync(join(tmp.path, 'outside.js'), 'export default "secret";\n');
      await expect(wasm.compileApp({ source: escaper, cacheDir: join(tmp.path, 'cache') })).rejects.toThrow(
        /'\.\.\/outside\.js' resolves outside the app directory/,
      );
    });

    it('a compile past its time limit is stopped with the reason', async () => {
      const dir = broken('slow', 'export default { fetch() { return new Response("ok"); } };\n');
      const t = Date.now();
      const err = await wasm.compileApp({ source: dir, cacheDir: join(tmp.path, 'cache'), timeoutMs: 300 }).catch((e: unknown) => e);
      expect((err as Wasm.CompileError).stage).toBe('timeout');
      expect((err as Error).message).toContain('time limit of 300 ms');
      expect(Date.now() - t).toBeLessThan(5_000);
    });

    it('a module without a fetch() default export fails at pre-initialisation with that reason', async () => {
      const dir = broken('nofetch', 'export default { hello() {} };\n');
      const err = await wasm.compileApp({ source: dir, cacheDir: join(tmp.path, 'cache'), timeoutMs: 240_000 }).catch((e: unknown) => e);
      expect((err as Wasm.CompileError).stage).toBe('componentize');
      expect((err as Error).message).toContain('the default export has no fetch(request) method');
    }, 300_000);
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function threadsOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 0);
}
