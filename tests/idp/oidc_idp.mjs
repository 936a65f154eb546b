#!/usr/bin/env node
// A real OpenID Provider (the `oidc-provider` package) on 127.0.0.1 for end-to-end tests of
// federated sign-in. No UI: the interaction step signs in the account named by the
// authorization request's `login_hint` and grants what was asked, or denies with
// access_denied. See README.md for the full contract.
//
//   node oidc_idp.mjs --config FILE
//   stdout: {"issuer":"http://127.0.0.1:PORT<issuer_path>","port":PORT}   (one line, nothing else)

import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import Provider, { interactionPolicy } from 'oidc-provider';

import {
  announce, die, exitOnSignals, isPlainObject, listenLoopback, loadConfig, log as logTo,
  readBody, sendJson, sendText,
} from './common.mjs';

const PROG = 'oidc_idp';
const log = (...args) => logTo(PROG, ...args);

// ---------------------------------------------------------------------------------------------
// Configuration

const config = loadConfig(PROG);

const port = config.port ?? 0;
if (!Number.isInteger(port) || port < 0 || port > 65535) die(PROG, 'port must be an integer 0..65535');

let issuerPath = config.issuer_path ?? '';
if (typeof issuerPath !== 'string') die(PROG, 'issuer_path must be a string');
if (issuerPath.endsWith('/')) issuerPath = issuerPath.replace(/\/+$/, '');
if (issuerPath !== '' && !issuerPath.startsWith('/')) die(PROG, 'issuer_path must be empty or start with "/"');
if (/[?#]/.test(issuerPath)) die(PROG, 'issuer_path must not contain "?" or "#"');
if (issuerPath.startsWith('/__test')) die(PROG, 'issuer_path must not start with /__test');

const SIGNING_ALGS = new Set(['RS256', 'ES256', 'EdDSA']);
const signingAlg = config.id_token_signing_alg ?? 'RS256';
if (!SIGNING_ALGS.has(signingAlg)) die(PROG, `id_token_signing_alg must be one of ${[...SIGNING_ALGS].join(', ')}`);

// RFC 9207 `iss` in authorization responses: on (and advertised) by default, as oidc-provider
// does; false emulates a provider that neither sends nor advertises it (Microsoft Entra).
const issParameter = config.authorization_response_iss ?? true;
if (typeof issParameter !== 'boolean') die(PROG, 'authorization_response_iss must be true or false');

function validateClients(list, where) {
  if (!Array.isArray(list) || list.length === 0) throw new Error(`${where} must be a non-empty array`);
  return list.map((c, i) => {
    if (!isPlainObject(c)) throw new Error(`${where}[${i}] must be an object`);
    if (typeof c.client_id !== 'string' || !c.client_id) throw new Error(`${where}[${i}].client_id must be a non-empty string`);
    if (typeof c.client_secret !== 'string' || !c.client_secret) throw new Error(`${where}[${i}].client_secret must be a non-empty string`);
    if (!Array.isArray(c.redirect_uris) || c.redirect_uris.length === 0) throw new Error(`${where}[${i}].redirect_uris must be a non-empty array`);
    // Any other client metadata oidc-provider knows (token_endpoint_auth_method, ...) passes through.
    return {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: signingAlg,
      ...c,
    };
  });
}

let clients;
try {
  clients = validateClients(config.clients, 'clients');
} catch (err) {
  die(PROG, err.message);
}

// Claims the ID token may carry, by scope. `openid` claims are always returned (like
// Microsoft's tid/oid); account fields that are not listed anywhere below are added to
// `openid` too (e.g. Google's `hd`), so every claim you put on an account reaches the ID token.
const SCOPE_CLAIMS = {
  email: ['email', 'email_verified'],
  profile: [
    'name', 'given_name', 'family_name', 'middle_name', 'nickname', 'preferred_username',
    'profile', 'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at',
    'groups',
  ],
  groups: ['groups'],
};
const OPENID_CLAIMS = ['sub', 'tid', 'oid'];
// Never taken from an account: the provider sets these itself.
const RESERVED_CLAIMS = new Set([
  'iss', 'aud', 'exp', 'iat', 'nbf', 'jti', 'nonce', 'azp', 'at_hash', 'c_hash', 's_hash', 'sid',
  'auth_time', 'acr', 'amr', 'cnf',
]);

function validateAccounts(accounts, where) {
  if (!isPlainObject(accounts)) throw new Error(`${where} must be an object mapping login name to account`);
  const subs = new Set();
  const out = {};
  for (const [name, acct] of Object.entries(accounts)) {
    if (!isPlainObject(acct)) throw new Error(`${where}.${name} must be an object`);
    const sub = acct.sub ?? name;
    if (typeof sub !== 'string' || !sub) throw new Error(`${where}.${name}.sub must be a non-empty string`);
    if (subs.has(sub)) throw new Error(`${where}: sub ${JSON.stringify(sub)} is used twice`);
    subs.add(sub);
    out[name] = { ...acct, sub };
  }
  return out;
}

let accounts;
try {
  accounts = validateAccounts(config.accounts ?? {}, 'accounts');
} catch (err) {
  die(PROG, err.message);
}

// ---------------------------------------------------------------------------------------------
// Accounts

function accountBySub(sub) {
  return Object.values(accounts).find((a) => a.sub === sub);
}

// login_hint names an account by its key in the accounts map; an email address or a sub
// also works (Google and Microsoft take those as hints).
function accountByHint(hint) {
  if (typeof hint !== 'string' || !hint) return undefined;
  if (Object.prototype.hasOwnProperty.call(accounts, hint)) return accounts[hint];
  const lower = hint.toLowerCase();
  return Object.values(accounts).find((a) => (typeof a.email === 'string' && a.email.toLowerCase() === lower)
    || a.sub === hint);
}

function claimsOf(acct) {
  const out = {};
  for (const [k, v] of Object.entries(acct)) {
    if (RESERVED_CLAIMS.has(k) || v === undefined || v === null) continue;
    out[k] = v;
  }
  out.sub = acct.sub;
  return out;
}

function claimsConfig() {
  const listed = new Set([...OPENID_CLAIMS, ...Object.values(SCOPE_CLAIMS).flat()]);
  const extra = new Set();
  for (const acct of Object.values(accounts)) {
    for (const k of Object.keys(acct)) {
      if (!listed.has(k) && !RESERVED_CLAIMS.has(k)) extra.add(k);
    }
  }
  return {
    openid: [...OPENID_CLAIMS, ...extra],
    ...SCOPE_CLAIMS,
  };
}

// ---------------------------------------------------------------------------------------------
// Keys

function generateSigningKey(alg) {
  let pair;
  switch (alg) {
    case 'RS256': pair = generateKeyPairSync('rsa', { modulusLength: 2048 }); break;
    case 'ES256': pair = generateKeyPairSync('ec', { namedCurve: 'P-256' }); break;
    case 'EdDSA': pair = generateKeyPairSync('ed25519'); break;
    default: throw new Error(`unsupported alg ${alg}`);
  }
  const jwk = pair.privateKey.export({ format: 'jwk' });
  return {
    ...jwk, kid: `${alg.toLowerCase()}-${randomBytes(8).toString('hex')}`, alg, use: 'sig',
  };
}

// Cookie signing keys live as long as the process, so sessions and interactions survive a
// Provider rebuild (key rotation, account replacement). The memory adapter's store is
// module-wide, so stored codes, grants and interactions survive it too.
const cookieKeys = [randomBytes(32).toString('hex')];
let signingKey = generateSigningKey(signingAlg);

// ---------------------------------------------------------------------------------------------
// Provider

let issuer; // set once the port is known
const stats = { token_requests: 0, authorization_requests: 0 };

function interactionPolicyWithSelectAccount() {
  // Google and Microsoft accept prompt=select_account; oidc-provider only knows it once a
  // prompt of that name is in the policy. The interaction below resolves it with the rest.
  const policy = interactionPolicy.base();
  policy.add(new interactionPolicy.Prompt({ name: 'select_account', requestable: true }), 0);
  return policy;
}

function buildProvider(clientList = clients) {
  const provider = new Provider(issuer, {
    clients: clientList.map((c) => ({ ...c })),
    jwks: { keys: [{ ...signingKey }] },
    cookies: {
      keys: cookieKeys,
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { signed: true, httpOnly: true, sameSite: 'lax' },
    },
    claims: claimsConfig(),
    // Claims requested with scopes go into the ID token itself, not only to userinfo.
    conformIdTokenClaims: false,
    scopes: ['openid', 'offline_access'],
    responseTypes: ['code'],
    pkce: { methods: ['S256'], required: () => true },
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    allowOmittingSingleRegisteredRedirectUri: false,
    ttl: {
      AuthorizationCode: 600,
      AccessToken: 3600,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 3600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    enabledJWA: { idTokenSigningAlgValues: [signingAlg] },
    features: {
      devInteractions: { enabled: false },
    },
    interactions: {
      policy: interactionPolicyWithSelectAccount(),
      // Absolute, so a simple client never has to resolve a relative Location.
      url: async (ctx, interaction) => `${issuer}/interaction/${interaction.uid}`,
    },
    async findAccount(ctx, sub) {
      const acct = accountBySub(sub);
      if (!acct) return undefined;
      return {
        accountId: sub,
        async claims() { return claimsOf(acct); },
      };
    },
    async renderError(ctx, out) {
      ctx.type = 'text/plain; charset=utf-8';
      ctx.body = `${Object.entries(out).map(([k, v]) => `${k}: ${v}`).join('\n')}\n`;
    },
  });
  provider.proxy = false;
  if (!issParameter) {
    provider.use(async (ctx, next) => {
      await next();
      if (ctx.path === '/.well-known/openid-configuration' && isPlainObject(ctx.body)) {
        delete ctx.body.authorization_response_iss_parameter_supported;
      }
      const location = ctx.response.get('location');
      if (location && (ctx.path === '/auth' || ctx.path.startsWith('/auth/'))) {
        const u = new URL(location, issuer);
        if (u.searchParams.has('iss')) {
          u.searchParams.delete('iss');
          ctx.set('location', u.href);
        }
      }
    });
  }
  for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error',
    'jwks.error', 'discovery.error', 'end_session.error']) {
    provider.on(event, (ctx, err) => log(`${event}: ${err?.error ?? ''} ${err?.error_description ?? err?.message ?? ''}`));
  }
  return { provider, callback: provider.callback() };
}

let current; // { provider, callback }

// oidc-provider validates static client metadata lazily; make a bad client fail now.
async function checkClients(built, list) {
  for (const c of list) {
    try {
      await built.provider.Client.find(c.client_id); // eslint-disable-line no-await-in-loop
    } catch (err) {
      throw new Error(`client ${c.client_id}: ${err.error_description ?? err.message}`);
    }
  }
  return built;
}

// ---------------------------------------------------------------------------------------------
// Interaction: no UI, decided by login_hint. Always ends in a 303 back to the resume URL.

async function handleInteraction(req, res) {
  const { provider } = current;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    sendText(res, 400, `interaction not found: ${err.error_description ?? err.message}\n`);
    return;
  }
  const { prompt, params } = details;
  const hint = params.login_hint;
  const acct = accountByHint(hint);
  if (!acct) {
    log(`interaction ${details.uid}: ${hint ? `unknown login_hint ${JSON.stringify(hint)}` : 'no login_hint'} -> access_denied`);
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: hint ? `no account for login_hint ${hint}` : 'login_hint is required by this test identity provider',
    }, { mergeWithLastSubmission: false });
    return;
  }

  const accountId = acct.sub;
  let grant;
  if (details.grantId) {
    grant = await provider.Grant.find(details.grantId);
    if (grant && grant.accountId !== accountId) grant = undefined;
  }
  if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });
  // Grant everything that was asked: the scope parameter, plus whatever the consent prompt
  // lists as missing (claims parameter, resource scopes).
  if (params.scope) grant.addOIDCScope(params.scope);
  const pd = prompt.details ?? {};
  if (pd.missingOIDCScope) grant.addOIDCScope(pd.missingOIDCScope.join(' '));
  if (pd.missingOIDCClaims) grant.addOIDCClaims(pd.missingOIDCClaims);
  if (pd.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(pd.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  if (typeof params.claims === 'string') {
    try {
      const requested = JSON.parse(params.claims);
      const names = [...Object.keys(requested.id_token ?? {}), ...Object.keys(requested.userinfo ?? {})];
      if (names.length) grant.addOIDCClaims(names);
    } catch { /* the provider already validated it */ }
  }
  const grantId = await grant.save();
  log(`interaction ${details.uid}: ${prompt.name} as ${JSON.stringify(hint)} (sub ${accountId})`);
  await provider.interactionFinished(req, res, {
    login: { accountId, remember: true },
    consent: { grantId },
    select_account: {},
  }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------------------------------------
// Test control endpoints (outside the issuer path).

async function handleControl(req, res, path) {
  if (path === '/__test/stats' && req.method === 'GET') {
    sendJson(res, 200, { ...stats });
    return;
  }
  if (path === '/__test/rotate-keys' && req.method === 'POST') {
    await readBody(req);
    const old = signingKey.kid;
    signingKey = generateSigningKey(signingAlg);
    current = buildProvider();
    log(`rotated signing key ${old} -> ${signingKey.kid}`);
    sendJson(res, 200, { kid: signingKey.kid });
    return;
  }
  if (path === '/__test/accounts' && req.method === 'POST') {
    let body;
    try {
      body = JSON.parse(await readBody(req));
      accounts = validateAccounts(body, 'body');
    } catch (err) {
      sendJson(res, 400, { error: err.message });
      return;
    }
    current = buildProvider();
    log(`accounts replaced: ${Object.keys(accounts).join(', ') || '(none)'}`);
    sendJson(res, 200, { accounts: Object.keys(accounts) });
    return;
  }
  if (path === '/__test/clients' && req.method === 'POST') {
    let next;
    try {
      next = validateClients(JSON.parse(await readBody(req)), 'body');
      current = await checkClients(buildProvider(next), next);
    } catch (err) {
      sendJson(res, 400, { error: err.message });
      return;
    }
    clients = next;
    log(`clients replaced: ${clients.map((c) => c.client_id).join(', ')}`);
    sendJson(res, 200, { clients: clients.map((c) => c.client_id) });
    return;
  }
  sendJson(res, 404, { error: `no test endpoint ${req.method} ${path}` });
}

// ---------------------------------------------------------------------------------------------
// HTTP dispatch

const SESSION_COOKIE = /^_session(?:\.legacy)?(?:\.sig)?$/;

// Every authorization request starts signed out: the session cookie is not shown to the
// authorization endpoint (nor its resume step), so the login_hint of *this* request decides
// who signs in, and switching accounts never needs oidc-provider's logout-confirm form POST.
function stripSessionCookie(req) {
  const { cookie } = req.headers;
  if (!cookie) return;
  const kept = cookie.split(';').map((s) => s.trim()).filter((pair) => {
    const name = pair.split('=', 1)[0].trim();
    return pair && !SESSION_COOKIE.test(name);
  });
  if (kept.length) req.headers.cookie = kept.join('; ');
  else delete req.headers.cookie;
}

async function dispatch(req, res) {
  const started = Date.now();
  res.on('finish', () => {
    const loc = res.getHeader('location');
    log(`${req.method} ${req.originalPath} -> ${res.statusCode}${loc ? ` ${String(loc).slice(0, 200)}` : ''} (${Date.now() - started} ms)`);
  });
  req.originalPath = req.url;
  if (!current) {
    sendJson(res, 503, { error: 'temporarily_unavailable', error_description: 'starting' });
    return;
  }
  const { pathname } = new URL(req.url, 'http://127.0.0.1');

  if (pathname.startsWith('/__test/')) {
    await handleControl(req, res, pathname);
    return;
  }
  if (pathname.startsWith(`${issuerPath}/interaction/`)) {
    await handleInteraction(req, res);
    return;
  }

  let rest;
  if (issuerPath === '') {
    rest = req.url;
  } else if (pathname === issuerPath || pathname.startsWith(`${issuerPath}/`)) {
    rest = req.url.slice(issuerPath.length);
    if (!rest.startsWith('/')) rest = `/${rest}`;
  } else {
    sendJson(res, 404, { error: 'not_found', error_description: `nothing here outside the issuer path ${issuerPath}` });
    return;
  }
  const route = rest.split('?', 1)[0];
  if (route === '/token' && req.method === 'POST') stats.token_requests += 1;
  if (route === '/auth') stats.authorization_requests += 1;
  if (route === '/auth' || route.startsWith('/auth/')) stripSessionCookie(req);

  // Mount the provider at issuer_path the way express does: oidc-provider builds its URLs
  // from req.baseUrl when req.originalUrl is absent.
  req.url = rest;
  req.baseUrl = issuerPath;
  current.callback(req, res);
}

const server = http.createServer((req, res) => {
  dispatch(req, res).catch((err) => {
    log(`internal error: ${err.stack ?? err}`);
    if (!res.headersSent) sendJson(res, err.status ?? 500, { error: 'server_error', error_description: err.message });
    else res.destroy();
  });
});
server.keepAliveTimeout = 5000;

const boundPort = await listenLoopback(server, port).catch((err) => die(PROG, `cannot listen on 127.0.0.1:${port}: ${err.message}`));
issuer = `http://127.0.0.1:${boundPort}${issuerPath}`;
try {
  current = await checkClients(buildProvider(), clients);
} catch (err) {
  die(PROG, err.message);
}
exitOnSignals(PROG, server);
log(`issuer ${issuer}, signing ${signingAlg} kid ${signingKey.kid}, clients ${clients.map((c) => c.client_id).join(', ')}, accounts ${Object.keys(accounts).join(', ') || '(none)'}`);
announce({ issuer, port: boundPort });
