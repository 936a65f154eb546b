// The first scenarios: setting up the first administrator, signing in and out, keys, the
// terminal and files. They run first and in this order (the first one sets the password).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BUILD, PASSWORD, SHOTS, SOURCE, expectWorkspaceRunning, shoot, signInAsAdmin, waitFor, watchedPage,
} from '../lib.mjs';

export const scenarios = {
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

