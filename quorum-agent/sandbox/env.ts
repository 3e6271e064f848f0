/**
 * The environment a replica starts with. Built from nothing: the agent's own environment (registry tokens,
 * NODE_EXTRA_CA_CERTS, cloud credentials…) never reaches tenant code. A replica sees the basics, its
 * instance's own `env`, and the documented ALLEGRA_* variables, which the instance cannot override.
 */

export interface ReplicaEnvInput {
  /** The instance's own variables (spec.env). */
  env: Record<string, string>;
  port: number;
  instanceName: string;
  instanceId: string;
  slot: number;
  /** The replica's writable directory as the replica sees it. */
  dataDir: string;
  /** The state API, when the node offers it to this replica. */
  stateUrl?: string;
  /** PATH inside the replica; the sandbox's system PATH by default. */
  path?: string;
  home?: string;
}

export const SANDBOX_PATH = '/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin';

/** The variables replicas may rely on (documented in docs/ARCHITECTURE.md). */
export const DOCUMENTED = [
  'PORT',
  'HOST',
  'ALLEGRA_INSTANCE',
  'ALLEGRA_INSTANCE_ID',
  'ALLEGRA_REPLICA',
  'ALLEGRA_DATA_DIR',
  'ALLEGRA_STATE_URL',
];

export function replicaEnv(input: ReplicaEnvInput): Record<string, string> {
  const basics = { PATH: input.path ?? SANDBOX_PATH, HOME: input.home ?? input.dataDir, LANG: 'C.UTF-8', TMPDIR: '/tmp' };
  const own: Record<string, string> = {
    PORT: String(input.port),
    HOST: '127.0.0.1',
    ALLEGRA_INSTANCE: input.instanceName,
    ALLEGRA_INSTANCE_ID: input.instanceId,
    ALLEGRA_REPLICA: String(input.slot),
    ALLEGRA_DATA_DIR: input.dataDir,
  };
  if (input.stateUrl) own.ALLEGRA_STATE_URL = input.stateUrl;
  // ALLEGRA_* is the network's namespace: an instance's own variable of that name is dropped, not merged.
  const instance = Object.fromEntries(Object.entries(input.env).filter(([k]) => !k.startsWith('ALLEGRA_') && !(k in own)));
  return { ...basics, ...instance, ...own };
}

/**
 * The environment of a command run inside a replica (exec, SSH sessions): the replica's own, with the
 * session's additions (TERM, LANG…) except the network's names, so a session cannot pose as another
 * replica or instance.
 */
export function sessionEnvironment(replica: Record<string, string>, session: Record<string, string>): Record<string, string> {
  const allowed = Object.entries(session).filter(([k]) => !k.startsWith('ALLEGRA_') && !DOCUMENTED.includes(k));
  return { ...replica, ...Object.fromEntries(allowed) };
}
