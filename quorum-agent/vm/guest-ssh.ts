/**
 * The agent's way into a VM replica: an SSH client (ssh2) to the VM's own dropbear, on its loopback forward,
 * logged in as root with the node's key (which the seed authorizes) and accepting only the VM's host key
 * (host-key.ts). `allegra ssh` sessions are relayed over it (ssh/server.ts) after the agent's own server
 * has checked the user's key against the instance; commands (`exec`) run over it too.
 */
import { PassThrough, type Readable, type Writable } from 'node:stream';
import ssh2 from 'ssh2';
import { ed25519FromSsh } from '../../protocol/openssh.js';

export interface GuestSshTarget {
  host: string;
  port: number;
  username: string;
  /** OpenSSH-format private key of the node. */
  privateKey: string;
  /** Raw Ed25519 public key (hex) the VM's server must present. */
  hostKeyHex: string;
}

/** Connects and logs in; rejects after `timeoutMs` or on any refusal. */
export function connectGuest(target: GuestSshTarget, timeoutMs = 10_000): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const conn = new ssh2.Client();
    conn.once('ready', () => resolve(conn));
    // Kept for the connection's life: ssh2 may emit more than one error (a VM still booting accepts on its
    // forwarded port and drops the connection), and an unhandled one would end the agent.
    conn.on('error', (err) => {
      reject(err);
      conn.end();
    });
    conn.connect({
      host: target.host,
      port: target.port,
      username: target.username,
      privateKey: target.privateKey,
      hostVerifier: (key: Buffer) => ed25519FromSsh(key) === target.hostKeyHex,
      readyTimeout: timeoutMs,
    });
  });
}

/** One word of a POSIX shell command line. */
export function shellWord(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export interface GuestCommand {
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly pid: number | null;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

/** Runs `argv` in the VM (through its login shell, as sshd does); the connection closes with the command. */
export async function guestExec(target: GuestSshTarget, argv: string[], env: Record<string, string> = {}): Promise<GuestCommand> {
  const conn = await connectGuest(target);
  // dropbear accepts no environment requests by default: variables travel as `env NAME=value` on the line.
  const assignments = Object.entries(env).map(([k, v]) => shellWord(`${k}=${v}`));
  const line = [...(assignments.length > 0 ? ['env', ...assignments] : []), ...argv.map(shellWord)].join(' ');
  const channel = await new Promise<ssh2.ClientChannel>((resolve, reject) =>
    conn.exec(line, (err, ch) => (err ? reject(err) : resolve(ch))),
  ).catch((err) => {
    conn.end();
    throw err;
  });
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  channel.pipe(stdout);
  channel.stderr.pipe(stderr);
  let killedWith: NodeJS.Signals | null = null;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    let code: number | null = null;
    let signal: NodeJS.Signals | null = null;
    channel.on('exit', (c: number | null, s?: string) => {
      code = typeof c === 'number' ? c : null;
      signal = s ? (`SIG${s}` as NodeJS.Signals) : null;
    });
    // A command ended by kill() that reported no status of its own ended by that signal.
    const settle = () => resolve(code === null && signal === null ? { code, signal: killedWith } : { code, signal });
    channel.on('close', () => {
      conn.end();
      settle();
    });
    conn.on('close', settle);
  });
  channel.on('error', () => {});
  return {
    stdin: channel,
    stdout,
    stderr,
    pid: null,
    exited,
    // The signal travels as an SSH signal request; closing the channel then hangs up whatever is left.
    kill: (sig = 'SIGKILL') => {
      killedWith = sig;
      try {
        channel.signal(sig.replace(/^SIG/, ''));
      } catch {
        /* closed already */
      }
      channel.close();
      conn.end();
    },
  };
}
