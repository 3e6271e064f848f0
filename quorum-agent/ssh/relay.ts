/**
 * An SSH session of the agent's server carried on into a replica that has its own SSH server (a VM's
 * dropbear): the agent has already checked the user's key against the instance and recorded the session;
 * here it opens the same kind of session (shell with or without a PTY, one command, SFTP) on the replica's
 * server with the node's key, and pipes the two together, window changes and exit status included.
 */
import type ssh2 from 'ssh2';
import { connectGuest, type GuestSshTarget } from '../vm/guest-ssh.js';

export interface RelayedSession {
  /** Ends the relayed session (a removed key, the node shutting down). */
  kill(): void;
  resize(cols: number, rows: number): void;
  /** Exit status of the remote command, or its signal's name (without SIG). */
  readonly done: Promise<{ code: number | null; signal: string | null }>;
}

export async function relaySession(
  target: GuestSshTarget,
  kind: 'shell' | 'exec' | 'sftp',
  channel: ssh2.ServerChannel,
  pty: { cols: number; rows: number; term: string } | undefined,
  command: string | undefined,
): Promise<RelayedSession> {
  const conn = await connectGuest(target);
  const remote = await new Promise<ssh2.ClientChannel>((resolve, reject) => {
    const cb = (err: Error | undefined, ch: ssh2.ClientChannel) => (err ? reject(err) : resolve(ch));
    const window = pty ? { term: pty.term, cols: pty.cols, rows: pty.rows } : undefined;
    if (kind === 'sftp') conn.subsys('sftp', cb);
    else if (kind === 'exec') conn.exec(command ?? '', window ? { pty: window } : {}, cb);
    else conn.shell(window ?? false, cb);
  }).catch((err) => {
    conn.end();
    throw err;
  });
  remote.pipe(channel, { end: false });
  remote.stderr.pipe(channel.stderr, { end: false });
  channel.pipe(remote);
  const done = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    let code: number | null = null;
    let signal: string | null = null;
    remote.on('exit', (c: number | null, s?: string) => {
      code = typeof c === 'number' ? c : null;
      signal = s ?? null;
    });
    remote.on('close', () => {
      conn.end();
      resolve({ code, signal });
    });
    conn.on('close', () => resolve({ code, signal }));
  });
  remote.on('error', () => {});
  channel.on('close', () => {
    remote.close();
    conn.end();
  });
  return {
    kill: () => {
      remote.close();
      conn.end();
    },
    resize: (cols, rows) => remote.setWindow(rows, cols, 0, 0),
    done,
  };
}
