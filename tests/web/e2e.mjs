// End-to-end tests of the web UI: the real platform (`tidepool up`, every service, real sandboxes)
// and real Chromium (Debian's package) driven by playwright-core. Every page visited is saved as
// a screenshot under <build dir>/web-screenshots/ so the pages can be looked at.
//
//   node tests/web/e2e.mjs --build-dir build [--only NAME]
//
// Exits 0 when every scenario passes; prints one line per scenario and, for a failure, the
// error and where the logs are (the temporary directory is then kept).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const SOURCE = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const BUILD = resolve(flag('build-dir', join(SOURCE, 'build')));
const ONLY = flag('only', '');
const SHOTS = join(BUILD, 'web-screenshots');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PASSWORD = 'correct horse battery staple 42';

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

async function waitFor(check, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The whole platform in one process, on loopback, with its own data directory.
class Platform {
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

async function shoot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function expectWorkspaceRunning(page) {
  await page.getByTestId('home-page').waitFor();
  await page.locator('[data-testid="workspace-state"][data-state="WORKSPACE_STATE_RUNNING"]')
      .waitFor({ timeout: 30000 });
}

// A new page whose exceptions and console errors (a CSP violation, a failed script) are
// collected in `errors`; Chromium's own line for each 4xx answer (a wrong password) is not.
async function watchedPage(browser) {
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
async function signInAsAdmin(page, platform) {
  await page.goto(platform.origin);
  await page.getByTestId('signin-page').waitFor();
  await page.getByLabel(/e-?mail/i).fill('admin@tidepool.local');
  await page.getByLabel(/^password$/i).fill(PASSWORD);
  await page.getByRole('button', { name: /^sign in$/i }).click();
  await page.getByTestId('home-page').waitFor();
}

const scenarios = {
  // The first administrator opens the setup link, sets a password, lands on the workspace home and
  // sees their workspace come up; signs out, and signs in again with the password.
  async firstAdminSetsUpSignsOutAndSignsIn(browser, platform) {
    const { page, errors } = await watchedPage(browser);
    await page.goto(platform.setupLink());
    await page.getByTestId('setup-page').waitFor();
    await shoot(page, 'setup');
    await page.getByLabel(/^password$/i).fill(PASSWORD);
    await page.getByLabel(/again/i).fill(PASSWORD);
    await page.getByRole('button', { name: /set password/i }).click();
    await expectWorkspaceRunning(page);
    await shoot(page, 'home-running');
    await page.getByRole('button', { name: /sign out/i }).click();
    await page.getByTestId('signin-page').waitFor();
    await shoot(page, 'signin');
    await page.getByLabel(/e-?mail/i).fill('admin@tidepool.local');
    await page.getByLabel(/^password$/i).fill('not the password');
    await page.getByRole('button', { name: /^sign in$/i }).click();
    await page.getByRole('alert').waitFor();
    await shoot(page, 'signin-error');
    await page.getByLabel(/^password$/i).fill(PASSWORD);
    await page.getByRole('button', { name: /^sign in$/i }).click();
    await expectWorkspaceRunning(page);
    await page.goto(`${platform.origin}/no/such/page`);
    await page.getByTestId('notfound-page').waitFor();
    await shoot(page, 'not-found');
    if (errors.length > 0) throw new Error(`the page reported errors: ${errors.join('; ')}`);
  },

  // The administrator signs in, opens Keys from the top navigation, stores an API key and sees
  // "Stored" but never the value: not in the page, not in any answer the page received, not
  // after a reload. A value that is too long is refused in plain words. Deleting the key (after
  // the confirmation step, which Escape cancels) brings back "Not set".
  async keysPageStoresAWriteOnlyKeyAndDeletesIt(browser, platform) {
    const { page, errors } = await watchedPage(browser);
    // Every answer the page receives, read in full (redirects have no body to read).
    const bodies = [];
    // The page lists the keys again after each change; a reload must not cut that answer off
    // (its body could then not be read), so the test waits for it.
    const relisted = () => page.waitForResponse((r) => r.url().endsWith('/api/v1/secrets/List'))
        .then((r) => r.text());
    page.on('response', (response) => {
      bodies.push(response.text()
          .then((text) => ({ url: response.url(), status: response.status(), text }))
          .catch(() => ({ url: response.url(), status: response.status(), text: '', unread: true })));
    });

    await signInAsAdmin(page, platform);
    const nav = page.getByRole('navigation', { name: 'Main' });
    await nav.getByRole('link', { name: 'Home' }).waitFor();
    const catalogueAnswer = page.waitForResponse(
        (r) => r.url().endsWith('/api/v1/secrets/GetCatalogue') && r.status() === 200);
    await nav.getByRole('link', { name: 'Keys' }).click();
    await page.getByTestId('keys-page').waitFor();
    if (new URL(page.url()).pathname !== '/keys') throw new Error(`Keys opened ${page.url()}`);

    // The provider: OpenAI when the catalogue has it, else the first whose API-key field takes
    // the test value (the catalogue's formats are RE2, which JavaScript reads the same here).
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
    const random = Array.from({ length: 40 }, () => alphabet[Math.floor(Math.random() * alphabet.length)]).join('');
    const value = `sk-test-${random}`;
    const { providers = [] } = await (await catalogueAnswer).json();
    const takes = (field) => /api_?key|token/i.test(field.fieldId || '') &&
        new RegExp(`^(?:${field.format || '.*'})$`).test(value) && value.length <= (field.maxLength || 1e9);
    const candidates = providers.flatMap((p) => (p.fields || []).filter(takes).map((f) => ({ provider: p, field: f })));
    const chosen = candidates.find((c) => c.provider.providerId === 'openai') || candidates[0];
    if (!chosen) throw new Error('no provider in the catalogue takes an sk-test- API key');
    const providerId = chosen.provider.providerId;
    const fieldId = chosen.field.fieldId;
    const block = page.getByTestId(`provider-${providerId}`);
    const status = page.getByTestId(`status-${providerId}-${fieldId}`);
    const input = block.getByLabel(new RegExp(`^New value for ${chosen.field.displayName}`));
    const save = block.getByRole('button', { name: /^Save\b/ });
    await status.filter({ hasText: /^Not set$/ }).waitFor();
    if ((await input.getAttribute('type')) !== 'password') throw new Error('the key input is not a password input');
    if ((await input.getAttribute('autocomplete')) !== 'off') throw new Error('the key input allows autocomplete');
    await shoot(page, 'keys');

    // Too long: the server's reason, in plain words, in an alert; nothing is stored.
    const limit = chosen.field.maxLength || 256;
    await input.fill(`sk-${'a'.repeat(limit + 10)}`);
    await save.click();
    const alert = block.getByRole('alert');
    await alert.waitFor();
    const said = await alert.innerText();
    if (!/not saved/i.test(said) || !new RegExp(`at most ${limit}`).test(said)) {
      throw new Error(`unexpected error text for a value that is too long: ${said}`);
    }
    await status.filter({ hasText: /^Not set$/ }).waitFor();

    // A good value: stored, the input cleared, the value nowhere to be seen.
    await input.fill(value);
    const afterSave = relisted();
    await save.click();
    await status.filter({ hasText: /^Stored$/ }).waitFor();
    await afterSave;
    if ((await input.inputValue()) !== '') throw new Error('the input still holds the value after saving');
    if ((await alert.count()) !== 0) throw new Error(`an error is still shown: ${await alert.innerText()}`);
    await block.getByRole('status').filter({ hasText: /saved/i }).waitFor();
    await shoot(page, 'keys-stored');
    const leaks = async (when) => {
      if ((await page.content()).includes(random)) throw new Error(`the value is in the page's HTML ${when}`);
      const answers = await Promise.all(bodies);
      const leaked = answers.filter((a) => a.text.includes(random)).map((a) => a.url);
      if (leaked.length > 0) throw new Error(`the value is in answers ${when}: ${leaked.join(', ')}`);
      const unread = answers.filter((a) => a.unread && new URL(a.url).pathname.startsWith('/api/'));
      if (unread.length > 0) throw new Error(`could not read answers ${when}: ${unread.map((a) => a.url).join(', ')}`);
      return answers;
    };
    const answers = await leaks('after saving');
    if (!answers.some((a) => a.url.endsWith('/api/v1/secrets/Put') && a.status === 200)) {
      throw new Error('no successful Put answer was seen');
    }

    // Still stored after a reload (the page reads List, metadata only).
    await page.reload();
    await page.getByTestId('keys-page').waitFor();
    await status.filter({ hasText: /^Stored$/ }).waitFor();
    await block.locator('time').first().waitFor();
    await leaks('after a reload');

    // Usable at 360 px: nothing wider than the screen.
    await page.setViewportSize({ width: 360, height: 800 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 0) throw new Error(`the keys page is ${overflow}px wider than a 360px screen`);
    await shoot(page, 'keys-360');
    await page.setViewportSize({ width: 1280, height: 720 });

    // Delete: a confirmation step in the page; Escape cancels it and gives the focus back.
    const remove = block.getByRole('button', { name: /^Delete\b/ });
    await remove.click();
    const confirmDelete = block.getByRole('button', { name: /^Yes, delete$/ });
    await confirmDelete.waitFor();
    await shoot(page, 'keys-delete-confirm');
    await page.keyboard.press('Escape');
    await confirmDelete.waitFor({ state: 'detached' });
    if (!(await remove.evaluate((el) => el === document.activeElement))) {
      throw new Error('the focus did not return to Delete after cancelling');
    }
    await status.filter({ hasText: /^Stored$/ }).waitFor();
    await remove.click();
    const afterDelete = relisted();
    await confirmDelete.click();
    await status.filter({ hasText: /^Not set$/ }).waitFor();
    await afterDelete;
    await Promise.all(bodies);
    await remove.waitFor({ state: 'detached' });
    await page.reload();
    await page.getByTestId('keys-page').waitFor();
    await status.filter({ hasText: /^Not set$/ }).waitFor();
    await leaks('after deleting');
    if (errors.length > 0) throw new Error(`the page reported errors: ${errors.join('; ')}`);
    await page.close();

    // Signed out, /keys asks to sign in and comes back to Keys.
    const fresh = await browser.newPage();
    await fresh.goto(`${platform.origin}/keys`);
    await fresh.getByTestId('signin-page').waitFor();
    await fresh.getByLabel(/e-?mail/i).fill('admin@tidepool.local');
    await fresh.getByLabel(/^password$/i).fill(PASSWORD);
    await fresh.getByRole('button', { name: /^sign in$/i }).click();
    await fresh.getByTestId('keys-page').waitFor();
    await fresh.getByTestId(`status-${providerId}-${fieldId}`).filter({ hasText: /^Not set$/ }).waitFor();
    await fresh.close();
  },

  // The administrator signs in, opens Terminal from the top navigation, waits for the shell,
  // runs a command whose output differs from what was typed, and sees the output; after a
  // reload the same shell is attached again and its scrollback (with the output) is replayed.
  async terminalRunsACommand(browser, platform) {
    const { page, errors } = await watchedPage(browser);
    await signInAsAdmin(page, platform);
    const nav = page.getByRole('navigation', { name: 'Main' });
    await nav.getByRole('link', { name: 'Terminal' }).click();
    await page.getByTestId('terminal-page').waitFor();
    if (new URL(page.url()).pathname !== '/terminal') throw new Error(`Terminal opened ${page.url()}`);
    await page.getByRole('heading', { level: 1, name: 'Terminal' }).waitFor();

    const rows = page.locator('.xterm-rows');
    const connected = page.locator('[data-testid="terminal-status"][data-connection="connected"]');
    const shellShown = () => page.waitForFunction(
        () => (document.querySelector('.xterm-rows')?.textContent || '').trim().length > 0,
        null, { timeout: 30000 });
    await connected.waitFor({ timeout: 30000 });
    await shellShown();
    // The id the page keeps for a reload (letters, digits, '-' and '_').
    const sessionBefore = await page.evaluate(() => Object.entries(sessionStorage)
        .filter(([k]) => k.startsWith('tidepool.terminal.')).map(([, v]) => v).join(','));
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(sessionBefore)) throw new Error(`unexpected session id "${sessionBefore}"`);

    await page.getByRole('region', { name: 'Terminal' }).click();
    await page.keyboard.type('echo tide$((20+22))pool');
    await page.keyboard.press('Enter');
    await rows.filter({ hasText: 'tide42pool' }).waitFor({ timeout: 20000 });
    await shoot(page, 'terminal');

    // A reload re-attaches to the same shell: the scrollback shows the output again.
    await page.reload();
    await page.getByTestId('terminal-page').waitFor();
    await connected.waitFor({ timeout: 30000 });
    await rows.filter({ hasText: 'tide42pool' }).waitFor({ timeout: 20000 });
    const sessionAfter = await page.evaluate(() => Object.entries(sessionStorage)
        .filter(([k]) => k.startsWith('tidepool.terminal.')).map(([, v]) => v).join(','));
    if (sessionAfter !== sessionBefore) throw new Error(`the reload used session ${sessionAfter}, not ${sessionBefore}`);
    if ((await page.getByRole('alert').count()) !== 0) {
      throw new Error(`an alert is shown: ${await page.getByRole('alert').first().innerText()}`);
    }
    if (errors.length > 0) throw new Error(`the page reported errors: ${errors.join('; ')}`);
    await page.close();
  },
  // Files: a folder is created, a folder is uploaded with its structure, a .zip is uploaded and
  // extracted, a file is downloaded (the same bytes), a file renamed and a folder deleted.
  async filesUploadExtractDownload(browser, platform) {
    const { page, errors } = await watchedPage(browser);
    await signInAsAdmin(page, platform);
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Files' }).click();
    await page.getByTestId('files-page').waitFor();
    if (new URL(page.url()).pathname !== '/files') throw new Error(`Files opened ${page.url()}`);
    await page.getByRole('button', { name: 'Upload folder' }).waitFor({ timeout: 30000 });
    const row = (name) => page.locator(`[data-testid="file-row"][data-name="${name}"]`);
    const notice = page.getByTestId('files-notice');

    // A new folder, named in the page.
    await page.getByRole('button', { name: 'New folder' }).click();
    await page.getByLabel('Folder name').fill('notes');
    await page.getByRole('button', { name: 'Create' }).click();
    await row('notes').waitFor();
    await shoot(page, 'files');

    // A folder upload keeps its structure.
    const local = mkdtempSync(join(tmpdir(), 'tidepool-files-'));
    try {
      const html = '<!doctype html><title>site</title><h1>hello</h1>\n';
      const css = 'body { color: teal; }\n';
      mkdirSync(join(local, 'site/css'), { recursive: true });
      writeFileSync(join(local, 'site/index.html'), html);
      writeFileSync(join(local, 'site/css/app.css'), css);
      await page.getByTestId('upload-folder-input').setInputFiles(join(local, 'site'));
      await notice.filter({ hasText: /Uploaded 2 files/ }).waitFor({ timeout: 20000 });
      if ((await page.locator('[data-testid="upload-row"] progress').count()) < 2) {
        throw new Error('no progress bar per uploaded file');
      }
      await row('site').getByRole('link', { name: 'site/' }).click();
      await page.waitForURL(/\/files\?path=site$/);
      await row('css').waitFor();
      await row('index.html').waitFor();
      await row('css').getByRole('link', { name: 'css/' }).click();
      await page.waitForURL(/\/files\?path=site%2Fcss$/);
      await row('app.css').waitFor();
      await shoot(page, 'files-uploaded');
      // Reload and Back keep the folder.
      await page.reload();
      await row('app.css').waitFor({ timeout: 30000 });
      await page.goBack();
      await row('index.html').waitFor();

      // Download: the same bytes.
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        row('index.html').getByRole('link', { name: 'Download index.html' }).click(),
      ]);
      const saved = join(local, 'downloaded.html');
      await download.saveAs(saved);
      if (readFileSync(saved, 'utf8') !== html) throw new Error('the downloaded file differs from the uploaded one');

      // Rename a file.
      await row('index.html').getByRole('button', { name: 'Rename index.html' }).click();
      await page.getByLabel('New name for index.html').fill('home.html');
      await page.getByRole('button', { name: 'Save' }).click();
      await row('home.html').waitFor();
      await row('index.html').waitFor({ state: 'detached' });

      // A .zip, uploaded and extracted.
      await page.getByRole('navigation', { name: 'Folder path' }).getByRole('link', { name: 'Home' }).click();
      await page.waitForURL(/\/files$/);
      await row('notes').waitFor();
      const zip = join(local, 'bundle.zip');
      execFileSync('python3', ['-c', `import zipfile,sys
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('readme.txt', 'inside the zip\\n')
    z.writestr('docs/guide.md', '# guide\\n')`, zip]);
      await page.getByTestId('upload-files-input').setInputFiles(zip);
      await row('bundle.zip').waitFor({ timeout: 20000 });
      await row('bundle.zip').getByRole('button', { name: 'Extract bundle.zip' }).click();
      await notice.filter({ hasText: /Extracted 2 files/ }).waitFor({ timeout: 20000 });
      await row('bundle').getByRole('link', { name: 'bundle/' }).click();
      await row('readme.txt').waitFor();
      await row('docs').waitFor();
      await shoot(page, 'files-extracted');

      // Delete a folder, after the confirmation in the page.
      await page.getByRole('navigation', { name: 'Folder path' }).getByRole('link', { name: 'Home' }).click();
      await row('notes').getByRole('button', { name: 'Delete notes' }).click();
      await page.getByRole('group', { name: 'Confirm deleting notes' }).getByRole('button', { name: 'Delete' }).click();
      await row('notes').waitFor({ state: 'detached' });
      // A name that exists is said in plain words.
      await page.getByRole('button', { name: 'New folder' }).click();
      await page.getByLabel('Folder name').fill('site');
      await page.getByRole('button', { name: 'Create' }).click();
      await page.getByRole('alert').filter({ hasText: /already taken/ }).waitFor({ timeout: 10000 }).catch(async (e) => {
        throw new Error(`${e.message}\nthe page said: ${await page.locator('main').innerText()}`);
      });
      await page.getByRole('button', { name: 'Cancel' }).click();
    } finally {
      rmSync(local, { recursive: true, force: true });
    }

    // Usable at 360 px.
    await page.setViewportSize({ width: 360, height: 740 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    if (overflow) throw new Error('the files page scrolls sideways at 360 px');
    if (errors.length > 0) throw new Error(`the page reported errors: ${errors.join('; ')}`);
    await page.close();
  },
};

const dir = mkdtempSync(join(tmpdir(), 'tidepool-web-'));
let failed = 0;
let platform;
let browser;
try {
  if (!existsSync(join(SOURCE, 'web/dist/index.html'))) {
    throw new Error('web/dist is not built (node web/build.mjs)');
  }
  platform = await Platform.start(dir);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  for (const [name, run] of Object.entries(scenarios)) {
    if (ONLY && name !== ONLY) continue;
    const started = Date.now();
    try {
      await run(browser, platform);
      console.log(`[ PASS ] ${name} (${Date.now() - started} ms)`);
    } catch (e) {
      failed++;
      console.log(`[ FAIL ] ${name}: ${e.message}`);
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
