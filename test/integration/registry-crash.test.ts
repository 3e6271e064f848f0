/**
 * The embedded registry's host process is SIGKILLed 20 times at random moments while clients write to it
 * as fast as they can. After every restart each acknowledged write must be there with its value (and each
 * acknowledged delete must have stuck), and revisions must keep growing: none is ever handed out twice.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { readToken } from '../../registry/credentials.js';
import { socketPathFor } from '../../registry/embedded.js';
import { EmbeddedClient } from '../../registry/embedded-client.js';
import { sleep, tempDir, waitFor } from '../helpers/tmp.js';

const HOST = fileURLToPath(new URL('../fixtures/registry-host.mjs', import.meta.url));
const KILLS = 20;
const WRITERS = 4;

function startHost(dir: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [HOST, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2_000);
  });
  return new Promise((resolve, reject) => {
    child.stdout?.once('data', () => resolve(child));
    child.once('exit', (code, signal) => reject(new Error(`registry host exited during start (${signal ?? code}): ${stderr}`)));
  });
}

function kill9(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGKILL');
  return exited;
}

describe('embedded registry host SIGKILLed in a write loop', () => {
  const dir = tempDir('allegra-crash-');
  let host: ChildProcess | undefined;
  afterAll(async () => {
    if (host) await kill9(host);
    dir.cleanup();
  });

  it(`keeps every acknowledged write through ${KILLS} kill -9s, and never reuses a revision`, async () => {
    /** key → value and revision of its acknowledged put. */
    const acked = new Map<string, { value: string; revision: number }>();
    const deleted = new Set<string>();
    /** Every revision ever acknowledged, in the order acknowledgements arrived. */
    const revisions: number[] = [];
    let maxAcked = 0;
    let n = 0;
    for (let round = 0; round < KILLS; round++) {
      host = await startHost(dir.path);
      const client = new EmbeddedClient(socketPathFor(dir.path), readToken(dir.path, 'admin'));
      // After the restart: everything acknowledged before is there, with its value and its revision.
      const { items, revision } = await client.list('k/');
      const present = new Map(items.map((kv) => [kv.key, kv]));
      for (const [key, want] of acked) {
        const got = present.get(key);
        expect(got, `round ${round}: acknowledged ${key}`).toMatchObject({ value: want.value, modRevision: want.revision });
      }
      for (const key of deleted) expect(present.has(key), `round ${round}: acknowledged delete of ${key}`).toBe(false);
      expect(revision).toBeGreaterThanOrEqual(maxAcked);
      const maxBefore = maxAcked;
      let roundAcks = 0;
      const fresh = (rev: number) => {
        roundAcks++;
        // Revisions only grow: nothing acknowledged after a restart may reuse one from before it.
        if (rev <= maxBefore) throw new Error(`round ${round}: revision ${rev} acknowledged again (highest before: ${maxBefore})`);
        revisions.push(rev);
        maxAcked = Math.max(maxAcked, rev);
        return rev;
      };

      let stop = false;
      const writer = async (w: number) => {
        while (!stop) {
          const i = n++;
          const key = `k/${round}-${w}-${i}`;
          const value = `v${i}-${Math.random().toString(36).slice(2)}`;
          try {
            if (i % 7 === 6 && acked.size > 0) {
              // Now and then delete an acknowledged key (one transaction with a put: both or neither).
              const victim = [...acked.keys()][i % acked.size] as string;
              // Until acknowledged, the delete may or may not have happened: either state is right.
              acked.delete(victim);
              const res = await client.txn({
                compare: [],
                success: [
                  { type: 'delete', key: victim },
                  { type: 'put', key, value },
                ],
              });
              deleted.add(victim);
              acked.set(key, { value, revision: fresh(res.revision) });
            } else {
              acked.set(key, { value, revision: fresh(await client.put(key, value)) });
            }
          } catch (err) {
            if ((err as Error).message.includes('acknowledged again')) throw err;
            return; // the host died under us: this write was never acknowledged
          }
        }
      };
      const writers = Array.from({ length: WRITERS }, (_, w) => writer(w));
      // Kill at a random moment once this round has acknowledged a few writes (so every round tests something).
      await waitFor(() => roundAcks >= 5, { timeoutMs: 20_000, what: 'writes to be acknowledged' });
      await sleep(Math.random() * 150);
      await kill9(host);
      stop = true;
      await Promise.all(writers);
      await client.close();
    }
    // Acknowledged revisions are unique: a reused revision would show up twice.
    expect(new Set(revisions).size).toBe(revisions.length);
    expect(revisions.length).toBeGreaterThanOrEqual(KILLS * 5);
    console.info(`registry crash test: ${revisions.length} acknowledged writes across ${KILLS} SIGKILLs`);
  }, 120_000);
});
