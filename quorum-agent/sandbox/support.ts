/**
 * What this host offers for sandboxing, found once at agent start, and the policy that follows from it:
 * a host that can sandbox runs every instance sandboxed; one that cannot runs only the instances the
 * operator vouches for (`--trusted-owner KEY`), or everything if the operator says so (`--allow-unsandboxed`).
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, lstatSync, readlinkSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { ETC_ENTRIES, type SandboxTools, type SystemLayout } from './bwrap.js';
import { type CgroupLayout, readLayout } from './cgroups.js';

export type SandboxSupport =
  | { ok: true; tools: SandboxTools; bwrapVersion: string; cgroups: CgroupLayout; system: SystemLayout }
  | { ok: false; reason: string };

const TOOL_PACKAGES: Record<keyof SandboxTools, string> = {
  bwrap: 'bubblewrap',
  setpriv: 'util-linux',
  bash: 'bash',
  socat: 'socat',
  setsid: 'util-linux',
  nsenter: 'util-linux',
};

function which(bin: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/bin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (!dir.startsWith('/')) continue;
    const path = join(dir, bin);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** The host's root as a sandbox mirrors it: merged-/usr symlinks, /etc entries present, Node.js outside /usr. */
export function systemLayout(execPath = process.execPath): SystemLayout {
  const topLevel: SystemLayout['topLevel'] = [];
  for (const name of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
    try {
      const st = lstatSync(`/${name}`);
      if (st.isSymbolicLink()) topLevel.push({ name, symlink: readlinkSync(`/${name}`) });
      else if (st.isDirectory()) topLevel.push({ name });
    } catch {
      /* absent */
    }
  }
  const etc = ETC_ENTRIES.map((e) => `/etc/${e}`).filter((p) => existsSync(p));
  // A Node.js installed outside /usr (nvm, /opt) is made visible read-only, or `node server.js` would fail.
  const prefix = dirname(dirname(execPath));
  const extraRo = prefix.startsWith('/usr/') || prefix === '/usr' || prefix === '/' ? [] : [prefix];
  return { topLevel, etc, extraRo };
}

/**
 * Probes the host. Synchronous and quick (one throwaway sandbox, ~10 ms). `ALLEGRA_SANDBOX=off` makes a
 * host that could sandbox behave as one that cannot (development, and tests of the refusal path): it can
 * only make a node refuse more, never run a tenant unsandboxed without --trusted-owner/--allow-unsandboxed.
 */
export function probeSandbox(): SandboxSupport {
  if (process.env.ALLEGRA_SANDBOX === 'off') return { ok: false, reason: 'sandboxing turned off by ALLEGRA_SANDBOX=off' };
  if (process.platform !== 'linux') return { ok: false, reason: `sandboxing needs Linux (this is ${process.platform})` };
  if (process.getuid?.() !== 0)
    return { ok: false, reason: 'the agent is not running as root, so it cannot switch replicas to their own uids' };
  const found: Partial<SandboxTools> = {};
  const missing: string[] = [];
  for (const tool of Object.keys(TOOL_PACKAGES) as Array<keyof SandboxTools>) {
    const path = which(tool);
    if (path) found[tool] = path;
    else missing.push(`${tool} (Debian package ${TOOL_PACKAGES[tool]})`);
  }
  if (missing.length > 0) return { ok: false, reason: `missing ${missing.join(', ')}` };
  const tools = found as SandboxTools;
  const version = spawnSync(tools.bwrap, ['--version'], { encoding: 'utf8', timeout: 5_000 });
  const bwrapVersion = version.stdout?.trim().replace(/^bubblewrap\s+/, '') ?? '';
  if (version.status !== 0) return { ok: false, reason: `${tools.bwrap} --version failed: ${version.stderr?.trim()}` };
  const cgroups = readLayout();
  if ('error' in cgroups) return { ok: false, reason: cgroups.error };
  const system = systemLayout();
  const argv = ['--die-with-parent', '--unshare-pid', '--unshare-net', '--unshare-ipc', '--unshare-uts', '--ro-bind', '/usr', '/usr'];
  for (const t of system.topLevel)
    argv.push(...(t.symlink ? ['--symlink', t.symlink, `/${t.name}`] : ['--ro-bind', `/${t.name}`, `/${t.name}`]));
  argv.push(
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    tools.setpriv,
    '--reuid=65534',
    '--regid=65534',
    '--clear-groups',
    '--no-new-privs',
    '--',
    'true',
  );
  const trial = spawnSync(tools.bwrap, argv, { encoding: 'utf8', timeout: 10_000, env: { PATH: '/usr/bin:/bin' } });
  if (trial.status !== 0)
    return {
      ok: false,
      reason: `a trial sandbox failed (namespaces unavailable?): ${(trial.stderr || trial.error?.message || '').trim()}`,
    };
  return { ok: true, tools, bwrapVersion, cgroups, system };
}

export interface SandboxPolicyOptions {
  /** Run every instance unsandboxed when the host cannot sandbox (loud warning at start). */
  allowUnsandboxed?: boolean;
  /** Owners (hex public keys) whose instances may run unsandboxed when the host cannot sandbox. */
  trustedOwners?: string[];
}

export type Placement = { mode: 'sandbox' } | { mode: 'host' } | { mode: 'refuse'; reason: string };

/** Where an owner's replica runs on this host. */
export function placement(support: SandboxSupport, policy: SandboxPolicyOptions, owner: string): Placement {
  if (support.ok) return { mode: 'sandbox' };
  if (policy.allowUnsandboxed || policy.trustedOwners?.includes(owner)) return { mode: 'host' };
  return {
    mode: 'refuse',
    reason: `this node cannot sandbox replicas (${support.reason}) and runs only its operator's trusted owners' instances`,
  };
}

/** One log line's worth of what the host offers. */
export function describeSupport(support: SandboxSupport): Record<string, unknown> {
  if (!support.ok) return { sandbox: false, reason: support.reason };
  const c = support.cgroups;
  return {
    sandbox: true,
    bwrap: support.bwrapVersion,
    cgroup: c.version === 1 ? { version: 1, ...c.dirs } : { version: 2, dir: c.dir },
  };
}
