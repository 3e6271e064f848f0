/**
 * cgroup limits for replicas (memory, pids, CPU weight), v1 or v2. The replica cgroups sit under the agent's
 * own position in each hierarchy (read from /proc/self/cgroup), in a scope of their own per agent, so the
 * agent's own limits contain them and several agents on one host never collide:
 *
 *   v1:  <memory mount>/<agent's memory path>/allegra-<node>/<replica>    (and the same under pids, cpu)
 *   v2:  <unified mount>/<agent's path>/allegra-<node>/<replica>
 *
 * The path logic is pure (parse functions below, unit-tested for both versions); the rest writes files.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join, posix } from 'node:path';

export type Controller = 'memory' | 'pids' | 'cpu';
export const CONTROLLERS: readonly Controller[] = ['memory', 'pids', 'cpu'];

export interface Mount {
  /** The part of the hierarchy mounted here (not `/` inside some containers). */
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

/** `/proc/self/mountinfo` → mounts (fields: id parent dev root mountpoint opts [optional…] - fstype source superopts). */
export function parseMountinfo(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(' ');
    const dash = fields.indexOf('-');
    if (dash < 6 || fields.length < dash + 3) continue;
    mounts.push({
      root: unescapeMount(fields[3] as string),
      mountPoint: unescapeMount(fields[4] as string),
      fsType: fields[dash + 1] as string,
      superOptions: (fields[dash + 3] ?? '').split(','),
    });
  }
  return mounts;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** `/proc/self/cgroup` → controller (or '' for the v2 unified line) → path. */
export function parseProcCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    const names = m[1] as string;
    if (names === '') out.set('', m[2] as string);
    else for (const name of names.split(',')) out.set(name, m[2] as string);
  }
  return out;
}

/** Where the agent itself sits: one directory per controller (v1) or one directory (v2). */
export type CgroupLayout = { version: 1; dirs: Record<Controller, string> } | { version: 2; dir: string };

/** Joins a mount point and a cgroup path, taking the mount's own root off the path (cgroup namespaces, containers). */
function underMount(mount: Mount, path: string): string {
  const rel = mount.root !== '/' && (path === mount.root || path.startsWith(`${mount.root}/`)) ? path.slice(mount.root.length) : path;
  const dir = posix.join(mount.mountPoint, rel);
  return dir.length > 1 && dir.endsWith('/') ? dir.slice(0, -1) : dir;
}

/**
 * Finds the agent's cgroup directories. v1 when memory, pids and cpu each have a v1 hierarchy (hybrid hosts
 * keep their controllers there); else v2 when the unified hierarchy offers all three. `readControllers`
 * returns the contents of a v2 directory's cgroup.controllers.
 */
export function detectLayout(
  procCgroup: string,
  mountinfo: string,
  readControllers: (dir: string) => string | undefined,
): CgroupLayout | { error: string } {
  const mounts = parseMountinfo(mountinfo);
  const paths = parseProcCgroup(procCgroup);
  const v1: Partial<Record<Controller, string>> = {};
  for (const c of CONTROLLERS) {
    const mount = mounts.find((m) => m.fsType === 'cgroup' && m.superOptions.includes(c));
    const path = paths.get(c);
    if (mount && path !== undefined) v1[c] = underMount(mount, path);
  }
  if (CONTROLLERS.every((c) => v1[c] !== undefined)) return { version: 1, dirs: v1 as Record<Controller, string> };
  const unified = mounts.find((m) => m.fsType === 'cgroup2');
  const path = paths.get('');
  if (unified && path !== undefined) {
    const dir = underMount(unified, path);
    // The agent's own cgroup may not offer a controller its parent does not delegate: check at its parent,
    // which is where the agent enables them for its children.
    const offered = (readControllers(posix.dirname(dir)) ?? readControllers(dir) ?? '').split(/\s+/);
    const missing = CONTROLLERS.filter((c) => !offered.includes(c));
    if (missing.length === 0) return { version: 2, dir };
    const found = CONTROLLERS.filter((c) => v1[c] !== undefined);
    return {
      error: `cgroup v2 at ${dir} does not offer ${missing.join(', ')}${found.length ? ` (v1 has only ${found.join(', ')})` : ''}`,
    };
  }
  return { error: 'no cgroup hierarchy with the memory, pids and cpu controllers is mounted' };
}

/** The directories of one replica's cgroup (one per v1 hierarchy, or one). */
export function replicaDirs(layout: CgroupLayout, scope: string, name: string): string[] {
  return layout.version === 1 ? CONTROLLERS.map((c) => posix.join(layout.dirs[c], scope, name)) : [posix.join(layout.dir, scope, name)];
}

export function scopeDirs(layout: CgroupLayout, scope: string): string[] {
  return layout.version === 1 ? CONTROLLERS.map((c) => posix.join(layout.dirs[c], scope)) : [posix.join(layout.dir, scope)];
}

