/** `allegra scale NAME --min N --max M [--target C] [--idle SECONDS] [--window SECONDS]` (CLI.md). */
import { AUTOSCALE } from '../protocol/schemas.js';
import type { InstanceSpec } from '../protocol/types.js';
import { client, type GlobalOpts } from './instance-commands.js';
import { CliError, type Output } from './output.js';

function whole(raw: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new CliError(`${flag} expects a whole number from ${min} to ${max} (got "${raw}")`, 2);
  return n;
}

export async function scaleCommand(
  name: string,
  opts: { min: string; max: string; target?: string; idle?: string; window?: string },
  g: GlobalOpts,
  out: Output,
): Promise<void> {
  const min = whole(opts.min, '--min', 0, 64) as number;
  const max = whole(opts.max, '--max', 1, 64) as number;
  if (min > max) throw new CliError(`--min ${min} exceeds --max ${max}`, 2);
  const body = {
    min,
    max,
    ...optional('target', whole(opts.target, '--target', AUTOSCALE.target.min, AUTOSCALE.target.max)),
    ...optional('idleSeconds', whole(opts.idle, '--idle', AUTOSCALE.idleSeconds.min, AUTOSCALE.idleSeconds.max)),
    ...optional('windowSeconds', whole(opts.window, '--window', AUTOSCALE.windowSeconds.min, AUTOSCALE.windowSeconds.max)),
  };
  const { instance } = await client(g).call<{ instance: InstanceSpec }>({
    method: 'POST',
    path: `/v1/instances/${encodeURIComponent(name)}/scale`,
    body: { json: body },
  });
  const a = instance.autoscale;
  out.result({ name, replicas: instance.replicas, autoscale: a ?? null, version: instance.version }, () => {
    const { min: lo, max: hi } = instance.replicas;
    if (lo === hi) return `${name}: ${lo} replica${lo === 1 ? '' : 's'} (fixed)`;
    const zero = lo === 0 ? `; scales to zero after ${a?.idleSeconds ?? AUTOSCALE.idleSeconds.default} s without traffic` : '';
    return `${name}: autoscaling ${lo}–${hi} replicas at ${a?.target ?? AUTOSCALE.target.default} requests in flight each${zero}`;
  });
}

function optional<K extends string>(key: K, value: number | undefined): Partial<Record<K, number>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, number>);
}
