#!/usr/bin/env node
// A loopback stand-in for GitHub that speaks GitHub's documented wire format: the OAuth web
// application flow (github.com/login/oauth/...) and the REST endpoints a sign-in needs
// (api.github.com/user, /user/emails, /user/orgs, /user/memberships/orgs/{org}). One host
// plays both roles. No UI: /login/oauth/authorize approves at once as the account named by
// GitHub's `login` parameter. See README.md for the full contract.
//
//   node github_fake.mjs --config FILE
//   stdout: {"base_url":"http://127.0.0.1:PORT","port":PORT}   (one line, nothing else)

import http from 'node:http';
import { createHash, randomBytes, randomInt } from 'node:crypto';

import {
  announce, die, exitOnSignals, isPlainObject, listenLoopback, loadConfig, log as logTo,
  readBody, sendJson, sendText,
} from './common.mjs';

const PROG = 'github_fake';
const log = (...args) => logTo(PROG, ...args);

// ---------------------------------------------------------------------------------------------
// Configuration

const config = loadConfig(PROG);

const port = config.port ?? 0;
if (!Number.isInteger(port) || port < 0 || port > 65535) die(PROG, 'port must be an integer 0..65535');

const codeTtlSeconds = config.code_ttl_seconds ?? 600; // GitHub: "The temporary code will expire after 10 minutes."
if (typeof codeTtlSeconds !== 'number' || !(codeTtlSeconds > 0)) die(PROG, 'code_ttl_seconds must be a positive number');

// api.github.com answers 403 to requests without a User-Agent header.
const requireUserAgent = config.require_user_agent ?? true;

// A GitHub OAuth app has one callback URL (a GitHub App up to ten): redirect_uris[0] is the
// one GitHub falls back to and reports errors to.
function normalizeClients(list, where) {
  if (!Array.isArray(list) || list.length === 0) throw new Error(`${where} must be a non-empty array`);
  const out = new Map();
  list.forEach((c, i) => {
    if (!isPlainObject(c)) throw new Error(`${where}[${i}] must be an object`);
    if (typeof c.client_id !== 'string' || !c.client_id) throw new Error(`${where}[${i}].client_id must be a non-empty string`);
    if (typeof c.client_secret !== 'string' || !c.client_secret) throw new Error(`${where}[${i}].client_secret must be a non-empty string`);
    if (!Array.isArray(c.redirect_uris) || c.redirect_uris.length === 0) throw new Error(`${where}[${i}].redirect_uris must be a non-empty array`);
    for (const u of c.redirect_uris) {
      try {
        new URL(u); // eslint-disable-line no-new
      } catch {
        throw new Error(`${where}[${i}].redirect_uris: ${JSON.stringify(u)} is not an absolute URL`);
      }
    }
    out.set(c.client_id, { ...c });
  });
  return out;
}

let clients;
try {
  clients = normalizeClients(config.clients, 'clients');
} catch (err) {
  die(PROG, err.message);
}

function orgId(login) {
  // Stable, plausible numeric id for an org given only by name.
  return 1000000 + (createHash('sha256').update(login.toLowerCase()).digest().readUInt32BE(0) % 90000000);
}

