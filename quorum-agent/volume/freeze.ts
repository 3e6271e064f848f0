/**
 * Pauses every process of a replica while its volume is captured, so the snapshot is one instant of the
 * volume (what a power cut would have left, only better: no write is half done). That is what lets an app
 * whose files must agree with each other (SQLite's database and its journal or WAL) recover from a snapshot.
 *
 * SIGSTOP takes effect when a thread next returns to user space: a write() in progress finishes first, so no
 * file is caught in the middle of a syscall. The kernel delivers it even to the init of the replica's pid
 * namespace when it comes from the agent's (ancestor) namespace. Processes forked while the signals go out
 * are caught by listing again until the list is stable; the pause ends only once every thread of every
 * process is seen stopped.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Resumes what `freeze` stopped. */
export type Thaw = () => void;

/** The state letter of /proc/<pid>/task/<tid>/stat (after the parenthesised command name). */
export function statState(stat: string): string {
  const close = stat.lastIndexOf(')');
  return stat.slice(close + 2, close + 3);
}

/** Whether every thread of `pid` is stopped (or the process is gone). */
function stopped(pid: number): boolean {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return true; // exited
  }
  for (const tid of tids) {
    let state: string;
    try {
      state = statState(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'));
    } catch {
      continue;
    }
    if (!'TtZX'.includes(state)) return false;
  }
  return true;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

/**
 * Stops every process `list` names (and any it forks meanwhile) and resolves once all are stopped; rejects
 * (after resuming them) if they are not within `timeoutMs`. Never stops the agent itself.
 */
export async function freeze(list: () => number[], timeoutMs = 1_000): Promise<Thaw> {
  const held = new Set<number>();
  const thaw: Thaw = () => {
    for (const pid of held) signal(pid, 'SIGCONT');
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const fresh = list().filter((pid) => pid !== process.pid && pid > 1 && !held.has(pid));
    for (const pid of fresh) {
      held.add(pid);
      signal(pid, 'SIGSTOP');
    }
    const pending = [...held].filter((pid) => !stopped(pid));
    // Stable: nothing new appeared and everything is stopped (a stopped process forks nothing more).
    if (fresh.length === 0 && pending.length === 0) return thaw;
    if (Date.now() > deadline) {
      thaw();
      throw new Error(`the replica did not pause within ${timeoutMs} ms (${pending.length} processes still running)`);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Processes of process group `pgid` (an unsandboxed replica runs in one of its own). */
export function processGroup(pgid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid) out.push(Number(name));
    } catch {
      /* exited */
    }
  }
  return out;
}
