/** Target ids → specs. The gateway's spec exists only when bench/targets/allegra.ts is built. */
import { directTarget } from './direct.js';
import { fastifyTarget } from './fastify.js';
import { type GatewayLoad, gatewaySpec } from './gateway.js';
import { haproxyTarget } from './haproxy.js';
import { httpProxyTarget } from './http-proxy.js';
import { minimalTarget } from './minimal.js';
import { nginxTarget } from './nginx.js';
import type { TargetSpec } from './types.js';

export class Unavailable extends Error {}

const STATIC: TargetSpec[] = [directTarget, nginxTarget, haproxyTarget, minimalTarget, httpProxyTarget, fastifyTarget];

export function targetSpecs(ids: string[], gateway: GatewayLoad, baseline?: string): TargetSpec[] {
  return ids.map((id) => {
    if (id === 'gateway-baseline') {
      if (gateway.ok && baseline) return gatewaySpec(gateway.start, true, baseline);
      return {
        id,
        label: 'Allegra gateway, baseline build',
        multiWorker: true,
        start: async () => {
          throw new Unavailable(gateway.ok ? 'no --baseline given' : gateway.reason);
        },
      };
    }
    if (id === 'gateway' || id === 'gateway-nolog') {
      const accessLog = id === 'gateway';
      if (gateway.ok) return gatewaySpec(gateway.start, accessLog);
      return {
        id,
        label: accessLog ? 'Allegra gateway' : 'Allegra gateway, access log off',
        multiWorker: true,
        start: async () => {
          throw new Unavailable(gateway.reason);
        },
      };
    }
    const spec = STATIC.find((s) => s.id === id);
    if (!spec) throw new Error(`unknown target ${id}`);
    return spec;
  });
}