function normalizeAccounts(accounts, where) {
  if (!isPlainObject(accounts)) throw new Error(`${where} must be an object mapping login to account`);
  const out = [];
  const ids = new Set();
  const logins = new Set();
  for (const [key, a] of Object.entries(accounts)) {
    if (!isPlainObject(a)) throw new Error(`${where}.${key} must be an object`);
    const login = a.login ?? key;
    if (typeof login !== 'string' || !login) throw new Error(`${where}.${key}.login must be a non-empty string`);
    if (!Number.isSafeInteger(a.id) || a.id <= 0) throw new Error(`${where}.${key}.id must be a positive integer`);
    if (ids.has(a.id)) throw new Error(`${where}: id ${a.id} is used twice`);
    if (logins.has(login.toLowerCase())) throw new Error(`${where}: login ${login} is used twice`);
    ids.add(a.id);
    logins.add(login.toLowerCase());
    const emails = (a.emails ?? []).map((e, i) => {
      if (typeof e === 'string') return { email: e, primary: i === 0, verified: true, visibility: i === 0 ? 'public' : null };
      if (!isPlainObject(e) || typeof e.email !== 'string') throw new Error(`${where}.${key}.emails[${i}] must be {email, primary, verified, visibility}`);
      return {
        email: e.email, primary: e.primary === true, verified: e.verified === true, visibility: e.visibility ?? null,
      };
    });
    const orgs = (a.orgs ?? []).map((o, i) => {
      const org = typeof o === 'string' ? { login: o } : o;
      if (!isPlainObject(org) || typeof org.login !== 'string' || !org.login) throw new Error(`${where}.${key}.orgs[${i}] must be a name or {login, id?, role?, state?}`);
      return {
        login: org.login,
        id: org.id ?? orgId(org.login),
        description: org.description ?? null,
        role: org.role ?? 'member', // or 'admin'
        state: org.state ?? 'active', // or 'pending'
      };
    });
    out.push({ ...a, login, emails, orgs });
  }
  return out;
}

let accounts;
try {
  accounts = normalizeAccounts(config.accounts ?? {}, 'accounts');
} catch (err) {
  die(PROG, err.message);
}

const accountByLogin = (login) => accounts.find((a) => a.login.toLowerCase() === String(login).toLowerCase());
const accountById = (id) => accounts.find((a) => a.id === id);

// ---------------------------------------------------------------------------------------------
// State

let baseUrl; // http://127.0.0.1:PORT, set after listen
const codes = new Map(); // code -> { clientId, accountId, redirectUri, scopes, challenge, expiresAt }
const tokens = new Map(); // token -> { clientId, accountId, scopes }
const stats = { token_requests: 0, api_requests: 0, authorize_requests: 0 };

const DOCS = 'https://docs.github.com';
const AUTHZ_ERRORS = `${DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/`;
const TOKEN_ERRORS = `${DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/`;

