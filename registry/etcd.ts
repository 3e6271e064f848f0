/**
 * The etcd backend: the Registry contract mapped one-to-one onto etcd v3 through the `etcd3` client.
 *
 * - Keys and values are UTF-8 strings; revisions, versions and lease ids are etcd's int64s (lease ids are
 *   kept as decimal strings, revisions as numbers: safe up to 2^53).
 * - Unary calls are bounded by a per-attempt deadline and an overall budget, so no call hangs forever.
 *   Reads are retried on any transient error; writes only when the request provably never reached a
 *   server (the retry of a write that did commit would report a false compare failure).
 * - Each watch is its own gRPC watch stream that this file reconnects and resumes from the last delivered
 *   revision + 1. etcd3's own Watcher is not used: it resumes from the header revision of the last response,
 *   and the "created" response already carries the current revision, so a reconnect while history is still
 *   being replayed would skip the rest of it.
 * - Leases are renewed at a third of their TTL by the shared `KeptLease`, one keep-alive round trip per
 *   renewal, so any live member can serve the next one after a member dies.
 * - With etcd auth (users and roles made by `allegra registry setup-auth` from protocol/roles.ts), etcd's
 *   refusals become the same RegistryAccessError the embedded host raises, naming role, operation and key:
 *   etcd only says "permission denied", so the key is found with the shared role table.
 */
import { randomBytes } from 'node:crypto';
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  type ICompare,
  type IDuplexStream,
  type IEvent,
  type IKeyValue,
  type ILeaseKeepAliveRequest,
  type ILeaseKeepAliveResponse,
  type IOptions,
  type IRequestOp,
  type IWatchRequest,
  type IWatchResponse,
  isRecoverableError,
  Range,
} from 'etcd3';
import type {
  Compare,
  KeyValue,
  Lease,
  Op,
  RangeResult,
  Registry,
  TxnRequest,
  TxnResult,
  Watch,
  WatchEvent,
  WatchOptions,
} from '../protocol/registry.js';
import { type Denial, RegistryAccessError, RegistryAuthError, type Role, readDenial, revokeDenial, txnDenial } from '../protocol/roles.js';
import { HeldLeases, KeptLease } from './lease-keeper.js';

/** Deadline of a single gRPC attempt. etcd answers in milliseconds; 5 s covers a slow leader election. */
const ATTEMPT_TIMEOUT_MS = 5_000;
/** Total time a call may spend retrying across members before it fails. */
const CALL_BUDGET_MS = 10_000;
/** `connect()` must report an unreachable cluster quickly. */
const CONNECT_BUDGET_MS = 3_000;
/** A member that refused a connection is skipped for this long, so retries go to the others. */
const HOST_COOLDOWN_MS = 1_000;
const WATCH_RETRY_MIN_MS = 100;
const WATCH_RETRY_MAX_MS = 2_000;

type CallOptions = { deadline: number };
type FaultHandling = NonNullable<IOptions['faultHandling']>;
type Policy = NonNullable<FaultHandling['global']>;

/** Thrown instead of calling a member that is cooling down: the request was never sent. */
class MemberCoolingDownError extends Error {
  constructor() {
    super('etcd member skipped: it refused a connection moments ago');
  }
}

/** etcd3's global policy would retry writes on ambiguous errors; retries are decided in `call` instead. */
const passThroughPolicy = { execute: (fn: (ctx: unknown) => unknown) => fn({ signal: new AbortController().signal }) } as unknown as Policy;

/**
 * Per-member policy: after a transport-level failure the member is skipped for a moment, and the pool
 * moves on to the next one. Replaces etcd3's default circuit breaker, which sidelines a member for 5 s.
 */
