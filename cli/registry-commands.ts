/** `allegra registry setup-auth`: etcd users, roles and prefix permissions from the registry's role table. */
import { join } from 'node:path';
import { setupEtcdAuth } from '../registry/etcd-auth.js';
import { allegraHome } from './config.js';
import { CliError, type Output } from './output.js';

export async function setupAuthCommand(opts: { registry: string; credentials?: string }, out: Output): Promise<void> {
  if (!opts.registry.startsWith('etcd://')) {
    throw new CliError('setup-auth is for etcd (--registry etcd://host:port[,…]); the embedded registry mints its own tokens', 2);
  }
  const endpoints = opts.registry
    .slice('etcd://'.length)
    .replace(/\/+$/, '')
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean);
  if (endpoints.length === 0) throw new CliError(`invalid registry URL "${opts.registry}"`, 2);
  const dir = opts.credentials ?? join(allegraHome(), 'registry-credentials');
  const progress = out.progress(`setting up etcd auth on ${endpoints.join(',')}`);
  let result: Awaited<ReturnType<typeof setupEtcdAuth>>;
  try {
    result = await setupEtcdAuth(endpoints, dir);
  } catch (err) {
    progress.fail('etcd auth setup failed');
    throw new CliError((err as Error).message, 1);
  }
  progress.succeed('etcd auth is enabled');
  out.result({ registry: opts.registry, credentials: dir, files: result.files, changes: result.changes }, () =>
    [
      `etcd auth enabled on ${opts.registry}${result.changes.length === 0 ? ' (nothing to change)' : ''}`,
      ...result.changes.map((c) => `  ${c}`),
      `credentials (0600) in ${dir}:`,
      `  agents:    --registry-credentials ${result.files.agent}`,
      `  gateways:  --registry-credentials ${result.files.gateway}`,
      `  operator:  --registry-credentials ${result.files.admin}   (devnet, tooling)`,
      `  etcd root: ${result.files.root}   (keep it safe; setup-auth needs it to run again)`,
    ].join('\n'),
  );
}
