/**
 * The namespace lab the multi-machine tests stand on: machines reach each other over the lab's switch and
 * nothing else, a cut cable and a netem delay are real, and nothing is left behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canCreateNamespaces, Lab } from '../helpers/netns.js';

const capable = canCreateNamespaces();

describe('network namespace lab', () => {
  let lab: Lab;

  beforeAll(async () => {
    // Under CI a host that cannot create namespaces is a failure, never a skip.
    if (!capable.ok) throw new Error(`multi-machine tests need network namespaces: ${capable.reason}`);
    lab = Lab.create();
    await lab.addMachine('a');
    await lab.addMachine('b', { impairable: true });
  });

  afterAll(async () => {
    await lab?.cleanup();
    expect(lab?.existing() ?? []).toEqual([]);
  });

  const ping = (from: string, to: string) => lab.run(from, ['ping', '-c', '1', '-W', '1', lab.machine(to).address], { timeoutMs: 5_000 });
  // "Reaches": any of five echoes answered (the lab's switch is a userspace bridge; a loaded machine may
  // lose its first frame after a change); "cut": a single echo unanswered within a second.
  const reaches = (from: string, to: string) =>
    lab.run(from, ['ping', '-c', '5', '-i', '0.2', '-W', '2', lab.machine(to).address], { timeoutMs: 10_000 }).code === 0;
  const rtt = (from: string, to: string) => Number(/time=([\d.]+) ms/.exec(ping(from, to).stdout)?.[1] ?? Number.NaN);

  it('cables machines through the switch only', () => {
    expect(reaches('a', 'b')).toBe(true);
    // The host namespace has no route into the lab.
    const routes = lab.run('a', ['ip', 'route']).stdout;
    expect(routes).toMatch(/10\.213\.0\.0\/24 dev eth0/);
    expect(routes).not.toMatch(/default/);
  });

  it('cuts and restores a cable, and delays and drops traffic', async () => {
    lab.cut('b');
    expect(ping('a', 'b').code).not.toBe(0);
    lab.restore('b');
    expect(reaches('a', 'b')).toBe(true);
    await lab.netem('b', { delayMs: 80 });
    expect(rtt('a', 'b')).toBeGreaterThan(70);
    await lab.netem('b', { lossPct: 100 });
    expect(ping('a', 'b').code).not.toBe(0);
    await lab.netem('b', null);
    expect(rtt('a', 'b')).toBeLessThan(40);
    // TCP crosses the impaired cable too (frames of every size are forwarded).
    const server = lab.spawn(
      'b',
      [
        'python3',
        '-c',
        'import socket;s=socket.socket();s.bind(("0.0.0.0",7001));s.listen();c,_=s.accept();d=b""\nwhile len(d)<1000000: d+=c.recv(65536)\nc.sendall(str(len(d)).encode());c.close()',
      ],
      { stdio: 'ignore' },
    );
    await new Promise((r) => setTimeout(r, 300));
    const sent = lab.run('a', [
      'python3',
      '-c',
      `import socket;c=socket.create_connection(("${lab.machine('b').address}",7001));c.sendall(b"x"*1000000);print(c.recv(100).decode())`,
    ]);
    expect(sent.stdout.trim()).toBe('1000000');
    server.kill('SIGKILL');
  });

  it('kills what it started on cleanup', async () => {
    const sleeper = lab.spawn('a', ['sleep', '300'], { stdio: 'ignore' });
    expect(sleeper.pid).toBeGreaterThan(0);
    const exited = new Promise((r) => sleeper.once('exit', r));
    const other = Lab.create();
    await other.addMachine('x');
    const leftover = other.spawn('x', ['sleep', '300'], { stdio: 'ignore' });
    await other.cleanup();
    expect(leftover.exitCode !== null || leftover.signalCode !== null).toBe(true);
    expect(other.existing()).toEqual([]);
    await lab.cleanup();
    await exited;
    // cleanup is idempotent; afterAll calls it again.
  });
});
