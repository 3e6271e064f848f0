/**
 * Opens a registry from a URL: `embedded:DIR` (host the store here, or join the process that hosts it)
 * or `etcd://host:port[,host:port…]`.
 */
import { resolve } from 'node:path';
import type { Registry } from '../protocol/registry.js';
import { EmbeddedHost, socketPathFor } from './embedded.js';
import { EmbeddedClient } from './embedded-client.js';

export interface OpenOptions {
  /** `auto` (default): host the embedded store if nobody does yet, else join; `never`: only join. */
  host?: 'auto' | 'never';
}

export async function openRegistry(url: string, opts: OpenOptions = {}): Promise<Registry> {
  if (url.startsWith('embedded:')) {
    const dir = resolve(url.slice('embedded:'.length) || '.');
    if (opts.host !== 'never') {
      try {
        return await EmbeddedHost.start(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      }
    }
    const client = new EmbeddedClient(socketPathFor(dir));
    await client.list('config/'); // fail fast with a clear error if nobody serves the store
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
    // Loaded on demand: the gRPC client costs startup time that embedded-only processes need not pay.
    const { EtcdRegistry } = await import('./etcd.js');
    return EtcdRegistry.connect(endpoints); // fails with a clear error if no member answers within seconds
  }
  throw new Error(`unsupported registry URL "${url}": use embedded:DIR or etcd://host:port`);
}