function memberPolicy(): Policy {
  let coolingUntil = 0;
  return {
    execute: async (fn: (ctx: unknown) => unknown) => {
      if (Date.now() < coolingUntil) throw new MemberCoolingDownError();
      try {
        return await fn({ signal: new AbortController().signal });
      } catch (err) {
        if (isTransportFailure(err)) coolingUntil = Date.now() + HOST_COOLDOWN_MS;
        throw err;
      }
    },
  } as unknown as Policy;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The member could not be reached (as opposed to etcd answering with an error, or us cancelling). */
function isTransportFailure(err: unknown): boolean {
  if (!(err instanceof Error) || !isRecoverableError(err)) return false;
  const msg = err.message;
  return !msg.includes('etcdserver:') && !msg.includes('CANCELLED');
}

/** The request provably never reached etcd's state machine, so retrying cannot apply it twice. */
function wasNotSent(err: unknown): boolean {
  if (err instanceof MemberCoolingDownError) return true;
  return /No connection established|ECONNREFUSED|etcdserver: no leader|etcdserver: too many requests|raft proposal dropped/.test(
    messageOf(err),
  );
}

function isRetryable(err: unknown, idempotent: boolean): boolean {
  if (wasNotSent(err)) return true;
  return (
    idempotent && err instanceof Error && (isRecoverableError(err) || /etcdserver: (leader changed|request timed out)/.test(err.message))
  );
}

function prefixRange(prefix: string): { key: Buffer; range_end: Buffer } {
  // Range.prefix('') is etcd's "every key" range (key and range_end both "\0").
  const r = Range.prefix(prefix);
  return { key: r.start, range_end: r.end };
}

function toKeyValue(kv: IKeyValue): KeyValue {
  const out: KeyValue = {
    key: kv.key.toString('utf8'),
    value: kv.value.toString('utf8'),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    version: Number(kv.version),
  };
  if (kv.lease && kv.lease !== '0') out.lease = kv.lease;
  return out;
}

/** Lease ids are etcd's positive int64s in decimal; anything else cannot name a lease. */
function leaseIdOf(lease: string): string {
  if (!/^[1-9][0-9]{0,18}$/.test(lease)) throw new Error(`etcd registry: lease "${lease}" not found (etcd lease ids are decimal)`);
  return lease;
}

function toCompare(c: Compare): ICompare {
  const key = Buffer.from(c.key);
  switch (c.target) {
    case 'modRevision':
      return { key, target: 'Mod', result: 'Equal', mod_revision: c.equals };
    case 'version':
      // etcd compares an absent key as version 0, exactly the contract's "absent".
      return { key, target: 'Version', result: 'Equal', version: c.equals };
    case 'value':
      // etcd fails a value compare on an absent key, as the contract does.
      return { key, target: 'Value', result: 'Equal', value: Buffer.from(c.equals) };
  }
}

function toRequestOp(op: Op): IRequestOp {
  switch (op.type) {
    case 'put': {
      const put: NonNullable<IRequestOp['request_put']> = { key: Buffer.from(op.key), value: Buffer.from(op.value) };
      if (op.lease !== undefined) put.lease = leaseIdOf(op.lease);
      return { request_put: put };
    }
    case 'delete':
      return { request_delete_range: { key: Buffer.from(op.key) } };
    case 'deletePrefix':
      return { request_delete_range: prefixRange(op.prefix) };
  }
}

/** A random positive int64: a lease id chosen here makes a retried grant detectable instead of a duplicate. */
function randomLeaseId(): string {
  for (;;) {
    const id = randomBytes(8).readBigUInt64BE() & 0x7fff_ffff_ffff_ffffn;
    if (id !== 0n) return id.toString();
  }
}

export interface EtcdRegistryOptions {
  /** Overall retry budget of `connect()`'s first request. */
  connectTimeoutMs?: number;
  /** The registry role this client acts as (names refusals; default admin). */
  role?: Role;
  /** etcd user and password, when etcd has auth enabled. */
  auth?: { username: string; password: string };
}

/** etcd's answer to a request without a token while auth is enabled. */
function isUnauthenticated(err: unknown): boolean {
  return err instanceof EtcdAuthenticationFailedError || /user name is empty|invalid auth token|authentication failed/.test(messageOf(err));
}

export class EtcdRegistry implements Registry {
  /** The underlying etcd3 client: used by this file's watches, and by tests for raw etcd operations. */
  readonly client: Etcd3;
  private readonly leases = new HeldLeases();
  private readonly watches = new Set<EtcdWatch>();
  private closedFlag = false;

  readonly role: Role;
  /** The etcd user this client authenticates as, if any (named in refusals). */
  private readonly authUser: string | undefined;

  constructor(
    readonly endpoints: string[],
    opts: Pick<EtcdRegistryOptions, 'role' | 'auth'> = {},
  ) {
    if (endpoints.length === 0) throw new Error('etcd registry: no endpoints given');
    this.role = opts.role ?? 'admin';
    this.authUser = opts.auth?.username;
    this.client = new Etcd3({
      hosts: [...endpoints], // etcd3 needs an array here
      ...(opts.auth ? { auth: { username: opts.auth.username, password: opts.auth.password } } : {}),
      grpcOptions: {
        // Pings detect a dead connection that no RST announced (etcd tolerates pings every 5 s or slower).
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5_000,
        // A restarted member should be used again soon, not after gRPC's default minute-long backoff.
        'grpc.initial_reconnect_backoff_ms': 200,
        'grpc.max_reconnect_backoff_ms': 2_000,
        // Listings of a large prefix exceed gRPC's 4 MiB default.
        'grpc.max_receive_message_length': 256 * 1024 * 1024,
      },
      faultHandling: { global: passThroughPolicy, host: () => memberPolicy() },
      // Safety net for any call made without explicit options; `call` sets its own deadlines.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + ATTEMPT_TIMEOUT_MS }),
    });
  }

  /** Opens a client and verifies with a first request that the cluster answers. */
  static async connect(endpoints: string[], opts: EtcdRegistryOptions = {}): Promise<EtcdRegistry> {
    const registry = new EtcdRegistry(endpoints, opts);
    try {
      // A key every role may read (config/), so the probe also proves the credentials work.
      const probe = (o: CallOptions) => registry.client.kv.range({ key: Buffer.from('config/network'), count_only: true }, o);
      await registry.call('connect', true, probe, opts.connectTimeoutMs ?? CONNECT_BUDGET_MS);
    } catch (err) {
      await registry.close();
      if (err instanceof RegistryAuthError || err instanceof RegistryAccessError) throw err;
      const cause = (err as Error).cause ?? err;
      throw new Error(`cannot reach etcd at ${endpoints.join(',')}: ${messageOf(cause)}`, { cause });
    }
    return registry;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /**
   * Runs one etcd request with a deadline per attempt, retrying across members within `budgetMs` when
   * `isRetryable` allows it. Errors name the operation and keep etcd's message (e.g. "lease not found").
   */
  private async call<T>(
    what: string,
    idempotent: boolean,
    fn: (opts: CallOptions, attempt: number) => Promise<T>,
    budgetMs = CALL_BUDGET_MS,
    /** What the role table says was refused, for etcd's bare "permission denied". */
    denial: () => Denial | null | Promise<Denial | null> = () => null,
  ): Promise<T> {
    const deadline = Date.now() + budgetMs;
    let delay = 25;
    /** The most telling failure: "member skipped" says less than the refusal that caused the skip. */
    let reported: unknown;
    for (let attempt = 0; ; attempt++) {
      if (this.closedFlag) throw new Error(`etcd registry: ${what}: registry is closed`);
      try {
        return await fn({ deadline: Math.min(deadline, Date.now() + ATTEMPT_TIMEOUT_MS) }, attempt);
      } catch (err) {
        if (err instanceof EtcdPermissionDeniedError)
          throw this.refused(
            what,
            await Promise.resolve()
              .then(denial)
              .catch(() => null),
          );
        if (isUnauthenticated(err)) {
          throw new RegistryAuthError(
            `etcd refused ${this.authUser ? `user "${this.authUser}"` : 'a client without credentials'} (${messageOf(err)}); pass --registry-credentials`,
          );
        }
        if (!(err instanceof MemberCoolingDownError) || reported === undefined) reported = err;
        if (!isRetryable(err, idempotent) || Date.now() + delay >= deadline || this.closedFlag) {
          throw new Error(`etcd registry: ${what}: ${messageOf(reported)}`, { cause: reported });
        }
      }
      // Not unref'd: a process awaiting this call must not exit in the middle of a retry.
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 500);
    }
  }

  /** The error for a request etcd refused: the role table names what was refused, etcd only that it was. */
  private refused(what: string, denial: Denial | null): Error {
    if (denial) return new RegistryAccessError(denial);
    return new Error(
      `etcd registry: ${what}: permission denied by etcd for role "${this.role}" although the role table allows it; ` +
        'the etcd roles may be out of date: run `allegra registry setup-auth` again',
    );
  }

  /**
   * etcd's simple tokens live in each member's memory: a restarted member no longer knows the token, and
   * a stream opened on it fails (a watch even reports "permission denied"). Unary calls re-authenticate by
   * themselves; streams need the cached token dropped by hand.
   */
  forgetToken(): void {
    const pool = (this.client as unknown as { pool?: { authenticator?: { invalidateMetadata?: () => void } } }).pool;
    pool?.authenticator?.invalidateMetadata?.();
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const res = await this.call(
      `get "${key}"`,
      true,
      (o) => this.client.kv.range({ key: Buffer.from(key) }, o),
      CALL_BUDGET_MS,
      () => readDenial(this.role, 'get', key),
    );
    const kv = res.kvs[0];
    return kv ? toKeyValue(kv) : undefined;
  }

  async list(prefix: string): Promise<RangeResult> {
    // One range request is one consistent snapshot; its header revision is the revision it reflects.
    const res = await this.call(
      `list "${prefix}"`,
      true,
      (o) => this.client.kv.range({ ...prefixRange(prefix), sort_order: 'Ascend', sort_target: 'Key' }, o),
      CALL_BUDGET_MS,
      () => readDenial(this.role, 'list', prefix),
    );
    return { items: res.kvs.map(toKeyValue), revision: Number(res.header.revision) };
  }

  async put(key: string, value: string, opts: { lease?: string } = {}): Promise<number> {
    const lease = opts.lease === undefined ? undefined : leaseIdOf(opts.lease);
    const req = { key: Buffer.from(key), value: Buffer.from(value), ...(lease ? { lease } : {}) };
    const res = await this.call(
      `put "${key}"`,
      false,
      (o) => this.client.kv.put(req, o),
      CALL_BUDGET_MS,
      () => txnDenial(this.role, { compare: [], success: [{ type: 'put', key, value }] }),
    );
    return Number(res.header.revision);
  }

  async delete(key: string): Promise<boolean> {
    const res = await this.call(
      `delete "${key}"`,
      false,
      (o) => this.client.kv.deleteRange({ key: Buffer.from(key) }, o),
      CALL_BUDGET_MS,
      () => txnDenial(this.role, { compare: [], success: [{ type: 'delete', key }] }),
    );
    return Number(res.deleted) > 0;
  }

  async txn(request: TxnRequest): Promise<TxnResult> {
    const req = {
      compare: request.compare.map(toCompare),
      success: request.success.map(toRequestOp),
      failure: (request.failure ?? []).map(toRequestOp),
    };
    const res = await this.call(
      'txn',
      false,
      (o) => this.client.kv.txn(req, o),
      CALL_BUDGET_MS,
      () => txnDenial(this.role, request),
    );
    return { succeeded: res.succeeded, revision: Number(res.header.revision) };
  }

  watch(prefix: string, onEvents: (events: WatchEvent[]) => void, opts: WatchOptions = {}): Watch {
    if (this.closedFlag) throw new Error('etcd registry: watch: registry is closed');
    const w = new EtcdWatch(this, prefix, onEvents, opts, () => this.watches.delete(w));
    this.watches.add(w);
    w.start();
    return w;
  }

  async grantLease(ttlMs: number): Promise<Lease> {
    if (!(ttlMs > 0)) throw new Error(`etcd registry: lease TTL must be positive, got ${ttlMs}`);
    // etcd TTLs are whole seconds (and etcd may raise them to its minimum, 1.5 × election timeout).
    const ttlSeconds = Math.max(1, Math.ceil(ttlMs / 1000));
    const id = randomLeaseId();
    const granted = await this.call('grant lease', true, async (o, attempt) => {
      try {
        return Number((await this.client.leaseClient.leaseGrant({ ID: id, TTL: ttlSeconds }, o)).TTL);
      } catch (err) {
        // A retry that finds our own id means the earlier attempt was granted after all.
        if (attempt > 0 && messageOf(err).includes('lease already exists')) return ttlSeconds;
        throw err;
      }
    });
    const ttlEffectiveMs = Math.max(ttlSeconds, granted) * 1000;
    const lease: KeptLease = new KeptLease(id, ttlEffectiveMs, {
      // KeptLease renews every ttl/3: an attempt may take as long, no longer, so renewals never pile up.
      keepAlive: (leaseId) => this.keepAliveOnce(leaseId, Math.max(200, Math.floor(ttlEffectiveMs / 3))),
      revoke: (leaseId) => this.revokeLease(leaseId),
    });
    return this.leases.add(lease);
  }

  /**
   * One keep-alive round trip on a fresh LeaseKeepAlive stream: true if etcd renewed the lease, false if
   * it no longer exists (TTL 0), rejects if no member answered in time.
   */
  private async keepAliveOnce(id: string, timeoutMs: number): Promise<boolean> {
    if (this.closedFlag) throw new Error('etcd registry: keep-alive: registry is closed');
    const stream = await this.client.leaseClient.leaseKeepAlive();
    return new Promise<boolean>((resolve, reject) => {
      let done = false;
      const finish = (outcome: { ttl: number } | { error: Error }) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        closeStream(stream);
        if ('ttl' in outcome) resolve(outcome.ttl > 0);
        else reject(outcome.error);
      };
      const timer = setTimeout(() => finish({ error: new Error('lease keep-alive timed out') }), timeoutMs);
      timer.unref(); // bounded anyway; it must not hold a process that is otherwise done
      stream.on('data', (res: ILeaseKeepAliveResponse) => finish({ ttl: Number(res.TTL) }));
      stream.on('error', (error: Error) => finish({ error }));
      stream.on('end', () => finish({ error: new Error('lease keep-alive stream ended') }));
      stream.write({ ID: id } satisfies ILeaseKeepAliveRequest);
    });
  }

  private async revokeLease(id: string): Promise<void> {
    await this.call(
      `revoke lease ${id}`,
      true,
      async (o) => {
        try {
          await this.client.leaseClient.leaseRevoke({ ID: id }, o);
        } catch (err) {
          // Already gone (expired, or an earlier attempt of this revoke went through): that is the goal.
          if (!(err instanceof EtcdLeaseInvalidError)) throw err;
        }
      },
      CALL_BUDGET_MS,
      () => this.revokeDenialOf(id),
    );
  }

  /** Which attached key a refused revocation stumbled on (etcd lists a lease's keys on request). */
  private async revokeDenialOf(id: string): Promise<Denial> {
    const unnamed: Denial = { role: this.role, operation: 'revoke a lease holding', key: '(a key it may not write)' };
    try {
      const res = await this.client.leaseClient.leaseTimeToLive({ ID: id, keys: true }, { deadline: Date.now() + ATTEMPT_TIMEOUT_MS });
      return (
        revokeDenial(
          this.role,
          res.keys.map((k) => k.toString('utf8')),
        ) ?? unnamed
      );
    } catch {
      return unnamed; // newer etcd versions hide the keys from a role that may not read them
    }
  }

  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    // Leases are not revoked: like a crashed holder's, they expire after their TTL.
    this.leases.stopAll();
    for (const w of [...this.watches]) w.close();
    this.client.close();
  }
}

