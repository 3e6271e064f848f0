/**
 * The agent's SSH server (ssh2). Users are Ed25519 keys: an instance's owner and team keys, checked against
 * the registry on every login and every session (a removed key is refused at once, and its open sessions
 * are cut). The user name picks the instance and replica: `NAME` (a replica of it on this node) or
 * `NAME.SLOT`. Every session runs inside that replica's sandbox as the instance's uid (enter.ts): a shell
 * with a PTY, one command (its exit code is the session's), or the SFTP server. Each session's start and end
 * go into the instance's history, attested by this node's key. The host key is the node's own key, so a
 * client checks it against the node's record.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { type IPty, spawn as spawnPty } from '@lydell/node-pty';
import type { Logger } from 'pino';
import ssh2 from 'ssh2';
import type { HistoryEntry } from '../../protocol/history.js';
import { ed25519FromSsh, openSshPrivateKey, sshPublicKeyLine } from '../../protocol/openssh.js';
import { INSTANCE_NAME } from '../../protocol/schemas.js';
import type { KeyPair } from '../../protocol/signing.js';
import type { InstanceSpec } from '../../protocol/types.js';
import type { ReplicaHandle } from '../drivers/driver.js';
import { revokedMessage } from '../instances.js';
import { sessionEnvironment } from '../sandbox/env.js';
import type { EnterTarget } from '../sandbox/sandbox.js';
import type { DesiredReplica } from '../supervisor.js';
import type { GuestSshTarget } from '../vm/guest-ssh.js';
import { enterArgv, killTree, sessionCommand } from './enter.js';
import { type RelayedSession, relaySession } from './relay.js';

export interface SshDeps {
  hostKey: KeyPair;
  nodeId: string;
  log: Logger;
  /** The committed spec of an instance (fresh from the registry), or undefined. */
  lookup(name: string): Promise<InstanceSpec | undefined>;
  /** The spec as this node's view has it (for cutting sessions without a registry round trip). */
  cached(name: string): InstanceSpec | undefined;
  /** The replica of `instanceId` running here in `slot` (or any, when slot is undefined). */
  replica(instanceId: string, slot: number | undefined): { handle: ReplicaHandle; desired: DesiredReplica } | undefined;
  /** Where `slot` of the instance runs, when not here (for the refusal's reason). */
  whereIs(instanceId: string, slot: number): string | undefined;
  /** Appends a node-attested record to the instance's history; false when it could not. */
  record(instanceId: string, entry: HistoryEntry): Promise<boolean>;
}

/** Parses `NAME` or `NAME.SLOT`. */
export function parseUser(user: string): { name: string; slot?: number } | undefined {
  const m = /^([a-z0-9-]{1,63})(?:\.(\d{1,3}))?$/.exec(user);
  if (!m || !INSTANCE_NAME.test(m[1] as string)) return undefined;
  return { name: m[1] as string, ...(m[2] === undefined ? {} : { slot: Number(m[2]) }) };
}

/** Whether `key` may open sessions on `spec` now. */
function allowed(spec: InstanceSpec | undefined, key: string): boolean {
  return spec !== undefined && (spec.owner === key || spec.authorized.includes(key));
}

interface Live {
  name: string;
  key: string;
  end: (why: string) => void;
}

const MAX_COMMAND = 8192;
const LOGIN_TIMEOUT_MS = 30_000;
const MAX_AUTH_ATTEMPTS = 10;

export class SshServer {
  private server: ssh2.Server | null = null;
  private readonly live = new Set<Live>();
  private readonly keyCache = new Map<string, ssh2.ParsedKey>();

  constructor(private readonly deps: SshDeps) {}

