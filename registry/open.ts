/**
 * Opens a registry from a URL: `embedded:DIR` (host the store here, or join the process that hosts it)
 * or `etcd://host:port[,host:port…]`, acting as one role of protocol/roles.ts.
 *
 * Credentials, first found wins:
 * - embedded: `opts.token`, then ALLEGRA_REGISTRY_TOKEN, then `DIR/credentials/<role>.token` (readable only by
 *   the operator's user, for a standalone agent or gateway on the host's machine);
 * - etcd: `opts.credentialsFile`, then ALLEGRA_REGISTRY_CREDENTIALS (a file written by
 *   `allegra registry setup-auth`); without one the client talks to etcd unauthenticated.
 */
import { resolve } from 'node:path';
import type { Registry } from '../protocol/registry.js';
import type { Role } from '../protocol/roles.js';
import { readToken, TOKEN_ENV } from './credentials.js';
import { EmbeddedHost, socketPathFor } from './embedded.js';
import { EmbeddedClient } from './embedded-client.js';
import { CREDENTIALS_ENV, readEtcdCredentials } from './etcd-credentials.js';

export interface OpenOptions {
  /** The role this process acts as. */
  role: Role;
  /** `auto` (default): host the embedded store if nobody does yet, else join; `never`: only join. */
  host?: 'auto' | 'never';
  /** Embedded: the role's token. */
  token?: string;
  /** etcd: the credentials file of the role. */
  credentialsFile?: string;
}

export async function openRegistry(url: string, opts: OpenOptions): Promise<Registry> {
  if (url.startsWith('embedded:')) {
    const dir = resolve(url.slice('embedded:'.length) || '.');
    if (opts.host !== 'never') {
      try {
        // The host holds the data files anyway; it still acts as its role, like a client would.
        return (await EmbeddedHost.start(dir)).as(opts.role);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      }
    }
    const token = opts.token ?? process.env[TOKEN_ENV] ?? readToken(dir, opts.role);
    const client = new EmbeddedClient(socketPathFor(dir), token);
    try {
      // Fails fast, and clearly, if nobody serves the store or the token is refused.
      const role = await client.whoami();
      if (role !== opts.role) throw new Error(`registry credential is for role "${role}", not "${opts.role}"`);
    } catch (err) {
      await client.close();
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ECONNREFUSED' || code === 'ENOENT') throw new Error(`no process hosts the embedded registry ${dir}`, { cause: err });
      throw err;
    }
    return client;
  }
  if (url.startsWith('etcd://')) {
    const endpoints = url
      .slice('etcd://'.length)
      .replace(/\/+$/, '')
      .split(',')
      .map((e) => e.trim())
      .filter(Boolean);
    const bad = endpoints.find((e) => !/^(\[[0-9a-fA-F:.]+\]|[^\s/:,[\]]+):\d{1,5}$/.test(e));
    if (endpoints.length === 0 || bad !== undefined) {
      throw new Error(`invalid registry URL "${url}": use etcd://host:port[,host:port…]`);
    }
    const file = opts.credentialsFile ?? process.env[CREDENTIALS_ENV];
    const credentials = file ? readEtcdCredentials(file) : undefined;
    if (credentials && credentials.role !== opts.role) {
      throw new Error(`registry credentials ${file} are for role "${credentials.role}", not "${opts.role}"`);
    }
    // Loaded on demand: the gRPC client costs startup time that embedded-only processes need not pay.
    const { EtcdRegistry } = await import('./etcd.js');
    // Fails with a clear error if no member answers within seconds, or the credentials are refused.
    return EtcdRegistry.connect(endpoints, { role: opts.role, ...(credentials ? { auth: credentials } : {}) });
  }
  throw new Error(`unsupported registry URL "${url}": use embedded:DIR or etcd://host:port`);
}
