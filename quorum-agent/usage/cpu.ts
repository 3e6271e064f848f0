/**
 * CPU time of a running replica. cgroup v2 counts it for the replica's cgroup (`cpu.stat` usage_usec);
 * under v1 the replica's cgroups have no cpuacct, so the counters of its processes are summed (utime +
 * stime, and cutime + cstime for the children they reaped: an exited process's time is kept by whoever
 * reaped it, inside the sandbox). Unsandboxed replicas: the counters of the replica's own process.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on Linux). */
const TICKS = 100;

export function processCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the name: state(0) … utime(11) stime(12) cutime(13) cstime(14).
    return [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0) / TICKS;
  } catch {
    return 0;
  }
}

export function cgroupCpuSeconds(procsFile: string): number {
  try {
    const m = /^usage_usec (\d+)$/m.exec(readFileSync(join(dirname(procsFile), 'cpu.stat'), 'utf8'));
    if (m) return Number(m[1]) / 1e6;
  } catch {
    /* v1: no usage in cpu.stat */
  }
  try {
    const pids = readFileSync(procsFile, 'utf8').split('\n').filter(Boolean).map(Number);
    return pids.reduce((sum, pid) => sum + processCpuSeconds(pid), 0);
  } catch {
    return 0;
  }
}
