// The person's workspace pages beyond the basics: Home's entries, previews of a server started in
// the terminal, a folder dropped onto the files page, the folder tree, moving and git clone, and
// the scheduled jobs with their runs (in local time and UTC, awake and asleep). They run after
// basics.mjs (which set the administrator's password). The first three are a new person's, robin,
// who signs in through the identity provider; the schedules one is the administrator's.
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  PREVIEW_DOMAIN, SCHEDULE_STORE, expectWorkspaceRunning, shoot, signInAsAdmin, signInWithIdp, typeInTerminal, waitFor,
  watchedPage,
} from '../lib.mjs';

// ---- Helpers

const nav = (page) => page.getByRole('navigation', { name: 'Main' });

// Opens the terminal page from the navigation and waits for the shell.
async function openTerminal(page) {
  await nav(page).getByRole('link', { name: 'Terminal' }).click();
  await page.getByTestId('terminal-page').waitFor();
  await page.locator('[data-testid="terminal-status"][data-connection="connected"]').waitFor({ timeout: 30000 });
  await page.waitForFunction(() => (document.querySelector('.xterm-rows')?.textContent || '').trim().length > 0,
                             null, { timeout: 30000 });
}

// Runs a command in the terminal and waits for `marker` in its output. The command prints the
// marker with shell arithmetic, so that the typed line itself never shows it.
async function runInTerminal(page, command, tag, timeout = 30000) {
  const a = Math.floor(Math.random() * 1000) + 1;
  const b = Math.floor(Math.random() * 1000) + 1;
  await typeInTerminal(page, `${command} && echo ${tag}-$((${a}+${b}))-OK`);
  await page.locator('.xterm-rows').filter({ hasText: `${tag}-${a + b}-OK` }).waitFor({ timeout });
}

// No sideways scrolling at 360 px; the screenshot is taken there.
async function expectFitsAt360(page, shot) {
  await page.setViewportSize({ width: 360, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`${shot}: the page is ${overflow}px wider than a 360px screen`);
  await shoot(page, shot);
  await page.setViewportSize({ width: 1280, height: 720 });
}

// A JSON API call from the page (the CSRF header from the page's cookie), for what the UI does
// not show: the workspace id, the scaler's view.
async function callApi(page, path, body) {
  return page.evaluate(async ({ path, body }) => {
    const csrf = document.cookie.split(';').map((c) => c.trim().split('='))
        .find(([k]) => k === 'tidepool_csrf' || k === '__Host-tidepool_csrf')?.[1] ?? '';
    const answer = await fetch(path, {
      method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Tidepool-CSRF': csrf }, body: JSON.stringify(body),
    });
    if (!answer.ok) throw new Error(`${path}: HTTP ${answer.status} ${await answer.text()}`);
    return answer.json();
  }, { path, body });
}

async function ownWorkspace(page) {
  const session = await page.evaluate(async () => (await fetch('/auth/session')).json());
  const { workspaces = [] } = await callApi(page, '/api/v1/provisioner/ListWorkspaces', { ownerUserId: session.userId });
  const mine = workspaces.find((w) => w.ownerUserId === session.userId && w.state !== 'WORKSPACE_STATE_DELETED');
  if (!mine) throw new Error('the person has no workspace');
  return mine;
}

// Runs a scenario's steps; on failure the page is saved as failure-<name>.png first.
async function steps(page, name, run) {
  try {
    await run();
  } catch (e) {
    await shoot(page, `failure-${name}`).catch(() => {});
    throw e;
  }
}

function assertNoErrors(errors) {
  if (errors.length > 0) throw new Error(`the page reported errors: ${errors.join('; ')}`);
}

// ---- Times, computed here independently of the page and the supervisor

// The wall-clock fields of an instant in a zone.
function fieldsIn(zone, date) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-US', {
    timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit',
    minute: '2-digit', second: '2-digit',
  }).formatToParts(date).map((p) => [p.type, p.value]));
  return { year: +parts.year, month: +parts.month, day: +parts.day, hour: +parts.hour, minute: +parts.minute };
}

// The instant at which the wall clock in `zone` shows y-m-d h:00 (no DST gap at whole hours
// in the zones used here other than 02:00, which the test never picks).
function instantIn(zone, year, month, day, hour) {
  let guess = Date.UTC(year, month - 1, day, hour);
  for (let i = 0; i < 3; i++) {
    const f = fieldsIn(zone, new Date(guess));
    const shown = Date.UTC(f.year, f.month - 1, f.day, f.hour, f.minute);
    guess += Date.UTC(year, month - 1, day, hour) - shown;
  }
  return new Date(guess);
}

