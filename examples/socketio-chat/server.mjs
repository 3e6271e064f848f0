// A chat room on any number of Allegra replicas: socket.io with the state-API adapter, so a message sent to
// one replica reaches every connected client, whichever replica holds its connection.
// Deploy with session affinity, since socket.io's long-polling needs every request of a session on one
// replica: `allegra create chat --sticky cookie --from examples/socketio-chat` (after `npm install` there).
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { createStateAdapter } from './adapter.mjs';

const replica = `${process.env.ALLEGRA_INSTANCE ?? 'chat'}/${process.env.ALLEGRA_REPLICA ?? '0'}`;
const http = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ replica }));
});
const io = new Server(http, { adapter: createStateAdapter() });
io.on('connection', (socket) => {
  socket.emit('hello', { replica });
  socket.on('say', (text) => io.emit('said', { text, from: replica }));
});
http.listen(Number(process.env.PORT ?? 3000));