// ---------------------------------------------------------------------------------------------
// Helpers

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(str) {
  let c = 0xffffffff;
  for (const b of Buffer.from(str, 'utf8')) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function base62(n, width) {
  let s = '';
  let v = n;
  do {
    s = BASE62[v % 62] + s;
    v = Math.floor(v / 62);
  } while (v > 0);
  return s.padStart(width, '0');
}

// GitHub's token format: prefix, 30 random base62 characters, 6-character base62 CRC32 of them.
function newAccessToken() {
  let body = '';
  for (let i = 0; i < 30; i += 1) body += BASE62[randomInt(62)];
  return `gho_${body}${base62(crc32(body), 6)}`;
}

function nodeId(type, id) {
  // GitHub's legacy global node id: base64("<len(type)>:<type><id>"), e.g. MDQ6VXNlcjU4MzIzMQ==.
  return Buffer.from(`${String(type.length).padStart(2, '0')}:${type}${id}`).toString('base64');
}

function isLoopbackHost(host) {
  return host === '127.0.0.1' || host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

// GitHub's documented redirect_uri rule: the host (sub-domains allowed) and port must match
// the registered callback URL and the path must be the callback's path or below it. For a
// loopback callback URL the port may differ.
function redirectUriAllowed(registered, candidate) {
  let r;
  let c;
  try {
    r = new URL(registered);
    c = new URL(candidate);
  } catch {
    return false;
  }
  if (r.protocol !== c.protocol || c.username || c.password) return false;
  if (isLoopbackHost(r.hostname)) {
    if (c.hostname !== r.hostname) return false;
  } else {
    if (c.hostname !== r.hostname && !c.hostname.endsWith(`.${r.hostname}`)) return false;
    if (c.port !== r.port) return false;
  }
  if (c.pathname === r.pathname) return true;
  const base = r.pathname.endsWith('/') ? r.pathname : `${r.pathname}/`;
  return c.pathname.startsWith(base);
}

function withParams(uri, params) {
  const u = new URL(uri);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.append(k, v);
  return u.href;
}

function redirect(res, location) {
  res.writeHead(302, { location, 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<html><body>You are being <a href="${location.replace(/&/g, '&amp;').replace(/"/g, '&quot;')}">redirected</a>.</body></html>`);
}

function notFoundPage(res) {
  sendText(res, 404, '<!DOCTYPE html>\n<html><head><title>Page not found · GitHub</title></head><body><h1>404</h1><p>This is not the web page you are looking for.</p></body></html>\n', 'text/html; charset=utf-8');
}

function parseScopes(s) {
  if (typeof s !== 'string') return [];
  return [...new Set(s.split(/[\s,]+/).filter(Boolean))];
}

const s256 = (verifier) => createHash('sha256').update(verifier).digest('base64url');

function pruneCodes() {
  const now = Date.now();
  for (const [code, c] of codes) if (c.expiresAt <= now) codes.delete(code);
}

// ---------------------------------------------------------------------------------------------
// github.com/login/oauth/authorize

function handleAuthorize(req, res, url) {
  stats.authorize_requests += 1;
  const q = url.searchParams;
  const client = clients.get(q.get('client_id') ?? '');
  if (!client) {
    notFoundPage(res); // GitHub shows its 404 page for an unknown client_id.
    return;
  }
  const state = q.get('state') ?? undefined;
  const requested = q.get('redirect_uri');
  const registered = client.redirect_uris[0];
  if (requested !== null && !client.redirect_uris.some((r) => redirectUriAllowed(r, requested))) {
    // Documented: GitHub redirects to the *registered* callback URL with the error.
    redirect(res, withParams(registered, {
      error: 'redirect_uri_mismatch',
      error_description: 'The redirect_uri MUST match the registered callback URL for this application.',
      error_uri: `${AUTHZ_ERRORS}#redirect-uri-mismatch`,
      state,
    }));
    return;
  }
  const target = requested ?? registered;

  const challenge = q.get('code_challenge');
  const method = q.get('code_challenge_method');
  if (challenge !== null || method !== null) {
    // Only S256 is accepted (GitHub changelog 2025-07-14).
    let problem;
    if (challenge === null) problem = 'code_challenge is required when code_challenge_method is given';
    else if (method !== 'S256') problem = 'code_challenge_method must be S256';
    else if (!/^[A-Za-z0-9_-]{43}$/.test(challenge)) problem = 'code_challenge must be a base64url SHA-256 digest (43 characters)';
    if (problem) {
      redirect(res, withParams(target, { error: 'invalid_request', error_description: problem, state }));
      return;
    }
  }

  const login = q.get('login');
  const account = login ? accountByLogin(login) : undefined;
  if (!account) {
    log(`authorize: ${login ? `unknown login ${JSON.stringify(login)}` : 'no login parameter'} -> access_denied`);
    redirect(res, withParams(target, {
      error: 'access_denied',
      error_description: 'The user has denied your application access.',
      error_uri: `${AUTHZ_ERRORS}#access-denied`,
      state,
    }));
    return;
  }

  pruneCodes();
  const code = randomBytes(10).toString('hex');
  codes.set(code, {
    clientId: client.client_id,
    accountId: account.id,
    redirectUri: requested,
    scopes: parseScopes(q.get('scope')),
    challenge,
    expiresAt: Date.now() + codeTtlSeconds * 1000,
  });
  redirect(res, withParams(target, { code, state }));
}

// ---------------------------------------------------------------------------------------------
// github.com/login/oauth/access_token

function tokenResponse(req, res, body) {
  const accept = String(req.headers.accept ?? '').toLowerCase();
  let text;
  let type;
  if (accept.includes('application/json')) {
    text = JSON.stringify(body);
    type = 'application/json; charset=utf-8';
  } else if (accept.includes('application/xml')) {
    const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
    text = `<OAuth>${Object.entries(body).map(([k, v]) => `<${k}>${esc(v)}</${k}>`).join('')}</OAuth>`;
    type = 'application/xml; charset=utf-8';
  } else {
    text = new URLSearchParams(body).toString();
    type = 'application/x-www-form-urlencoded; charset=utf-8';
  }
  // Errors too are HTTP 200, as on GitHub.
  sendText(res, 200, text, type);
}

const TOKEN_ERROR = {
  incorrect_client_credentials: {
    error: 'incorrect_client_credentials',
    error_description: 'The client_id and/or client_secret passed are incorrect.',
    error_uri: `${TOKEN_ERRORS}#incorrect-client-credentials`,
  },
  redirect_uri_mismatch: {
    error: 'redirect_uri_mismatch',
    error_description: 'The redirect_uri MUST match the registered callback URL for this application.',
    error_uri: `${AUTHZ_ERRORS}#redirect-uri-mismatch2`,
  },
  bad_verification_code: {
    error: 'bad_verification_code',
    error_description: 'The code passed is incorrect or expired.',
    error_uri: `${TOKEN_ERRORS}#bad-verification-code`,
  },
};

async function handleAccessToken(req, res, url) {
  stats.token_requests += 1;
  const raw = await readBody(req);
  const params = Object.fromEntries(url.searchParams);
  const ctype = String(req.headers['content-type'] ?? '').toLowerCase();
  if (ctype.includes('application/json')) {
    try {
      const j = JSON.parse(raw || '{}');
      if (isPlainObject(j)) for (const [k, v] of Object.entries(j)) params[k] = String(v);
    } catch { /* treated as no parameters */ }
  } else {
    for (const [k, v] of new URLSearchParams(raw)) params[k] = v;
  }
  const auth = req.headers.authorization;
  if (auth && /^basic /i.test(auth) && params.client_id === undefined) {
    const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i >= 0) {
      const dec = (v) => { try { return decodeURIComponent(v); } catch { return v; } };
      params.client_id = dec(decoded.slice(0, i));
      params.client_secret = dec(decoded.slice(i + 1));
    }
  }

  const fail = (kind, why) => {
    log(`access_token: ${kind}${why ? ` (${why})` : ''}`);
    tokenResponse(req, res, TOKEN_ERROR[kind]);
  };

  const client = clients.get(params.client_id ?? '');
  if (!client || params.client_secret !== client.client_secret) {
    fail('incorrect_client_credentials');
    return;
  }
  pruneCodes();
  const entry = params.code ? codes.get(params.code) : undefined;
  if (!entry || entry.clientId !== client.client_id) {
    fail('bad_verification_code', entry ? 'code issued to another client' : 'unknown, used or expired code');
    return;
  }
  if (params.redirect_uri !== undefined) {
    const ok = entry.redirectUri !== null
      ? params.redirect_uri === entry.redirectUri
      : client.redirect_uris.some((r) => redirectUriAllowed(r, params.redirect_uri));
    if (!ok) {
      fail('redirect_uri_mismatch');
      return;
    }
  }
  if (entry.challenge !== null) {
    if (!params.code_verifier || s256(params.code_verifier) !== entry.challenge) {
      fail('bad_verification_code', params.code_verifier ? 'code_verifier does not match code_challenge' : 'code_verifier missing');
      return;
    }
  }
  codes.delete(params.code); // single use

  const token = newAccessToken();
  tokens.set(token, { clientId: client.client_id, accountId: entry.accountId, scopes: entry.scopes });
  log(`access_token: issued for ${accountById(entry.accountId)?.login} scopes [${entry.scopes.join(',')}]`);
  tokenResponse(req, res, { access_token: token, token_type: 'bearer', scope: entry.scopes.join(',') });
}

// ---------------------------------------------------------------------------------------------
// api.github.com

const API_DOCS = {
  user: `${DOCS}/rest/users/users#get-the-authenticated-user`,
  emails: `${DOCS}/rest/users/emails#list-email-addresses-for-the-authenticated-user`,
  orgs: `${DOCS}/rest/orgs/orgs#list-organizations-for-the-authenticated-user`,
  membership: `${DOCS}/rest/orgs/members#get-an-organization-membership-for-the-authenticated-user`,
};

function apiHeaders(grant, accepted) {
  const h = {
    'x-github-media-type': 'github.v3; format=json',
    'x-github-api-version-selected': '2022-11-28',
    'x-github-request-id': randomBytes(8).toString('hex').toUpperCase(),
    'x-ratelimit-limit': '5000',
    'x-ratelimit-remaining': String(Math.max(0, 5000 - stats.api_requests)),
    'x-ratelimit-used': String(stats.api_requests),
    'x-ratelimit-resource': 'core',
    'x-ratelimit-reset': String(Math.floor(Date.now() / 1000) + 3600),
  };
  if (grant) h['x-oauth-scopes'] = grant.scopes.join(', ');
  if (accepted !== undefined) h['x-accepted-oauth-scopes'] = accepted;
  return h;
}

function apiError(res, status, message, documentationUrl, grant) {
  sendJson(res, status, { message, documentation_url: documentationUrl, status: String(status) }, apiHeaders(grant));
}

function hasScope(grant, ...anyOf) {
  return grant.scopes.some((s) => anyOf.includes(s));
}

function simpleUser(a) {
  const url = `${baseUrl}/users/${a.login}`;
  return {
    login: a.login,
    id: a.id,
    node_id: a.node_id ?? nodeId('User', a.id),
    avatar_url: a.avatar_url ?? `https://avatars.githubusercontent.com/u/${a.id}?v=4`,
    gravatar_id: '',
    url,
    html_url: `${baseUrl}/${a.login}`,
    followers_url: `${url}/followers`,
    following_url: `${url}/following{/other_user}`,
    gists_url: `${url}/gists{/gist_id}`,
    starred_url: `${url}/starred{/owner}{/repo}`,
    subscriptions_url: `${url}/subscriptions`,
    organizations_url: `${url}/orgs`,
    repos_url: `${url}/repos`,
    events_url: `${url}/events{/privacy}`,
    received_events_url: `${url}/received_events`,
    type: a.type ?? 'User',
    user_view_type: 'public',
    site_admin: a.site_admin ?? false,
  };
}

function publicEmail(a) {
  if (Object.prototype.hasOwnProperty.call(a, 'email')) return a.email; // explicit, may be null
  const pub = a.emails.filter((e) => e.visibility === 'public' && e.verified);
  return (pub.find((e) => e.primary) ?? pub[0])?.email ?? null;
}

function fullUser(a, grant) {
  const created = a.created_at ?? '2011-01-25T18:44:36Z';
  const user = {
    ...simpleUser(a),
    name: a.name ?? null,
    company: a.company ?? null,
    blog: a.blog ?? '',
    location: a.location ?? null,
    email: publicEmail(a),
    hireable: a.hireable ?? null,
    bio: a.bio ?? null,
    twitter_username: a.twitter_username ?? null,
    public_repos: a.public_repos ?? 0,
    public_gists: a.public_gists ?? 0,
    followers: a.followers ?? 0,
    following: a.following ?? 0,
    created_at: created,
    updated_at: a.updated_at ?? created,
  };
  // Private profile fields need the `user` or `read:user` scope.
  if (hasScope(grant, 'user', 'read:user')) {
    Object.assign(user, {
      user_view_type: 'private',
      notification_email: a.notification_email ?? publicEmail(a),
      private_gists: 0,
      total_private_repos: 0,
      owned_private_repos: 0,
      disk_usage: 0,
      collaborators: 0,
      two_factor_authentication: a.two_factor_authentication ?? true,
      plan: {
        name: 'free', space: 976562499, collaborators: 0, private_repos: 10000,
      },
    });
  }
  return user;
}

function orgSimple(o) {
  const url = `${baseUrl}/orgs/${o.login}`;
  return {
    login: o.login,
    id: o.id,
    node_id: nodeId('Organization', o.id),
    url,
    repos_url: `${url}/repos`,
    events_url: `${url}/events`,
    hooks_url: `${url}/hooks`,
    issues_url: `${url}/issues`,
    members_url: `${url}/members{/member}`,
    public_members_url: `${url}/public_members{/member}`,
    avatar_url: `https://avatars.githubusercontent.com/u/${o.id}?v=4`,
    description: o.description,
  };
}

// per_page/page pagination with a Link header, like the real list endpoints.
function paginate(url, items) {
  const perPage = Math.min(100, Math.max(1, Number.parseInt(url.searchParams.get('per_page') ?? '30', 10) || 30));
  const page = Math.max(1, Number.parseInt(url.searchParams.get('page') ?? '1', 10) || 1);
  const last = Math.max(1, Math.ceil(items.length / perPage));
  const slice = items.slice((page - 1) * perPage, page * perPage);
  const link = (p, rel) => {
    const u = new URL(url.pathname, baseUrl);
    u.searchParams.set('per_page', String(perPage));
    u.searchParams.set('page', String(p));
    return `<${u.href}>; rel="${rel}"`;
  };
  const links = [];
  if (page > 1) links.push(link(page - 1, 'prev'));
  if (page < last) links.push(link(page + 1, 'next'), link(last, 'last'));
  if (page > 1) links.push(link(1, 'first'));
  return { slice, headers: links.length ? { link: links.join(', ') } : {} };
}

const ORG_SCOPES = ['user', 'read:org', 'write:org', 'admin:org'];
const ORG_SCOPE_MESSAGE = 'You need at least read:org scope or user scope to list your organizations.';

function handleApi(req, res, url) {
  stats.api_requests += 1;
  const path = url.pathname.replace(/\/+$/, '') || '/';
  if (requireUserAgent && !req.headers['user-agent']) {
    sendText(res, 403, 'Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    apiError(res, 404, 'Not Found', `${DOCS}/rest`);
    return;
  }

  const auth = String(req.headers.authorization ?? '');
  const m = /^(?:bearer|token)\s+(\S+)\s*$/i.exec(auth);
  if (!auth) {
    apiError(res, 401, 'Requires authentication', API_DOCS.user);
    return;
  }
  const grant = m ? tokens.get(m[1]) : undefined;
  const account = grant ? accountById(grant.accountId) : undefined;
  if (!grant || !account) {
    apiError(res, 401, 'Bad credentials', `${DOCS}/rest`);
    return;
  }

  if (path === '/user') {
    sendJson(res, 200, fullUser(account, grant), apiHeaders(grant, ''));
    return;
  }
  if (path === '/user/emails') {
    if (!hasScope(grant, 'user', 'user:email')) {
      apiError(res, 404, 'Not Found', API_DOCS.emails, grant);
      return;
    }
    const { slice, headers } = paginate(url, account.emails);
    sendJson(res, 200, slice, { ...apiHeaders(grant, 'user, user:email'), ...headers });
    return;
  }
  if (path === '/user/orgs') {
    if (!hasScope(grant, ...ORG_SCOPES)) {
      apiError(res, 403, ORG_SCOPE_MESSAGE, API_DOCS.orgs, grant);
      return;
    }
    const active = account.orgs.filter((o) => o.state === 'active').map(orgSimple);
    const { slice, headers } = paginate(url, active);
    sendJson(res, 200, slice, { ...apiHeaders(grant, 'admin:org, read:org, repo, user, write:org'), ...headers });
    return;
  }
  const membership = /^\/user\/memberships\/orgs\/([^/]+)$/.exec(path);
  if (membership) {
    const name = decodeURIComponent(membership[1]);
    if (!hasScope(grant, ...ORG_SCOPES)) {
      apiError(res, 403, ORG_SCOPE_MESSAGE, API_DOCS.membership, grant);
      return;
    }
    const org = account.orgs.find((o) => o.login.toLowerCase() === name.toLowerCase());
    if (!org) {
      apiError(res, 404, 'Not Found', API_DOCS.membership, grant);
      return;
    }
    const orgUrl = `${baseUrl}/orgs/${org.login}`;
    sendJson(res, 200, {
      url: `${orgUrl}/memberships/${account.login}`,
      state: org.state,
      role: org.role,
      organization_url: orgUrl,
      organization: orgSimple(org),
      user: simpleUser(account),
    }, apiHeaders(grant, 'admin:org, read:org, repo, user, write:org'));
    return;
  }
  apiError(res, 404, 'Not Found', `${DOCS}/rest`, grant);
}

// ---------------------------------------------------------------------------------------------
// Test control

async function handleControl(req, res, path) {
  if (path === '/__test/stats' && req.method === 'GET') {
    sendJson(res, 200, { ...stats });
    return;
  }
  if (path === '/__test/accounts' && req.method === 'POST') {
    try {
      accounts = normalizeAccounts(JSON.parse(await readBody(req)), 'body');
    } catch (err) {
      sendJson(res, 400, { error: err.message });
      return;
    }
    log(`accounts replaced: ${accounts.map((a) => `${a.login}#${a.id}`).join(', ') || '(none)'}`);
    sendJson(res, 200, { accounts: accounts.map((a) => a.login) });
    return;
  }
  if (path === '/__test/clients' && req.method === 'POST') {
    try {
      clients = normalizeClients(JSON.parse(await readBody(req)), 'body');
    } catch (err) {
      sendJson(res, 400, { error: err.message });
      return;
    }
    log(`clients replaced: ${[...clients.keys()].join(', ')}`);
    sendJson(res, 200, { clients: [...clients.keys()] });
    return;
  }
  sendJson(res, 404, { error: `no test endpoint ${req.method} ${path}` });
}

// ---------------------------------------------------------------------------------------------
// Dispatch

async function dispatch(req, res) {
  const started = Date.now();
  res.on('finish', () => {
    const loc = res.getHeader('location');
    log(`${req.method} ${req.url.replace(/([?&](?:code|client_secret|code_verifier)=)[^&]*/g, '$1…')} -> ${res.statusCode}${loc ? ` ${String(loc).slice(0, 200)}` : ''} (${Date.now() - started} ms)`);
  });
  const url = new URL(req.url, baseUrl);
  const path = url.pathname;
  if (path.startsWith('/__test/')) {
    await handleControl(req, res, path);
  } else if (path === '/login/oauth/authorize' && (req.method === 'GET' || req.method === 'HEAD')) {
    handleAuthorize(req, res, url);
  } else if (path === '/login/oauth/access_token' && req.method === 'POST') {
    await handleAccessToken(req, res, url);
  } else if (path === '/user' || path.startsWith('/user/') || path.startsWith('/users/') || path.startsWith('/orgs/')) {
    handleApi(req, res, url);
  } else {
    notFoundPage(res);
  }
}

const server = http.createServer((req, res) => {
  dispatch(req, res).catch((err) => {
    log(`internal error: ${err.stack ?? err}`);
    if (!res.headersSent) sendJson(res, err.status ?? 500, { message: err.message });
    else res.destroy();
  });
});
server.keepAliveTimeout = 5000;

const boundPort = await listenLoopback(server, port).catch((err) => die(PROG, `cannot listen on 127.0.0.1:${port}: ${err.message}`));
baseUrl = `http://127.0.0.1:${boundPort}`;
exitOnSignals(PROG, server);
log(`base_url ${baseUrl}, clients ${[...clients.keys()].join(', ')}, accounts ${accounts.map((a) => a.login).join(', ') || '(none)'}`);
announce({ base_url: baseUrl, port: boundPort });
