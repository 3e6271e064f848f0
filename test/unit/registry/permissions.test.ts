/**
 * The permission contract against the embedded registry (socket clients with each role's token, and the
 * host's in-process views) and against a real etcd with auth enabled by `allegra registry setup-auth`.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Etcd3, Range } from 'etcd3';
import { afterAll, describe, expect, it } from 'vitest';
import type { Role } from '../../../protocol/roles.js';
import { EmbeddedHost } from '../../../registry/embedded.js';
import { EmbeddedClient } from '../../../registry/embedded-client.js';
import { EtcdRegistry } from '../../../registry/etcd.js';
import { readEtcdCredentials } from '../../../registry/etcd-credentials.js';
import { openRegistry } from '../../../registry/open.js';
import { cliJson } from '../../helpers/cli.js';
import { type EtcdCluster, startEtcdCluster } from '../../helpers/etcd-cluster.js';
import { sleep, tempDir, waitFor } from '../../helpers/tmp.js';
import { registryContract } from './contract.js';
import { permissionContract } from './permissions.js';

permissionContract('embedded (socket clients)', async () => {
  const dir = tempDir();
  const host = await EmbeddedHost.start(dir.path);
  const socket = host.socketPath;
  return {
    as: async (role: Role) => openRegistry(`embedded:${dir.path}`, { role, host: 'never' }),
    unauthenticated: [
      { name: 'no token', open: async () => new EmbeddedClient(socket, '') },
      { name: 'wrong token', open: async () => new EmbeddedClient(socket, 'A'.repeat(43)) },
      { name: 'openRegistry with a wrong token', open: () => openRegistry(`embedded:${dir.path}`, { role: 'agent', token: 'x' }) },
    ],
    cleanup: async () => {
      await host.close();
      dir.cleanup();
    },
  };
});

permissionContract('embedded (views of the hosting process)', async () => {
  const dir = tempDir();
  const host = await EmbeddedHost.start(dir.path);
  return {
    // Closing a view closes the host too; the suite closes its clients only at the end.
    as: async (role: Role) => host.as(role),
    unauthenticated: [],
    cleanup: async () => {
      await host.close();
      dir.cleanup();
    },
  };
});

describe('etcd with auth enabled', () => {
  let cluster: EtcdCluster;
  const creds = tempDir('allegra-etcd-creds-');
  const files = {} as Record<Role, string>;
  const setup = async () => {
    if (cluster) return;
    cluster = await startEtcdCluster({ members: 1 });
    const url = `etcd://${cluster.endpoints.join(',')}`;
    const first = await cliJson<{ files: Record<Role, string>; changes: string[] }>(
      ['registry', 'setup-auth', '--registry', url, '--credentials', creds.path],
      {},
    );
    Object.assign(files, first.files);
  };
  const connect = async (role: Role) => {
    await setup();
    return EtcdRegistry.connect(cluster.endpoints, { role, auth: readEtcdCredentials(files[role]) });
  };

  permissionContract('etcd (auth by allegra registry setup-auth)', async () => {
    await setup();
    return {
      as: connect,
      unauthenticated: [
        { name: 'no credentials', open: () => EtcdRegistry.connect(cluster.endpoints, { role: 'agent' }) },
        {
          name: 'wrong password',
          open: () => EtcdRegistry.connect(cluster.endpoints, { role: 'agent', auth: { username: 'allegra-agent', password: 'guess' } }),
        },
      ],
      cleanup: async () => {},
    };
  });

  registryContract('etcd with auth, as admin', async () => {
    const registry = await connect('admin');
    await registry.txn({ compare: [], success: [{ type: 'deletePrefix', prefix: '' }] });
    const peer = await connect('admin');
    return {
      registry,
      peer,
      cleanup: async () => {
        await registry.close();
        await peer.close();
      },
    };
  });

  it('setup-auth is idempotent, keeps the passwords, repairs drifted permissions, writes 0600 files', async () => {
    await setup();
    const url = `etcd://${cluster.endpoints.join(',')}`;
    const before = readEtcdCredentials(files.agent).password;
    // Drift: someone granted the agent role read access to the private keys.
    const root = JSON.parse(readFileSync(join(creds.path, 'root.json'), 'utf8')) as { username: string; password: string };
    const etcdRoot = new Etcd3({ hosts: [...cluster.endpoints], auth: { username: root.username, password: root.password } });
    await etcdRoot.role('allegra-agent').grant({ permission: 'Read', range: Range.prefix('cert-keys/') });
    etcdRoot.close();
    const agent = await connect('agent');
    const admin = await connect('admin');
    await admin.put('cert-keys/drift', 'secret');
    await admin.close();
    expect((await agent.get('cert-keys/drift'))?.value).toBe('secret');

    const again = await cliJson<{ changes: string[] }>(['registry', 'setup-auth', '--registry', url, '--credentials', creds.path], {});
    expect(again.changes).toEqual(['revoked Read cert-keys/ from allegra-agent']);
    await expect(agent.get('cert-keys/drift')).rejects.toThrow('role "agent" may not get "cert-keys/drift"');
    const third = await cliJson<{ changes: string[] }>(['registry', 'setup-auth', '--registry', url, '--credentials', creds.path], {});
    expect(third.changes).toEqual([]);
    expect(readEtcdCredentials(files.agent).password).toBe(before);
    for (const f of [...Object.values(files), join(creds.path, 'root.json')]) expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(statSync(creds.path).mode & 0o777).toBe(0o700);
    await agent.close();
  });

  it('openRegistry takes the credentials file and refuses one of another role', async () => {
    await setup();
    const url = `etcd://${cluster.endpoints.join(',')}`;
    const gw = await openRegistry(url, { role: 'gateway', credentialsFile: files.gateway });
    await gw.put('cert-keys/o', 'k');
    await gw.close();
    await expect(openRegistry(url, { role: 'agent', credentialsFile: files.gateway })).rejects.toThrow(
      'are for role "gateway", not "agent"',
    );
    await expect(openRegistry(url, { role: 'agent' })).rejects.toThrow(/unauthenticated/);
  });

  it('a watch survives a restart of etcd, which forgets every auth token', async () => {
    const gateway = await connect('gateway');
    const admin = await connect('admin');
    try {
      const seen: string[] = [];
      const errors: Error[] = [];
      gateway.watch('routes/', (events) => seen.push(...events.map((e) => e.key)), { onError: (err) => errors.push(err) });
      await sleep(200);
      await admin.put('routes/before', '1');
      await waitFor(() => seen.includes('routes/before'), { what: 'event before the restart' });
      await cluster.kill(0);
      await cluster.restart(0);
      await waitFor(
        async () =>
          await admin
            .put('routes/after', '1')
            .then(() => true)
            .catch(() => false),
        { what: 'a write after the restart' },
      );
      await waitFor(() => seen.includes('routes/after'), { timeoutMs: 10_000, what: 'event after the restart' });
      expect(errors).toEqual([]);
    } finally {
      await gateway.close();
      await admin.close();
    }
  });

  afterAll(async () => {
    await cluster?.stop();
    creds.cleanup();
  });
});