// The next time after `after` that the wall clock in `zone` shows hour:00.
function nextDailyRun(zone, hour, after) {
  for (let d = 0; d < 3; d++) {
    const day = fieldsIn(zone, new Date(after.getTime() + d * 86400000));
    const at = instantIn(zone, day.year, day.month, day.day, hour);
    if (at.getTime() > after.getTime()) return at;
  }
  throw new Error('no next run found');
}

const hhmm = (zone, date) => {
  const f = fieldsIn(zone, date);
  return `${String(f.hour).padStart(2, '0')}:${String(f.minute).padStart(2, '0')}`;
};
const dayMonth = (zone, date) => new Intl.DateTimeFormat('en-GB', { timeZone: zone, day: 'numeric', month: 'short' })
    .format(date);

export const scenarios = {
  // Home lists every page and the agent's own address. A web server started in the terminal
  // shows up on the previews page (refreshing by itself), its link opens the server's page in a
  // new tab through the preview sign-in, a browser without the session only gets the sign-in
  // page, and the server stopped with Ctrl+C disappears from the list again.
  async previewOfAPythonHttpServerOpens(browser, platform) {
    const { page, errors } = await watchedPage(browser);
    await steps(page, 'previewOfAPythonHttpServerOpens', async () => {
      await signInWithIdp(page, platform, 'robin');
      await expectWorkspaceRunning(page);
      const workspace = await ownWorkspace(page);
      const places = page.getByRole('navigation', { name: 'In your workspace' });
      for (const [name, path] of [['Files', '/files'], ['Terminal', '/terminal'], ['Keys', '/keys'],
                                  ['Previews', '/previews'], ['Schedules', '/schedules']]) {
        const href = await places.getByRole('link', { name: new RegExp(`^${name}\\b`) }).getAttribute('href');
        if (href !== path) throw new Error(`Home's ${name} entry leads to ${href}`);
      }
      const agent = await page.getByRole('link', { name: 'Open the agent' }).getAttribute('href');
      if (agent !== `/w/${workspace.workspaceId}/`) throw new Error(`"Open the agent" leads to ${agent}`);
      await shoot(page, 'home-places');
      await expectFitsAt360(page, 'home-360');

      // Nothing listens yet: the page says how to start a server.
      await nav(page).getByRole('link', { name: 'Previews' }).click();
      await page.getByTestId('previews-page').waitFor();
      const empty = page.getByTestId('previews-empty');
      await empty.waitFor({ timeout: 30000 });
      if (!/python3 -m http\.server 8000/.test(await empty.innerText())) throw new Error('the empty state does not say how to start a server');
      await shoot(page, 'previews-empty');

      await openTerminal(page);
      await runInTerminal(page, 'cd ~ && mkdir -p site-preview && echo hello-preview > site-preview/index.html', 'SITE');
      await typeInTerminal(page, 'python3 -m http.server 8000 --directory site-preview');
      await page.locator('.xterm-rows').filter({ hasText: /Serving HTTP on .* port 8000/ }).waitFor({ timeout: 20000 });

      // Listed without a reload (the page reads the ports every few seconds).
      await nav(page).getByRole('link', { name: 'Previews' }).click();
      await page.getByTestId('previews-page').waitFor();
      const row = page.locator('[data-testid="port-row"][data-port="8000"]');
      await row.waitFor({ timeout: 20000 });
      if (!/python/i.test(await row.innerText())) throw new Error(`port 8000 is not shown as python's: ${await row.innerText()}`);
      const link = row.getByTestId('preview-link');
      const href = await link.getAttribute('href');
      const expected = `${new URL(platform.origin).protocol}//8000-${workspace.workspaceId.slice(3)}.${PREVIEW_DOMAIN}:${new URL(platform.origin).port}/`;
      if (href !== expected) throw new Error(`the preview link is ${href}, not ${expected}`);
      if ((await link.getAttribute('target')) !== '_blank') throw new Error('the preview link does not open a new tab');
      await shoot(page, 'previews');
      await expectFitsAt360(page, 'previews-360');

      // The link opens the server's page in a new tab, through the preview sign-in.
      const [preview] = await Promise.all([page.context().waitForEvent('page'), link.click()]);
      await preview.waitForLoadState('domcontentloaded');
      await waitFor(async () => (await preview.content().catch(() => '')).includes('hello-preview'), 'the preview to show hello-preview', 20000)
          .catch(async (e) => { throw new Error(`${e.message}; the tab shows ${preview.url()}: ${(await preview.content()).slice(0, 300)}`); });
      const opened = new URL(preview.url());
      if (opened.hostname !== `8000-${workspace.workspaceId.slice(3)}.${PREVIEW_DOMAIN}`) throw new Error(`the preview opened ${preview.url()}`);
      await shoot(preview, 'preview-opened');
      await preview.close();

      // Without the session, the preview address leads to the sign-in page, never to the server.
      const stranger = await browser.newContext();
      try {
        const other = await stranger.newPage();
        await other.goto(href);
        await other.getByTestId('signin-page').waitFor({ timeout: 15000 });
        if ((await other.content()).includes('hello-preview')) throw new Error('the preview showed its page without a session');
      } finally {
        await stranger.close();
      }

      // Ctrl+C stops the server; the list empties by itself.
      await openTerminal(page);
      await page.getByRole('region', { name: 'Terminal' }).click();
      await page.keyboard.press('Control+C');
      await runInTerminal(page, 'true', 'STOPPED');
      await nav(page).getByRole('link', { name: 'Previews' }).click();
      await page.getByTestId('previews-page').waitFor();
      await page.getByTestId('previews-empty').waitFor({ timeout: 20000 });
      assertNoErrors(errors);
    });
    await page.close();
  },

  // A folder with nested folders and a binary file, dropped onto the files page as the browser
  // delivers a real drag from the desktop (DevTools' Input.dispatchDragEvent with the folder's
  // path: the page walks it with webkitGetAsEntry), arrives with its structure and the same bytes.
  async foldersUploadByDragAndDrop(browser, platform) {
    const { page, errors } = await watchedPage(browser);
    await steps(page, 'foldersUploadByDragAndDrop', async () => {
      await signInWithIdp(page, platform, 'robin');
      await nav(page).getByRole('link', { name: 'Files' }).click();
      await page.getByTestId('files-page').waitFor();
      const dropzone = page.getByTestId('dropzone');
      await dropzone.waitFor({ timeout: 30000 });
      await dropzone.getByText(/This folder is empty|Name/).first().waitFor();
      const row = (name) => page.locator(`[data-testid="file-row"][data-name="${name}"]`);

      const local = mkdtempSync(join(tmpdir(), 'tidepool-drop-'));
      try {
        const folder = join(local, 'dropped');
        mkdirSync(join(folder, 'src/lib'), { recursive: true });
        const binary = randomBytes(300 * 1024);
        const util = 'def add(a, b):\n    return a + b\n';
        writeFileSync(join(folder, 'readme.md'), '# Dropped\n');
        writeFileSync(join(folder, 'data.bin'), binary);
        writeFileSync(join(folder, 'src/app.py'), 'print("app")\n');
        writeFileSync(join(folder, 'src/lib/util.py'), util);

        await dropzone.scrollIntoViewIfNeeded();
        const box = await dropzone.boundingBox();
        const x = box.x + box.width / 2;
        const y = box.y + Math.min(box.height / 2, 40);
        const cdp = await page.context().newCDPSession(page);
        const data = { items: [], files: [folder], dragOperationsMask: 1 };
        await cdp.send('Input.dispatchDragEvent', { type: 'dragEnter', x, y, data });
        await cdp.send('Input.dispatchDragEvent', { type: 'dragOver', x, y, data });
        await page.locator('.dropzone--active').waitFor();
        await shoot(page, 'files-dragging');
        await cdp.send('Input.dispatchDragEvent', { type: 'drop', x, y, data });
        await page.getByTestId('files-notice').filter({ hasText: /Uploaded 4 files/ }).waitFor({ timeout: 30000 });
        const uploaded = await page.locator('[data-testid="upload-row"] label').allInnerTexts();
        for (const path of ['dropped/readme.md', 'dropped/data.bin', 'dropped/src/app.py', 'dropped/src/lib/util.py']) {
          if (!uploaded.includes(path)) throw new Error(`${path} was not uploaded; uploads: ${uploaded.join(', ')}`);
        }

        // Listed with its structure.
        await row('dropped').getByRole('link', { name: 'dropped/' }).click();
        await row('data.bin').waitFor();
        await row('readme.md').waitFor();
        await row('src').getByRole('link', { name: 'src/' }).click();
        await row('app.py').waitFor();
        await row('lib').getByRole('link', { name: 'lib/' }).click();
        await row('util.py').waitFor();
        await shoot(page, 'files-dropped');

        // The same bytes come back.
        const download = async (name) => {
          const [file] = await Promise.all([
            page.waitForEvent('download'),
            row(name).getByRole('link', { name: `Download ${name}` }).click(),
          ]);
          const saved = join(local, `downloaded-${name}`);
          await file.saveAs(saved);
          return readFileSync(saved);
        };
        if (!(await download('util.py')).equals(Buffer.from(util))) throw new Error('util.py came back different');
        await page.getByRole('navigation', { name: 'Folder path' }).getByRole('link', { name: 'dropped' }).click();
        await row('data.bin').waitFor();
        if (!(await download('data.bin')).equals(binary)) throw new Error('data.bin came back different');
        await cdp.detach();
      } finally {
        rmSync(local, { recursive: true, force: true });
      }
      assertNoErrors(errors);
    });
    await page.close();
  },

  // The folder tree follows the list and is driven with the keyboard; a file is moved into
  // another folder (and a move to a folder that does not exist is refused in plain words); a git
  // repository made in the terminal is cloned with visible progress and its files are listed.
  async treeViewMoveAndGitClone(browser, platform) {
    const { page, errors } = await watchedPage(browser);
    await steps(page, 'treeViewMoveAndGitClone', async () => {
      await signInWithIdp(page, platform, 'robin');
      await openTerminal(page);
      await runInTerminal(page, 'cd ~ && mkdir -p projects/app/notes archive && echo "buy milk" > projects/app/todo.txt', 'TREE');
      await runInTerminal(page, 'mkdir -p ~/src/mylib/docs && cd ~/src/mylib && git init -q && printf "print(42)\\n" > main.py'
          + ' && echo guide > docs/guide.md && git add . && git -c user.name=Test -c user.email=test@example.com commit -q -m first'
          + ' && cd ~', 'REPO');

      await nav(page).getByRole('link', { name: 'Files' }).click();
      await page.getByTestId('files-page').waitFor();
      const tree = page.getByRole('tree', { name: 'Folders' });
      const item = (name) => tree.getByRole('treeitem', { name, exact: true });
      const row = (name) => page.locator(`[data-testid="file-row"][data-name="${name}"]`);
      // The focus moves when the tree has rendered the key's effect.
      const expectFocus = async (name, key) => {
        const focused = () => page.evaluate(() => document.activeElement?.getAttribute('aria-label'));
        await waitFor(async () => (await focused()) === name, `${key} to focus ${name}`, 15000).catch(async (e) => {
          throw new Error(`${e.message} (the focus is on ${await focused()})`);
        });
      };
      await item('Home').waitFor({ timeout: 30000 });
      await item('projects').waitFor();
      await item('archive').waitFor();
      if ((await item('Home').getAttribute('aria-selected')) !== 'true') throw new Error('Home is not the selected folder');

      // A click on a folder in the tree opens it in the list (and the URL).
      await item('projects').locator('.tree__row').first().click();
      await page.waitForURL(/\/files\?path=projects$/);
      await row('app').waitFor();
      if ((await item('projects').getAttribute('aria-selected')) !== 'true') throw new Error('the tree does not mark the folder shown');
      await item('app').waitFor();

      // The keyboard: Right goes into a folder, expands it, Down and Left move, Enter opens.
      await item('projects').focus();
      await page.keyboard.press('ArrowRight');
      await expectFocus('app', 'ArrowRight');
      if ((await item('app').getAttribute('aria-expanded')) !== 'false') throw new Error('app is not collapsed');
      await page.keyboard.press('ArrowRight');
      await item('notes').waitFor();
      if ((await item('app').getAttribute('aria-expanded')) !== 'true') throw new Error('ArrowRight did not expand app');
      await page.keyboard.press('ArrowDown');
      await expectFocus('notes', 'ArrowDown');
      await page.keyboard.press('ArrowLeft');
      await expectFocus('app', 'ArrowLeft');
      await page.keyboard.press('ArrowLeft');
      await item('notes').waitFor({ state: 'detached' });
      await page.keyboard.press('Enter');
      await page.waitForURL(/\/files\?path=projects%2Fapp$/);
      await row('todo.txt').waitFor();
      await row('notes').waitFor();
      if ((await item('app').getAttribute('aria-selected')) !== 'true') throw new Error('Enter did not select app');
      if ((await item('app').getAttribute('aria-expanded')) !== 'true') throw new Error('the opened folder is not expanded in the tree');
      // A folder made in the list appears in the tree.
      await page.getByRole('button', { name: 'New folder' }).click();
      await page.getByLabel('Folder name').fill('drafts');
      await page.getByRole('button', { name: 'Create' }).click();
      await row('drafts').waitFor();
      await item('drafts').waitFor();
      await shoot(page, 'files-tree');

      // Move: to a folder that does not exist (refused in words), then into archive.
      await row('todo.txt').getByRole('button', { name: 'Move todo.txt' }).click();
      const to = page.getByLabel('Move todo.txt to folder');
      await to.fill('nowhere');
      await page.getByRole('button', { name: 'Move here' }).click();
      await page.getByRole('alert').filter({ hasText: /There is no folder "nowhere"/ }).waitFor({ timeout: 10000 });
      await to.fill('archive');
      await shoot(page, 'files-move');
      await page.getByRole('button', { name: 'Move here' }).click();
      await page.getByTestId('files-notice').filter({ hasText: 'Moved "todo.txt" to "archive".' }).waitFor({ timeout: 10000 });
      await row('todo.txt').waitFor({ state: 'detached' });
      await item('archive').locator('.tree__row').first().click();
      await page.waitForURL(/\/files\?path=archive$/);
      await row('todo.txt').waitFor();
      const [moved] = await Promise.all([
        page.waitForEvent('download'),
        row('todo.txt').getByRole('link', { name: 'Download todo.txt' }).click(),
      ]);
      const local = mkdtempSync(join(tmpdir(), 'tidepool-move-'));
      try {
        await moved.saveAs(join(local, 'todo.txt'));
        if (readFileSync(join(local, 'todo.txt'), 'utf8') !== 'buy milk\n') throw new Error('the moved file lost its content');
      } finally {
        rmSync(local, { recursive: true, force: true });
      }

      // Git clone of the repository in the volume, into the home folder.
      await item('Home').locator('.tree__row').first().click();
      await page.waitForURL(/\/files$/);
      await page.getByRole('button', { name: 'Clone a repository' }).click();
      await page.getByRole('textbox', { name: 'Repository' }).fill('src/mylib');
      await page.getByRole('button', { name: 'Clone', exact: true }).click();
      const progress = page.getByTestId('clone-progress');
      await progress.and(page.locator('[data-state="done"]')).waitFor({ timeout: 30000 }).catch(async (e) => {
        throw new Error(`${e.message}; the page says: ${await progress.innerText().catch(() => '(nothing)')}`);
      });
      // The wire format the page reads: ndjson progress lines ending with DONE (read here with
      // fetch, into a second folder: Chromium does not keep a streamed body for the test to read).
      const { workspaceId } = await ownWorkspace(page);
      const lines = await page.evaluate(async (base) => {
        const csrf = (document.cookie.match(/(?:^|; )(?:__Host-)?tidepool_csrf=([^;]+)/) || [])[1] || '';
        const response = await fetch(`${base}/GitClone`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/x-ndjson', 'X-Tidepool-CSRF': csrf },
          body: JSON.stringify({ repositoryUrl: 'src/mylib', destinationPath: 'mylib-wire' }),
        });
        return (await response.text()).trim().split('\n').map((l) => JSON.parse(l));
      }, `/w/${workspaceId}/_tidepool/v1`);
      if (lines.length < 2 || lines.at(-1).phase !== 'GIT_CLONE_PHASE_DONE') {
        throw new Error(`unexpected GitClone stream: ${JSON.stringify(lines)}`);
      }
      if ((await progress.getByTestId('clone-bar').evaluate((el) => el.value)) !== 100) throw new Error('the progress bar is not full');
      const steps = await progress.locator('.clone-steps li').allInnerTexts();
      if (!steps.includes('Receiving objects') || !steps.includes('Done')) throw new Error(`the steps shown: ${steps.join(', ')}`);
      await page.getByTestId('files-notice').filter({ hasText: 'Cloned src/mylib into "mylib".' }).waitFor();
      await row('mylib').waitFor();
      await item('mylib').waitFor();
      await shoot(page, 'files-clone');
      await row('mylib').getByRole('link', { name: 'mylib/' }).click();
      await row('main.py').waitFor();
      await row('docs').waitFor();

      // Cloning into a folder that is not empty is refused in plain words.
      await page.getByRole('button', { name: 'Clone a repository' }).click();
      await page.getByRole('textbox', { name: 'Repository' }).fill('src/mylib');
      await page.getByLabel('Into folder (optional)').fill('archive');
      await page.getByRole('button', { name: 'Clone', exact: true }).click();
      await progress.getByRole('alert').filter({ hasText: /already exists and is not empty/ }).waitFor({ timeout: 20000 });
      await shoot(page, 'files-clone-error');
      await expectFitsAt360(page, 'files-tree-360');
      assertNoErrors(errors);
    });
    await page.close();
  },

  // Jobs written to the tool's schedule store are listed with their next run in the person's
  // time (the browser is in Europe/Berlin) and in UTC, and the scaler's account of their runs in
  // words (a run the tool reported: on time; one it skipped: missed). Asleep, the page shows
  // what the scaler knows and wakes the workspace when asked.
  async schedulesShowJobsInLocalTimeAndUTC(browser, platform) {
    const context = await browser.newContext({ timezoneId: 'Europe/Berlin', locale: 'en-GB' });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
    });
    try {
      await steps(page, 'schedulesShowJobsInLocalTimeAndUTC', async () => {
        await signInAsAdmin(page, platform);
        await expectWorkspaceRunning(page);
        const { workspaceId } = await ownWorkspace(page);
        await nav(page).getByRole('link', { name: 'Schedules' }).click();
        await page.getByTestId('schedules-page').waitFor();
        await page.getByTestId('schedules-empty').waitFor({ timeout: 30000 });
        if (!(await page.getByTestId('schedules-page').innerText()).includes('Europe/Berlin')) {
          throw new Error('the page does not name the person\'s time zone');
        }
        await shoot(page, 'schedules-empty');

        // A daily job about 12 hours away in New York (so that the scaler has no reason to wake the
        // workspace for it during the test), and one every 20 s in UTC.
        const nyHour = (fieldsIn('America/New_York', new Date()).hour + 12) % 24 || 1;
        const hour = nyHour === 2 ? 3 : nyHour;  // 02:00 may not exist on a DST day
        const daily = { jobId: 'morning-report', name: 'Morning report', schedule: `0 ${hour} * * *`, timezone: 'America/New_York', enabled: true };
        const beat = { jobId: 'heartbeat', name: 'Heartbeat', schedule: 'every 20s', timezone: 'UTC', enabled: true };
        const writeJobs = (jobs) => runInTerminal(page,
            `mkdir -p ~/${SCHEDULE_STORE.replace(/\/[^/]*$/, '')} && printf '%s' '${JSON.stringify({ jobs })}' > ~/${SCHEDULE_STORE}`, 'JOBS');
        await openTerminal(page);
        const written = Date.now();
        await writeJobs([daily, beat]);

        await nav(page).getByRole('link', { name: 'Schedules' }).click();
        const card = (id) => page.locator(`[data-testid="job"][data-job="${id}"]`);
        await card('morning-report').waitFor({ timeout: 30000 });
        await card('heartbeat').waitFor();
        const next = nextDailyRun('America/New_York', hour, new Date());
        const time = card('morning-report').getByTestId('next-run');
        const shown = await time.getAttribute('datetime');
        if (shown !== next.toISOString()) throw new Error(`the next run is ${shown}, expected ${next.toISOString()}`);
        const local = await card('morning-report').getByTestId('next-run-local').innerText();
        const utc = await card('morning-report').getByTestId('next-run-utc').innerText();
        for (const [text, zone, label] of [[local, 'Europe/Berlin', 'local'], [utc, 'UTC', 'UTC']]) {
          if (!text.includes(hhmm(zone, next)) || !text.includes(dayMonth(zone, next))) {
            throw new Error(`the ${label} time "${text}" is not ${dayMonth(zone, next)} ${hhmm(zone, next)}`);
          }
        }
        if (!utc.endsWith('UTC')) throw new Error(`the UTC time does not say UTC: ${utc}`);
        const schedule = await card('morning-report').getByTestId('job-schedule').innerText();
        if (!schedule.includes(`Every day at ${String(hour).padStart(2, '0')}:00`) || !schedule.includes('America/New_York')) {
          throw new Error(`the schedule reads "${schedule}"`);
        }
        await shoot(page, 'schedules');

        // Two run times of the heartbeat pass after the scaler first saw it (every 5 s); the tool
        // reports the second one only. The scaler then records the first as missed and the second
        // as on time.
        const first = Math.ceil((written + 20000) / 20000) * 20000;
        const second = first + 20000;
        await new Promise((r) => setTimeout(r, Math.max(0, second + 1500 - Date.now())));
        const report = {
          scheduledTime: new Date(second).toISOString(), startTime: new Date(second + 1000).toISOString(),
          finishTime: new Date(second + 1500).toISOString(), result: 'JOB_RUN_RESULT_SUCCEEDED',
        };
        await openTerminal(page);
        await writeJobs([daily, { ...beat, lastRun: report, recentRuns: [report] }]);
        await nav(page).getByRole('link', { name: 'Schedules' }).click();
        const runs = card('heartbeat').getByTestId('run');
        const onTime = runs.and(page.locator('[data-outcome="JOB_RUN_OUTCOME_ON_TIME"]'));
        const missed = runs.and(page.locator('[data-outcome="JOB_RUN_OUTCOME_MISSED"]'));
        await waitFor(async () => (await onTime.count()) > 0 && (await missed.count()) > 0, 'the heartbeat\'s runs', 40000)
            .catch(async (e) => { throw new Error(`${e.message}; the card says: ${await card('heartbeat').innerText()}`); });
        if ((await onTime.first().locator('time').getAttribute('datetime')) !== new Date(second).toISOString()) {
          throw new Error(`the on-time run is not the reported one: ${await onTime.first().innerText()}`);
        }
        if ((await missed.first().locator('time').getAttribute('datetime')) !== new Date(first).toISOString()) {
          throw new Error(`the missed run is not the skipped one: ${await missed.first().innerText()}`);
        }
        if (!/agent did not start the job/.test(await missed.first().innerText())) {
          throw new Error(`the missed run does not say why: ${await missed.first().innerText()}`);
        }
        if (!/Last run.*succeeded/s.test(await card('heartbeat').innerText())) throw new Error('the tool\'s last run is not shown');
        await shoot(page, 'schedules-runs');
        await expectFitsAt360(page, 'schedules-360');

        // Asleep: the heartbeat is removed (the scaler would wake the workspace for it at once) and
        // the workspace put to sleep; the page shows the scaler's history and next wake.
        await openTerminal(page);
        await writeJobs([daily]);
        const wakeAt = new Date(next.getTime() - 2 * 60000).toISOString();
        let seen = '';
        await waitFor(async () => {
          const { statuses = [] } = await callApi(page, '/api/v1/scaler/GetIdleStatus', { workspaceIds: [workspaceId] });
          seen = statuses[0]?.nextScheduledWakeTime ?? '';
          return seen && new Date(seen).toISOString() === wakeAt;
        }, 'the scaler to see the jobs change', 30000).catch((e) => {
          throw new Error(`${e.message}: its next wake is ${seen || 'unset'}, expected ${wakeAt}`);
        });
        await nav(page).getByRole('link', { name: 'Schedules' }).click();
        await page.getByTestId('schedules-page').waitFor();
        platform.ctl('workspaces', 'stop', '--workspace', workspaceId);
        const asleep = page.getByTestId('schedules-not-running');
        await asleep.filter({ hasText: 'Your workspace is asleep' }).waitFor({ timeout: 40000 });
        const wake = await asleep.getByTestId('next-wake').locator('time').getAttribute('datetime');
        if (wake !== wakeAt) throw new Error(`the next wake is shown as ${wake}, expected ${wakeAt}`);
        const history = page.locator('[data-testid="history-job"][data-job="heartbeat"]');
        await history.locator('[data-outcome="JOB_RUN_OUTCOME_ON_TIME"]').first().waitFor();
        if ((await card('morning-report').count()) !== 0) throw new Error('jobs are listed although they cannot be read');
        await shoot(page, 'schedules-asleep');

        await page.getByRole('button', { name: 'Wake it to see the jobs' }).click();
        await card('morning-report').waitFor({ timeout: 60000 });
        await asleep.waitFor({ state: 'detached' });
        await shoot(page, 'schedules-woken');
        assertNoErrors(errors);
      });
    } finally {
      await context.close();
    }
  },
};
