#!/usr/bin/env node
// Self-test for the loopback identity providers: starts oidc_idp.mjs and github_fake.mjs as
// child processes and drives them the way the C++ end-to-end tests will (plain HTTP, a cookie
// jar, following 302/303 redirects). Exits non-zero on any failure.
//
//   node selftest.mjs        (or: npm test)

import { spawn } from 'node:child_process';
import {
  createHash, createPublicKey, randomBytes, verify as cryptoVerify,
} from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const TMP = mkdtempSync(join(tmpdir(), 'idp-selftest-'));
const VERBOSE = process.env.IDP_SELFTEST_VERBOSE === '1';

// ---------------------------------------------------------------------------------------------
// Tiny assertion + test runner

class AssertionError extends Error {}
function assert(cond, msg) {
  if (!cond) throw new AssertionError(msg);
}
function eq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new AssertionError(`${what}: expected ${e}, got ${a}`);
}

const results = { passed: 0, failed: 0 };
async function test(name, fn) {
  try {
    await fn();
    results.passed += 1;
    console.log(`ok - ${name}`);
  } catch (err) {
    results.failed += 1;
    console.log(`not ok - ${name}\n    ${String(err.stack ?? err).split('\n').join('\n    ')}`);
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP client with a cookie jar (the subset a simple C++ client would implement)

function request(method, url, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const data = body === undefined ? undefined : Buffer.from(body);
    const req = http.request({
      method,
      hostname: u.hostname,
      port: u.port,
      path: `${u.pathname}${u.search}`,
      headers: {
        'user-agent': 'tidepool-idp-selftest',
        ...(data ? { 'content-length': data.length } : {}),
        ...headers,
      },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error(`timeout: ${method} ${url}`)));
    if (data) req.write(data);
    req.end();
  });
}

const json = (r) => {
  try {
    return JSON.parse(r.text);
  } catch {
    throw new AssertionError(`not JSON (HTTP ${r.status}): ${r.text.slice(0, 300)}`);
  }
};

class CookieJar {
  constructor() { this.cookies = []; } // { name, value, path }

  store(url, setCookie) {
    for (const line of setCookie ?? []) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eqAt = pair.indexOf('=');
      const name = pair.slice(0, eqAt);
      const value = pair.slice(eqAt + 1);
      let path = new URL(url).pathname.replace(/\/[^/]*$/, '') || '/';
      let expired = false;
      for (const a of attrs) {
        const [k, v = ''] = a.split('=');
        if (k.toLowerCase() === 'path') path = v || '/';
        if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      this.cookies = this.cookies.filter((c) => !(c.name === name && c.path === path));
      if (!expired) this.cookies.push({ name, value, path });
    }
  }

