/** The history's chain and replay: every way of tampering with it or acting without the right is caught. */
import { describe, expect, it } from 'vitest';
import { makeGrant } from '../../../protocol/grants.js';
import { genesisHash, type HistoryEntry, type HistoryRecord, proposalId, recordHash, verifyHistory } from '../../../protocol/history.js';
import { signRecord } from '../../../protocol/records.js';
import { envelopeOf, generateKeyPair, type KeyPair, SIGNATURE_HEADERS, signRequest } from '../../../protocol/signing.js';

const node = generateKeyPair();
const owner = generateKeyPair();
const team = generateKeyPair();
const [g1, g2, g3] = [generateKeyPair(), generateKeyPair(), generateKeyPair()];
const ID = 'i-test';

/** Builds a chain the way agents append it. */
function chain(entries: HistoryEntry[]): HistoryRecord[] {
  const out: HistoryRecord[] = [];
  for (const [seq, e] of entries.entries()) {
    const prev = seq === 0 ? genesisHash(ID) : recordHash(out[seq - 1] as HistoryRecord);
    out.push(signRecord(node, { instanceId: ID, seq, prev, at: 1000 + seq, node: 'n-1', ...e }) as HistoryRecord);
  }
  return out;
}

const req = (kp: KeyPair, method: string, path: string, body: unknown) => {
  const g = makeGrant(kp, method, path, body);
  return { envelope: g.envelope, body: g.body };
};
/** A signed request without a body (actions, approvals), as the RPC keeps it. */
const bare = (kp: KeyPair, method: string, path: string) => ({
  envelope: envelopeOf(method, path, signRequest(kp, { method, path, audience: 'n-1' })),
  body: '',
});
const create = (): HistoryEntry => ({
  op: 'create',
  author: owner.publicKeyHex,
  request: req(owner, 'POST', '/v1/instances', { name: 'app' }),
  detail: { name: 'app' },
});
const auth = (op: 'auth.add' | 'auth.remove', by: KeyPair, key: string): HistoryEntry => ({
  op,
  author: by.publicKeyHex,
  request: req(by, 'POST', '/v1/instances/app/auth', op === 'auth.add' ? { add: key } : { remove: key }),
  detail: { key },
});
const stop = (by: KeyPair): HistoryEntry => ({
  op: 'stop',
  author: by.publicKeyHex,
  request: bare(by, 'POST', '/v1/instances/app/stop'),
  detail: {},
});
const deploy = (by: KeyPair, artifact: string): HistoryEntry => {
  const headers = signRequest(by, { method: 'PUT', path: '/v1/instances/app/code', audience: 'n-1', bodySha256: artifact });
  return {
    op: 'deploy',
    author: by.publicKeyHex,
    request: { envelope: envelopeOf('PUT', '/v1/instances/app/code', headers) },
    detail: { artifact, version: 1 },
  };
};
const policy = { threshold: 2, keys: [g1.publicKeyHex, g2.publicKeyHex, g3.publicKeyHex] };
const revoke = (): HistoryEntry => ({
  op: 'revoke',
  author: owner.publicKeyHex,
  request: req(owner, 'POST', '/v1/instances/app/revoke', { governance: policy }),
  detail: { governance: policy },
});
function governance(signers: KeyPair[]): HistoryEntry {
  const action = { type: 'stop' };
  const proposal = makeGrant(signers[0] as KeyPair, 'POST', '/v1/instances/app/proposals', { action });
  const id = proposalId(ID, action, proposal.envelope.headers[SIGNATURE_HEADERS.nonce] as string);
  const approvals = [proposal, ...signers.slice(1).map((k) => bare(k, 'POST', `/v1/instances/app/proposals/${id}/approve`))];
  return { op: 'governance', author: (signers[0] as KeyPair).publicKeyHex, approvals, detail: { proposal: id, action } };
}

const reasons = (records: HistoryRecord[]) => verifyHistory(ID, records).problems.map((p) => `${p.seq}: ${p.reason}`);

