/**
 * Starts a real ACME server for tests: Let's Encrypt's Pebble, with `pebble-challtestsrv` as its DNS server so
 * that every name resolves to 127.0.0.1. Pebble's validation authority then connects to `httpPort` (HTTP-01) and
 * `tlsPort` (TLS-ALPN-01) on 127.0.0.1, where the code under test listens.
 *
 * Everything binds to loopback. Every process started here is killed by PID in `stop()`, and the temp dir holding
 * the generated certificates and config is removed. As a last resort the same happens when the test process exits
 * or gets SIGTERM/SIGINT/SIGHUP, and (through `setpriv --pdeathsig`) the kernel kills the processes if the test
 * process dies in any other way.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { freePorts } from '../../quorum-agent/ports.js';

export interface Pebble {
  /** https://127.0.0.1:<port>/dir */
  directoryUrl: string;
  /** PEM of the CA that signs Pebble's own HTTPS endpoint (pass to acme-client / NODE_EXTRA_CA_CERTS). */
  endpointCaPem: string;
  endpointCaFile: string;
  /** PEM of the root that signs issued certificates (fetched from the management API /roots/0). */
  issuerRootPem(): Promise<string>;
  /** The same root written to a temp file, for curl --cacert. */
  issuerRootFile(): Promise<string>;
  /** challtestsrv management: add a TXT record for DNS checks (e.g. custom-domain proof). */
  setTxt(host: string, value: string): Promise<void>;
  /** challtestsrv management: remove every TXT record of `host`. */
  clearTxt(host: string): Promise<void>;
  /** 127.0.0.1:<port> of challtestsrv's DNS server (UDP and TCP). */
  dnsServer: string;
  /** Kills Pebble and challtestsrv and removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

const run = promisify(execFile);

/** Every process started by this module, so a crashed test run does not leak them. */
const running = new Set<ChildProcess>();
/** Temp dirs of instances not yet stopped. */
const liveDirs = new Set<string>();
let exitHookInstalled = false;

/** Synchronous last-resort cleanup: SIGKILL every process still running, remove every temp dir. */
function cleanupSync(): void {
  for (const p of running) p.kill('SIGKILL');
  for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
}

/**
 * Vitest ends its fork workers with SIGTERM, where 'exit' listeners do not run: clean up on the usual termination
 * signals too, then re-raise the signal so the process still ends the way it would have without this listener.
 */
function onSignal(signal: NodeJS.Signals): void {
  cleanupSync();
  process.off(signal, onSignal);
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', cleanupSync);
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, onSignal);
}

