/** gRPC through the gateway with real grpc-js clients and servers: unary, streaming both ways, errors. */
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import loader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Cluster,
  type GatewayProcess,
  GRPC_UPSTREAM,
  startCluster,
  startUpstream,
  stopUpstreams,
  type Upstream,
} from '../helpers/gateway-fixture.js';

const PROTO = fileURLToPath(new URL('../fixtures/grpc/echo.proto', import.meta.url));

interface Msg {
  text: string;
  n: number;
}
type Unary = (req: Msg, cb: (err: grpc.ServiceError | null, res: Msg) => void) => void;
interface EchoClient extends grpc.Client {
  Say: Unary;
  Fail: Unary;
  Count(req: Msg): grpc.ClientReadableStream<Msg>;
  Chat(): grpc.ClientDuplexStream<Msg, Msg>;
}

describe('gRPC pass-through', () => {
  let cluster: Cluster;
  let ups: Upstream[];
  let gw: GatewayProcess;
  let client: EchoClient;

  beforeAll(async () => {
    cluster = await startCluster();
    ups = await Promise.all([startUpstream('g1', {}, GRPC_UPSTREAM), startUpstream('g2', {}, GRPC_UPSTREAM)]);
    await cluster.addApp('rpc', ups);
    // gRPC servers do not answer HTTP/1 health probes; the agents' records are the health source here.
    gw = await cluster.startGateway([], { healthCheck: false });
    const proto = grpc.loadPackageDefinition(loader.loadSync(PROTO)) as unknown as {
      allegra: { test: { Echo: new (addr: string, creds: grpc.ChannelCredentials, opts: object) => EchoClient } };
    };
    client = new proto.allegra.test.Echo(new URL(gw.http).host, grpc.credentials.createInsecure(), {
      'grpc.default_authority': 'rpc.test',
    });
  }, 60_000);

  afterAll(async () => {
    client?.close();
    await cluster?.cleanup();
    stopUpstreams(ups ?? []);
  });

  const say = (text: string) =>
    new Promise<Msg>((resolve, reject) => client.Say({ text, n: 1 }, (err, res) => (err ? reject(err) : resolve(res))));

  it('relays unary calls to every replica, with forwarding metadata', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const res = await say(`hi${i}`);
      const [name, text, xff] = res.text.split(':');
      expect(text).toBe(`hi${i}`);
      expect(xff).toBe('127.0.0.1');
      seen.add(name as string);
    }
    expect(seen).toEqual(new Set(['g1', 'g2']));
  });

  it('relays server streaming and bidirectional streaming', async () => {
    const counted: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = client.Count({ text: '', n: 50 });
      call.on('data', (m: Msg) => counted.push(m.n));
      call.on('end', resolve);
      call.on('error', reject);
    });
    expect(counted).toEqual([...Array(50).keys()]);

    const chat = client.Chat();
    const replies: string[] = [];
    chat.on('data', (m: Msg) => replies.push(m.text));
    const ended = new Promise<void>((resolve, reject) => {
      chat.on('end', resolve);
      chat.on('error', reject);
    });
    for (let i = 0; i < 5; i++) chat.write({ text: `m${i}`, n: i });
    chat.end();
    await ended;
    expect(replies).toEqual(['re:m0', 're:m1', 're:m2', 're:m3', 're:m4']);
  });

  it('relays gRPC status codes carried in trailers', async () => {
    const err = await new Promise<grpc.ServiceError>((resolve) => client.Fail({ text: '', n: 0 }, (e) => resolve(e as grpc.ServiceError)));
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.details).toBe('refused on purpose');
  });

  it('fails over to a live replica when one is gone', async () => {
    ups[0]?.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    for (let i = 0; i < 10; i++) expect((await say(`after${i}`)).text.startsWith('g2:')).toBe(true);
  });
});
