import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import pino, { type Logger } from 'pino';
import { BatchedLineStream } from './log-stream.js';

/** Structured logs (pino JSON lines) to a file when given (daemons under devnet), else to stderr. */
export function makeLogger(name: string, file?: string, level = process.env.ALLEGRA_LOG_LEVEL ?? 'info'): Logger {
  if (file) mkdirSync(dirname(file), { recursive: true });
  const stream = file ? BatchedLineStream.toFile(file) : new BatchedLineStream(2);
  return pino({ name, level }, stream);
}
