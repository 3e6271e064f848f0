/**
 * Replica output, kept per replica slot with a bounded size: the agent reads each replica's stdout and
 * stderr through pipes, stamps every line with the time and its stream, and appends it as a JSON line to
 * `logs/<instance>/replica-<slot>.log`. Past `maxBytes` the file becomes `.1` (replacing the previous one),
 * so a replica never holds more than 2 × maxBytes of a node's disk, however much it prints. Lines longer
 * than `maxLine` are cut into pieces. Readers (`allegra logs`, the UI) get lines since a time, or follow.
 */
import { closeSync, existsSync, openSync, readSync, renameSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';

export interface LogLine {
  /** Milliseconds since the epoch, when the agent read the line. */
  t: number;
  /** `out` or `err`. */
  s: 'out' | 'err';
  m: string;
}

export interface LogLimits {
  maxBytes: number;
  maxLine: number;
}

export const DEFAULT_LOG_LIMITS: LogLimits = { maxBytes: 1024 * 1024, maxLine: 8 * 1024 };

/** The log file of one replica slot (the driver contract's `logFile`). */
export class ReplicaLogWriter {
  private fd: number | null = null;
  private size = 0;
  private readonly partial: Record<'out' | 'err', string> = { out: '', err: '' };

  constructor(
    readonly file: string,
    private readonly limits: LogLimits = DEFAULT_LOG_LIMITS,
  ) {}

  /** Reads a replica's output stream line by line until it ends. */
  attach(stream: Readable | null | undefined, source: 'out' | 'err'): void {
    if (!stream) return;
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => this.write(source, chunk));
    stream.on('end', () => this.flush(source));
    stream.on('error', () => this.flush(source));
  }

  /** Appends what a chunk completes; an unfinished last line waits for the next chunk (or the end). */
  write(source: 'out' | 'err', chunk: string, now = Date.now()): void {
    const text = this.partial[source] + chunk;
    const lines = text.split('\n');
    let rest = lines.pop() ?? '';
    // A line that never ends is cut, so one replica cannot make the agent buffer without bound.
    while (rest.length > this.limits.maxLine) {
      lines.push(rest.slice(0, this.limits.maxLine));
      rest = rest.slice(this.limits.maxLine);
    }
    this.partial[source] = rest;
    const out: string[] = [];
    for (const line of lines) {
      for (let i = 0; i < Math.max(line.length, 1); i += this.limits.maxLine)
        out.push(JSON.stringify({ t: now, s: source, m: line.slice(i, i + this.limits.maxLine).replace(/\r$/, '') }));
    }
    if (out.length > 0) this.append(`${out.join('\n')}\n`);
  }

  flush(source: 'out' | 'err'): void {
    if (this.partial[source] !== '') this.write(source, '\n');
  }

  private append(text: string): void {
    const bytes = Buffer.from(text);
    if (this.fd === null) this.open();
    if (this.size > 0 && this.size + bytes.length > this.limits.maxBytes) {
      this.close();
      renameSync(this.file, `${this.file}.1`);
      this.open();
    }
    writeSync(this.fd as number, bytes);
    this.size += bytes.length;
  }

  private open(): void {
    this.fd = openSync(this.file, 'a', 0o600);
    this.size = existsSync(this.file) ? statSync(this.file).size : 0;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Pipes a child's stdout and stderr into its slot's log file. */
export function attachLog(file: string, stdout: Readable | null | undefined, stderr: Readable | null | undefined): ReplicaLogWriter {
  const writer = new ReplicaLogWriter(file);
  let open = 2;
  const done = () => {
    if (--open === 0) writer.close();
  };
  for (const [stream, source] of [
    [stdout, 'out'],
    [stderr, 'err'],
  ] as const) {
    if (!stream) {
      done();
      continue;
    }
    writer.attach(stream, source);
    stream.once('close', done);
  }
  return writer;
}

export interface SlotLine extends LogLine {
  replica: number;
}

/** The slots that have a log under an instance's log directory. */
function slotFiles(dir: string): Array<{ slot: number; file: string }> {
  const out: Array<{ slot: number; file: string }> = [];
  for (let slot = 0; slot < 64; slot++) {
    const file = join(dir, `replica-${slot}.log`);
    if (existsSync(file) || existsSync(`${file}.1`)) out.push({ slot, file });
  }
  return out;
}

function parseLines(text: string, replica: number, since: number, into: SlotLine[]): void {
  for (const raw of text.split('\n')) {
    if (!raw) continue;
    try {
      const l = JSON.parse(raw) as LogLine;
      if (typeof l.t === 'number' && l.t >= since && typeof l.m === 'string')
        into.push({ t: l.t, s: l.s === 'err' ? 'err' : 'out', m: l.m, replica });
    } catch {
      /* a torn line (the agent died mid-write): skipped */
    }
  }
}

function readWhole(file: string): string {
  if (!existsSync(file)) return '';
  const fd = openSync(file, 'r');
  try {
    const size = statSync(file).size;
    const buf = Buffer.alloc(size);
    let at = 0;
    while (at < size) {
      const n = readSync(fd, buf, at, size - at, at);
      if (n === 0) break;
      at += n;
    }
    return buf.subarray(0, at).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** Every kept line since `since` of every replica slot under `dir`, in time order, at most the last `limit`. */
export function readLogs(dir: string, since: number, limit: number): SlotLine[] {
  const lines: SlotLine[] = [];
  for (const { slot, file } of slotFiles(dir)) {
    parseLines(readWhole(`${file}.1`), slot, since, lines);
    parseLines(readWhole(file), slot, since, lines);
  }
  lines.sort((a, b) => a.t - b.t || a.replica - b.replica);
  return lines.slice(-limit);
}

/**
 * Follows the log files under `dir` from their current ends: calls `onLines` with what was appended, every
 * `intervalMs`, until the returned stop function is called. A rotation (the file got shorter) reads the new
 * file from its start.
 */
export function followLogs(dir: string, onLines: (lines: SlotLine[]) => void, intervalMs = 300): () => void {
  const offsets = new Map<string, number>();
  const sizeOf = (file: string) => (existsSync(file) ? statSync(file).size : 0);
  for (const { file } of slotFiles(dir)) offsets.set(file, sizeOf(file));
  const timer = setInterval(() => {
    const lines: SlotLine[] = [];
    for (const { slot, file } of slotFiles(dir)) {
      const size = sizeOf(file);
      let from = offsets.get(file) ?? 0;
      if (size < from) from = 0;
      if (size === from) continue;
      const fd = openSync(file, 'r');
      try {
        const buf = Buffer.alloc(size - from);
        const n = readSync(fd, buf, 0, buf.length, from);
        const text = buf.subarray(0, n).toString('utf8');
        const complete = text.lastIndexOf('\n') + 1;
        parseLines(text.slice(0, complete), slot, 0, lines);
        offsets.set(file, from + Buffer.byteLength(text.slice(0, complete)));
      } finally {
        closeSync(fd);
      }
    }
    if (lines.length > 0) onLines(lines.sort((a, b) => a.t - b.t));
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
