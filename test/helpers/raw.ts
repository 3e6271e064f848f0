/** Raw TCP requests, for what real HTTP clients refuse to send (smuggling, slow clients, PROXY headers). */
import { connect } from 'node:net';

export function rawRequest(
  port: number,
  payload: string | Buffer,
  opts: { timeoutMs?: number } = {},
): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(payload));
    let text = '';
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ text, closed });
    };
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 3_000);
    socket.on('data', (d) => {
      text += d.toString('latin1');
    });
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true));
  });
}

export function statusOf(text: string): number {
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  return m ? Number(m[1]) : 0;
}