export interface Limits {
  memoryMb: number;
  pids: number;
  cpuShares: number;
}

/** cgroup v1 cpu.shares (2…262144, 1024 default) → v2 cpu.weight (1…10000, 100 default), as runc and systemd convert. */
export function sharesToWeight(shares: number): number {
  const s = Math.min(Math.max(shares, 2), 262_144);
  return Math.round(1 + ((s - 2) * 9_999) / 262_142);
}

/** The files to write, in order, to apply `limits` to a replica cgroup: [file, value]. */
export function limitWrites(layout: CgroupLayout, dirs: string[], limits: Limits, has: (file: string) => boolean): Array<[string, string]> {
  const bytes = String(limits.memoryMb * 1024 * 1024);
  if (layout.version === 1) {
    const [memory, pids, cpu] = dirs as [string, string, string];
    const writes: Array<[string, string]> = [[join(memory, 'memory.limit_in_bytes'), bytes]];
    // No swap past the limit where swap accounting exists (memsw must be set after, and >=, the RAM limit).
    if (has(join(memory, 'memory.memsw.limit_in_bytes'))) writes.push([join(memory, 'memory.memsw.limit_in_bytes'), bytes]);
    writes.push([join(pids, 'pids.max'), String(limits.pids)], [join(cpu, 'cpu.shares'), String(limits.cpuShares)]);
    return writes;
  }
  const [dir] = dirs as [string];
  const writes: Array<[string, string]> = [[join(dir, 'memory.max'), bytes]];
  if (has(join(dir, 'memory.swap.max'))) writes.push([join(dir, 'memory.swap.max'), '0']);
  // An OOM kill takes the whole replica, not one of its processes.
  if (has(join(dir, 'memory.oom.group'))) writes.push([join(dir, 'memory.oom.group'), '1']);
  writes.push([join(dir, 'pids.max'), String(limits.pids)], [join(dir, 'cpu.weight'), String(sharesToWeight(limits.cpuShares))]);
  return writes;
}

export function readLayout(): CgroupLayout | { error: string } {
  try {
    return detectLayout(readFileSync('/proc/self/cgroup', 'utf8'), readFileSync('/proc/self/mountinfo', 'utf8'), (dir) => {
      try {
        return readFileSync(join(dir, 'cgroup.controllers'), 'utf8');
      } catch {
        return undefined;
      }
    });
  } catch (err) {
    return { error: `cannot read the agent's cgroups: ${(err as Error).message}` };
  }
}

/** The scope name of an agent: `allegra-<node>-<pid>`. */
export function scopeName(nodeId: string, pid = process.pid): string {
  return `allegra-${nodeId}-${pid}`;
}

