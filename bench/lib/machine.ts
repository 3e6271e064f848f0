/** Machine and peer-version facts for RESULTS.md. */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './paths.js';
import { findBinary } from './proc.js';

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  node: string;
  versions: Record<string, string>;
}

function firstLine(bin: string, args: string[]): string {
  const path = findBinary(bin);
  if (!path) return 'not installed';
  const r = spawnSync(path, args, { encoding: 'utf8' });
  const text = `${r.stdout ?? ''}\n${r.stderr ?? ''}`;
  return (
    text
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l.length > 0) ?? 'unknown'
  );
}

function npmVersion(pkg: string): string {
  try {
    const json = JSON.parse(readFileSync(join(repoRoot(), 'node_modules', pkg, 'package.json'), 'utf8')) as {
      version?: string;
    };
    return json.version ?? 'unknown';
  } catch {
    return 'not installed';
  }
}

function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) return line.split(':').slice(1).join(':').trim();
  } catch {
    /* not Linux */
  }
  return os.cpus()[0]?.model ?? 'unknown';
}

export function machineInfo(): MachineInfo {
  return {
    cpuModel: cpuModel(),
    cores: os.cpus().length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    versions: {
      nginx: firstLine('nginx', ['-v']).replace(/^nginx version:\s*/, ''),
      haproxy: firstLine('haproxy', ['-v']).replace(/ - https?:.*$/, ''),
      wrk: firstLine('wrk', ['-v']).replace(/\s+Copyright.*$/, ''),
      taskset: firstLine('taskset', ['--version']),
      autocannon: npmVersion('autocannon'),
      'http-proxy': npmVersion('http-proxy'),
      fastify: npmVersion('fastify'),
      '@fastify/reply-from': npmVersion('@fastify/reply-from'),
      undici: npmVersion('undici'),
    },
  };
}

function cpuTimes(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
    const total = v.reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

/** Share of all cores' time spent busy over the next `ms` (NaN where /proc/stat is unavailable). */
export async function cpuBusyPercent(ms = 1000): Promise<number> {
  const a = cpuTimes();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const b = cpuTimes();
  if (!a || !b || b.total === a.total) return Number.NaN;
  return (100 * (b.busy - a.busy)) / (b.total - a.total);
}
