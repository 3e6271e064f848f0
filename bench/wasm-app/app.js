// The benchmark's hello app: one Hono app, run both as wasm (the wasm host) and as a plain Node process
// (@hono/node-server, see server.mjs) so the two runtimes serve the same code.
import { Hono } from 'hono';

const app = new Hono();
app.get('/', (c) => c.text('hello'));

export default app;
