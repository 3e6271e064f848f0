/**
 * Benchmark harness entry: `npm run bench` (full, ≤ ~10 min), `npm run bench -- --quick` (~1 min),
 * `--smoke` (seconds; used by test/bench/smoke.test.ts). See bench/lib/options.ts for all flags.
 */
import { parseOptions, USAGE } from './lib/options.js';
import { installCleanupHandlers, stopAll } from './lib/proc.js';
import { renderMarkdown, writeResults } from './lib/results.js';
import { runSuite } from './proxy/suite.js';

const log = (msg: string): void => {
  process.stdout.write(`${msg}\n`);
};

async function main(): Promise<number> {
  let opts: ReturnType<typeof parseOptions>;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  installCleanupHandlers(log);
  log(`allegra bench (${opts.mode}): ${opts.command}`);
  const report = await runSuite(opts, log);
  const files = writeResults(report);
  log('');
  log(renderMarkdown(report));
  log(`wrote ${files.markdown}\n      ${files.svg}\n      ${files.json}`);
  log(`done in ${Math.round(report.elapsedSec)} s`);
  return 0;
}

main()
  .then((code) => process.exit(code))
  .catch(async (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    await stopAll().catch(() => undefined);
    process.exit(1);
  });
