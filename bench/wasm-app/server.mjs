// The same app as a plain Node process, the way the process driver runs it: listens on $PORT.
import { serve } from '@hono/node-server';
import app from './app.js';

serve({ fetch: app.fetch, port: Number(process.env.PORT), hostname: '127.0.0.1' });
