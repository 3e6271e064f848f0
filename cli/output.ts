/**
 * Output conventions of every command (CLI.md): with --json exactly one JSON document on stdout; without,
 * human text; on failure one line on stderr and a non-zero exit code (2: usage or local setup, 1: the
 * operation failed, 3: not found or not allowed).
 */
import ora, { type Ora } from 'ora';
import { AllegraError } from '../protocol/errors.js';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

export interface Output {
  json: boolean;
  /** Prints the result: `data` as JSON, or `human()` as text. */
  result(data: unknown, human: () => string): void;
  /** A spinner on stderr for long steps; silent with --json or when stderr is not a terminal. */
  progress(text: string): Progress;
}

export interface Progress {
  update(text: string): void;
  succeed(text?: string): void;
  fail(text?: string): void;
}

const silent: Progress = { update() {}, succeed() {}, fail() {} };

export function makeOutput(json: boolean): Output {
  return {
    json,
    result(data, human) {
      process.stdout.write(json ? `${JSON.stringify(data)}\n` : `${human()}\n`);
    },
    progress(text) {
      if (json || !process.stderr.isTTY) return silent;
      const spinner: Ora = ora({ text, stream: process.stderr }).start();
      return {
        update: (t) => {
          spinner.text = t;
        },
        succeed: (t) => void spinner.succeed(t),
        fail: (t) => void spinner.fail(t),
      };
    },
  };
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof CliError) return err.exitCode;
  // 3: not found or not the caller's; a refusal of an allowed caller (a revoked instance…) is 1 like any failure.
  if (err instanceof AllegraError) return err.code === 'not_found' || err.code === 'forbidden' || err.code === 'unauthenticated' ? 3 : 1;
  return 1;
}

/** Prints a failure as one line and returns the exit code. */
export function reportError(err: unknown): number {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`allegra: ${message.split('\n')[0]}\n`);
  return exitCodeFor(err);
}

/** A progress bar for byte counts: `▕██████░░░░▏ 60% 6.0 of 10.0 MiB`. */
export function progressBar(done: number, total: number, width = 20): string {
  const ratio = total > 0 ? Math.min(1, done / total) : 1;
  const filled = Math.round(ratio * width);
  return `▕${'█'.repeat(filled)}${'░'.repeat(width - filled)}▏ ${Math.floor(ratio * 100)}% ${mib(done)} of ${mib(total)}`;
}

export function mib(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
}

/** Renders rows as an aligned text table. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}