/**
 * Ends a stream without etcd3 treating it as a member failure: its error handler only blames the member
 * while the stream is writable, and `end()` makes it unwritable before `cancel()` raises CANCELLED.
 */
function closeStream(stream: { end(): void; cancel(): void }): void {
  try {
    stream.end();
    stream.cancel();
  } catch {
    // Already closed.
  }
}

/**
 * One prefix watch on a gRPC stream of its own. `next` is the first revision not yet delivered; every
 * (re)connection asks etcd for exactly that revision onwards, so a reconnect neither loses nor repeats
 * events. (etcd never splits one revision's events across responses, so whole batches are dropped or kept.)
 */
class EtcdWatch implements Watch {
  private next: number | undefined;
  private stream: IDuplexStream<IWatchRequest, IWatchResponse> | null = null;
  private stopped = false;
  private retryDelay = WATCH_RETRY_MIN_MS;
  private retryTimer: NodeJS.Timeout | null = null;
  /** Store revision when the current stream's watch was created: the "current revision" on compaction. */
  private createdRevision = 0;

  constructor(
    private readonly registry: EtcdRegistry,
    private readonly prefix: string,
    private readonly onEvents: (events: WatchEvent[]) => void,
    private readonly opts: WatchOptions,
    private readonly onClose: () => void,
  ) {
    this.next = opts.fromRevision;
  }

