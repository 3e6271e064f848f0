/** Key layout of the registry: one place so that every part agrees on it. */

export const PREFIX = {
  nodes: 'nodes/',
  quorums: 'quorums/',
  instances: 'instances/',
  replicas: 'replicas/',
  routes: 'routes/',
  config: 'config/',
  leaders: 'leaders/',
  /** Public certificate chains and their metadata. */
  certs: 'certs/',
  certStatus: 'cert-status/',
  /** TLS private keys of the certificates under certs/: gateways only. */
  certKeys: 'cert-keys/',
  /** ACME challenges and account (with its private key): gateways only. */
  acme: 'acme/',
  acmeHttp01: 'acme/http-01/',
  acmeAlpn: 'acme/tls-alpn-01/',
  locks: 'locks/',
  certLocks: 'locks/cert/',
  /** Gateway identity records, under each gateway's lease. */
  gateways: 'gateways/',
  /** Per-member status of an instance (deploy failures and the like), written by agents. */
  instanceStatus: 'instance-status/',
  /** App state (agents), the instances' hash-chained histories, metering records and gateway load signals. */
  state: 'state/',
  history: 'history/',
  usage: 'usage/',
  /** Gateways' load signals per instance, under each gateway's lease. */
  load: 'load/',
  /** The elected autoscaler's decisions: desired replicas per instance. */
  scale: 'scale/',
  /** Pending governance proposals of revoked instances (agents). */
  governance: 'governance/',
} as const;

export const keys = {
  node: (id: string) => `${PREFIX.nodes}${id}`,
  gateway: (id: string) => `${PREFIX.gateways}${id}`,
  quorum: (id: string) => `${PREFIX.quorums}${id}`,
  instance: (name: string) => `${PREFIX.instances}${name}`,
  replicasOf: (instanceId: string) => `${PREFIX.replicas}${instanceId}/`,
  replica: (instanceId: string, nodeId: string, slot: number) => `${PREFIX.replicas}${instanceId}/${nodeId}.${slot}`,
  route: (host: string) => `${PREFIX.routes}${host}`,
  network: () => `${PREFIX.config}network`,
  leader: (role: string) => `${PREFIX.leaders}${role}`,
  cert: (host: string) => `${PREFIX.certs}${host}`,
  certKey: (host: string) => `${PREFIX.certKeys}${host}`,
  certStatus: (host: string) => `${PREFIX.certStatus}${host}`,
  acmeAccount: (directoryUrl: string) => `${PREFIX.acme}account/${encodeURIComponent(directoryUrl)}`,
  acmeHttp01: (token: string) => `${PREFIX.acmeHttp01}${token}`,
  acmeAlpn: (host: string) => `${PREFIX.acmeAlpn}${host}`,
  certLock: (host: string) => `${PREFIX.certLocks}${host}`,
  instanceStatusOf: (instanceId: string) => `${PREFIX.instanceStatus}${instanceId}/`,
  instanceStatus: (instanceId: string, nodeId: string) => `${PREFIX.instanceStatus}${instanceId}/${nodeId}`,
  loadOf: (instanceId: string) => `${PREFIX.load}${instanceId}/`,
  load: (instanceId: string, gatewayId: string) => `${PREFIX.load}${instanceId}/${gatewayId}`,
  scale: (instanceId: string) => `${PREFIX.scale}${instanceId}`,
  /** Everything of one instance's history: the head `{seq, hash}` and the records under `r/`. */
  historyOf: (instanceId: string) => `${PREFIX.history}${instanceId}/`,
  historyHead: (instanceId: string) => `${PREFIX.history}${instanceId}/head`,
  historyRecords: (instanceId: string) => `${PREFIX.history}${instanceId}/r/`,
  /** Zero-padded so that a listing returns the records in order. */
  historyRecord: (instanceId: string, seq: number) => `${PREFIX.history}${instanceId}/r/${String(seq).padStart(12, '0')}`,
  usageOf: (instanceId: string) => `${PREFIX.usage}${instanceId}/`,
  usage: (instanceId: string, nodeId: string) => `${PREFIX.usage}${instanceId}/${nodeId}`,
  proposalsOf: (instanceId: string) => `${PREFIX.governance}${instanceId}/`,
  proposal: (instanceId: string, id: string) => `${PREFIX.governance}${instanceId}/${id}`,
} as const;

/** Hosts are case-insensitive and may carry a port; routes are keyed by the bare lower-case name. */
export function normalizeHost(host: string | undefined): string {
  if (!host) return '';
  let h = host.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end > 0 ? h.slice(0, end + 1) : h;
  }
  const colon = h.indexOf(':');
  if (colon >= 0) h = h.slice(0, colon);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}