  header(url) {
    const p = new URL(url).pathname;
    const matching = this.cookies.filter((c) => p === c.path || p.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`));
    return matching.length ? matching.map((c) => `${c.name}=${c.value}`).join('; ') : undefined;
  }
}

// GET url and follow 301/302/303/307/308 with the jar until a Location starts with stopAt.
async function follow(url, jar, stopAt, maxHops = 12) {
  const hops = [];
  let current = url;
  for (let i = 0; i < maxHops; i += 1) {
    const cookie = jar.header(current);
    const r = await request('GET', current, { headers: cookie ? { cookie } : {} });
    jar.store(current, r.headers['set-cookie']);
    hops.push(`${r.status} ${current}`);
    if (![301, 302, 303, 307, 308].includes(r.status)) {
      throw new AssertionError(`chain stopped at HTTP ${r.status} (${current}) after ${hops.length} hops:\n${hops.join('\n')}\n${r.text.slice(0, 500)}`);
    }
    const next = new URL(r.headers.location, current).href;
    if (next.startsWith(stopAt)) return { final: new URL(next), hops };
    current = next;
  }
  throw new AssertionError(`too many redirects:\n${hops.join('\n')}`);
}

// ---------------------------------------------------------------------------------------------
// Child processes

const children = [];

async function startServer(script, config) {
  const file = join(TMP, `${script}-${children.length}.json`);
  writeFileSync(file, JSON.stringify(config));
  const child = spawn(process.execPath, [join(HERE, script), '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = {
    child, stdout: '', stderr: '', exited: null,
  };
  children.push(proc);
  child.stderr.on('data', (d) => {
    proc.stderr += d;
    if (VERBOSE) process.stderr.write(d);
  });
  child.on('exit', (code, signal) => { proc.exited = { code, signal }; });
  const info = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not announce within 15 s:\n${proc.stderr}`)), 15000);
    child.stdout.on('data', (d) => {
      proc.stdout += d;
      const nl = proc.stdout.indexOf('\n');
      if (nl >= 0 && !proc.info) {
        clearTimeout(timer);
        try {
          proc.info = JSON.parse(proc.stdout.slice(0, nl));
          resolve(proc.info);
        } catch (err) {
          reject(new Error(`${script} first stdout line is not JSON: ${proc.stdout.slice(0, nl)}`));
        }
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited with ${code} before announcing:\n${proc.stderr}`));
    });
  });
  return { ...info, proc };
}

async function stopServer(proc) {
  if (proc.exited) return proc.exited;
  const done = new Promise((resolve) => proc.child.on('exit', (code, signal) => resolve({ code, signal })));
  proc.child.kill('SIGTERM');
  const timeout = new Promise((resolve) => { setTimeout(() => resolve(null), 5000); });
  const r = await Promise.race([done, timeout]);
  if (!r) proc.child.kill('SIGKILL');
  return r;
}

process.on('exit', () => {
  for (const p of children) if (!p.exited) p.child.kill('SIGKILL');
  rmSync(TMP, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// JOSE bits, with node:crypto only

const b64json = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
const pkcePair = () => {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
};

function verifyJwt(jwt, jwks) {
  const [h, p, s] = jwt.split('.');
  const header = b64json(h);
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  assert(jwk, `no JWKS key with kid ${header.kid} (have ${jwks.keys.map((k) => k.kid).join(', ')})`);
  const key = createPublicKey({ key: jwk, format: 'jwk' });
  const data = Buffer.from(`${h}.${p}`);
  const sig = Buffer.from(s, 'base64url');
  let ok;
  switch (header.alg) {
    case 'RS256': ok = cryptoVerify('sha256', data, key, sig); break;
    case 'ES256': ok = cryptoVerify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig); break;
    case 'EdDSA': ok = cryptoVerify(null, data, key, sig); break;
    default: throw new AssertionError(`unexpected alg ${header.alg}`);
  }
  assert(ok, `bad ${header.alg} signature on ID token`);
  return { header, payload: b64json(p) };
}

// ---------------------------------------------------------------------------------------------
// OIDC helpers

const TENANT = '9188040d-6c67-4c5b-b112-36a304b66dad';
const RP = 'http://127.0.0.1:1234';
const MS_REDIRECT = `${RP}/auth/callback/microsoft`;
const GOOGLE_REDIRECT = `${RP}/auth/callback/google`;
const GH_REDIRECT = `${RP}/auth/callback/github`;

const oidcAccounts = {
  alice: {
    sub: 'AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ',
    email: 'alice@contoso.example',
    email_verified: true,
    name: 'Alice Adams',
    groups: ['tidepool-admins', 'engineering'],
    tid: TENANT,
    oid: '00000000-0000-0000-66f3-3332eca7ea81',
    preferred_username: 'alice@contoso.example',
  },
  bob: {
    sub: 'bob-sub-2',
    email: 'bob@contoso.example',
    email_verified: false,
    name: 'Bob Brown',
    hd: 'contoso.example',
  },
};

async function discover(issuer) {
  const r = await request('GET', `${issuer}/.well-known/openid-configuration`);
  eq(r.status, 200, 'discovery status');
  return json(r);
}

// Authorization-code + PKCE through the provider; returns the callback URL's params and the
// values the RP would have kept.
async function authorize(disco, { clientId = 'tidepool-ms', redirectUri = MS_REDIRECT, loginHint, jar = new CookieJar(), scope = 'openid email profile', pkce = true, extra = {} } = {}) {
  const { verifier, challenge } = pkcePair();
  const state = randomBytes(12).toString('base64url');
  const nonce = randomBytes(12).toString('base64url');
  const u = new URL(disco.authorization_endpoint);
  u.searchParams.set('client_id', clientId);
  u.searchParams.set('response_type', 'code');
  u.searchParams.set('redirect_uri', redirectUri);
  u.searchParams.set('scope', scope);
  u.searchParams.set('state', state);
  u.searchParams.set('nonce', nonce);
  if (pkce) {
    u.searchParams.set('code_challenge', challenge);
    u.searchParams.set('code_challenge_method', 'S256');
  }
  for (const [k, v] of Object.entries(extra)) u.searchParams.set(k, v);
  let url = u.href;
  if (loginHint !== undefined) url += `&login_hint=${encodeURIComponent(loginHint)}`; // as the C++ test does
  const { final, hops } = await follow(url, jar, redirectUri);
  return {
    params: Object.fromEntries(final.searchParams), verifier, state, nonce, hops, jar,
  };
}

async function tokenRequest(disco, { code, verifier, clientId = 'tidepool-ms', secret = 'ms-secret', redirectUri = MS_REDIRECT, auth = 'basic' }) {
  const form = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri });
  if (verifier !== undefined) form.set('code_verifier', verifier);
  const headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (auth === 'basic') {
    headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`;
  } else {
    form.set('client_id', clientId);
    form.set('client_secret', secret);
  }
  const r = await request('POST', disco.token_endpoint, { headers, body: form.toString() });
  return { status: r.status, body: json(r) };
}

// ---------------------------------------------------------------------------------------------
// OIDC tests

async function oidcTests() {
  const ms = await startServer('oidc_idp.mjs', {
    port: 0,
    issuer_path: `/${TENANT}/v2.0`,
    clients: [{ client_id: 'tidepool-ms', client_secret: 'ms-secret', redirect_uris: [MS_REDIRECT] }],
    accounts: oidcAccounts,
  });
  const { issuer } = ms;
  let disco;
  let jwks;

  await test('oidc: announces issuer with issuer_path on 127.0.0.1', async () => {
    assert(/^http:\/\/127\.0\.0\.1:\d+\/9188040d-6c67-4c5b-b112-36a304b66dad\/v2\.0$/.test(issuer), issuer);
    eq(issuer, `http://127.0.0.1:${ms.port}/${TENANT}/v2.0`, 'issuer');
  });

  await test('oidc: discovery document', async () => {
    disco = await discover(issuer);
    eq(disco.issuer, issuer, 'issuer');
    eq(disco.authorization_response_iss_parameter_supported, true, 'authorization_response_iss_parameter_supported');
    eq(disco.code_challenge_methods_supported, ['S256'], 'code_challenge_methods_supported');
    eq(disco.response_types_supported, ['code'], 'response_types_supported');
    eq(disco.id_token_signing_alg_values_supported, ['RS256'], 'id_token_signing_alg_values_supported');
    for (const k of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'userinfo_endpoint']) {
      assert(disco[k].startsWith(`${issuer}/`), `${k} ${disco[k]} is under the issuer`);
    }
    for (const s of ['openid', 'email', 'profile', 'groups']) assert(disco.scopes_supported.includes(s), `scope ${s}`);
    for (const c of ['email', 'groups', 'tid', 'oid', 'preferred_username']) assert(disco.claims_supported.includes(c), `claim ${c}`);
    const r = await request('GET', disco.jwks_uri);
    jwks = json(r);
    eq(jwks.keys.length, 1, 'one key in JWKS');
    assert(!('d' in jwks.keys[0]), 'JWKS has no private parts');
  });

  let first;
  await test('oidc: authorization code + PKCE flow redirects to the RP with code, state, iss', async () => {
    first = await authorize(disco, { loginHint: 'alice' });
    const p = first.params;
    assert(p.code, `code in ${JSON.stringify(p)}`);
    eq(p.state, first.state, 'state');
    eq(p.iss, issuer, 'iss (RFC 9207)');
    assert(!p.error, `no error: ${p.error} ${p.error_description}`);
    assert(first.hops.length <= 4, `short chain:\n${first.hops.join('\n')}`);
  });

  let tokens;
  await test('oidc: token exchange (client_secret_basic) returns a signed ID token with the account claims', async () => {
    const r = await tokenRequest(disco, { code: first.params.code, verifier: first.verifier });
    eq(r.status, 200, `token status ${JSON.stringify(r.body)}`);
    tokens = r.body;
    eq(tokens.token_type, 'Bearer', 'token_type');
    assert(tokens.access_token && tokens.id_token, 'access_token and id_token');
    const { header, payload } = verifyJwt(tokens.id_token, jwks);
    eq(header.alg, 'RS256', 'alg');
    eq(header.kid, jwks.keys[0].kid, 'kid');
    eq(payload.iss, issuer, 'iss');
    eq(payload.aud, 'tidepool-ms', 'aud');
    eq(payload.nonce, first.nonce, 'nonce');
    const a = oidcAccounts.alice;
    eq(payload.sub, a.sub, 'sub');
    eq(payload.email, a.email, 'email');
    eq(payload.email_verified, true, 'email_verified');
    eq(payload.name, a.name, 'name');
    eq(payload.groups, a.groups, 'groups');
    eq(payload.tid, a.tid, 'tid');
    eq(payload.oid, a.oid, 'oid');
    eq(payload.preferred_username, a.preferred_username, 'preferred_username');
    const now = Math.floor(Date.now() / 1000);
    assert(payload.exp > now && payload.iat <= now + 5, 'exp/iat');
  });

  await test('oidc: userinfo serves the same claims', async () => {
    const r = await request('GET', disco.userinfo_endpoint, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    eq(r.status, 200, 'userinfo status');
    const u = json(r);
    eq(u.sub, oidcAccounts.alice.sub, 'sub');
    eq(u.groups, oidcAccounts.alice.groups, 'groups');
  });

  await test('oidc: the code is single use', async () => {
    const r = await tokenRequest(disco, { code: first.params.code, verifier: first.verifier });
    eq(r.status, 400, 'status');
    eq(r.body.error, 'invalid_grant', 'error');
  });

  await test('oidc: a wrong code_verifier is rejected', async () => {
    const f = await authorize(disco, { loginHint: 'alice' });
    const r = await tokenRequest(disco, { code: f.params.code, verifier: pkcePair().verifier });
    eq(r.status, 400, 'status');
    eq(r.body.error, 'invalid_grant', 'error');
  });

  await test('oidc: a second login as another account in the same cookie jar, client_secret_post', async () => {
    const f = await authorize(disco, { loginHint: 'bob', jar: first.jar });
    assert(f.params.code, JSON.stringify(f.params));
    const r = await tokenRequest(disco, { code: f.params.code, verifier: f.verifier, auth: 'post' });
    eq(r.status, 200, `token status ${JSON.stringify(r.body)}`);
    const { payload } = verifyJwt(r.body.id_token, jwks);
    eq(payload.sub, 'bob-sub-2', 'sub');
    eq(payload.email_verified, false, 'email_verified');
    eq(payload.hd, 'contoso.example', 'extra account claim (hd) reaches the ID token');
    assert(!('groups' in payload) && !('tid' in payload), 'unset claims are absent');
  });

  await test('oidc: login_hint may be the email address', async () => {
    const f = await authorize(disco, { loginHint: 'alice@contoso.example' });
    assert(f.params.code, JSON.stringify(f.params));
  });

  await test('oidc: unknown login_hint -> access_denied error callback with state and iss', async () => {
    const f = await authorize(disco, { loginHint: 'mallory' });
    eq(f.params.error, 'access_denied', 'error');
    eq(f.params.state, f.state, 'state');
    eq(f.params.iss, issuer, 'iss');
    assert(!f.params.code, 'no code');
  });

  await test('oidc: missing login_hint -> access_denied', async () => {
    const f = await authorize(disco, {});
    eq(f.params.error, 'access_denied', 'error');
  });

  await test('oidc: PKCE is required', async () => {
    const f = await authorize(disco, { loginHint: 'alice', pkce: false });
    eq(f.params.error, 'invalid_request', 'error');
    assert(/PKCE/.test(f.params.error_description), f.params.error_description);
  });

  await test('oidc: unregistered redirect_uri is not redirected to', async () => {
    const u = new URL(disco.authorization_endpoint);
    u.search = new URLSearchParams({
      client_id: 'tidepool-ms', response_type: 'code', redirect_uri: `${RP}/evil`, scope: 'openid', code_challenge: pkcePair().challenge, code_challenge_method: 'S256', login_hint: 'alice',
    }).toString();
    const r = await request('GET', u.href);
    eq(r.status, 400, 'status');
    assert(!r.headers.location, 'no redirect');
  });

  await test('oidc: stats count authorization and token requests', async () => {
    const s = json(await request('GET', `http://127.0.0.1:${ms.port}/__test/stats`));
    // 8 authorization requests above (incl. the rejected redirect_uri), 4 token requests.
    eq(s, { token_requests: 4, authorization_requests: 8 }, 'stats');
  });

  await test('oidc: rotate-keys replaces the JWKS key and new ID tokens use it', async () => {
    const before = jwks.keys[0].kid;
    const r = await request('POST', `http://127.0.0.1:${ms.port}/__test/rotate-keys`);
    eq(r.status, 200, 'status');
    const { kid } = json(r);
    assert(kid && kid !== before, `new kid ${kid}`);
    const after = json(await request('GET', disco.jwks_uri));
    eq(after.keys.map((k) => k.kid), [kid], 'JWKS holds only the new key');
    const f = await authorize(disco, { loginHint: 'alice' });
    const t = await tokenRequest(disco, { code: f.params.code, verifier: f.verifier });
    eq(t.status, 200, 'token status');
    const { header } = verifyJwt(t.body.id_token, after);
    eq(header.kid, kid, 'ID token kid');
    let oldVerifies = true;
    try { verifyJwt(t.body.id_token, jwks); } catch { oldVerifies = false; }
    eq(oldVerifies, false, 'old JWKS cannot verify the new token');
  });

  await test('oidc: POST /__test/accounts replaces the accounts', async () => {
    const r = await request('POST', `http://127.0.0.1:${ms.port}/__test/accounts`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ alice: { ...oidcAccounts.alice, email: 'alice.new@contoso.example', groups: ['viewers'] } }),
    });
    eq(r.status, 200, 'status');
    const f = await authorize(disco, { loginHint: 'alice' });
    const t = await tokenRequest(disco, { code: f.params.code, verifier: f.verifier });
    const { payload } = verifyJwt(t.body.id_token, json(await request('GET', disco.jwks_uri)));
    eq(payload.email, 'alice.new@contoso.example', 'email');
    eq(payload.groups, ['viewers'], 'groups');
    const gone = await authorize(disco, { loginHint: 'bob' });
    eq(gone.params.error, 'access_denied', 'removed account is denied');
  });

  await test('oidc: prompt=select_account, prompt=login and prompt=consent complete without UI', async () => {
    for (const prompt of ['select_account', 'login', 'consent', 'select_account consent']) {
      const f = await authorize(disco, { loginHint: 'alice', extra: { prompt } });
      assert(f.params.code, `prompt=${prompt}: ${JSON.stringify(f.params)}`);
    }
  });

  await test('oidc: POST /__test/clients replaces the clients (e.g. once the RP knows its port)', async () => {
    const late = 'http://127.0.0.1:40001/auth/callback/microsoft';
    const bad = await request('POST', `http://127.0.0.1:${ms.port}/__test/clients`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify([{ client_id: 'x', client_secret: 'y', redirect_uris: ['not a url'] }]),
    });
    eq(bad.status, 400, 'invalid client metadata is refused');
    const r = await request('POST', `http://127.0.0.1:${ms.port}/__test/clients`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify([{ client_id: 'tidepool-ms', client_secret: 'ms-secret-2', redirect_uris: [late] }]),
    });
    eq(r.status, 200, 'status');
    const f = await authorize(disco, { loginHint: 'alice', redirectUri: late });
    const t = await tokenRequest(disco, {
      code: f.params.code, verifier: f.verifier, secret: 'ms-secret-2', redirectUri: late,
    });
    eq(t.status, 200, `token ${JSON.stringify(t.body)}`);
    const old = await tokenRequest(disco, { code: 'x', verifier: 'y', secret: 'ms-secret' });
    eq(old.body.error, 'invalid_client', 'old secret no longer works');
  });

  await test('oidc: stdout carried exactly one line; SIGTERM exits 0', async () => {
    const r = await stopServer(ms.proc);
    eq(r, { code: 0, signal: null }, 'exit');
    eq(ms.proc.stdout.split('\n').filter(Boolean).length, 1, `stdout lines: ${ms.proc.stdout}`);
  });

  await test('oidc: authorization_response_iss false -> no iss parameter, not advertised', async () => {
    const n = await startServer('oidc_idp.mjs', {
      issuer_path: `/${TENANT}/v2.0`,
      authorization_response_iss: false,
      clients: [{ client_id: 'tidepool-ms', client_secret: 'ms-secret', redirect_uris: [MS_REDIRECT] }],
      accounts: oidcAccounts,
    });
    try {
      const d = await discover(n.issuer);
      assert(!('authorization_response_iss_parameter_supported' in d), 'not advertised');
      const f = await authorize(d, { loginHint: 'alice' });
      assert(f.params.code && !('iss' in f.params), JSON.stringify(f.params));
      const denied = await authorize(d, { loginHint: 'nobody' });
      assert(denied.params.error === 'access_denied' && !('iss' in denied.params), JSON.stringify(denied.params));
      const t = await tokenRequest(d, { code: f.params.code, verifier: f.verifier });
      eq(verifyJwt(t.body.id_token, json(await request('GET', d.jwks_uri))).payload.iss, n.issuer, 'ID token iss');
    } finally {
      await stopServer(n.proc);
    }
  });

  for (const alg of ['ES256', 'EdDSA']) {
    await test(`oidc: Google-like issuer (no path) signing with ${alg}`, async () => {
      const g = await startServer('oidc_idp.mjs', {
        port: 0,
        issuer_path: '',
        id_token_signing_alg: alg,
        clients: [{ client_id: 'tidepool-google', client_secret: 'g-secret', redirect_uris: [GOOGLE_REDIRECT] }],
        accounts: { alice: { sub: '110169484474386276334', email: 'alice@gmail.example', email_verified: true, name: 'Alice' } },
      });
      try {
        eq(g.issuer, `http://127.0.0.1:${g.port}`, 'issuer');
        const d = await discover(g.issuer);
        eq(d.id_token_signing_alg_values_supported, [alg], 'algs');
        const f = await authorize(d, { clientId: 'tidepool-google', redirectUri: GOOGLE_REDIRECT, loginHint: 'alice' });
        eq(f.params.iss, g.issuer, 'iss');
        const t = await tokenRequest(d, {
          code: f.params.code, verifier: f.verifier, clientId: 'tidepool-google', secret: 'g-secret', redirectUri: GOOGLE_REDIRECT,
        });
        eq(t.status, 200, `token ${JSON.stringify(t.body)}`);
        const { header, payload } = verifyJwt(t.body.id_token, json(await request('GET', d.jwks_uri)));
        eq(header.alg, alg, 'alg');
        eq(payload.iss, g.issuer, 'iss');
        eq(payload.email, 'alice@gmail.example', 'email');
      } finally {
        await stopServer(g.proc);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------
// GitHub tests

const ghAccounts = {
  octocat: {
    id: 583231,
    login: 'octocat',
    name: 'The Octocat',
    emails: [
      {
        email: 'octocat@github.example', primary: true, verified: true, visibility: 'public',
      },
      {
        email: 'octo@users.noreply.github.example', primary: false, verified: true, visibility: null,
      },
    ],
    orgs: ['acme', { login: 'globex', role: 'admin' }],
  },
  hubot: {
    id: 12345,
    login: 'hubot',
    name: null,
    emails: [{
      email: 'hubot@github.example', primary: true, verified: false, visibility: 'private',
    }],
    orgs: [],
  },
};

async function githubTests() {
  const gh = await startServer('github_fake.mjs', {
    port: 0,
    clients: [{ client_id: 'Iv1.tidepool', client_secret: 'gh-secret', redirect_uris: [GH_REDIRECT] }],
    accounts: ghAccounts,
  });
  const base = gh.base_url;

  const authorizeUrl = (params) => {
    const u = new URL('/login/oauth/authorize', base);
    for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.set(k, v);
    return u.href;
  };
  async function ghAuthorize({
    login = 'octocat', scope = 'read:user user:email read:org', pkce = true, redirectUri = GH_REDIRECT, clientId = 'Iv1.tidepool',
  } = {}) {
    const { verifier, challenge } = pkcePair();
    const state = randomBytes(10).toString('hex');
    const url = authorizeUrl({
      client_id: clientId,
      redirect_uri: redirectUri,
      scope,
      state,
      login,
      code_challenge: pkce ? challenge : undefined,
      code_challenge_method: pkce ? 'S256' : undefined,
    });
    const r = await request('GET', url);
    return {
      r, verifier, state, location: r.headers.location ? new URL(r.headers.location) : undefined,
    };
  }
  async function ghToken(fields, accept = 'application/json') {
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };
    if (accept) headers.accept = accept;
    const r = await request('POST', `${base}/login/oauth/access_token`, { headers, body: new URLSearchParams(fields).toString() });
    return r;
  }
  const api = (path, token, scheme = 'Bearer', extra = {}) => request('GET', `${base}${path}`, {
    headers: {
      ...(token ? { authorization: `${scheme} ${token}` } : {}),
      accept: 'application/vnd.github+json',
      'x-github-api-version': '2022-11-28',
      ...extra,
    },
  });

  await test('github: announces base_url on 127.0.0.1', async () => {
    eq(base, `http://127.0.0.1:${gh.port}`, 'base_url');
  });

  let flow;
  await test('github: authorize auto-approves as `login` and redirects with code and state', async () => {
    flow = await ghAuthorize();
    eq(flow.r.status, 302, 'status');
    eq(`${flow.location.origin}${flow.location.pathname}`, GH_REDIRECT, 'redirect target');
    assert(/^[0-9a-f]{20}$/.test(flow.location.searchParams.get('code')), `code ${flow.location.searchParams.get('code')}`);
    eq(flow.location.searchParams.get('state'), flow.state, 'state');
  });

  await test('github: a wrong code_verifier is rejected with bad_verification_code (HTTP 200)', async () => {
    const r = await ghToken({
      client_id: 'Iv1.tidepool', client_secret: 'gh-secret', code: flow.location.searchParams.get('code'), redirect_uri: GH_REDIRECT, code_verifier: pkcePair().verifier,
    });
    eq(r.status, 200, 'status');
    eq(json(r), {
      error: 'bad_verification_code',
      error_description: 'The code passed is incorrect or expired.',
      error_uri: 'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code',
    }, 'body');
  });

  let token;
  await test('github: token exchange (Accept: application/json)', async () => {
    const r = await ghToken({
      client_id: 'Iv1.tidepool', client_secret: 'gh-secret', code: flow.location.searchParams.get('code'), redirect_uri: GH_REDIRECT, code_verifier: flow.verifier,
    });
    eq(r.status, 200, 'status');
    assert(r.headers['content-type'].startsWith('application/json'), r.headers['content-type']);
    const body = json(r);
    eq(Object.keys(body).sort(), ['access_token', 'scope', 'token_type'], 'fields');
    assert(/^gho_[A-Za-z0-9]{36}$/.test(body.access_token), body.access_token);
    eq(body.token_type, 'bearer', 'token_type');
    eq(body.scope, 'read:user,user:email,read:org', 'scope');
    token = body.access_token;
  });

  await test('github: the code is single use', async () => {
    const r = await ghToken({
      client_id: 'Iv1.tidepool', client_secret: 'gh-secret', code: flow.location.searchParams.get('code'), code_verifier: flow.verifier,
    });
    eq(json(r).error, 'bad_verification_code', 'error');
  });

  await test('github: default token response is form-encoded', async () => {
    const f = await ghAuthorize({ pkce: false, scope: '' });
    const r = await ghToken({ client_id: 'Iv1.tidepool', client_secret: 'gh-secret', code: f.location.searchParams.get('code') }, null);
    assert(r.headers['content-type'].startsWith('application/x-www-form-urlencoded'), r.headers['content-type']);
    const p = new URLSearchParams(r.text);
    assert(/^gho_/.test(p.get('access_token')), r.text);
    eq(p.get('token_type'), 'bearer', 'token_type');
    eq(p.get('scope'), '', 'scope');
  });

  await test('github: wrong client secret -> incorrect_client_credentials', async () => {
    const f = await ghAuthorize();
    const r = await ghToken({ client_id: 'Iv1.tidepool', client_secret: 'nope', code: f.location.searchParams.get('code'), code_verifier: f.verifier });
    eq(json(r), {
      error: 'incorrect_client_credentials',
      error_description: 'The client_id and/or client_secret passed are incorrect.',
      error_uri: 'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials',
    }, 'body');
  });

  await test('github: token redirect_uri different from the authorize one -> redirect_uri_mismatch', async () => {
    const f = await ghAuthorize();
    const r = await ghToken({
      client_id: 'Iv1.tidepool', client_secret: 'gh-secret', code: f.location.searchParams.get('code'), code_verifier: f.verifier, redirect_uri: `${GH_REDIRECT}/other`,
    });
    eq(json(r).error, 'redirect_uri_mismatch', 'error');
  });

  await test('github: GET /user (Bearer and token schemes)', async () => {
    for (const scheme of ['Bearer', 'token']) {
      const r = await api('/user', token, scheme);
      eq(r.status, 200, `status (${scheme})`);
      eq(r.headers['content-type'], 'application/json; charset=utf-8', 'content-type');
      eq(r.headers['x-oauth-scopes'], 'read:user, user:email, read:org', 'x-oauth-scopes');
      const u = json(r);
      eq(u.login, 'octocat', 'login');
      eq(u.id, 583231, 'id');
      eq(u.node_id, 'MDQ6VXNlcjU4MzIzMQ==', 'node_id');
      eq(u.type, 'User', 'type');
      eq(u.name, 'The Octocat', 'name');
      eq(u.email, 'octocat@github.example', 'public email');
      assert(typeof u.created_at === 'string' && u.avatar_url && u.html_url, 'other fields');
    }
  });

  await test('github: GET /user/emails', async () => {
    const r = await api('/user/emails', token);
    eq(r.status, 200, 'status');
    eq(json(r), ghAccounts.octocat.emails, 'emails');
  });

  await test('github: GET /user/orgs and /user/memberships/orgs/{org}', async () => {
    const orgs = json(await api('/user/orgs', token));
    eq(orgs.map((o) => o.login), ['acme', 'globex'], 'orgs');
    assert(Number.isInteger(orgs[0].id) && orgs[0].node_id, 'org id/node_id');
    const m = await api('/user/memberships/orgs/ACME', token);
    eq(m.status, 200, 'membership status');
    const mb = json(m);
    eq([mb.state, mb.role, mb.organization.login, mb.user.login], ['active', 'member', 'acme', 'octocat'], 'membership');
    eq(json(await api('/user/memberships/orgs/globex', token)).role, 'admin', 'admin role');
    const nf = await api('/user/memberships/orgs/initech', token);
    eq(nf.status, 404, 'non-member status');
    eq(json(nf).message, 'Not Found', 'message');
  });

  await test('github: scopes are enforced (/user/emails 404, /user/orgs 403 without them)', async () => {
    const f = await ghAuthorize({ scope: 'read:user' });
    const t = json(await ghToken({ client_id: 'Iv1.tidepool', client_secret: 'gh-secret', code: f.location.searchParams.get('code'), code_verifier: f.verifier })).access_token;
    eq((await api('/user', t)).status, 200, '/user');
    eq((await api('/user/emails', t)).status, 404, '/user/emails');
    eq((await api('/user/orgs', t)).status, 403, '/user/orgs');
    eq((await api('/user/memberships/orgs/acme', t)).status, 403, 'membership');
  });

  await test('github: bad or missing credentials -> 401', async () => {
    const bad = await api('/user', 'gho_notarealtoken000000000000000000000000');
    eq(bad.status, 401, 'status');
    eq(json(bad), { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest', status: '401' }, 'body');
    const none = await api('/user', undefined);
    eq(none.status, 401, 'status without token');
  });

  await test('github: API requires a User-Agent', async () => {
    const r = await new Promise((resolve, reject) => {
      const req = http.request(`${base}/user`, { headers: { authorization: `Bearer ${token}` } }, (res) => { res.resume(); resolve(res.statusCode); });
      req.removeHeader('user-agent');
      req.on('error', reject);
      req.end();
    });
    eq(r, 403, 'status');
  });

  await test('github: unknown login -> access_denied redirect with state', async () => {
    const f = await ghAuthorize({ login: 'mallory' });
    eq(f.r.status, 302, 'status');
    eq(f.location.searchParams.get('error'), 'access_denied', 'error');
    assert(f.location.searchParams.get('error_description'), 'error_description');
    eq(f.location.searchParams.get('state'), f.state, 'state');
    assert(!f.location.searchParams.get('code'), 'no code');
  });

  await test('github: unknown client_id -> 404 page, no redirect', async () => {
    const f = await ghAuthorize({ clientId: 'nope' });
    eq(f.r.status, 404, 'status');
    assert(!f.r.headers.location, 'no redirect');
  });

  await test('github: unregistered redirect_uri -> redirect_uri_mismatch at the registered callback', async () => {
    const f = await ghAuthorize({ redirectUri: 'http://127.0.0.1:1234/elsewhere' });
    eq(f.r.status, 302, 'status');
    eq(`${f.location.origin}${f.location.pathname}`, GH_REDIRECT, 'sent to the registered callback');
    eq(f.location.searchParams.get('error'), 'redirect_uri_mismatch', 'error');
    eq(f.location.searchParams.get('state'), f.state, 'state');
  });

  await test('github: loopback callback accepts another port and a sub-path (GitHub rule)', async () => {
    const f = await ghAuthorize({ redirectUri: 'http://127.0.0.1:4321/auth/callback/github/x' });
    eq(f.location.href.split('?')[0], 'http://127.0.0.1:4321/auth/callback/github/x', 'target');
    assert(f.location.searchParams.get('code'), 'code');
  });

  await test('github: POST /__test/accounts (login rename keeps the token valid)', async () => {
    const renamed = { ...ghAccounts.octocat, login: 'octocat-renamed', emails: [{ email: 'new@github.example', primary: true, verified: true, visibility: 'public' }] };
    const r = await request('POST', `${base}/__test/accounts`, { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ 'octocat-renamed': renamed }) });
    eq(r.status, 200, 'status');
    const u = json(await api('/user', token));
    eq([u.login, u.id, u.email], ['octocat-renamed', 583231, 'new@github.example'], 'renamed user');
    const f = await ghAuthorize({ login: 'octocat' });
    eq(f.location.searchParams.get('error'), 'access_denied', 'old login is gone');
  });

  await test('github: stats', async () => {
    const s = json(await request('GET', `${base}/__test/stats`));
    eq(s.token_requests, 7, 'token_requests');
    eq(s.api_requests, 15, 'api_requests');
  });

  await test('github: POST /__test/clients replaces the clients', async () => {
    const r = await request('POST', `${base}/__test/clients`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify([{ client_id: 'Iv1.other', client_secret: 's2', redirect_uris: ['http://127.0.0.1:1234/gh'] }]),
    });
    eq(r.status, 200, 'status');
    eq((await ghAuthorize({ clientId: 'Iv1.tidepool' })).r.status, 404, 'old client is gone');
    const f = await ghAuthorize({ clientId: 'Iv1.other', redirectUri: undefined, login: 'octocat-renamed' });
    eq(f.location.href.split('?')[0], 'http://127.0.0.1:1234/gh', 'default callback');
  });

  await test('github: stdout carried exactly one line; SIGTERM exits 0', async () => {
    const r = await stopServer(gh.proc);
    eq(r, { code: 0, signal: null }, 'exit');
    eq(gh.proc.stdout.split('\n').filter(Boolean).length, 1, `stdout lines: ${gh.proc.stdout}`);
  });

  await test('github: codes expire (code_ttl_seconds)', async () => {
    const g2 = await startServer('github_fake.mjs', {
      port: 0,
      code_ttl_seconds: 0.3,
      clients: [{ client_id: 'c', client_secret: 's', redirect_uris: [GH_REDIRECT] }],
      accounts: { octocat: ghAccounts.octocat },
    });
    try {
      const r = await request('GET', `${g2.base_url}/login/oauth/authorize?client_id=c&login=octocat&state=x`);
      const code = new URL(r.headers.location).searchParams.get('code');
      await new Promise((resolve) => { setTimeout(resolve, 500); });
      const t = await request('POST', `${g2.base_url}/login/oauth/access_token`, {
        headers: { accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ client_id: 'c', client_secret: 's', code }).toString(),
      });
      eq(json(t).error, 'bad_verification_code', 'expired code');
    } finally {
      await stopServer(g2.proc);
    }
  });
}

// ---------------------------------------------------------------------------------------------

try {
  await oidcTests();
  await githubTests();
} catch (err) {
  results.failed += 1;
  console.log(`not ok - setup\n    ${String(err.stack ?? err).split('\n').join('\n    ')}`);
}
for (const p of children) {
  if (!p.exited) await stopServer(p); // eslint-disable-line no-await-in-loop
}
if (results.failed && !VERBOSE) {
  for (const p of children) {
    console.log(`--- stderr of ${p.child.spawnargs.slice(1, 2).join(' ')} ---\n${p.stderr.split('\n').slice(-40).join('\n')}`);
  }
}
console.log(`${results.passed} passed, ${results.failed} failed`);
process.exitCode = results.failed ? 1 : 0;