  start(): void {
    void this.connect();
  }

  private async connect(): Promise<void> {
    this.retryTimer = null;
    if (this.stopped || this.registry.closed) return;
    let stream: IDuplexStream<IWatchRequest, IWatchResponse>;
    try {
      stream = await this.registry.client.watchClient.watch();
    } catch {
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) {
      closeStream(stream);
      return;
    }
    this.stream = stream;
    stream.on('data', (res: IWatchResponse) => this.onResponse(stream, res));
    stream.on('error', () => this.onBroken(stream));
    stream.on('end', () => this.onBroken(stream));
    stream.write({
      create_request: { ...prefixRange(this.prefix), start_revision: this.next ?? 0 },
    });
  }

  private onResponse(stream: IDuplexStream<IWatchRequest, IWatchResponse>, res: IWatchResponse): void {
    if (stream !== this.stream || this.stopped) return;
    if (res.created) {
      this.retryDelay = WATCH_RETRY_MIN_MS;
      this.createdRevision = Number(res.header.revision);
      // Without a start revision etcd watches from exactly header.revision + 1: resume from there too.
      if (this.next === undefined) this.next = this.createdRevision + 1;
    }
    if (res.canceled) {
      this.onCanceled(stream, res);
      return;
    }
    if (res.events.length === 0) return;
    const from = this.next ?? 0;
    const events = res.events.map(toWatchEvent).filter((e) => e.modRevision >= from);
    if (events.length === 0) return;
    this.next = (events[events.length - 1] as WatchEvent).modRevision + 1;
    try {
      this.onEvents(events);
    } catch (err) {
      // A consumer's exception must not break the stream's bookkeeping; surface it like an emitter would.
      setImmediate(() => {
        throw err;
      });
    }
  }

