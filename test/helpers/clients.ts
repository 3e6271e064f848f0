/** HTTP clients with a loopback source address of their own: distinct clients for the gateway's fairness rules. */
import { connect } from 'node:net';
import { Agent } from 'undici';

/** An undici Agent whose connections come from `localAddress` (any 127.0.0.0/8 address on Linux). */
export function agentFrom(localAddress: string, opts: ConstructorParameters<typeof Agent>[0] = {}): Agent {
  return new Agent({
    ...opts,
    // undici's own connector does not pass localAddress on to net.connect.
    connect: (o, cb) => {
      const socket = connect({ host: o.hostname, port: Number(o.port), localAddress });
      socket.once('connect', () => cb(null, socket));
      socket.once('error', (err) => cb(err, null));
      return socket;
    },
  });
}