  async start(host: string, port: number): Promise<number> {
    const server = new ssh2.Server(
      {
        hostKeys: [openSshPrivateKey(this.deps.hostKey, this.deps.nodeId)],
        ident: 'allegra',
        // A login that does not finish is cut: nothing of a half-open connection is kept for long.
        keepaliveInterval: 15_000,
      },
      (client) => this.onClient(client),
    );
    server.on('error', (err: Error) => this.deps.log.warn({ err }, 'ssh server error'));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
    });
  }

  /** Ends the sessions whose key may no longer operate their instance (a team key removed, a revocation). */
  recheck(): void {
    for (const s of this.live) {
      const spec = this.deps.cached(s.name);
      if (!allowed(spec, s.key)) s.end(`allegra: key no longer authorized for instance "${s.name}"; session closed\r\n`);
      else if (spec?.immutable) s.end(`allegra: ${revokedMessage(spec)}; session closed\r\n`);
    }
  }

  async stop(): Promise<void> {
    for (const s of this.live) s.end('allegra: the node is shutting down\r\n');
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private parsedKey(hex: string): ssh2.ParsedKey | undefined {
    let key = this.keyCache.get(hex);
    if (!key) {
      const parsed = ssh2.utils.parseKey(sshPublicKeyLine(hex));
      if (parsed instanceof Error) return undefined;
      key = Array.isArray(parsed) ? parsed[0] : parsed;
      if (!key) return undefined;
      if (this.keyCache.size > 1_000) this.keyCache.clear();
      this.keyCache.set(hex, key);
    }
    return key;
  }

  private onClient(client: ssh2.Connection): void {
    let user: { name: string; slot?: number; key: string } | undefined;
    let attempts = 0;
    // A connection that does not log in soon is cut: half-open logins hold nothing for long.
    const loginTimer = setTimeout(() => client.end(), LOGIN_TIMEOUT_MS);
    loginTimer.unref();
    client.on('error', (err) => this.deps.log.debug({ err }, 'ssh client error'));
    client.on('close', () => clearTimeout(loginTimer));
    client.on('authentication', (ctx) => {
      if (++attempts > MAX_AUTH_ATTEMPTS) return client.end();
      if (ctx.method !== 'publickey') return ctx.reject(['publickey']);
      const target = parseUser(ctx.username);
      const key = ctx.key.algo === 'ssh-ed25519' ? ed25519FromSsh(ctx.key.data) : undefined;
      if (!target || !key) return ctx.reject(['publickey']);
      const query = !ctx.signature || !ctx.blob;
      // The client asks whether this key would do: this node's view answers yes without a registry read (a
      // key added a moment ago is looked up). A login: the signature first, then the committed spec.
      if (query && allowed(this.deps.cached(target.name), key)) return ctx.accept();
      if (!query && this.parsedKey(key)?.verify(ctx.blob as Buffer, ctx.signature as Buffer, ctx.hashAlgo) !== true)
        return ctx.reject(['publickey']);
      void this.deps.lookup(target.name).then(
        (spec) => {
          // Revoked instances still authenticate their former users, so the session can say why it is refused.
          if (!allowed(spec, key)) return ctx.reject(['publickey']);
          if (!query) user = { ...target, key };
          ctx.accept();
        },
        () => ctx.reject(['publickey']),
      );
    });
    client.on('ready', () => {
      clearTimeout(loginTimer);
      client.on('session', (accept) => {
        if (!user) return;
        this.onSession(accept(), user);
      });
    });
  }

  private onSession(session: ssh2.Session, user: { name: string; slot?: number; key: string }): void {
    let pty: { cols: number; rows: number; term: string } | undefined;
    let resize: ((cols: number, rows: number) => void) | undefined;
    session.on('pty', (accept, _reject, info) => {
      pty = { cols: info.cols || 80, rows: info.rows || 24, term: info.term || 'xterm' };
      accept?.();
    });
    session.on('window-change', (accept, _reject, info) => {
      if (pty) pty = { ...pty, cols: info.cols, rows: info.rows };
      resize?.(info.cols, info.rows);
      accept?.();
    });
    session.on('env', (accept) => accept?.());
    const begin = (kind: 'shell' | 'exec' | 'sftp', channel: ssh2.ServerChannel, command?: string) => {
      void this.run(kind, channel, user, pty, command, (fn) => {
        resize = fn;
      }).catch((err) => {
        this.deps.log.warn({ err }, 'ssh session failed');
        refuse(channel, `allegra: session failed: ${(err as Error).message}`);
      });
    };
    session.on('shell', (accept) => begin('shell', accept()));
    session.on('exec', (accept, reject, info) => {
      if (info.command.length > MAX_COMMAND) return reject();
      begin('exec', accept(), info.command);
    });
    session.on('subsystem', (accept, reject, info) => {
      if (info.name !== 'sftp') return reject();
      begin('sftp', accept());
    });
  }

  private async run(
    kind: 'shell' | 'exec' | 'sftp',
    channel: ssh2.ServerChannel,
    user: { name: string; slot?: number; key: string },
    pty: { cols: number; rows: number; term: string } | undefined,
    command: string | undefined,
    onResize: (fn: (cols: number, rows: number) => void) => void,
  ): Promise<void> {
    // Checked again for each session: a key removed since the login is refused here.
    const spec = await this.deps.lookup(user.name);
    if (!spec || !allowed(spec, user.key)) return refuse(channel, `allegra: key may not operate instance "${user.name}"`);
    if (spec.immutable) return refuse(channel, `allegra: ${revokedMessage(spec)}; SSH sessions are refused`);
    const replica = this.deps.replica(spec.id, user.slot);
    if (!replica) {
      const where = user.slot === undefined ? undefined : this.deps.whereIs(spec.id, user.slot);
      return refuse(
        channel,
        user.slot === undefined
          ? `allegra: no replica of "${spec.name}" runs on node ${this.deps.nodeId}`
          : `allegra: replica ${user.slot} of "${spec.name}" does not run on node ${this.deps.nodeId}${where ? ` (it runs on node ${where}: allegra ssh ${spec.name} --replica ${user.slot})` : ''}`,
      );
    }
    // A VM replica has its own SSH server, which the session is relayed to; others are entered (nsenter).
    const guest = replica.handle.guestSsh?.();
    const target = guest ? undefined : replica.handle.enter ? await replica.handle.enter() : undefined;
    if (!guest && !target)
      return refuse(
        channel,
        replica.handle.enter
          ? `allegra: replica ${replica.desired.slot} of "${spec.name}" is not running`
          : replica.desired.driver === 'wasm'
            ? `allegra: "${spec.name}" is a wasm instance: it has no processes or shell to open a session in (allegra logs shows its output)`
            : `allegra: replica ${replica.desired.slot} of "${spec.name}" runs unsandboxed on this node; SSH sessions run only inside a sandbox`,
      );
    const slot = replica.desired.slot;
    const started = Date.now();
    const session = `${this.deps.nodeId}-${started.toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    const detail = { user: user.key, replica: slot, kind, session, ...(command ? { command: command.slice(0, 512) } : {}) };
    if (!(await this.deps.record(spec.id, { op: 'ssh.start', author: this.deps.hostKey.publicKeyHex, detail })))
      return refuse(channel, 'allegra: the session could not be recorded in the instance history; try again');

    if (guest) return this.relay(guest, kind, channel, pty, command, onResize, spec, user.key, detail, started);

    // The replica's own environment (its volume, state API and ports included), plus the session's TERM.
    const env = sessionEnvironment((target as EnterTarget).env, pty ? { TERM: pty.term } : {});
    const argv = enterArgv(target as EnterTarget, sessionCommand(kind, command, pty !== undefined));
    let ended = false;
    let proc: { kill: () => void } | undefined;
    const live: Live = {
      name: spec.name,
      key: user.key,
      end: (why) => {
        if (ended) return;
        channel.stderr.write(why);
        proc?.kill();
      },
    };
    this.live.add(live);
    const finish = (code: number | null, signal?: string | null) => {
      if (ended) return;
      ended = true;
      this.live.delete(live);
      this.endSession(channel, spec.id, detail, started, code, signal);
    };
    if (pty && kind !== 'sftp') {
      const term: IPty = spawnPty(argv[0] as string, argv.slice(1), { name: pty.term, cols: pty.cols, rows: pty.rows, env });
      proc = { kill: () => killTree(term.pid) };
      onResize((cols, rows) => term.resize(Math.max(1, cols), Math.max(1, rows)));
      term.onData((d) => channel.write(d));
      channel.on('data', (d: Buffer) => term.write(d.toString('binary')));
      channel.on('close', () => killTree(term.pid, 'SIGHUP'));
      term.onExit(({ exitCode, signal }) => finish(signal ? null : exitCode, signal ? `SIG${signalName(signal)}` : null));
      return;
    }
    const child: ChildProcess = spawn(argv[0] as string, argv.slice(1), { env, stdio: ['pipe', 'pipe', 'pipe'] });
    proc = { kill: () => child.pid !== undefined && killTree(child.pid) };
    if (child.stdout) child.stdout.pipe(channel, { end: false });
    if (child.stderr) child.stderr.pipe(channel.stderr, { end: false });
    if (child.stdin) channel.pipe(child.stdin);
    channel.on('close', () => child.pid !== undefined && killTree(child.pid, 'SIGHUP'));
    child.on('error', () => finish(255));
    child.on('close', (code, signal) => finish(code, signal));
  }

  /** A session carried on into the replica's own SSH server (relay.ts), recorded and cut like the others. */
  private async relay(
    guest: GuestSshTarget,
    kind: 'shell' | 'exec' | 'sftp',
    channel: ssh2.ServerChannel,
    pty: { cols: number; rows: number; term: string } | undefined,
    command: string | undefined,
    onResize: (fn: (cols: number, rows: number) => void) => void,
    spec: InstanceSpec,
    key: string,
    detail: Record<string, unknown>,
    started: number,
  ): Promise<void> {
    let relayed: RelayedSession;
    try {
      relayed = await relaySession(guest, kind, channel, pty, command);
    } catch (err) {
      void this.deps.record(spec.id, {
        op: 'ssh.end',
        author: this.deps.hostKey.publicKeyHex,
        detail: { ...detail, exitCode: 255, seconds: 0 },
      });
      return refuse(channel, `allegra: the VM's SSH server does not answer yet (${(err as Error).message}); try again shortly`);
    }
    const live: Live = {
      name: spec.name,
      key,
      end: (why) => {
        channel.stderr.write(why);
        relayed.kill();
      },
    };
    this.live.add(live);
    onResize((cols, rows) => relayed.resize(cols, rows));
    const { code, signal } = await relayed.done;
    this.live.delete(live);
    this.endSession(channel, spec.id, detail, started, code, signal);
  }

  /** Tells the client how the session ended (exit status or signal) and records its end in the history. */
  private endSession(
    channel: ssh2.ServerChannel,
    instanceId: string,
    detail: Record<string, unknown>,
    started: number,
    code: number | null,
    signal?: string | null,
  ): void {
    try {
      if (signal) channel.exit(signal.replace(/^SIG/, ''), false, '');
      else channel.exit(code ?? 255);
      channel.end();
    } catch {
      /* the client went away */
    }
    void this.deps.record(instanceId, {
      op: 'ssh.end',
      author: this.deps.hostKey.publicKeyHex,
      detail: { ...detail, exitCode: code, seconds: Math.round((Date.now() - started) / 1000) },
    });
  }
}

function refuse(channel: ssh2.ServerChannel, line: string): void {
  try {
    channel.stderr.write(`${line}\r\n`);
    channel.exit(1);
    channel.end();
  } catch {
    /* gone */
  }
}

function signalName(n: number): string {
  const names: Record<number, string> = { 1: 'HUP', 2: 'INT', 9: 'KILL', 15: 'TERM' };
  return names[n] ?? 'KILL';
}