  private onCanceled(stream: IDuplexStream<IWatchRequest, IWatchResponse>, res: IWatchResponse): void {
    this.stream = null;
    closeStream(stream);
    const compactRevision = Number(res.compact_revision);
    if (compactRevision > 0) {
      // History from `next` is gone. The cancel's header carries no revision; the creation's header does.
      const current = Math.max(this.createdRevision, compactRevision);
      this.next = current + 1;
      this.opts.onCompacted?.(current);
      if (!this.stopped) void this.connect();
      return;
    }
    if (/invalid auth token/.test(res.cancel_reason)) {
      // The member does not know our token (it restarted, or the token expired there): fetch a new one.
      this.registry.forgetToken();
    } else if (/permission denied/.test(res.cancel_reason)) {
      const denial = readDenial(this.registry.role, 'watch', this.prefix);
      if (denial) {
        // Refused for good: the role may not read this prefix. Report it and end the watch.
        this.opts.onError?.(new RegistryAccessError(denial));
        this.close();
        return;
      }
      // The table allows it: the member did not know our token (restarted, or the token expired there).
      this.registry.forgetToken();
    }
    // Cancelled for another reason (e.g. the member is shutting down): reconnect, maybe elsewhere.
    this.scheduleReconnect();
  }

  private onBroken(stream: IDuplexStream<IWatchRequest, IWatchResponse>): void {
    if (stream !== this.stream) return;
    this.stream = null;
    closeStream(stream);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.registry.closed || this.retryTimer) return;
    const jittered = this.retryDelay * (0.75 + Math.random() / 2);
    this.retryDelay = Math.min(this.retryDelay * 2, WATCH_RETRY_MAX_MS);
    this.retryTimer = setTimeout(() => void this.connect(), jittered);
    this.retryTimer.unref();
  }

  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.stream) closeStream(this.stream);
    this.stream = null;
    this.onClose();
  }
}

function toWatchEvent(ev: IEvent): WatchEvent {
  const key = ev.kv.key.toString('utf8');
  const modRevision = Number(ev.kv.mod_revision);
  if (ev.type === 'Delete') return { type: 'delete', key, modRevision };
  return { type: 'put', key, value: ev.kv.value.toString('utf8'), modRevision };
}
