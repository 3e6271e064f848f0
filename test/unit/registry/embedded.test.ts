import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { TxnRequest } from '../../../protocol/registry.js';
import { ROLES } from '../../../protocol/roles.js';
import { tokenFile } from '../../../registry/credentials.js';
import { EmbeddedHost } from '../../../registry/embedded.js';
import { EmbeddedClient } from '../../../registry/embedded-client.js';
import { Mirror } from '../../../registry/mirror.js';
import { openRegistry } from '../../../registry/open.js';
import { MAX_REQUEST_BYTES } from '../../../registry/wire.js';
import { tempDir, waitFor } from '../../helpers/tmp.js';
import { registryContract } from './contract.js';

registryContract('embedded (host + socket client)', async () => {
  const dir = tempDir();
  const host = await EmbeddedHost.start(dir.path);
  const client = new EmbeddedClient(host.socketPath, host.credential('admin'));
  return {
    registry: host,
    peer: client,
    cleanup: async () => {
      await client.close();
      await host.close();
      dir.cleanup();
    },
  };
});

registryContract('embedded (two socket clients)', async () => {
  const dir = tempDir();
  const host = await EmbeddedHost.start(dir.path);
  const a = new EmbeddedClient(host.socketPath, host.credential('admin'));
  const b = new EmbeddedClient(host.socketPath, host.credential('admin'));
  return {
    registry: a,
    peer: b,
    cleanup: async () => {
      await a.close();
      await b.close();
      await host.close();
      dir.cleanup();
    },
  };
});

describe('embedded registry persistence and hosting', () => {
  it('keeps committed data across a restart of the hosting process', async () => {
    const dir = tempDir();
    try {
      const host = await EmbeddedHost.start(dir.path);
      await host.put('p/1', 'kept');
      await host.put('p/2', 'gone');
      await host.delete('p/2');
      const rev = await host.put('p/3', 'kept too');
      await host.close();
      const again = await EmbeddedHost.start(dir.path);
      expect((await again.get('p/1'))?.value).toBe('kept');
      expect(await again.get('p/2')).toBeUndefined();
      expect((await again.list('p/')).revision).toBe(rev);
      // New writes continue the revision sequence instead of reusing revisions.
      expect(await again.put('p/4', 'x')).toBe(rev + 1);
      await again.close();
    } finally {
      dir.cleanup();
    }
  });

  it('lets exactly one process host a data dir; openRegistry joins the host', async () => {
    const dir = tempDir();
    try {
      const host = await EmbeddedHost.start(dir.path);
      await expect(EmbeddedHost.start(dir.path)).rejects.toMatchObject({ code: 'EADDRINUSE' });
      const joined = await openRegistry(`embedded:${dir.path}`, { role: 'admin' });
      expect(joined).toBeInstanceOf(EmbeddedClient);
      await joined.put('x', '1');
      expect((await host.get('x'))?.value).toBe('1');
      await joined.close();
      await host.close();
      await expect(openRegistry(`embedded:${dir.path}`, { role: 'admin', host: 'never' })).rejects.toThrow();
    } finally {
      dir.cleanup();
    }
  });

  it('a watch resumes after the host restarts and a mirror re-lists when history is gone', async () => {
    const dir = tempDir();
    try {
      let host = await EmbeddedHost.start(dir.path);
      await host.put('m/a', '1');
      const client = new EmbeddedClient(host.socketPath, host.credential('admin'));
      const mirror = await new Mirror(client, 'm/', (raw) => raw).start();
      expect(mirror.get('m/a')).toBe('1');
      await host.close();
      // While the host is down the mirror keeps serving what it had.
      expect(mirror.get('m/a')).toBe('1');
      host = await EmbeddedHost.start(dir.path);
      await host.put('m/b', '2');
      await host.delete('m/a');
      await waitFor(() => mirror.get('m/b') === '2' && mirror.get('m/a') === undefined, { timeoutMs: 8_000, what: 'mirror to resync' });
      mirror.close();
      await client.close();
      await host.close();
    } finally {
      dir.cleanup();
    }
  });
});