/** The pid of the agent that owns a scope, if `name` is one. */
export function scopeOwner(name: string): number | undefined {
  const m = /^allegra-.+-(\d+)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function pidsIn(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * The agent's scope of replica cgroups (`allegra-<node>` under its own cgroup). Creating it checks that
 * cgroups can be written at all; leftovers of an earlier run of the same agent (one that was SIGKILLed)
 * are killed and removed, so nothing of a dead agent's replicas survives its restart.
 */
export class CgroupScope {
  constructor(
    readonly layout: CgroupLayout,
    readonly scope: string,
  ) {}

  /**
   * Creates the scope (enabling the v2 controllers on the way) and clears leftovers: its own, and the scopes
   * of agents on this host that died without removing theirs (a scope is named `allegra-<node>-<pid>`, so
   * a dead owner is recognisable). Nothing of a SIGKILLed agent's replicas outlives the next agent start.
   */
  async open(): Promise<void> {
    if (this.layout.version === 2) this.enableV2(this.layout.dir);
    await this.removeDeadScopes();
    for (const dir of scopeDirs(this.layout, this.scope)) mkdirSync(dir, { recursive: true });
    if (this.layout.version === 2) writeFileSync(join(this.layout.dir, this.scope, 'cgroup.subtree_control'), '+memory +pids +cpu');
    for (const name of this.children()) await this.remove(name);
  }

  private async removeDeadScopes(): Promise<void> {
    const parents =
      this.layout.version === 1 ? CONTROLLERS.map((c) => (this.layout as { dirs: Record<Controller, string> }).dirs[c]) : [this.layout.dir];
    for (const parent of parents) {
      let names: string[] = [];
      try {
        names = readdirSync(parent, { withFileTypes: true })
          .filter((d) => d.isDirectory())
          .map((d) => d.name);
      } catch {
        continue;
      }
      for (const name of names) {
        const owner = scopeOwner(name);
        if (owner === undefined || name === this.scope || processExists(owner)) continue;
        const dead = new CgroupScope(this.layout, name);
        for (const child of dead.children()) await dead.remove(child);
        for (const dir of scopeDirs(this.layout, name)) {
          try {
            rmdirSync(dir);
          } catch {
            /* gone, or busy: the next start tries again */
          }
        }
      }
    }
  }

  /**
   * v2 lets a cgroup hand controllers to children only while it holds no processes itself: the agent moves
   * itself into a leaf `agent` beside its replicas' scope first (as container runtimes do in a delegated
   * cgroup). When other processes share the agent's cgroup this fails, and the agent says so.
   */
  private enableV2(dir: string): void {
    const control = join(dir, 'cgroup.subtree_control');
    if (
      readFileSync(control, 'utf8')
        .split(/\s+/)
        .filter((c) => CONTROLLERS.includes(c as Controller)).length === CONTROLLERS.length
    )
      return;
    if (pidsIn(dir).length > 0) {
      mkdirSync(join(dir, 'agent'), { recursive: true });
      writeFileSync(join(dir, 'agent', 'cgroup.procs'), String(process.pid));
    }
    try {
      writeFileSync(control, '+memory +pids +cpu');
    } catch (err) {
      throw new Error(
        `cannot enable memory, pids and cpu for children of ${dir} (${(err as NodeJS.ErrnoException).code}): run the agent in a cgroup of its own, e.g. systemd Delegate=yes`,
      );
    }
  }

  /** Removes the scope itself (the agent is stopping; its replicas are gone). */
  async close(): Promise<void> {
    for (const name of this.children()) await this.remove(name);
    for (const dir of scopeDirs(this.layout, this.scope)) {
      try {
        rmdirSync(dir);
      } catch {
        /* busy or gone: the next start of this agent clears it */
      }
    }
  }

  children(): string[] {
    const [first] = scopeDirs(this.layout, this.scope) as [string];
    try {
      return readdirSync(first, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name);
    } catch {
      return [];
    }
  }

  /** CPU shares of the replicas in the scope, which the scope itself gets in sum (see weighScope). */
  private readonly shares = new Map<string, number>();

  /** Creates one replica's cgroup with its limits; returns the `cgroup.procs` files a process joins. */
  create(name: string, limits: Limits): string[] {
    const dirs = replicaDirs(this.layout, this.scope, name);
    for (const dir of dirs) mkdirSync(dir, { recursive: false });
    try {
      for (const [file, value] of limitWrites(this.layout, dirs, limits, existsSync)) writeFileSync(file, value);
      this.shares.set(name, limits.cpuShares);
      this.weighScope();
    } catch (err) {
      void this.remove(name);
      throw err;
    }
    return dirs.map((d) => join(d, 'cgroup.procs'));
  }

  /**
   * The scope competes with its siblings (the host's other processes) as one group: at the default weight,
   * all of an agent's replicas together would get the CPU of one process. It weighs the sum of its
   * replicas' shares instead, so a replica stands as it would on its own.
   */
  private weighScope(): void {
    const sum = Math.min(
      Math.max(
        [...this.shares.values()].reduce((a, b) => a + b, 0),
        1024,
      ),
      262_144,
    );
    const [, , cpu] = scopeDirs(this.layout, this.scope);
    const file =
      this.layout.version === 1 ? join(cpu as string, 'cpu.shares') : join(scopeDirs(this.layout, this.scope)[0] as string, 'cpu.weight');
    try {
      writeFileSync(file, String(this.layout.version === 1 ? sum : sharesToWeight(sum)));
    } catch {
      /* the default weight stays: slower under contention, still correct */
    }
  }

  pids(name: string): number[] {
    return [...new Set(replicaDirs(this.layout, this.scope, name).flatMap(pidsIn))];
  }

  /** Kills every process of a replica cgroup (the backstop behind the pid namespace). */
  kill(name: string): void {
    const dirs = replicaDirs(this.layout, this.scope, name);
    if (this.layout.version === 2 && existsSync(join(dirs[0] as string, 'cgroup.kill'))) {
      try {
        writeFileSync(join(dirs[0] as string, 'cgroup.kill'), '1');
      } catch {
        /* already gone */
      }
      return;
    }
    // v1 has no cgroup.kill: signal until empty. A fork bomb is bounded by pids.max, and the processes
    // of a pid namespace whose init died are killed by the kernel anyway.
    for (let round = 0; round < 50; round++) {
      const pids = this.pids(name);
      if (pids.length === 0) return;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
  }

  /** Kills what is left and removes the replica's cgroup directories. Returns false if one stayed busy. */
  async remove(name: string): Promise<boolean> {
    if (this.shares.delete(name)) this.weighScope();
    this.kill(name);
    let ok = true;
    for (const dir of replicaDirs(this.layout, this.scope, name)) {
      for (let attempt = 0; ; attempt++) {
        try {
          rmdirSync(dir);
          break;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') break;
          // Killed processes leave the cgroup a moment after the signal.
          if (code === 'EBUSY' && attempt < 200) {
            this.kill(name);
            await new Promise((r) => setTimeout(r, 5));
            continue;
          }
          ok = false;
          break;
        }
      }
    }
    return ok;
  }
}
