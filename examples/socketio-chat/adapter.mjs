// A socket.io adapter that uses the instance's state API (ALLEGRA_STATE_URL, see STATE-API.md) as its
// pub/sub: every replica of the instance, on any quorum member, sees every broadcast. socket.io's
// ClusterAdapterWithHeartbeat does the protocol (broadcasts, rooms, acks, fetchSockets, heartbeats); this
// file only carries its messages: a message is a key written under `pubsub/<namespace>/`, and every replica
// follows that prefix with the state API's watch (server-sent events). Published keys are deleted after a
// while, so the state stays small.
import { request } from 'node:http';
import { ClusterAdapterWithHeartbeat } from 'socket.io-adapter';

const RETENTION_MS = 15_000;

function call(base, method, path, body) {
  return new Promise((resolve, reject) => {
    const url = new URL(path, base);
    const req = request({ host: url.hostname, port: url.port, method, path: url.pathname + url.search }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Follows `prefix` through the state API's watch; calls `onKey(key)` for every key written after now. */
function follow(base, prefix, onKey) {
  let stopped = false;
  let current = null;
  const open = (from) => {
    const url = new URL(`watch?prefix=${encodeURIComponent(prefix)}${from ? `&from=${from}` : ''}`, base);
    current = request({ host: url.hostname, port: url.port, path: url.pathname + url.search }, (res) => {
      let buf = '';
      let last = from;
      res.on('data', (chunk) => {
        buf += chunk.toString();
        let i = buf.indexOf('\n\n');
        while (i >= 0) {
          const event = buf.slice(0, i);
          buf = buf.slice(i + 2);
          i = buf.indexOf('\n\n');
          const data = /^data: (.*)$/m.exec(event);
          if (!data) continue;
          const change = JSON.parse(data[1]);
          last = change.revision;
          if (!change.deleted) onKey(change.key);
        }
      });
      // The agent may restart or the stream be cut: resume where it stopped.
      res.on('end', () => !stopped && setTimeout(() => open(last), 200));
    });
    current.on('error', () => !stopped && setTimeout(() => open(from), 500));
    current.end();
  };
  open();
  return () => {
    stopped = true;
    current?.destroy();
  };
}

/** The adapter class for `new Server(http, { adapter: createStateAdapter() })`. */
export function createStateAdapter(stateUrl = process.env.ALLEGRA_STATE_URL) {
  if (!stateUrl) throw new Error('ALLEGRA_STATE_URL is not set: run on Allegra (or pass the state API URL)');
  return class extends StateAdapter {
    constructor(nsp) {
      super(nsp, stateUrl);
    }
  };
}

class StateAdapter extends ClusterAdapterWithHeartbeat {
  constructor(nsp, stateUrl) {
    super(nsp, {});
    this.stateUrl = stateUrl;
    this.seq = 0;
    const space = encodeURIComponent(nsp.name);
    this.messages = `pubsub/${space}/m/`;
    this.responses = `pubsub/${space}/r/${this.uid}/`;
    const deliver = (handler) => async (key) => {
      const got = await call(this.stateUrl, 'GET', `kv/${encodeURIComponent(key)}`).catch(() => null);
      if (got?.status !== 200) return; // already cleaned up
      const message = JSON.parse(got.body.toString());
      if (message.uid !== this.uid) handler(message);
    };
    this.unfollow = [
      follow(
        this.stateUrl,
        this.messages,
        deliver((m) => this.onMessage(m)),
      ),
      follow(
        this.stateUrl,
        this.responses,
        deliver((r) => this.onResponse(r)),
      ),
    ];
    this.init();
  }

  async put(key, value) {
    const res = await call(this.stateUrl, 'PUT', `kv/${encodeURIComponent(key)}`, JSON.stringify(value));
    if (res.status !== 200) throw new Error(`state API answered ${res.status}: ${res.body}`);
    setTimeout(() => call(this.stateUrl, 'DELETE', `kv/${encodeURIComponent(key)}`).catch(() => {}), RETENTION_MS).unref();
    return String(JSON.parse(res.body.toString()).revision);
  }

  doPublish(message) {
    return this.put(`${this.messages}${this.uid}-${++this.seq}`, message);
  }

  async doPublishResponse(requesterUid, response) {
    const space = this.messages.slice(0, -2);
    await this.put(`${space}r/${requesterUid}/${this.uid}-${++this.seq}`, response);
  }

  close() {
    for (const stop of this.unfollow) stop();
    super.close();
  }
}
