/**
 * CPU priority for timing-sensitive integration tests on a shared machine. On a real network the gateway,
 * its replicas and a client each have a machine of their own; here they share two cores with the test
 * runner, the attackers and other test runs. The attack suite measured the gateway's main thread waiting
 * on the run queue for as long as it ran (0.9 s for 0.7 s of CPU in a 4 s attack, load average 5–11):
 * the probe's p99 then measured the neighbours, not the gateway. Processes of the system under test are
 * started in sessions of their own (so, on kernels with autogroups, in scheduling groups of their own)
 * and given a raised priority, then real-time round-robin scheduling; attackers run at the lowest
 * (test/helpers/attack.ts). Work the gateway does itself still delays the probe exactly as before: only
 * other processes' work no longer does.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';

/** Nice value of the system under test (weight ~9.3× a default process's). */
export const RAISED = -10;

/**
 * Raises a process's priority: its autogroup's (what counts between sessions when autogroups are on) and
 * its own (what counts otherwise). Needs CAP_SYS_NICE (root); returns false where it is not permitted,
 * and the test then runs at the default priority.
 */
export function raisePriority(pid: number): boolean {
  let raised = false;
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(RAISED));
    raised = true;
  } catch {
    // No autogroups on this kernel, or not permitted.
  }
  try {
    setPriority(pid, RAISED);
    raised = true;
  } catch {
    // Not permitted.
  }
  raiseToRealtime(pid);
  return raised;
}

/**
 * Round-robin real-time scheduling (lowest RT priority) for every thread of a process. A raised nice value
 * shortens its waits but does not end them: with other tenants' work keeping both cores busy, the gateway
 * still waited on the run queue about as long as it ran (0.3–0.9 s per 4–6 s attack) and, now and then, for
 * hundreds of milliseconds at a stretch — the probe's p99 measured the neighbours again. A real-time
 * process runs as soon as it is woken, the way a machine of its own would run it; it only ever runs when
 * woken by its own I/O, and the kernel's RT throttling (95 % of each second) bounds it if it spins.
 * Best effort: false where chrt or the permission is missing.
 */
function raiseToRealtime(pid: number): boolean {
  try {
    execFileSync('chrt', ['--rr', '--all-tasks', '--pid', '1', String(pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
