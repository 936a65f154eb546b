// bench/proxy: a TCP -> Unix-socket byte bridge for configurable-http-proxy, which cannot dial a
// Unix socket. One event loop, no process per connection (socat's fork mode forks one per
// connection, and the supervisor closes its connection after every HTTP exchange, so with
// socat each request paid a fork; see run).
//
//   node unix_bridge.mjs --port PORT --socket PATH
//
// Listens on 127.0.0.1:PORT; every connection is piped both ways to a new connection to PATH.
import net from 'node:net';

const args = {};
for (let i = 2; i + 1 < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}
if (!args.port || !args.socket) {
  process.stderr.write('usage: node unix_bridge.mjs --port PORT --socket PATH\n');
  process.exit(2);
}

const server = net.createServer({noDelay: true}, (client) => {
  const upstream = net.connect(args.socket);
  const close = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close);
  upstream.on('error', close);
  client.pipe(upstream);
  upstream.pipe(client);
});
server.listen({port: Number(args.port), host: '127.0.0.1', backlog: 1024});
process.on('SIGTERM', () => process.exit(0));
