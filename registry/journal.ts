/**
 * Durability for the embedded registry: a write-ahead log of JSON lines, fsynced before a change is
 * acknowledged, and a snapshot that the log is folded into once it grows.
 *
 * Crash safety, step by step:
 * - Recovery keeps the longest valid prefix of the log and truncates the file to it (then fsyncs), so the
 *   next append never lands behind a torn line. A torn tail is a write that was never acknowledged.
 * - Every entry carries a sequence number and the snapshot records the last one it contains: a crash between
 *   writing the snapshot and emptying the log replays nothing twice (old lease grants would come back).
 * - The directory is fsynced whenever a file in it is created or renamed, so a new log or snapshot survives
 *   a power cut together with its contents.
 * - A failed write is cut off again before the error is reported; a failed fsync poisons the journal (the
 *   kernel may have dropped the dirty pages: nothing later can be promised durable) until the host restarts.
 */
import {
  chmodSync,
  closeSync,
  existsSync,
  fdatasyncSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Journal, JournalEntry, Snapshot } from './store.js';

const WAL = 'wal.jsonl';
const SNAPSHOT = 'snapshot.json';
/** Every entry starts with this: JSON.stringify escapes quotes inside values, so it never occurs within one. */
const ENTRY_START = Buffer.from('{"kind":');
const NEWLINE = 0x0a;

/** A snapshot as written to disk: the store's state plus the journal sequence it includes. */
type StoredSnapshot = Snapshot & { seq?: number };
type StoredEntry = JournalEntry & { seq?: number };

export class WalCorruptedError extends Error {
  constructor(file: string, offset: number) {
    super(`registry log ${file} is corrupted at byte ${offset} (not a torn tail): refusing to start rather than lose later entries`);
  }
}

/** fsync a directory so that files created or renamed in it are durable. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function isEntry(value: unknown): value is StoredEntry {
  if (typeof value !== 'object' || value === null) return false;
  const kind = (value as { kind?: unknown }).kind;
  return kind === 'txn' || kind === 'lease' || kind === 'revoke';
}

function parseEntry(bytes: Buffer): StoredEntry | undefined {
  try {
    const value: unknown = JSON.parse(bytes.toString('utf8'));
    return isEntry(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Splits one line into entries. Logs written before torn tails were truncated can hold a torn fragment with
 * the next (acknowledged) entry appended right behind it on the same line: such fragments are skipped.
 * Returns undefined if the line holds something that is neither an entry nor a fragment followed by one.
 */
function entriesOfLine(line: Buffer): StoredEntry[] | undefined {
  const whole = parseEntry(line);
  if (whole) return [whole];
  const starts: number[] = [];
  for (let at = line.indexOf(ENTRY_START); at >= 0; at = line.indexOf(ENTRY_START, at + 1)) starts.push(at);
  const first = starts[0];
  // A fragment torn before its own `{"kind":` was complete is a prefix of it.
  if (first === undefined || (first > 0 && !ENTRY_START.subarray(0, first).equals(line.subarray(0, first)))) return undefined;
  const out: StoredEntry[] = [];
  for (let i = 0; i < starts.length; i++) {
    const entry = parseEntry(line.subarray(starts[i], starts[i + 1] ?? line.length));
    if (entry) out.push(entry);
    else if (i === starts.length - 1) return undefined; // the line must end with a whole entry
  }
  return out;
}

/** Reads a log: its entries and the length of its valid prefix (everything up to the last complete line). */
export function readWal(path: string): { entries: StoredEntry[]; validBytes: number; fileBytes: number } {
  const data = readFileSync(path);
  const entries: StoredEntry[] = [];
  let offset = 0;
  while (offset < data.length) {
    const nl = data.indexOf(NEWLINE, offset);
    // No newline: the last write never completed, so it was never acknowledged.
    if (nl < 0) break;
    const line = data.subarray(offset, nl);
    if (line.length > 0) {
      const found = entriesOfLine(line);
      if (!found) {
        // A complete line that does not parse is damage, unless nothing acknowledged can follow it.
        if (data.indexOf(ENTRY_START, nl + 1) >= 0) throw new WalCorruptedError(path, offset);
        break;
      }
      entries.push(...found);
    }
    offset = nl + 1;
  }
  return { entries, validBytes: offset, fileBytes: data.length };
}

