// What every web UI scenario shares: the platform started for the run, the browser helpers and
// the screenshots (tests/web/e2e.mjs runs the scenarios).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

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

export function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
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

// The whole platform in one process, on loopback, with its own data directory.
export class Platform {
  static async start(dir) {
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    const services = ['auth', 'provisioner', 'secrets', 'proxy', 'scaler', 'audit'];
    let yaml = `log:\n  level: info\nplatform:\n  public_url: ${origin}\n`;
    for (const s of services) {
      yaml += `${s}:\n  grpc_port: 0\n  metrics_port: 0\n`;
      if (s === 'proxy') yaml += `  http_port: ${port}\n  web_root: ${join(SOURCE, 'web/dist')}\n`;
      if (s === 'provisioner') yaml += '  hard_disk_quota: false\n';
      if (s === 'audit') yaml += '  checkpoint_append_only: false\n';
    }
    writeFileSync(join(dir, 'tidepool.yaml'), yaml);
    const platform = new Platform(dir, origin);
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

