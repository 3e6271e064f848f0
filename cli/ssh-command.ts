/**
 * `allegra ssh NAME [--print] [--replica N] [-- CMD…]`: a session inside one replica's sandbox, over the SSH
 * server of the node that runs it. The CLI's own Ed25519 key is the user's key: it is also written in
 * OpenSSH's format beside the key file, and the nodes' host keys (their registry keys) go to a known_hosts
 * file of the CLI, so the command `--print` shows works with a plain `ssh`. Without `--print` the CLI runs
 * the session itself (ssh2), checking the host key the same way; one command's exit code is the CLI's.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { ed25519FromSsh } from '../protocol/openssh.js';
import { allegraHome, ensureOpenSshKey, keyPath, loadKey } from './config.js';
import { client, type GlobalOpts, instancePath } from './instance-commands.js';
import { CliError, type Output } from './output.js';

interface SshTarget {
  slot: number;
  nodeId: string;
  healthy: boolean;
  ssh: string;
  hostKey: string;
}

function splitAddress(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(':');
  return { host: address.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(address.slice(at + 1)) };
}

/** Adds the nodes' host keys to the CLI's known_hosts (one line per address, replaced when it changed). */
function writeKnownHosts(targets: SshTarget[]): string {
  const file = join(allegraHome(), 'known_hosts');
  let lines: string[] = [];
  try {
    lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
  } catch {
    /* first time */
  }
  for (const t of targets) {
    const { host, port } = splitAddress(t.ssh);
    const name = port === 22 ? host : `[${host}]:${port}`;
    lines = [...lines.filter((l) => l.split(' ')[0] !== name), `${name} ${t.hostKey}`];
  }
  writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  return file;
}

export async function sshCommand(
  name: string,
  command: string[],
  opts: { print?: boolean; replica?: string },
  g: GlobalOpts,
  out: Output,
): Promise<void> {
  const slot = opts.replica === undefined ? undefined : Number(opts.replica);
  if (slot !== undefined && (!Number.isInteger(slot) || slot < 0 || slot > 999))
    throw new CliError(`--replica expects a replica number (got "${opts.replica}")`, 2);
  const keyPair = loadKey(g.key);
  const identity = ensureOpenSshKey(keyPath(g.key), keyPair);
  const { replicas } = await client(g).call<{ replicas: SshTarget[] }>({ method: 'GET', path: instancePath(name, '/ssh') });
  const target = slot === undefined ? (replicas.find((r) => r.healthy) ?? replicas[0]) : replicas.find((r) => r.slot === slot);
  if (!target)
    throw new CliError(
      slot === undefined
        ? `no replica of ${name} is running: nothing to connect to (see allegra status ${name})`
        : `replica ${slot} of ${name} is not running (running: ${replicas.map((r) => r.slot).join(', ') || 'none'})`,
    );
  const knownHosts = writeKnownHosts(replicas);
  const { host, port } = splitAddress(target.ssh);
  const user = `${name}.${target.slot}`;
  if (opts.print) {
    const printed = `ssh -i ${identity} -o UserKnownHostsFile=${knownHosts} -o IdentitiesOnly=yes -p ${port} ${user}@${host}`;
    out.result({ host, port, user, identity, knownHosts, node: target.nodeId, replica: target.slot, command: printed }, () => printed);
    return;
  }
  if (out.json) throw new CliError('--json goes with --print (a session is not a JSON document)', 2);
  const code = await session({
    host,
    port,
    user,
    privateKey: readFileSync(identity, 'utf8'),
    hostKey: target.hostKey,
    command: command.join(' '),
  });
  process.exitCode = code;
}

/** Runs one session with ssh2: a shell with a PTY when stdin is a terminal, else or with a command, exec. */
function session(o: { host: string; port: number; user: string; privateKey: string; hostKey: string; command: string }): Promise<number> {
  const expected = ed25519FromSsh(o.hostKey);
  return new Promise((resolve, reject) => {
    const conn = new ssh2.Client();
    const tty = process.stdin.isTTY === true && process.stdout.isTTY === true;
    const done = (code: number) => {
      if (tty) process.stdin.setRawMode(false);
      process.stdin.pause();
      conn.end();
      resolve(code);
    };
    conn.on('error', (err) => reject(new CliError(`ssh ${o.user}@${o.host}:${o.port}: ${err.message}`)));
    conn.on('ready', () => {
      const window = tty ? { term: process.env.TERM ?? 'xterm', cols: process.stdout.columns, rows: process.stdout.rows } : undefined;
      const onChannel = (err: Error | undefined, channel: ssh2.ClientChannel) => {
        if (err) return reject(new CliError(`ssh: ${err.message}`));
        let exitCode = 255;
        channel.on('exit', (code: number | null) => {
          exitCode = typeof code === 'number' ? code : 255;
        });
        channel.on('close', () => done(exitCode));
        channel.pipe(process.stdout, { end: false });
        channel.stderr.pipe(process.stderr, { end: false });
        if (tty) {
          process.stdin.setRawMode(true);
          process.stdout.on('resize', () => channel.setWindow(process.stdout.rows, process.stdout.columns, 0, 0));
        }
        process.stdin.pipe(channel);
      };
      if (o.command) conn.exec(o.command, window ? { pty: window } : {}, onChannel);
      else conn.shell(window ?? false, onChannel);
    });
    conn.connect({
      host: o.host,
      port: o.port,
      username: o.user,
      privateKey: o.privateKey,
      // The host key must be the node's registered key: nothing else may answer for it.
      hostVerifier: (key: Buffer) => ed25519FromSsh(key) === expected,
      readyTimeout: 10_000,
    });
  });
}
