/**
 * Reads the samples of the Prometheus text exposition format (version 0.0.4), the format gateways serve on
 * their admin port. Only what the UI's plots need: metric name, labels, value; comments and timestamps are
 * skipped. The few parsers on npm are unmaintained or pull in more than this, and the grammar of a sample line
 * is small: `name{label="value",…} value [timestamp]`, label values escaping `\\`, `\"` and `\n`.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Largest exposition read from one gateway: a gateway with a million routes is not plotted whole. */
export const MAX_EXPOSITION_BYTES = 8 * 1024 * 1024;

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/** Parses every sample line whose name `wanted` accepts; malformed lines are skipped, never fatal. */
export function parseSamples(text: string, wanted: (name: string) => boolean = () => true): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const name = NAME.exec(line)?.[0];
    if (!name || !wanted(name)) continue;
    const sample = parseLine(line, name);
    if (sample) out.push(sample);
  }
  return out;
}

function parseLine(line: string, name: string): Sample | undefined {
  let i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    while (line[i] !== '}') {
      while (line[i] === ' ' || line[i] === ',') i++;
      if (line[i] === '}') break;
      const label = LABEL_NAME.exec(line.slice(i))?.[0];
      if (!label || line[i + label.length] !== '=' || line[i + label.length + 1] !== '"') return undefined;
      i += label.length + 2;
      let value = '';
      for (;;) {
        const ch = line[i];
        if (ch === undefined) return undefined;
        i++;
        if (ch === '"') break;
        if (ch === '\\') {
          const next = line[i++];
          value += next === 'n' ? '\n' : (next ?? '');
        } else value += ch;
      }
      labels[label] = value;
    }
    i++;
  }
  const [valueText] = line.slice(i).trim().split(/\s+/);
  if (valueText === undefined || valueText === '') return undefined;
  const value = valueText === '+Inf' ? Number.POSITIVE_INFINITY : valueText === '-Inf' ? Number.NEGATIVE_INFINITY : Number(valueText);
  if (Number.isNaN(value) && valueText !== 'NaN') return undefined;
  return { name, labels, value };
}

/**
 * The q-quantile of a histogram from its cumulative bucket counts (`le` → count), interpolated linearly
 * inside the bucket as Prometheus' histogram_quantile does; undefined without observations.
 */
export function quantile(q: number, buckets: Map<number, number>): number | undefined {
  const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, count] of sorted) {
    if (count >= rank) {
      // The +Inf bucket has no upper bound: report the highest finite bound, like Prometheus.
      if (!Number.isFinite(le)) return lower;
      const inBucket = count - below;
      return inBucket <= 0 ? le : lower + ((le - lower) * (rank - below)) / inBucket;
    }
    lower = le;
    below = count;
  }
  return lower;
}
