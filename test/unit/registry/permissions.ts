/**
 * The registry permission contract: every backend must refuse exactly what the role table refuses, with an
 * error naming role, operation and key, and must refuse clients without a valid credential. The table below
 * restates the table on its own, so a change to protocol/roles.ts that departs from it fails here.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Registry, WatchEvent } from '../../../protocol/registry.js';
import { RegistryAccessError, RegistryAuthError, type Role } from '../../../protocol/roles.js';
import { sleep, waitFor } from '../../helpers/tmp.js';

type Access = '' | 'r' | 'rw';

/** prefix → [agent, gateway]; admin may do everything. */
const SPEC: Array<[prefix: string, agent: Access, gateway: Access]> = [
  ['nodes/', 'rw', 'r'],
  ['quorums/', 'rw', 'r'],
  ['instances/', 'rw', 'r'],
  ['replicas/', 'rw', 'r'],
  ['routes/', 'rw', 'r'],
  ['leaders/', 'rw', 'r'],
  ['config/', 'r', 'r'],
  ['certs/', 'r', 'rw'],
  ['cert-status/', 'r', 'rw'],
  ['cert-keys/', '', 'rw'],
  ['acme/', '', 'rw'],
  ['acme/account/', '', 'rw'],
  ['locks/cert/', '', 'rw'],
  ['gateways/', 'r', 'rw'],
  ['instance-status/', 'rw', 'r'],
  ['state/', 'rw', ''],
  ['history/', 'rw', 'r'],
  ['usage/', 'rw', ''],
  ['load/', 'r', 'rw'],
  ['scale/', 'rw', 'r'],
  ['governance/', 'rw', ''],
  // Not listed: admin only.
  ['locks/other/', '', ''],
  ['secrets/', '', ''],
  ['certsx/', '', ''],
];

function accessOf(role: Role, entry: (typeof SPEC)[number]): Access {
  if (role === 'admin') return 'rw';
  return role === 'agent' ? entry[1] : entry[2];
}

export interface PermissionBackend {
  /** A client acting as `role`, authenticated with that role's credential. */
  as(role: Role): Promise<Registry>;
  /** Ways to talk to the registry without a valid credential; `open` may itself reject. */
  unauthenticated: Array<{ name: string; open: () => Promise<Registry> }>;
  cleanup(): Promise<void>;
}

/** Runs `op`: 'ok' if it succeeded, 'denied' if refused with the expected message, else the surprise. */
async function outcome(op: () => Promise<unknown>, role: Role, verb: string, key: string): Promise<string> {
  try {
    await op();
    return 'ok';
  } catch (err) {
    const ok = err instanceof RegistryAccessError && err.role === role && err.key === key;
    const message = `registry: permission denied: role "${role}" may not ${verb} "${key}"`;
    return ok && (err as Error).message === message ? 'denied' : `unexpected error: ${(err as Error).message}`;
  }
}