export class FileJournal implements Journal {
  private fd: number;
  private entries = 0;
  /** Length of the log's valid content: a failed write is cut back to it. */
  private size: number;
  private seq: number;
  private failed: Error | null = null;

  private constructor(
    private readonly dir: string,
    private readonly compactAfter: number,
    state: { fd: number; size: number; seq: number; entries: number },
  ) {
    this.fd = state.fd;
    this.size = state.size;
    this.seq = state.seq;
    this.entries = state.entries;
  }

  /** Opens (creating if needed) the journal in `dir` and returns what is needed to restore the store. */
  static open(
    dir: string,
    opts: { compactAfter?: number } = {},
  ): { journal: FileJournal; snapshot: Snapshot | null; entries: JournalEntry[] } {
    // The log holds every record, private keys included: only the host's user may read it.
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    const snapshotPath = join(dir, SNAPSHOT);
    const stored = existsSync(snapshotPath) ? (JSON.parse(readFileSync(snapshotPath, 'utf8')) as StoredSnapshot) : null;
    const walPath = join(dir, WAL);
    const created = !existsSync(walPath);
    const fd = openSync(walPath, 'a', 0o600);
    if (created) fsyncDir(dir);
    else chmodSync(walPath, 0o600);
    if (stored) chmodSync(snapshotPath, 0o600);
    let { entries, validBytes, fileBytes } = created ? { entries: [], validBytes: 0, fileBytes: 0 } : readWal(walPath);
    if (validBytes < fileBytes) {
      // Cut the torn tail off before anything is appended behind it.
      ftruncateSync(fd, validBytes);
      fsyncSync(fd);
      fileBytes = validBytes;
    }
    // Entries the snapshot already holds (a crash after the snapshot, before the log was emptied).
    const snapshotSeq = stored?.seq ?? 0;
    const fresh = entries.filter((e) => e.seq === undefined || e.seq > snapshotSeq);
    const lastSeq = entries.reduce((max, e) => Math.max(max, e.seq ?? 0), snapshotSeq);
    const journal = new FileJournal(dir, opts.compactAfter ?? 5_000, { fd, size: fileBytes, seq: lastSeq, entries: fresh.length });
    const snapshot: Snapshot | null = stored ? { revision: stored.revision, kvs: stored.kvs, leases: stored.leases } : null;
    return { journal, snapshot, entries: fresh.map(({ seq: _seq, ...entry }) => entry as JournalEntry) };
  }

  append(entry: JournalEntry): void {
    if (this.failed) throw this.failed;
    const line = Buffer.from(`${JSON.stringify({ ...entry, seq: this.seq + 1 })}\n`);
    try {
      let written = 0;
      while (written < line.length) written += writeSync(this.fd, line, written);
    } catch (err) {
      // Remove whatever part of the line reached the file, or the next append would land behind it.
      try {
        ftruncateSync(this.fd, this.size);
      } catch {
        this.failed = new Error(`registry journal unusable after a failed write: ${(err as Error).message}; restart the registry host`);
      }
      throw err;
    }
    try {
      fdatasyncSync(this.fd);
    } catch (err) {
      this.failed = new Error(`registry journal fsync failed: ${(err as Error).message}; restart the registry host`);
      throw this.failed;
    }
    this.size += line.length;
    this.seq++;
    this.entries++;
  }

  get needsCompaction(): boolean {
    return this.entries >= this.compactAfter;
  }

  /** Writes the snapshot atomically, then empties the log. */
  compact(snapshot: Snapshot): void {
    if (this.failed) return;
    const tmp = join(this.dir, `${SNAPSHOT}.tmp`);
    const fd = openSync(tmp, 'w', 0o600);
    try {
      const data = Buffer.from(JSON.stringify({ ...snapshot, seq: this.seq } satisfies StoredSnapshot));
      let written = 0;
      while (written < data.length) written += writeSync(fd, data, written);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, join(this.dir, SNAPSHOT));
    fsyncDir(this.dir);
    // A crash from here until the truncation is durable leaves entries the snapshot holds: their sequence
    // numbers are at most the snapshot's, so recovery skips them.
    ftruncateSync(this.fd, 0);
    fsyncSync(this.fd);
    this.size = 0;
    this.entries = 0;
  }

  close(): void {
    closeSync(this.fd);
  }
}