function findBinary(name: string): string | undefined {
  const dirs = `${process.env.PATH ?? ''}${delimiter}/usr/bin${delimiter}/usr/local/bin`.split(delimiter);
  for (const dir of dirs) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

interface Proc {
  name: string;
  proc: ChildProcess;
  /** Last lines of output, for error messages. */
  log: string[];
}

/**
 * With util-linux `setpriv`, the process gets SIGKILL from the kernel when this process dies, however it dies
 * (even SIGKILL, where no listener runs). `setpriv` execs the binary, so the PID is the binary's own.
 */
const SETPRIV = findBinary('setpriv');

function launch(name: string, bin: string, args: string[], env: NodeJS.ProcessEnv): Proc {
  const [file, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', bin, ...args]] : [bin, args];
  const proc = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const p: Proc = { name, proc, log: [] };
  const keep = (chunk: Buffer) => {
    p.log.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    if (p.log.length > 60) p.log.splice(0, p.log.length - 60);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  proc.on('error', (err) => p.log.push(`spawn error: ${err.message}`));
  proc.on('exit', () => running.delete(proc));
  running.add(proc);
  return p;
}

function exited(p: Proc): boolean {
  return p.proc.exitCode !== null || p.proc.signalCode !== null;
}

async function kill(p: Proc): Promise<void> {
  if (p.proc.pid === undefined || exited(p)) return;
  const gone = new Promise<void>((r) => p.proc.once('exit', () => r()));
  p.proc.kill('SIGTERM');
  const timer = setTimeout(() => p.proc.kill('SIGKILL'), 2_000);
  await gone;
  clearTimeout(timer);
}

/** GET over HTTPS trusting only `ca`; resolves with status and body. */
function httpsGet(url: string, ca: string, timeoutMs = 2_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms: GET ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

/** POST a JSON body over plain HTTP; resolves with status and body. */
function httpPost(url: string, json: unknown, timeoutMs = 2_000): Promise<{ status: number; body: string }> {
  const data = JSON.stringify(json);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      {
        method: 'POST',
        agent: false,
        timeout: timeoutMs,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms: POST ${url}`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** Pebble's endpoint CA and a server certificate for 127.0.0.1/localhost, made with openssl (ECDSA P-256). */
async function makeEndpointCerts(dir: string): Promise<{ caFile: string; certFile: string; keyFile: string }> {
  const caKey = join(dir, 'endpoint-ca.key');
  const caFile = join(dir, 'endpoint-ca.pem');
  const keyFile = join(dir, 'endpoint.key');
  const csrFile = join(dir, 'endpoint.csr');
  const certFile = join(dir, 'endpoint.pem');
  const extFile = join(dir, 'endpoint.ext');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    caKey,
    '-out',
    caFile,
    '-days',
    '30',
    '-subj',
    '/CN=Allegra test Pebble endpoint CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE,pathlen:0',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await run('openssl', ['req', '-new', ...ec, '-keyout', keyFile, '-out', csrFile, '-subj', '/CN=localhost']);
  writeFileSync(
    extFile,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '',
    ].join('\n'),
  );
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    csrFile,
    '-CA',
    caFile,
    '-CAkey',
    caKey,
    '-CAcreateserial',
    '-out',
    certFile,
    '-days',
    '30',
    '-extfile',
    extFile,
  ]);
  return { caFile, certFile, keyFile };
}

/** Normalises a DNS name to the FQDN form challtestsrv keys its records by (lower case, trailing dot). */
function fqdn(host: string): string {
  const h = host.trim().toLowerCase();
  return h.endsWith('.') ? h : `${h}.`;
}

export async function startPebble(opts: { httpPort: number; tlsPort: number }): Promise<Pebble> {
  const pebbleBin = findBinary('pebble');
  const challBin = findBinary('pebble-challtestsrv');
  if (!pebbleBin || !challBin) {
    // No skipping: a missing Pebble must fail loudly, in CI and locally alike.
    throw new Error('pebble not installed: run node scripts/install-deps.mjs');
  }
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), 'allegra-pebble-'));
  liveDirs.add(dir);
  const procs: Proc[] = [];
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await Promise.all(procs.map(kill));
    rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
  };

  try {
    const { caFile, certFile, keyFile } = await makeEndpointCerts(dir);
    const endpointCaPem = readFileSync(caFile, 'utf8');
    // A port taken between freePorts() and the bind makes a process exit at once: try fresh ports.
    for (let attempt = 1; ; attempt++) {
      const [dnsPort, challMgmtPort, acmePort, mgmtPort] = (await freePorts(4)) as [number, number, number, number];
      const chall = launch(
        'pebble-challtestsrv',
        challBin,
        [
          '-defaultIPv4',
          '127.0.0.1',
          '-defaultIPv6',
          '',
          '-dns01',
          `127.0.0.1:${dnsPort}`,
          '-http01',
          '',
          '-https01',
          '',
          '-tlsalpn01',
          '',
          '-management',
          `127.0.0.1:${challMgmtPort}`,
        ],
        process.env,
      );
      procs.push(chall);
      const configFile = join(dir, 'pebble-config.json');
      writeFileSync(
        configFile,
        JSON.stringify(
          {
            pebble: {
              listenAddress: `127.0.0.1:${acmePort}`,
              managementListenAddress: `127.0.0.1:${mgmtPort}`,
              certificate: certFile,
              privateKey: keyFile,
              httpPort: opts.httpPort,
              tlsPort: opts.tlsPort,
              ocspResponderURL: '',
              externalAccountBindingRequired: false,
            },
          },
          null,
          2,
        ),
      );
      const pebble = launch('pebble', pebbleBin, ['-config', configFile, '-dnsserver', `127.0.0.1:${dnsPort}`], {
        ...process.env,
        PEBBLE_VA_NOSLEEP: '1', // no random 0–15 s sleep before each validation
        PEBBLE_WFE_NONCEREJECT: '0', // never reject a valid nonce (default: 5 %)
        PEBBLE_AUTHZREUSE: '0', // every order gets fresh authorizations (default: 50 % reuse)
      });
      procs.push(pebble);

      const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
      const challMgmt = `http://127.0.0.1:${challMgmtPort}`;
      const up = await waitUp(
        [chall, pebble],
        async () => {
          // challtestsrv answers unknown paths with 404, which still proves it is listening.
          await httpPost(`${challMgmt}/clear-txt`, { host: 'ready.invalid.' }, 500);
          const res = await httpsGet(directoryUrl, endpointCaPem, 500);
          return res.status === 200 && res.body.includes('newAccount');
        },
        15_000,
      );
      if (up !== 'up') {
        const logs = [chall, pebble].map((p) => `--- ${p.name} ---\n${p.log.join('\n')}`).join('\n');
        await Promise.all([chall, pebble].map(kill));
        procs.length = 0;
        if (up === 'port taken' && attempt < 3) continue;
        throw new Error(`Pebble did not start (${up}):\n${logs}`);
      }

      let rootPem: string | undefined;
      const issuerRootPem = async (): Promise<string> => {
        if (rootPem === undefined) {
          const res = await httpsGet(`https://127.0.0.1:${mgmtPort}/roots/0`, endpointCaPem);
          if (res.status !== 200 || !res.body.includes('BEGIN CERTIFICATE')) {
            throw new Error(`Pebble /roots/0 answered ${res.status}: ${res.body.slice(0, 200)}`);
          }
          rootPem = res.body;
        }
        return rootPem;
      };
      const manage = async (path: string, body: unknown): Promise<void> => {
        const res = await httpPost(`${challMgmt}${path}`, body);
        if (res.status !== 200) throw new Error(`challtestsrv ${path} answered ${res.status}: ${res.body}`);
      };

      return {
        directoryUrl,
        endpointCaPem,
        endpointCaFile: caFile,
        issuerRootPem,
        issuerRootFile: async () => {
          const file = join(dir, 'issuer-root.pem');
          if (!existsSync(file)) writeFileSync(file, await issuerRootPem());
          return file;
        },
        setTxt: (host, value) => manage('/set-txt', { host: fqdn(host), value }),
        clearTxt: (host) => manage('/clear-txt', { host: fqdn(host) }),
        dnsServer: `127.0.0.1:${dnsPort}`,
        stop,
      };
    }
  } catch (err) {
    await stop();
    throw err;
  }
}

const BIND_FAILURE = /address already in use/i;

/**
 * Polls `ready` until it is true; gives up early when one of `procs` exits or reports a port it could not bind
 * (challtestsrv keeps running without its management server in that case).
 */
async function waitUp(
  procs: Proc[],
  ready: () => Promise<boolean>,
  timeoutMs: number,
): Promise<'up' | 'port taken' | 'exited' | 'timeout'> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (procs.some((p) => p.log.some((line) => BIND_FAILURE.test(line)))) return 'port taken';
    if (procs.some(exited)) return 'exited';
    try {
      if (await ready()) return 'up';
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return 'timeout';
}
