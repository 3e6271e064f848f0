/** Helpers for the harness's own child entry points (upstream replica, Node proxies, autocannon runner). */

/**
 * Exits when the parent (the harness) disappears, so that a SIGKILLed harness does not leave
 * servers behind. The harness normally stops its children itself, by PID.
 */
export function exitWithParent(): void {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(0);
  }, 500).unref();
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}

/** `--name value` lookup in process.argv. */
export function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

export function requireArg(name: string): string {
  const v = argValue(name);
  if (v === undefined) {
    process.stderr.write(`missing --${name}\n`);
    process.exit(2);
  }
  return v;
}