describe('verifyHistory', () => {
  const artifact = 'a'.repeat(64);

  it('accepts a valid history and replays owner, team and revocation', () => {
    const records = chain([
      create(),
      auth('auth.add', owner, team.publicKeyHex),
      stop(team),
      deploy(team, artifact),
      revoke(),
      governance([g1, g3]),
    ]);
    const check = verifyHistory(ID, records, { head: { seq: 5, hash: recordHash(records[5] as HistoryRecord) } });
    expect(check.problems).toEqual([]);
    expect(check).toMatchObject({ ok: true, owner: owner.publicKeyHex, team: [team.publicKeyHex], revoked: true, governance: policy });
  });

  it('catches an altered, removed or reordered record, and a head that is not the end', () => {
    const records = chain([create(), stop(owner), deploy(owner, artifact), stop(owner)]);
    const altered = records.map((r) => (r.seq === 2 ? { ...r, detail: { ...r.detail, version: 9 } } : r));
    expect(reasons(altered)).toEqual(
      expect.arrayContaining([expect.stringMatching(/^2: node signature does not match/), expect.stringMatching(/^3: does not chain/)]),
    );
    expect(reasons([records[0], records[2], records[3]] as HistoryRecord[])).toEqual(
      expect.arrayContaining([expect.stringMatching(/out of order/), expect.stringMatching(/does not chain/)]),
    );
    expect(reasons([records[0], records[2], records[1], records[3]] as HistoryRecord[]).length).toBeGreaterThan(0);
    const truncated = verifyHistory(ID, records.slice(0, 3), { head: { seq: 3, hash: recordHash(records[3] as HistoryRecord) } });
    expect(truncated.problems.map((p) => p.reason)).toEqual([expect.stringMatching(/head names record 3/)]);
  });

  it('refuses authors who were not allowed at that point', () => {
    // A team key acting after its removal; a team key adding keys; a deploy whose request uploaded other bytes.
    expect(
      reasons(chain([create(), auth('auth.add', owner, team.publicKeyHex), auth('auth.remove', owner, team.publicKeyHex), stop(team)])),
    ).toEqual([expect.stringMatching(/^3: stop by .* who may not operate/)]);
    expect(reasons(chain([create(), auth('auth.add', owner, team.publicKeyHex), auth('auth.add', team, g1.publicKeyHex)]))).toEqual([
      expect.stringMatching(/^2: auth.add by .* who is not the owner/),
    ]);
    const lying = { ...deploy(owner, artifact), detail: { artifact: 'b'.repeat(64), version: 1 } };
    expect(reasons(chain([create(), lying]))).toEqual([expect.stringMatching(/not the one the request uploaded/)]);
    // After a revocation the owner can change nothing.
    expect(reasons(chain([create(), revoke(), stop(owner)]))).toEqual([expect.stringMatching(/after the revocation/)]);
  });

  it('needs M distinct governance signatures: M−1, a repeated key or an outsider do not do', () => {
    expect(reasons(chain([create(), revoke(), governance([g1])]))).toEqual([expect.stringMatching(/only 1 of the 2 required/)]);
    expect(reasons(chain([create(), revoke(), governance([g1, g1])]))).toEqual([expect.stringMatching(/only 1 of the 2 required/)]);
    expect(reasons(chain([create(), revoke(), governance([g1, team])]))).toEqual([expect.stringMatching(/outside the governance policy/)]);
    const noPolicy: HistoryEntry = {
      ...revoke(),
      request: req(owner, 'POST', '/v1/instances/app/revoke', {}),
      detail: { governance: null },
    };
    expect(reasons(chain([create(), noPolicy, governance([g1, g2])]))).toEqual([expect.stringMatching(/revoked without governance/)]);
  });

  it('refuses a request signed by someone else than the named author, or for another instance', () => {
    const forged = { ...stop(team), author: owner.publicKeyHex };
    expect(reasons(chain([create(), forged]))).toEqual([expect.stringMatching(/signed by another key than the author/)]);
    const other = { op: 'stop' as const, author: owner.publicKeyHex, request: bare(owner, 'POST', '/v1/instances/other/stop'), detail: {} };
    expect(reasons(chain([create(), other]))).toEqual([expect.stringMatching(/names another instance/)]);
  });

  it('accepts a rollback only to code an earlier version ran', () => {
    const a = 'a'.repeat(64);
    const b = 'b'.repeat(64);
    const v2 = { ...deploy(owner, b), detail: { artifact: b, version: 2 } };
    const rollback = (to: number, artifact: string): HistoryEntry => ({
      op: 'rollback',
      author: owner.publicKeyHex,
      request: req(owner, 'POST', '/v1/instances/app/rollback', { version: to }),
      detail: { artifact, version: 3, to },
    });
    expect(reasons(chain([create(), deploy(owner, a), v2, rollback(1, a)]))).toEqual([]);
    expect(reasons(chain([create(), deploy(owner, a), v2, rollback(1, b)]))).toEqual([
      expect.stringMatching(/code that version 1 never ran/),
    ]);
    expect(reasons(chain([create(), deploy(owner, a), rollback(5, a)]))).toEqual([expect.stringMatching(/never ran/)]);
  });
});
