// What every web UI scenario shares: the platform started for the run, the browser helpers and
// the screenshots (tests/web/e2e.mjs runs the scenarios).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const SOURCE = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
export const BUILD = resolve(flag('build-dir', join(SOURCE, 'build')));
export const ONLY = flag('only', '');
export const SHOTS = join(BUILD, 'web-screenshots');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const PASSWORD = 'correct horse battery staple 42';

// A loopback port nothing listens on, below the kernel's ephemeral range: a port the kernel
// hands out itself could be taken by an outgoing connection before the platform binds it.
export async function freePort() {
  let low = 32768;
  try { low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low; } catch { /* default */ }
  const first = Math.min(20000, Math.floor(low / 2));
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = first + Math.floor(Math.random() * Math.max(1, low - first));
    const free = await new Promise((ok) => {
      const server = createServer();
      server.once('error', () => ok(false));
      server.listen(port, '127.0.0.1', () => server.close(() => ok(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port below the ephemeral range');
}

export async function waitFor(check, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The whole platform in one process, on loopback, with its own data directory. Options:
// defaultProfile (the workspaces' tool; "shell" unless said), modelServer (model_server.base_url)
// and modelName (model_server.default_model). platform.metrics('provisioner') reads a service's
// /metrics.
export class Platform {
  static async start(dir, options = {}) {
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    // The identity provider for everyone but the administrator (IDP_PEOPLE).
    const idp = await IdentityProvider.start(dir, origin);
    const services = ['auth', 'provisioner', 'secrets', 'proxy', 'scaler', 'audit'];
    const metricsPorts = {};
    for (const s of services) metricsPorts[s] = await freePort();
    const profiles = writeTestProfiles(dir);
    let yaml = `log:\n  level: info\nplatform:\n  public_url: ${origin}\n`;
    if (options.modelServer) {
      yaml += `model_server:\n  base_url: ${options.modelServer}\n  default_model: ${options.modelName ?? 'tidepool-test'}\n`;
    }
    for (const s of services) {
      yaml += `${s}:\n  grpc_port: 0\n  metrics_port: ${metricsPorts[s]}\n`;
      if (s === 'auth') yaml += idp.providerYaml();
      if (s === 'proxy') yaml += `  http_port: ${port}\n  web_root: ${join(SOURCE, 'web/dist')}\n`;
      if (s === 'proxy') yaml += `  preview_domain: ${PREVIEW_DOMAIN}\n`;
      if (s === 'provisioner') yaml += '  hard_disk_quota: false\n';
      if (s === 'provisioner') yaml += `  profiles_dir: ${profiles}\n`;
      if (s === 'provisioner' && options.defaultProfile) yaml += `  default_profile: ${options.defaultProfile}\n`;
      // Scheduled runs are accounted at each check: every 5 s, so a test sees them soon.
      if (s === 'scaler') yaml += '  check_interval: 5s\n';
      if (s === 'audit') yaml += '  checkpoint_append_only: false\n';
    }
    writeFileSync(join(dir, 'tidepool.yaml'), yaml);
    const platform = new Platform(dir, origin);
    platform.idp = idp;
    platform.metricsPorts = metricsPorts;
    platform.process = spawn(
      join(BUILD, 'tidepool'),
      ['up', '--config', join(dir, 'tidepool.yaml'), '--data-dir', join(dir, 'data')],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    platform.process.stdout.on('data', (d) => { platform.stdout += d; });
    platform.process.stderr.on('data', (d) => { platform.stderr += d; });
    await waitFor(() => /\/setup#(tps_[a-z0-9]+)/.test(platform.stdout), 'the setup link', 60000);
    await waitFor(async () => {
      try { return (await fetch(`${origin}/healthz`)).ok; } catch { return false; }
    }, 'the edge');
    return platform;
  }

  // One sample of a service's Prometheus metrics (the value of `name`, without labels), or null.
  async metric(service, name) {
    try {
      const text = await (await fetch(`http://127.0.0.1:${this.metricsPorts[service]}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{}`));
      return line ? Number(line.split(' ').pop()) : null;
    } catch {
      return null;
    }
  }

  constructor(dir, origin) {
    this.dir = dir;
    this.origin = origin;
    this.stdout = '';
    this.stderr = '';
  }

  setupLink() {
    return `${this.origin}/setup#${/\/setup#(tps_[a-z0-9]+)/.exec(this.stdout)[1]}`;
  }

  ctl(...argv) {
    return execFileSync(join(BUILD, 'tidepoolctl'), [...argv, '--data-dir', join(this.dir, 'data')],
                        { encoding: 'utf8' });
  }

  // Deletes every workspace (sandboxes outlive the platform by design), then stops it.
  async stop() {
    try {
      const ids = [...this.ctl('workspaces', 'list').matchAll(/^(ws_[a-z2-7]{26})/gm)].map((m) => m[1]);
      for (const id of ids) this.ctl('workspaces', 'delete', '--workspace', id, '--confirm', id);
      await waitFor(() => this.ctl('workspaces', 'list').split('\n')
                              .filter((l) => l.startsWith('ws_') && !/deleted\s+deleted/.test(l))
                              .length === 0, 'the workspaces to be deleted', 20000);
    } finally {
      this.process.kill('SIGTERM');
      await new Promise((r) => this.process.once('exit', r));
      await this.idp?.stop();
    }
  }
}

export async function shoot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

export async function expectWorkspaceRunning(page) {
  await page.getByTestId('home-page').waitFor();
  await page.locator('[data-testid="workspace-state"][data-state="WORKSPACE_STATE_RUNNING"]')
      .waitFor({ timeout: 30000 });
}

// A new page whose exceptions and console errors (a CSP violation, a failed script) are
// collected in `errors`; Chromium's own line for each 4xx answer (a wrong password) is not.
export async function watchedPage(browser) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      errors.push(m.text());
    }
  });
  return { page, errors };
}

// Signs the administrator in with the e-mail form (after the first scenario set the password).
export async function signInAsAdmin(page, platform) {
  await page.goto(platform.origin);
  await page.getByTestId('signin-page').waitFor();
  await page.getByLabel(/e-?mail/i).fill('admin@tidepool.local');
  await page.getByLabel(/^password$/i).fill(PASSWORD);
  await page.getByRole('button', { name: /^sign in$/i }).click();
  await page.getByTestId('home-page').waitFor();
}


// Previews are served at <port>-<workspace suffix>.<PREVIEW_DOMAIN>:<the edge's port>; Chromium
// resolves every *.localhost name to the loopback address.
export const PREVIEW_DOMAIN = 'preview.localhost';

// Where the test workspaces' tool keeps its scheduled jobs (the shell profile's schedule store
// in the test profiles), relative to the home folder.
export const SCHEDULE_STORE = '.schedules/jobs.json';

// The profiles the web tests use: the source tree's shell profile (every workspace here is a
// shell workspace), copied for the run with a schedule store added (profiles/shell.yaml has
// none: its tool keeps no jobs). Returns the directory.
export function writeTestProfiles(dir) {
  const target = join(dir, 'profiles');
  mkdirSync(target, { recursive: true });
  let text = readFileSync(join(SOURCE, 'profiles', 'shell.yaml'), 'utf8');
  if (!/^schedule_store:/m.test(text)) text = `${text.replace(/\n*$/, '\n')}schedule_store: ${SCHEDULE_STORE}\n`;
  writeFileSync(join(target, 'shell.yaml'), text);
  // The OpenClaw profile as shipped.
  writeFileSync(join(target, 'openclaw.yaml'), readFileSync(join(SOURCE, 'profiles', 'openclaw.yaml')));
  return target;
}

// Types a command into the terminal page's shell (the terminal must be connected) and presses
// Enter.
export async function typeInTerminal(page, command) {
  await page.getByRole('region', { name: 'Terminal' }).click();
  await page.keyboard.type(command);
  await page.keyboard.press('Enter');
}

// ---- The identity provider: tests/idp/oidc_idp.mjs (the real `oidc-provider`), started once
// per run beside the platform and registered as the provider `corp` (kind oidc). The
// administrator signs in with a password; everyone else comes through this provider.

// Its people: login name → the claims they sign in with.
export const IDP_PEOPLE = {
  casey: { sub: 'casey-0001', email: 'casey@corp.example', email_verified: true, name: 'Casey Jones' },
  robin: { sub: 'robin-0002', email: 'robin@corp.example', email_verified: true, name: 'Robin Lee' },
};
// Its button on the sign-in page (display_name in auth.providers).
export const IDP_BUTTON = 'Sign in with Corp SSO';

class IdentityProvider {
  // Starts it with a client for `<origin>/auth/callback/corp`; resolves once it listens.
  static async start(dir, origin) {
    const root = join(dir, 'idp');
    mkdirSync(root, { recursive: true });
    const secret = Array.from({ length: 4 }, () => Math.random().toString(36).slice(2)).join('');
    const config = join(root, 'oidc.json');
    writeFileSync(config, JSON.stringify({
      clients: [{ client_id: 'tidepool-web', client_secret: secret, redirect_uris: [`${origin}/auth/callback/corp`] }],
      accounts: IDP_PEOPLE,
    }));
    // auth refuses a secret file that others may read.
    writeFileSync(join(root, 'corp.secret'), `${secret}\n`, { mode: 0o600 });
    const idp = new IdentityProvider(root);
    idp.process = spawn(process.execPath, [join(SOURCE, 'tests/idp/oidc_idp.mjs'), '--config', config],
                        { stdio: ['ignore', 'pipe', 'pipe'] });
    idp.process.stdout.on('data', (d) => { idp.stdout += d; });
    idp.process.stderr.on('data', (d) => { idp.stderr += d; });
    idp.process.once('exit', () => { idp.exited = true; });
    // Whatever happens to the run (a failed start included), it does not outlive it.
    process.once('exit', () => { if (!idp.exited) idp.process.kill('SIGTERM'); });
    // Its one line on stdout: {"issuer": ..., "port": ...}.
    const line = await waitFor(() => idp.exited || /^\{.*\}\n/.exec(idp.stdout), 'the identity provider', 30000);
    if (idp.exited) throw new Error(`the identity provider did not start: ${idp.stderr.trim()}`);
    idp.issuer = JSON.parse(line[0]).issuer;
    return idp;
  }

  constructor(root) {
    this.root = root;
    this.stdout = '';
    this.stderr = '';
    this.exited = false;
  }

  // The lines of the platform's `auth:` section that register it.
  providerYaml() {
    return '  providers:\n    - id: corp\n      kind: oidc\n' +
        `      display_name: ${IDP_BUTTON}\n      issuer: ${this.issuer}\n` +
        `      client_id: tidepool-web\n      client_secret_file: ${join(this.root, 'corp.secret')}\n`;
  }

  async stop() {
    if (this.exited || !this.process) return;
    this.process.kill('SIGTERM');
    await new Promise((r) => (this.exited ? r() : this.process.once('exit', r)));
  }
}

// Makes every sign-in through the identity provider in this browser context pick `login` (a key
// of IDP_PEOPLE). The provider has no login form: its interaction signs in the account that the
// authorization request's login_hint names (tests/idp/README.md), which a real provider learns
// from the person typing their name. The platform's redirect to the provider (the answer to
// /auth/start/corp, whose cookie binds the sign-in to this browser) is passed on with the hint
// added. (Playwright cannot intercept the redirected request itself.) One person per context.
export async function pickIdpPerson(context, platform, login) {
  await context.route(`${platform.origin}/auth/start/corp?**`, async (route) => {
    const response = await route.fetch({ maxRedirects: 0 });
    const location = response.headers().location;
    if (!location || !location.startsWith(`${platform.idp.issuer}/`)) {
      await route.fulfill({ response });
      return;
    }
    const url = new URL(location);
    url.searchParams.set('login_hint', login);
    // headers() joins several Set-Cookie values with "\n", which fulfill() splits again.
    await route.fulfill({ response, headers: { ...response.headers(), location: url.href } });
  });
}

// Signs `login` in with the provider's button on the sign-in page; resolves on the home page.
export async function signInWithIdp(page, platform, login) {
  await pickIdpPerson(page.context(), platform, login);
  await page.goto(platform.origin);
  await page.getByTestId('signin-page').waitFor();
  await page.getByRole('button', { name: IDP_BUTTON }).click();
  await page.getByTestId('home-page').waitFor({ timeout: 30000 });
}

// Runs a suite: `start(dir, defer)` brings the platform up in a fresh directory and returns
// {platform, extra} (`defer(fn)` registers a clean-up that runs last, even when the start
// fails); each scenario (name → async (browser, platform, extra)) runs in order, one line each
// (--only picks some), `onFailure(name)` after a failing one. Then everything is stopped and
// the process exits 0 when all passed; on a failure the directory is kept with the platform's
// log.
export async function runSuite({ prefix, scenarios, start, onFailure = async () => {} }) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const deferred = [];
  let failed = 0;
  let platform;
  let browser;
  try {
    const started = await start(dir, (fn) => deferred.push(fn));
    platform = started.platform;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    for (const [name, run] of Object.entries(scenarios)) {
      if (ONLY && !ONLY.split(',').includes(name)) continue;
      const began = Date.now();
      try {
        await run(browser, platform, started.extra);
        console.log(`[ PASS ] ${name} (${Date.now() - began} ms)`);
      } catch (e) {
        failed++;
        console.log(`[ FAIL ] ${name}: ${e.message}`);
        await onFailure(name).catch(() => {});
      }
    }
  } catch (e) {
    failed++;
    console.log(`[ FAIL ] setup: ${e.message}`);
  } finally {
    if (browser) await browser.close();
    if (platform) {
      try { await platform.stop(); } catch (e) { failed++; console.log(`[ FAIL ] cleanup: ${e.message}`); }
    }
    for (const fn of deferred.reverse()) await fn();
    if (failed === 0) {
      try { execFileSync('chattr', ['-R', '-a', dir], { stdio: 'ignore' }); } catch { /* sockets have no flags */ }
      rmSync(dir, { recursive: true, force: true });
    } else {
      if (platform) writeFileSync(join(dir, 'platform.log'), platform.stdout + platform.stderr);
      console.log(`logs kept in ${dir}`);
    }
  }
  console.log(`screenshots in ${SHOTS}`);
  process.exit(failed === 0 ? 0 : 1);
}
