/**
 * The WASI 0.2 interfaces a wasm app is granted, implemented by the host. This list is the sandbox: the
 * component (built without componentize-js' `http` feature) imports only these, and each one here is
 * either harmless or confined:
 *   - filesystem: no preopened directories, so the guest has no path to open (no ambient filesystem);
 *   - stdin: always at end of stream; stdout/stderr: the replica's log sink (bounded by the caller);
 *   - clocks, random: read-only and unprivileged; a timer wait blocks only the replica's own worker,
 *     which the host's per-request deadline terminates;
 *   - terminals: none.
 * There are no sockets and no HTTP client interfaces: outgoing network access does not exist.
 *
 * Shapes follow jco's sync-instantiation bindings: resources are classes, `result` errors are thrown
 * payloads. Keys are unversioned, as jco's bindings look them up.
 */
import { randomFillSync } from 'node:crypto';

export interface GuestSinks {
  stdout(bytes: Uint8Array): void;
  stderr(bytes: Uint8Array): void;
}

/** Largest single random-bytes request honoured; a guest asking for more gets this many (WASI allows fewer). */
const MAX_RANDOM_BYTES = 1024 * 1024;
/** What `check-write` grants per call: writes are synchronous, so this only bounds one chunk. */
const WRITE_BUDGET = 1024n * 1024n;

class IoError {
  constructor(private readonly message: string) {}
  toDebugString(): string {
    return this.message;
  }
}

/** Ready now, or at a monotonic instant (ns since process.hrtime's origin). */
class Pollable {
  constructor(readonly readyAt: bigint = 0n) {}
  ready(): boolean {
    return process.hrtime.bigint() >= this.readyAt;
  }
  block(): void {
    sleepUntil(this.readyAt);
  }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
function sleepUntil(at: bigint): void {
  for (;;) {
    const waitNs = at - process.hrtime.bigint();
    if (waitNs <= 0n) return;
    // Blocks this worker only; the host terminates the worker if the request's deadline passes first.
    Atomics.wait(sleeper, 0, 0, Math.max(1, Number(waitNs / 1_000_000n)));
  }
}

function poll(list: Pollable[]): Uint32Array {
  for (;;) {
    const ready: number[] = [];
    for (const [i, p] of list.entries()) if (p.ready()) ready.push(i);
    if (ready.length > 0 || list.length === 0) return Uint32Array.from(ready);
    let earliest = list[0]!.readyAt;
    for (const p of list) if (p.readyAt < earliest) earliest = p.readyAt;
    sleepUntil(earliest);
  }
}

class InputStream {
  read(_len: bigint): Uint8Array {
    throw { tag: 'closed' };
  }
  blockingRead(_len: bigint): Uint8Array {
    throw { tag: 'closed' };
  }
  skip(_len: bigint): bigint {
    throw { tag: 'closed' };
  }
  blockingSkip(_len: bigint): bigint {
    throw { tag: 'closed' };
  }
  subscribe(): Pollable {
    return new Pollable();
  }
}

class OutputStream {
  constructor(private readonly sink: (bytes: Uint8Array) => void) {}
  checkWrite(): bigint {
    return WRITE_BUDGET;
  }
  write(contents: Uint8Array): void {
    this.sink(contents);
  }
  blockingWriteAndFlush(contents: Uint8Array): void {
    this.sink(contents);
  }
  flush(): void {}
  blockingFlush(): void {}
  writeZeroes(len: bigint): void {
    this.sink(new Uint8Array(Number(len < WRITE_BUDGET ? len : WRITE_BUDGET)));
  }
  blockingWriteZeroesAndFlush(len: bigint): void {
    this.writeZeroes(len);
  }
  subscribe(): Pollable {
    return new Pollable();
  }
}

class TerminalInput {}
class TerminalOutput {}

/** Exists so the bindings can name the type; no descriptor is ever handed to the guest. */
class Descriptor {
  constructor() {
    throw new Error('no filesystem is granted to wasm apps');
  }
}
class DirectoryEntryStream {}

export function wasiImports(sinks: GuestSinks): Record<string, Record<string, unknown>> {
  const stdout = (): OutputStream => new OutputStream(sinks.stdout);
  const stderr = (): OutputStream => new OutputStream(sinks.stderr);
  return {
    'wasi:io/error': { Error: IoError },
    'wasi:io/poll': { Pollable, poll },
    'wasi:io/streams': { InputStream, OutputStream },
    'wasi:cli/stdin': { getStdin: () => new InputStream() },
    'wasi:cli/stdout': { getStdout: stdout },
    'wasi:cli/stderr': { getStderr: stderr },
    'wasi:cli/environment': { getEnvironment: () => [], getArguments: () => [], initialCwd: () => undefined },
    'wasi:cli/exit': {
      exit: () => {
        throw new Error('the app called exit');
      },
    },
    'wasi:cli/terminal-input': { TerminalInput },
    'wasi:cli/terminal-output': { TerminalOutput },
    'wasi:cli/terminal-stdin': { getTerminalStdin: () => undefined },
    'wasi:cli/terminal-stdout': { getTerminalStdout: () => undefined },
    'wasi:cli/terminal-stderr': { getTerminalStderr: () => undefined },
    'wasi:clocks/monotonic-clock': {
      now: () => process.hrtime.bigint(),
      resolution: () => 1n,
      subscribeInstant: (when: bigint) => new Pollable(when),
      subscribeDuration: (d: bigint) => new Pollable(process.hrtime.bigint() + d),
    },
    'wasi:clocks/wall-clock': {
      now: () => {
        const ms = Date.now();
        return { seconds: BigInt(Math.floor(ms / 1000)), nanoseconds: (ms % 1000) * 1_000_000 };
      },
      resolution: () => ({ seconds: 0n, nanoseconds: 1_000_000 }),
    },
    'wasi:random/random': {
      getRandomBytes: (len: bigint) => randomFillSync(new Uint8Array(Number(len < MAX_RANDOM_BYTES ? len : MAX_RANDOM_BYTES))),
      getRandomU64: () => randomFillSync(new BigUint64Array(1))[0]!,
    },
    'wasi:random/insecure': {
      getInsecureRandomBytes: (len: bigint) => randomFillSync(new Uint8Array(Number(len < MAX_RANDOM_BYTES ? len : MAX_RANDOM_BYTES))),
      getInsecureRandomU64: () => randomFillSync(new BigUint64Array(1))[0]!,
    },
    'wasi:filesystem/preopens': { getDirectories: () => [] },
    'wasi:filesystem/types': { Descriptor, DirectoryEntryStream, filesystemErrorCode: () => undefined },
  };
}