describe('embedded client with many watches', () => {
  it('delivers events to several concurrent watches of one client', async () => {
    const dir = tempDir();
    const host = await EmbeddedHost.start(dir.path);
    const client = new EmbeddedClient(host.socketPath, host.credential('admin'));
    try {
      const seen = new Map<string, number>();
      const watches = ['a/', 'b/', 'c/', 'd/', 'e/', 'f/'].map((p) =>
        client.watch(p, (events) => seen.set(p, (seen.get(p) ?? 0) + events.length)),
      );
      await new Promise((r) => setTimeout(r, 200));
      for (const p of ['a/', 'b/', 'c/', 'd/', 'e/', 'f/']) await host.put(`${p}k`, 'v');
      await waitFor(() => seen.size === 6, { what: 'every watch to see its event' });
      for (const w of watches) w.close();
    } finally {
      await client.close();
      await host.close();
      dir.cleanup();
    }
  });
});

describe('embedded registry credentials and request limits', () => {
  it('mints one token per role on first start, keeps them across restarts, files readable by the owner only', async () => {
    const dir = tempDir();
    try {
      const host = await EmbeddedHost.start(dir.path);
      const tokens = ROLES.map((role) => host.credential(role));
      expect(new Set(tokens).size).toBe(3);
      await host.close();
      const again = await EmbeddedHost.start(dir.path);
      expect(ROLES.map((role) => again.credential(role))).toEqual(tokens);
      for (const role of ROLES) {
        expect(readFileSync(tokenFile(dir.path, role), 'utf8').trim()).toBe(again.credential(role));
        expect(statSync(tokenFile(dir.path, role)).mode & 0o777).toBe(0o600);
      }
      expect(statSync(join(dir.path, 'credentials')).mode & 0o777).toBe(0o700);
      expect(statSync(dir.path).mode & 0o777).toBe(0o700);
      expect(statSync(join(dir.path, 'wal.jsonl')).mode & 0o777).toBe(0o600);
      // A joining client finds its role's token in the credentials directory.
      const agent = await openRegistry(`embedded:${dir.path}`, { role: 'agent', host: 'never' });
      await agent.put('nodes/n1', 'x');
      await expect(agent.put('cert-keys/h', 'x')).rejects.toThrow('role "agent" may not put "cert-keys/h"');
      await agent.close();
      await expect(openRegistry(`embedded:${dir.path}`, { role: 'agent', token: again.credential('gateway') })).rejects.toThrow(
        'registry credential is for role "gateway", not "agent"',
      );
      await again.close();
    } finally {
      dir.cleanup();
    }
  });

  it('answers an oversized body with 413 and a malformed request with 400, and keeps serving', async () => {
    const dir = tempDir();
    const host = await EmbeddedHost.start(dir.path);
    const client = new EmbeddedClient(host.socketPath, host.credential('admin'));
    try {
      await expect(client.put('big', 'x'.repeat(MAX_REQUEST_BYTES))).rejects.toThrow(
        `registry: request body exceeds ${MAX_REQUEST_BYTES} bytes`,
      );
      const malformed = { compare: [], success: [{ type: 'put', key: 'k', value: { not: 'a string' } }] } as unknown as TxnRequest;
      await expect(client.txn(malformed)).rejects.toThrow(/registry: invalid request: success\.0\.value/);
      await expect(client.txn({ compare: [], success: [{ type: 'put', key: '', value: 'v' }] })).rejects.toThrow(/invalid request/);
      expect(await client.get('big')).toBeUndefined();
      expect(await client.put('small', 'ok')).toBeGreaterThan(0);
    } finally {
      await client.close();
      await host.close();
      dir.cleanup();
    }
  });
});
