/**
 * `allegra logs NAME [--follow] [--since DURATION]`: every replica's stdout and stderr from every quorum
 * member, merged by time, each line labelled with its member and replica. `--json` prints one document
 * (`{"lines": […]}`); with `--follow` it prints one JSON object per line instead, as lines arrive.
 */
import { client, type GlobalOpts, instancePath } from './instance-commands.js';
import { CliError, type Output } from './output.js';

interface ApiLogLine {
  t: number;
  node: string;
  replica: number;
  stream: 'out' | 'err';
  line: string;
}

const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `30s`, `10m`, `2h`, `1d` before now, or an ISO date: the time in milliseconds. */
export function parseSince(value: string, now = Date.now()): number {
  const m = /^(\d+)([smhd])$/.exec(value.trim());
  if (m) return now - Number(m[1]) * (UNITS[m[2] as string] as number);
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new CliError(`--since expects a duration like 30s, 10m, 2h, 1d or a date (got "${value}")`, 2);
  return t;
}

function format(l: ApiLogLine): string {
  return `${new Date(l.t).toISOString()} ${l.node}/${l.replica} ${l.stream === 'err' ? 'err' : 'out'} | ${l.line}`;
}

export async function logsCommand(
  name: string,
  opts: { follow?: boolean; since?: string; tail?: string },
  g: GlobalOpts,
  out: Output,
): Promise<void> {
  const since = opts.since ? parseSince(opts.since) : 0;
  const limit = opts.tail === undefined ? 1000 : Number(opts.tail);
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new CliError('--tail expects a number of lines from 1 to 10000', 2);
  const path = instancePath(name, `/logs?since=${Math.floor(since)}&limit=${limit}${opts.follow ? '&follow=1' : ''}`);
  const res = await client(g).send({ method: 'GET', path, timeoutMs: opts.follow ? 0 : 30_000 });
  if (res.statusCode !== 200) {
    // The same one-line error as every other command.
    const text = await res.body.text();
    let message = `logs of ${name} failed with HTTP ${res.statusCode}`;
    try {
      message = (JSON.parse(text) as { error: { message: string } }).error.message;
    } catch {
      /* not an error body */
    }
    throw new CliError(message, res.statusCode === 404 || res.statusCode === 403 || res.statusCode === 401 ? 3 : 1);
  }
  const collected: ApiLogLine[] = [];
  let buffered = '';
  res.body.setEncoding('utf8');
  for await (const chunk of res.body as AsyncIterable<string>) {
    buffered += chunk;
    const parts = buffered.split('\n');
    buffered = parts.pop() ?? '';
    for (const p of parts) {
      if (!p) continue;
      const l = JSON.parse(p) as ApiLogLine & { live?: boolean };
      if (l.live) continue;
      if (!opts.follow) collected.push(l);
      else process.stdout.write(out.json ? `${p}\n` : `${format(l)}\n`);
    }
  }
  if (!opts.follow)
    out.result({ lines: collected }, () => (collected.length === 0 ? `no output from ${name} yet` : collected.map(format).join('\n')));
}
