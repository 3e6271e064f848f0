/**
 * Entry of the wasm host process. Started by the agent with an IPC channel (see client.ts); it exits when
 * that channel closes, so a killed agent never leaves a host behind.
 */
import { makeLogger } from '../../cli/log.js';
import { type ControlReply, controlRequestSchema, type HostReady } from './control.js';
import { WasmHost, WasmHostError } from './host.js';

const log = makeLogger('wasm-host', process.env.ALLEGRA_WASM_HOST_LOG || undefined);
const host = new WasmHost(log, { spareWorkers: Number(process.env.ALLEGRA_WASM_SPARE_WORKERS ?? 2) });

if (!process.send) {
  process.stderr.write('the wasm host is started by an agent over IPC (quorum-agent/wasm/client.ts)\n');
  process.exit(2);
}

function describeIssue(issue: { path: PropertyKey[]; message: string } | undefined): string {
  if (!issue) return 'invalid';
  return issue.path.length ? `${issue.path.map(String).join('.')}: ${issue.message}` : issue.message;
}

function reply(msg: ControlReply): void {
  process.send?.(msg);
}

process.on('message', async (raw: unknown) => {
  const parsed = controlRequestSchema.safeParse(raw);
  if (!parsed.success) {
    const id = typeof (raw as { id?: unknown })?.id === 'number' ? (raw as { id: number }).id : -1;
    reply({ id, ok: false, code: 'bad-request', error: `bad control message: ${describeIssue(parsed.error.issues[0])}` });
    return;
  }
  const req = parsed.data;
  try {
    let result: unknown;
    if (req.op === 'load') result = await host.load(req.load);
    else if (req.op === 'unload') result = await host.unload(req.replicaId);
    else if (req.op === 'health') result = host.health();
    else result = host.stats();
    reply({ id: req.id, ok: true, result: result ?? null });
  } catch (err) {
    reply({ id: req.id, ok: false, code: err instanceof WasmHostError ? err.code : 'internal', error: (err as Error).message });
  }
});

let closing = false;
async function shutdown(code: number): Promise<void> {
  if (closing) return;
  closing = true;
  await host.close().catch(() => undefined);
  log.flush?.();
  process.exit(code);
}
process.on('disconnect', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));
process.on('SIGINT', () => void shutdown(0));

const ready: HostReady = { type: 'ready', pid: process.pid };
process.send(ready);
