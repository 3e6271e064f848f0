import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import pino, { type Logger } from 'pino';

/** Structured logs: JSON lines to a file when given (daemons under devnet), else to stderr. */
export function makeLogger(name: string, file?: string, level = process.env.ALLEGRA_LOG_LEVEL ?? 'info'): Logger {
  if (file) {
    mkdirSync(dirname(file), { recursive: true });
    return pino({ name, level }, pino.destination({ dest: file, sync: false, mkdir: true }));
  }
  return pino({ name, level }, pino.destination({ fd: 2, sync: false }));
}