export function permissionContract(name: string, open: () => Promise<PermissionBackend>): void {
  describe(`Registry permissions: ${name}`, () => {
    let b: PermissionBackend;
    let admin: Registry;
    const clients = new Map<Role, Registry>();
    const as = (role: Role) => clients.get(role) as Registry;

    beforeAll(async () => {
      b = await open();
      admin = await b.as('admin');
      for (const role of ['admin', 'agent', 'gateway'] as const) clients.set(role, await b.as(role));
    });
    afterAll(async () => {
      for (const c of clients.values()) await c.close();
      await admin?.close();
      await b?.cleanup();
    });

    for (const role of ['admin', 'agent', 'gateway'] as const) {
      it(`${role}: get, list, put, delete and deletePrefix exactly as the table allows`, async () => {
        const r = as(role);
        const mismatches: string[] = [];
        for (const entry of SPEC) {
          const [prefix] = entry;
          const access = accessOf(role, entry);
          const key = `${prefix}probe-${role}`;
          const want = (allowed: boolean) => (allowed ? 'ok' : 'denied');
          const check = async (what: string, verb: string, target: string, allowed: boolean, op: () => Promise<unknown>) => {
            const got = await outcome(op, role, verb, target);
            if (got !== want(allowed)) mismatches.push(`${what} ${target}: expected ${want(allowed)}, got ${got}`);
          };
          await admin.put(key, 'seeded');
          await check('get', 'get', key, access !== '', async () => expect((await r.get(key))?.value).toBe('seeded'));
          await check('list', 'list', prefix, access !== '', async () => expect((await r.list(prefix)).items.length).toBeGreaterThan(0));
          await check('put', 'put', key, access === 'rw', () => r.put(key, 'changed'));
          await check('delete', 'delete', key, access === 'rw', () => r.delete(key));
          await admin.put(key, 'seeded');
          await check('deletePrefix', 'deletePrefix', prefix, access === 'rw', () =>
            r.txn({ compare: [], success: [{ type: 'deletePrefix', prefix }] }),
          );
          // A refused write changed nothing.
          if (access !== 'rw' && (await admin.get(key))?.value !== 'seeded') mismatches.push(`${key} changed by a refused write`);
          await admin.txn({ compare: [], success: [{ type: 'deletePrefix', prefix }] });
        }
        expect(mismatches).toEqual([]);
      });
    }

    it('a range wider than one granted prefix is refused, even when every granted part is allowed', async () => {
      await expect(as('gateway').list('cert')).rejects.toThrow('role "gateway" may not list "cert"');
      await expect(as('agent').list('')).rejects.toThrow('role "agent" may not list ""');
      await expect(as('agent').txn({ compare: [], success: [{ type: 'deletePrefix', prefix: 'n' }] })).rejects.toThrow(
        'role "agent" may not deletePrefix "n"',
      );
      expect((await as('admin').list('')).revision).toBeGreaterThan(0);
    });

    it('a transaction is checked whole: compares need read, every op of both branches needs write, and nothing is applied', async () => {
      const agent = as('agent');
      await admin.put('instances/t', 'v1');
      await expect(
        agent.txn({
          compare: [{ key: 'instances/t', target: 'value', equals: 'v1' }],
          success: [
            { type: 'put', key: 'instances/t', value: 'v2' },
            { type: 'put', key: 'cert-keys/t', value: 'stolen?' },
          ],
        }),
      ).rejects.toThrow('role "agent" may not put "cert-keys/t"');
      // The failure branch is never taken here, and is checked all the same.
      await expect(
        agent.txn({
          compare: [{ key: 'instances/t', target: 'value', equals: 'v1' }],
          success: [{ type: 'put', key: 'instances/t', value: 'v2' }],
          failure: [{ type: 'delete', key: 'certs/t' }],
        }),
      ).rejects.toThrow('role "agent" may not delete "certs/t"');
      await expect(
        agent.txn({
          compare: [{ key: 'cert-keys/t', target: 'version', equals: 0 }],
          success: [{ type: 'put', key: 'instances/t', value: 'v3' }],
        }),
      ).rejects.toThrow('role "agent" may not compare "cert-keys/t"');
      expect((await admin.get('instances/t'))?.value).toBe('v1');
      expect(await admin.get('cert-keys/t')).toBeUndefined();
      const ok = await agent.txn({
        compare: [{ key: 'instances/t', target: 'value', equals: 'v1' }],
        success: [{ type: 'put', key: 'instances/t', value: 'v2' }],
      });
      expect(ok.succeeded).toBe(true);
    });

    it('a watch needs read on its prefix: allowed watches see events, refused ones end through onError', async () => {
      const seen: WatchEvent[] = [];
      const allowed = as('agent').watch('routes/', (events) => seen.push(...events));
      const refusals: Error[] = [];
      const leaked: WatchEvent[] = [];
      const refused = as('agent').watch('cert-keys/', (events) => leaked.push(...events), { onError: (err) => refusals.push(err) });
      const refusedWide = as('gateway').watch('', (events) => leaked.push(...events), { onError: (err) => refusals.push(err) });
      await waitFor(() => refusals.length === 2, { what: 'two refused watches' });
      await sleep(100);
      await admin.put('routes/w', 'r');
      await admin.put('cert-keys/w', 'secret');
      await waitFor(() => seen.length === 1, { what: 'the allowed watch to see its event' });
      await sleep(300);
      allowed.close();
      refused.close();
      refusedWide.close();
      expect(leaked).toEqual([]);
      expect(refusals.map((e) => e.message).sort()).toEqual([
        'registry: permission denied: role "agent" may not watch "cert-keys/"',
        'registry: permission denied: role "gateway" may not watch ""',
      ]);
      expect(refusals.every((e) => e instanceof RegistryAccessError)).toBe(true);
    });

    for (const role of ['agent', 'gateway'] as const) {
      it(`${role}: leases can be granted, hold keys the role may write, and be revoked`, async () => {
        const r = as(role);
        const key = role === 'agent' ? 'nodes/leased' : 'gateways/leased';
        const lease = await r.grantLease(2_000);
        await r.put(key, 'x', { lease: lease.id });
        expect((await admin.get(key))?.lease).toBe(lease.id);
        await lease.revoke();
        await waitFor(async () => (await admin.get(key)) === undefined, { what: 'revoked lease keys gone' });
      });
    }

    it('revoking a lease that holds a key the role may not write is refused (as etcd does)', async () => {
      const lease = await as('agent').grantLease(2_000);
      await admin.put('secrets/leased', 'x', { lease: lease.id });
      await expect(lease.revoke()).rejects.toThrow('role "agent" may not revoke a lease holding "secrets/leased"');
      expect((await admin.get('secrets/leased'))?.value).toBe('x');
      await admin.delete('secrets/leased');
    });

    it('refuses clients without a valid credential', async () => {
      await admin.put('instances/victim', 'owner');
      for (const u of b.unauthenticated) {
        let client: Registry | undefined;
        try {
          client = await u.open();
        } catch (err) {
          expect(err, u.name).toBeInstanceOf(RegistryAuthError);
          expect((err as Error).message, u.name).toMatch(/^registry: unauthenticated: /);
          continue;
        }
        const c = client;
        try {
          await expect(c.put('instances/victim', 'attacker'), u.name).rejects.toThrow(RegistryAuthError);
          await expect(c.get('instances/victim'), u.name).rejects.toThrow(RegistryAuthError);
          await expect(c.list('instances/'), u.name).rejects.toThrow(RegistryAuthError);
          await expect(c.grantLease(1_000), u.name).rejects.toThrow(RegistryAuthError);
          const errors: Error[] = [];
          c.watch('instances/', () => {}, { onError: (err) => errors.push(err) });
          await waitFor(() => errors.length > 0, { what: `${u.name}: refused watch` });
          expect(errors[0], u.name).toBeInstanceOf(RegistryAuthError);
        } finally {
          await c.close();
        }
      }
      expect((await admin.get('instances/victim'))?.value).toBe('owner');
    });
  });
}
