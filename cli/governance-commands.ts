/**
 * `allegra revoke` and governance: `revoke NAME --yes [--governance M:KEY,…]` gives up ownership for good.
 * With a policy, a change of the revoked instance is proposed by one governance key (`propose`), signed by
 * others (`approve NAME ID`) and applied once M distinct keys of the policy signed the same proposal.
 */
import type { InstanceStatus } from '../protocol/types.js';
import { client, type GlobalOpts, instancePath, packFor, upload } from './instance-commands.js';
import { CliError, type Output } from './output.js';
import { parsePublicKey } from './team-commands.js';

interface Policy {
  threshold: number;
  keys: string[];
}

/** `M:KEY,KEY,…` → a policy; M from 1 to the number of (distinct) keys. */
export function parseGovernance(value: string): Policy {
  const m = /^(\d+):(.+)$/.exec(value.trim());
  if (!m) throw new CliError(`--governance expects M:KEY,KEY,… (got "${value}")`, 2);
  const keys = (m[2] as string).split(',').map((k) => parsePublicKey(k));
  const threshold = Number(m[1]);
  if (new Set(keys).size !== keys.length) throw new CliError('--governance: the keys must be distinct', 2);
  if (keys.length > 32) throw new CliError('--governance: at most 32 keys', 2);
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > keys.length)
    throw new CliError(`--governance ${threshold}:…: M must be from 1 to the number of keys (${keys.length})`, 2);
  return { threshold, keys };
}

export async function revokeCommand(name: string, opts: { yes?: boolean; governance?: string }, g: GlobalOpts, out: Output): Promise<void> {
  const governance = opts.governance ? parseGovernance(opts.governance) : undefined;
  if (!opts.yes)
    throw new CliError(
      `revoking ${name} cannot be undone: you lose every right over it${governance ? '' : ' and nothing can ever change it again'}; pass --yes`,
      2,
    );
  await client(g).call({ method: 'POST', path: instancePath(name, '/revoke'), body: { json: governance ? { governance } : {} } });
  out.result({ name, revoked: true, governance: governance ?? null }, () =>
    governance
      ? `revoked ${name}: it keeps being served; a change now needs ${governance.threshold} of ${governance.keys.length} governance keys (allegra propose ${name} …)`
      : `revoked ${name}: it keeps being served and can never change again`,
  );
}

interface ProposalView {
  id: string;
  action: { type: string };
  approvedBy: string[];
  needed: number;
}

interface Outcome {
  proposal: ProposalView;
  applied: boolean;
}

function outcomeLine(name: string, o: Outcome): string {
  const p = o.proposal;
  return o.applied
    ? `proposal ${p.id} (${p.action.type}) has ${p.approvedBy.length} of ${p.needed} signatures: applied to ${name}`
    : `proposal ${p.id} (${p.action.type}) has ${p.approvedBy.length} of ${p.needed} signatures; not applied until ${p.needed - p.approvedBy.length} more sign it: allegra approve ${name} ${p.id}`;
}

export async function proposeCommand(
  name: string,
  opts: { deploy?: string; cmd?: string; start?: boolean; stop?: boolean; delete?: boolean; governance?: string },
  g: GlobalOpts,
  out: Output,
): Promise<void> {
  const chosen = [opts.deploy !== undefined, opts.start, opts.stop, opts.delete, opts.governance !== undefined].filter(Boolean).length;
  if (chosen !== 1)
    throw new CliError('allegra propose NAME: name exactly one change: --deploy PATH, --start, --stop, --delete or --governance M:KEYS', 2);
  const rpc = client(g);
  let outcome: Outcome;
  if (opts.deploy !== undefined) {
    const progress = out.progress(`packing ${opts.deploy}`);
    // A wasm instance's code is bundled into its one module here too, like `allegra deploy` does.
    const { instance } = await rpc.call<InstanceStatus>({ method: 'GET', path: instancePath(name) });
    const packed = await packFor(rpc, opts.deploy, progress, instance.driver);
    try {
      outcome = await upload<Outcome>(rpc, instancePath(name, '/proposals/code'), packed, opts.cmd, progress);
      progress.succeed(`proposed the deploy of ${opts.deploy}`);
    } catch (err) {
      progress.fail('proposal failed');
      throw err;
    } finally {
      packed.cleanup();
    }
  } else {
    const action = opts.governance
      ? { type: 'governance', ...parseGovernance(opts.governance) }
      : { type: opts.start ? 'start' : opts.stop ? 'stop' : 'delete' };
    outcome = await rpc.call<Outcome>({ method: 'POST', path: instancePath(name, '/proposals'), body: { json: { action } } });
  }
  out.result(outcome, () => outcomeLine(name, outcome));
}

export async function approveCommand(name: string, id: string, g: GlobalOpts, out: Output): Promise<void> {
  if (!/^p-[0-9a-f]{16}$/.test(id)) throw new CliError(`"${id}" is not a proposal id (p- and 16 hex characters)`, 2);
  const outcome = await client(g).call<Outcome>({ method: 'POST', path: instancePath(name, `/proposals/${id}/approve`) });
  out.result(outcome, () => outcomeLine(name, outcome));
}

export async function proposalsCommand(name: string, g: GlobalOpts, out: Output): Promise<void> {
  const { proposals } = await client(g).call<{ proposals: ProposalView[] }>({ method: 'GET', path: instancePath(name, '/proposals') });
  out.result({ proposals }, () =>
    proposals.length === 0
      ? 'no pending proposals'
      : proposals.map((p) => `${p.id}  ${p.action.type}  ${p.approvedBy.length} of ${p.needed} signatures`).join('\n'),
  );
}
