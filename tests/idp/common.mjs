// Shared plumbing for the loopback identity-provider fixtures (oidc_idp.mjs, github_fake.mjs).
//
// Contract kept by every server here: stdout carries exactly one JSON line (written by
// announce()), everything else goes to stderr. console.log/info/debug are therefore rerouted
// to stderr as soon as this module loads, because libraries (oidc-provider's NOTICE lines use
// console.info) would otherwise write to stdout.

import { readFileSync } from 'node:fs';

for (const name of ['log', 'info', 'debug']) {
  // eslint-disable-next-line no-console
  console[name] = (...args) => console.error(...args);
}

export function log(prog, ...args) {
  console.error(`[${prog}]`, ...args);
}

// `--config FILE` (also `--config=FILE`). Exits 2 with one line on stderr when it is wrong.
export function loadConfig(prog, argv = process.argv.slice(2)) {
  let file;
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--config') {
      file = argv[i + 1];
      i += 1;
    } else if (arg.startsWith('--config=')) {
      file = arg.slice('--config='.length);
    } else if (arg === '--help' || arg === '-h') {
      console.error(`usage: node ${prog}.mjs --config FILE`);
      process.exit(0);
    } else {
      console.error(`${prog}: unknown argument ${JSON.stringify(arg)} (usage: node ${prog}.mjs --config FILE)`);
      process.exit(2);
    }
  }
  if (!file) {
    console.error(`${prog}: --config FILE is required`);
    process.exit(2);
  }
  let config;
  try {
    config = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    console.error(`${prog}: cannot read config ${file}: ${err.message}`);
    process.exit(2);
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    console.error(`${prog}: config ${file} must be a JSON object`);
    process.exit(2);
  }
  return config;
}

export function die(prog, message) {
  console.error(`${prog}: ${message}`);
  process.exit(2);
}

// The single stdout line. Written synchronously-ish before anything else could be.
export function announce(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

// Clean exit on SIGTERM/SIGINT: stop accepting, drop idle keep-alive sockets, exit 0.
export function exitOnSignals(prog, server) {
  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    log(prog, `${signal}: shutting down`);
    server.close(() => process.exit(0));
    if (typeof server.closeAllConnections === 'function') server.closeAllConnections();
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

export async function readBody(req, limit = 1 << 20) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw Object.assign(new Error('request body too large'), { status: 413 });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export function sendJson(res, status, body, headers = {}) {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

export function sendText(res, status, text, contentType = 'text/plain; charset=utf-8', headers = {}) {
  res.writeHead(status, {
    'content-type': contentType,
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

export function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// Listen on 127.0.0.1:port (0 = any free port); resolves with the bound port.
export function listenLoopback(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}
