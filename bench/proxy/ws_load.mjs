// bench/proxy: WebSocket echo load through a proxy (Node's standard library only).
//
//   node ws_load.mjs --url http://127.0.0.1:PORT/path [--connections 16] [--seconds 10]
//                    [--size 64] [--origin http://127.0.0.1:PORT]
//
// Opens --connections WebSockets (a hand-rolled RFC 6455 client: HTTP/1.1 upgrade, masked
// binary frames) and on each does request/response echo of --size-byte messages for --seconds:
// one message in flight per connection, the next sent when its echo is back. The Cookie
// header, if any, comes from the environment variable BENCH_COOKIE (so that a session token
// never shows in a process list); it is never printed.
// Prints one JSON line: {"messages", "seconds", "msgs_per_s", "p50_ms", "p99_ms", "errors"}.
// Exits 1 if no connection could be opened (with the upgrade's status line on stderr).
import crypto from 'node:crypto';
import net from 'node:net';

function parseArgs(argv) {
  const args = {connections: 16, seconds: 10, size: 64, url: '', origin: ''};
  for (let i = 2; i + 1 < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args)) throw new Error(`unknown flag ${argv[i]}`);
    args[key] = typeof args[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!args.url) throw new Error('--url is required');
  return args;
}

const args = parseArgs(process.argv);
const url = new URL(args.url);
const host = url.hostname;
const port = Number(url.port || 80);
const target = url.pathname + url.search;
const cookie = process.env.BENCH_COOKIE || '';

// The one message every connection sends: a masked binary frame of args.size bytes.
function maskedFrame(size) {
  const payload = crypto.randomBytes(size);
  const mask = crypto.randomBytes(4);
  let head;
  if (size < 126) {
    head = Buffer.from([0x82, 0x80 | size]);
  } else {
    head = Buffer.alloc(4);
    head[0] = 0x82;
    head[1] = 0x80 | 126;
    head.writeUInt16BE(size, 2);
  }
  const body = Buffer.alloc(size);
  for (let i = 0; i < size; i++) body[i] = payload[i] ^ mask[i & 3];
  return Buffer.concat([head, mask, body]);
}
const message = maskedFrame(args.size);

const samples = [];  // round trips, microseconds
let errors = 0;
let firstError = '';
let stopAt = 0n;

function runConnection() {
  return new Promise((resolve) => {
    const socket = net.connect({host, port});
    socket.setNoDelay(true);
    let upgraded = false;
    let buf = Buffer.alloc(0);
    let sentAt = 0n;
    let done = false;
    const finish = (error) => {
      if (done) return;
      done = true;
      if (error) {
        errors++;
        if (!firstError) firstError = error;
      }
      socket.destroy();
      resolve(upgraded);
    };
    const send = () => {
      if (process.hrtime.bigint() >= stopAt) {
        // A close frame (masked, empty), then we are done with this connection.
        socket.end(Buffer.from([0x88, 0x80, 1, 2, 3, 4]));
        finish('');
        return;
      }
      sentAt = process.hrtime.bigint();
      socket.write(message);
    };
    socket.on('connect', () => {
      const key = crypto.randomBytes(16).toString('base64');
      let request = `GET ${target} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\n` +
                    `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
                    'Sec-WebSocket-Version: 13\r\n';
      if (args.origin) request += `Origin: ${args.origin}\r\n`;
      if (cookie) request += `Cookie: ${cookie}\r\n`;
      socket.write(request + '\r\n');
    });
    socket.on('data', (chunk) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const status = buf.subarray(0, buf.indexOf('\r\n')).toString();
        if (!/^HTTP\/1\.1 101 /.test(status)) {
          finish(`upgrade refused: ${status}`);
          return;
        }
        upgraded = true;
        buf = buf.subarray(end + 4);
        send();
      }
      for (;;) {
        if (buf.length < 2) return;
        let size = buf[1] & 127;
        let at = 2;
        if (size === 126) {
          if (buf.length < 4) return;
          size = buf.readUInt16BE(2);
          at = 4;
        } else if (size === 127) {
          if (buf.length < 10) return;
          size = Number(buf.readBigUInt64BE(2));
          at = 10;
        }
        if (buf.length < at + size) return;
        const opcode = buf[0] & 15;
        buf = buf.subarray(at + size);
        if (opcode === 8) {
          finish(stopAt > process.hrtime.bigint() ? 'closed by the server' : '');
          return;
        }
        if (opcode !== 2) continue;
        if (size !== args.size) {
          finish(`echo of ${size} bytes, expected ${args.size}`);
          return;
        }
        samples.push(Number(process.hrtime.bigint() - sentAt) / 1000);
        send();
      }
    });
    socket.on('error', (e) => finish(e.code || String(e)));
    socket.on('close', () => finish(upgraded ? '' : 'closed before the upgrade'));
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.round(p * (sorted.length - 1)));
  return sorted[index];
}

const start = process.hrtime.bigint();
stopAt = start + BigInt(Math.round(args.seconds * 1e9));
const opened = await Promise.all(Array.from({length: args.connections}, runConnection));
const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
if (!opened.some(Boolean)) {
  process.stderr.write(`ws_load: no WebSocket opened (${firstError})\n`);
  process.exit(1);
}
const sorted = Float64Array.from(samples).sort();
const result = {
  messages: samples.length,
  seconds: Number(elapsed.toFixed(3)),
  msgs_per_s: Math.round(samples.length / elapsed),
  p50_ms: Number((percentile(sorted, 0.5) / 1000).toFixed(3)),
  p99_ms: Number((percentile(sorted, 0.99) / 1000).toFixed(3)),
  connections: opened.filter(Boolean).length,
  errors,
};
if (firstError) result.first_error = firstError;
process.stdout.write(JSON.stringify(result) + '\n');
