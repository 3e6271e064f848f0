import { describe, expect, it } from 'vitest';
import {
  type CgroupLayout,
  detectLayout,
  limitWrites,
  parseMountinfo,
  parseProcCgroup,
  replicaDirs,
  scopeName,
  scopeOwner,
  sharesToWeight,
} from '../../../quorum-agent/sandbox/cgroups.js';

// As on this project's machines: cgroup v1 controllers, the agent nested in a memory cgroup, cgroup2 mounted without controllers.
const V1_CGROUP = `9:name=systemd:/
8:pids:/
5:devices:/
4:memory:/process_api/a731e
2:cpuacct,cpu:/
0::/`;
const V1_MOUNTS = `30 25 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`;

// A systemd host on cgroup v2, the agent in a delegated service cgroup.
const V2_CGROUP = '0::/system.slice/allegra-agent.service\n';
const V2_MOUNTS = `25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot`;

describe('cgroup path logic', () => {
  it('parses /proc/self/cgroup lines, including comma-joined v1 controllers and the v2 line', () => {
    const m = parseProcCgroup(V1_CGROUP);
    expect(m.get('memory')).toBe('/process_api/a731e');
    expect(m.get('cpu')).toBe('/');
    expect(m.get('cpuacct')).toBe('/');
    expect(m.get('')).toBe('/');
  });

  it('parses mountinfo with optional fields and octal escapes', () => {
    const [m] = parseMountinfo('40 30 0:37 /a\\040b /mnt/x\\040y rw shared:1 master:2 - cgroup cgroup rw,pids');
    expect(m).toEqual({ root: '/a b', mountPoint: '/mnt/x y', fsType: 'cgroup', superOptions: ['rw', 'pids'] });
  });

  it('v1: finds each controller’s hierarchy (cpu shares a mount with cpuacct) and the agent’s nested position', () => {
    const layout = detectLayout(V1_CGROUP, V1_MOUNTS, () => '');
    expect(layout).toEqual({
      version: 1,
      dirs: { memory: '/sys/fs/cgroup/memory/process_api/a731e', pids: '/sys/fs/cgroup/pids', cpu: '/sys/fs/cgroup/cpu,cpuacct' },
    });
    expect(replicaDirs(layout as CgroupLayout, 'allegra-n-1', 'i-1.0.ab')).toEqual([
      '/sys/fs/cgroup/memory/process_api/a731e/allegra-n-1/i-1.0.ab',
      '/sys/fs/cgroup/pids/allegra-n-1/i-1.0.ab',
      '/sys/fs/cgroup/cpu,cpuacct/allegra-n-1/i-1.0.ab',
    ]);
  });

  it('v1 in a container whose mount root is the container’s own cgroup: the root is not repeated', () => {
    const mounts =
      '33 30 0:30 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n38 30 0:35 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n31 30 0:28 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu';
    const layout = detectLayout('4:memory:/docker/abc/agent\n8:pids:/docker/abc\n1:cpu:/docker/abc', mounts, () => '');
    expect(layout).toEqual({
      version: 1,
      dirs: { memory: '/sys/fs/cgroup/memory/agent', pids: '/sys/fs/cgroup/pids', cpu: '/sys/fs/cgroup/cpu' },
    });
  });

  it('v2: uses the unified hierarchy when it offers memory, pids and cpu', () => {
    const asked: string[] = [];
    const layout = detectLayout(V2_CGROUP, V2_MOUNTS, (dir) => {
      asked.push(dir);
      return 'cpuset cpu io memory hugetlb pids rdma misc';
    });
    expect(layout).toEqual({ version: 2, dir: '/sys/fs/cgroup/system.slice/allegra-agent.service' });
    expect(asked[0]).toBe('/sys/fs/cgroup/system.slice');
    expect(replicaDirs(layout as CgroupLayout, 'allegra-n-1', 'r')).toEqual([
      '/sys/fs/cgroup/system.slice/allegra-agent.service/allegra-n-1/r',
    ]);
  });

  it('says what is missing when neither version has the three controllers', () => {
    const layout = detectLayout(V2_CGROUP, V2_MOUNTS, () => 'cpu io');
    expect(layout).toEqual({ error: 'cgroup v2 at /sys/fs/cgroup/system.slice/allegra-agent.service does not offer memory, pids' });
    // This machine's cgroup2 mount has no controllers, but v1 has them all: v1 wins.
    expect('version' in detectLayout(V1_CGROUP, V1_MOUNTS, () => '')).toBe(true);
    expect(detectLayout('', '', () => undefined)).toEqual({ error: expect.stringMatching(/no cgroup hierarchy/) });
  });

  it('writes v1 limits (memsw only where swap accounting exists, after the RAM limit) and v2 limits with a group OOM kill', () => {
    const v1 = detectLayout(V1_CGROUP, V1_MOUNTS, () => '') as CgroupLayout;
    const dirs1 = replicaDirs(v1, 's', 'r');
    const limits = { memoryMb: 64, pids: 100, cpuShares: 512 };
    expect(limitWrites(v1, dirs1, limits, () => true)).toEqual([
      [`${dirs1[0]}/memory.limit_in_bytes`, String(64 * 1024 * 1024)],
      [`${dirs1[0]}/memory.memsw.limit_in_bytes`, String(64 * 1024 * 1024)],
      [`${dirs1[1]}/pids.max`, '100'],
      [`${dirs1[2]}/cpu.shares`, '512'],
    ]);
    expect(limitWrites(v1, dirs1, limits, () => false).map(([f]) => f.split('/').pop())).toEqual([
      'memory.limit_in_bytes',
      'pids.max',
      'cpu.shares',
    ]);
    const v2: CgroupLayout = { version: 2, dir: '/sys/fs/cgroup/a' };
    const [d] = replicaDirs(v2, 's', 'r');
    expect(limitWrites(v2, [d as string], limits, () => true)).toEqual([
      [`${d}/memory.max`, String(64 * 1024 * 1024)],
      [`${d}/memory.swap.max`, '0'],
      [`${d}/memory.oom.group`, '1'],
      [`${d}/pids.max`, '100'],
      [`${d}/cpu.weight`, String(sharesToWeight(512))],
    ]);
  });

  it('converts cpu.shares to cpu.weight like runc (1024 → about 39, 2 → 1, 262144 → 10000)', () => {
    expect(sharesToWeight(2)).toBe(1);
    expect(sharesToWeight(262_144)).toBe(10_000);
    expect(sharesToWeight(1024)).toBe(40);
  });

  it('names an agent’s scope after its node and pid, so a dead agent’s scope is recognisable', () => {
    expect(scopeName('n-1a2b', 4242)).toBe('allegra-n-1a2b-4242');
    expect(scopeOwner('allegra-n-1a2b-4242')).toBe(4242);
    expect(scopeOwner('allegra-n-1a2b')).toBeUndefined();
    expect(scopeOwner('process_api')).toBeUndefined();
  });
});
