/**
 * Durability for the embedded registry: a write-ahead log of JSON lines, fsynced before a change is
 * acknowledged, and a snapshot that the log is folded into once it grows. A torn last line (crash in the
 * middle of a write) is ignored on recovery: that change was never acknowledged.
 */
import {
  closeSync,
  existsSync,
  fdatasyncSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Journal, JournalEntry, Snapshot } from './store.js';

const WAL = 'wal.jsonl';
const SNAPSHOT = 'snapshot.json';

export class FileJournal implements Journal {
  private fd: number;
  private entries = 0;

  private constructor(
    private readonly dir: string,
    private readonly compactAfter: number,
  ) {
    this.fd = openSync(join(dir, WAL), 'a');
  }

  /** Opens (creating if needed) the journal in `dir` and returns what is needed to restore the store. */
  static open(
    dir: string,
    opts: { compactAfter?: number } = {},
  ): { journal: FileJournal; snapshot: Snapshot | null; entries: JournalEntry[] } {
    mkdirSync(dir, { recursive: true });
    const snapshotPath = join(dir, SNAPSHOT);
    const snapshot = existsSync(snapshotPath) ? (JSON.parse(readFileSync(snapshotPath, 'utf8')) as Snapshot) : null;
    const entries: JournalEntry[] = [];
    const walPath = join(dir, WAL);
    if (existsSync(walPath)) {
      const lines = readFileSync(walPath, 'utf8').split('\n');
      for (const line of lines) {
        if (line === '') continue;
        try {
          entries.push(JSON.parse(line) as JournalEntry);
        } catch {
          break; // torn tail: everything after it was never acknowledged
        }
      }
    }
    const journal = new FileJournal(dir, opts.compactAfter ?? 5_000);
    journal.entries = entries.length;
    return { journal, snapshot, entries };
  }

  append(entry: JournalEntry): void {
    writeSync(this.fd, `${JSON.stringify(entry)}\n`);
    fdatasyncSync(this.fd);
    this.entries++;
  }

  get needsCompaction(): boolean {
    return this.entries >= this.compactAfter;
  }

  /** Writes the snapshot atomically, then starts an empty log. */
  compact(snapshot: Snapshot): void {
    const tmp = join(this.dir, `${SNAPSHOT}.tmp`);
    writeFileSync(tmp, JSON.stringify(snapshot));
    const fd = openSync(tmp, 'r');
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, join(this.dir, SNAPSHOT));
    closeSync(this.fd);
    this.fd = openSync(join(this.dir, WAL), 'w');
    fsyncSync(this.fd);
    this.entries = 0;
  }

  close(): void {
    closeSync(this.fd);
  }
}
