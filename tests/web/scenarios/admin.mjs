// The administrator's pages: users, workspaces, invites, the audit trail, capacity. They run
// last: the second scenario suspends a person (and reinstates them).
import { readFileSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  IDP_BUTTON, IDP_PEOPLE, expectWorkspaceRunning, shoot, signInAsAdmin, signInWithIdp,
  typeInTerminal, waitFor, watchedPage,
} from '../lib.mjs';

const ADMIN_EMAIL = 'admin@tidepool.local';

// Exceptions and console errors of a page (Chromium's own line for each 4xx answer is not one).
function watch(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  return errors;
}

function expectNoErrors(errors, who) {
  if (errors.length > 0) throw new Error(`${who} reported errors: ${errors.join('; ')}`);
}

// How far the document is wider than the window (0 when the page never scrolls sideways).
const sideways = (page) => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);

// Opens an administrator's page from the sub-navigation and waits for it.
async function openAdmin(page, label, testId) {
  await page.getByRole('navigation', { name: 'Administration' }).getByRole('link', { name: label, exact: true }).click();
  await page.getByTestId(testId).waitFor();
  const current = page.getByRole('navigation', { name: 'Administration' }).locator('[aria-current="page"]');
  if ((await current.innerText()).trim() !== label) throw new Error(`the sub-navigation does not mark ${label} as current`);
}

async function text(locator) {
  return (await locator.innerText()).replace(/\s+/g, ' ').trim();
}

export const scenarios = {
  // The administrator opens every administrator's page from the navigation. Each shows real data
  // (their own account and workspace, with measured CPU, memory and disk, the audit trail, the
  // capacity report), they create an invite whose code is shown once and copied, revoke it,
  // filter the audit trail to admin actions, export it (the file has those events, one JSON
  // object per line) and verify the chain. No page scrolls sideways at 360 px.
  async adminPagesShowUsersWorkspacesInvitesAuditCapacity(browser, platform) {
    const { page, errors } = await watchedPage(browser);
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: platform.origin });
    await signInAsAdmin(page, platform);
    await expectWorkspaceRunning(page);

    // /admin leads to the users page.
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Admin' }).click();
    await page.getByTestId('admin-users-page').waitFor();
    await page.waitForURL(/\/admin\/users$/);
    if ((await page.title()) !== 'Users · Administration · Tidepool') throw new Error(`unexpected title ${await page.title()}`);

    // ---- Users: their own row, with role, state, last sign-in and workspace.
    const adminRow = page.locator(`[data-testid="user-row"][data-email="${ADMIN_EMAIL}"]`);
    await adminRow.waitFor();
    if ((await text(adminRow.getByTestId('user-role'))) !== 'Administrator') throw new Error('the admin is not shown as Administrator');
    if ((await text(adminRow.getByTestId('user-state'))) !== 'Active') throw new Error('the admin is not shown as Active');
    await adminRow.locator('time').first().waitFor();
    await adminRow.getByText('This is you').waitFor();
    const workspaceLink = adminRow.getByRole('link', { name: `Running workspace of ${ADMIN_EMAIL}` });
    await workspaceLink.waitFor({ timeout: 10000 });
    if ((await page.locator('[data-testid="users-table"] thead th[scope="col"]').count()) !== 6) {
      throw new Error('the users table does not have its 6 column headers');
    }
    // A search narrows the list and is kept in the address; one that matches nothing says so.
    await page.getByLabel('Search').fill('nobody-by-this-name');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.waitForURL(/\?q=nobody-by-this-name/);
    await page.getByTestId('users-count').filter({ hasText: 'No one matches this search.' }).waitFor();
    await page.getByLabel('Search').fill('admin@');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await adminRow.waitFor();
    await page.getByTestId('users-count').filter({ hasText: /^Showing 1 person\.$/ }).waitFor();
    await shoot(page, 'admin-users');

    // The workspace link opens the workspaces page filtered to that owner.
    await workspaceLink.click();
    await page.getByTestId('admin-workspaces-page').waitFor();
    await page.waitForURL(/\/admin\/workspaces\?owner=u_/);

    // ---- Workspaces: theirs runs, with its health, CPU, memory and disk measured and why it is
    // awake. The first GetUsage already gives the CPU load (the server samples it).
    const wsRow = page.locator(`[data-testid="workspace-row"][data-owner="${ADMIN_EMAIL}"]`);
    await wsRow.waitFor({ timeout: 15000 });
    if ((await page.getByTestId('workspace-row').count()) !== 1) throw new Error('the owner filter shows other workspaces');
    if ((await wsRow.getAttribute('data-state')) !== 'WORKSPACE_STATE_RUNNING') throw new Error('the admin workspace is not running');
    await wsRow.getByTestId('workspace-memory').waitFor({ timeout: 15000 });
    const memory = await text(wsRow.getByTestId('workspace-memory'));
    const disk = await text(wsRow.getByTestId('workspace-disk'));
    const cpu = await text(wsRow.getByTestId('workspace-cpu'));
    if (!/^[\d.]+ (B|KiB|MiB|GiB)( of [\d.]+ (KiB|MiB|GiB|TiB)|, no limit)$/.test(memory) || /^0 B/.test(memory)) {
      throw new Error(`unexpected memory "${memory}"`);
    }
    if (!/^[\d.]+ (B|KiB|MiB|GiB)( of [\d.]+ (KiB|MiB|GiB|TiB)|, no limit)$/.test(disk) || /^0 B/.test(disk)) {
      throw new Error(`unexpected disk "${disk}"`);
    }
    if (!/^[\d.]+ cores? of [\d.]+ cores? CPU time \d/.test(cpu)) throw new Error(`unexpected CPU "${cpu}"`);
    const health = await text(wsRow.getByTestId('workspace-health'));
    if (health !== 'Healthy') throw new Error(`the running workspace's health is "${health}", not Healthy`);
    const awake = await waitFor(async () => {
      const said = await text(wsRow.getByTestId('workspace-awake'));
      return said && !/Loading/.test(said) ? said : '';
    }, 'why the workspace is awake', 15000);
    if (!/(Used recently|Just woke up|terminal|Nothing keeps it awake|Sleeps)/.test(awake)) {
      throw new Error(`unexpected reason to be awake: "${awake}"`);
    }
    await shoot(page, 'admin-workspaces');
    // Delete asks for the workspace id; a wrong one deletes nothing.
    await wsRow.getByRole('button', { name: `Delete the workspace of ${ADMIN_EMAIL}` }).click();
    const deleteDialog = page.getByTestId('delete-dialog');
    await deleteDialog.waitFor();
    await deleteDialog.getByLabel('Type the workspace id to confirm').fill('ws_not_this_one');
    await deleteDialog.getByRole('button', { name: 'Delete for good' }).click();
    await deleteDialog.getByRole('alert').filter({ hasText: /Type the workspace id/ }).waitFor();
    await shoot(page, 'admin-workspaces-delete-dialog');
    await page.keyboard.press('Escape');
    await deleteDialog.waitFor({ state: 'detached' });
    if ((await wsRow.getAttribute('data-state')) !== 'WORKSPACE_STATE_RUNNING') throw new Error('the cancelled delete changed the workspace');

    // ---- Invites: created, shown once, copied, listed, revoked.
    await openAdmin(page, 'Invites', 'admin-invites-page');
    await page.getByLabel('How many people may use it').fill('3');
    await page.getByLabel('Anyone with an e-mail address in one domain').check();
    await page.getByLabel('Domain', { exact: true }).fill('corp.example');
    const note = `e2e invite ${Date.now()}`;
    await page.getByLabel('Note (optional)').fill(note);
    await page.getByRole('button', { name: 'Create invite' }).click();
    await page.getByTestId('invite-created').waitFor();
    const code = await page.getByTestId('invite-code').inputValue();
    if (!/^tpi_[a-z2-7]{32}$/.test(code)) throw new Error(`unexpected invite code "${code}"`);
    await page.getByRole('button', { name: 'Copy code' }).click();
    await page.getByTestId('copy-status').filter({ hasText: 'The code is copied.' }).waitFor();
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    if (copied !== code) throw new Error('the copied text is not the code');
    const inviteRow = page.locator('[data-testid="invite-row"]').filter({ hasText: note });
    await inviteRow.waitFor();
    await shoot(page, 'admin-invites-created');
    await page.getByRole('button', { name: 'Done, create another' }).click();
    await page.getByRole('button', { name: 'Create invite' }).waitFor();
    if ((await page.content()).includes(code)) throw new Error('the code is still in the page after Done');
    if ((await text(inviteRow)).indexOf('Anyone at corp.example') < 0 || (await text(inviteRow)).indexOf('0 of 3') < 0) {
      throw new Error(`unexpected invite row: ${await text(inviteRow)}`);
    }
    if ((await inviteRow.getAttribute('data-state')) !== 'INVITE_STATE_ACTIVE') throw new Error('the new invite is not active');
    await inviteRow.getByRole('button', { name: /^Revoke/ }).click();
    const revokeDialog = page.getByTestId('revoke-dialog');
    await revokeDialog.getByRole('button', { name: 'Revoke' }).click();
    await revokeDialog.waitFor({ state: 'detached' });
    await page.locator(`[data-testid="invite-row"][data-state="INVITE_STATE_REVOKED"]`).filter({ hasText: note }).waitFor();
    await page.reload();
    await page.getByTestId('admin-invites-page').waitFor();
    await page.locator(`[data-testid="invite-row"][data-state="INVITE_STATE_REVOKED"]`).filter({ hasText: note }).waitFor();
    if ((await page.content()).includes(code)) throw new Error('the code is shown again after a reload');
    await shoot(page, 'admin-invites');

    // ---- Audit: rows; filtered to admin actions (in the address); exported; chain verified.
    await openAdmin(page, 'Audit trail', 'admin-audit-page');
    await page.getByTestId('audit-row').first().waitFor();
    await page.getByLabel('Action', { exact: true }).fill('admin');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.waitForURL(/\/admin\/audit\?action=admin$/);
    await page.locator('[data-testid="audit-row"][data-action="admin.invite_revoked"]').first().waitFor();
    await page.locator('[data-testid="audit-row"][data-action="admin.invite_created"]').first().waitFor();
    const shownActions = await page.getByTestId('audit-row').evaluateAll((rows) => rows.map((r) => r.dataset.action));
    if (shownActions.some((a) => !a.startsWith('admin.'))) throw new Error(`the filter let through ${shownActions.join(', ')}`);
    const folder = mkdtempSync(join(tmpdir(), 'tidepool-audit-'));
    try {
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.getByRole('button', { name: 'Export as JSON lines' }).click(),
      ]);
      if (!/^tidepool-audit-.*\.jsonl$/.test(download.suggestedFilename())) {
        throw new Error(`unexpected export name ${download.suggestedFilename()}`);
      }
      const saved = join(folder, 'audit.jsonl');
      await download.saveAs(saved);
      const lines = readFileSync(saved, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      // Everything matching, not only the page shown (50 events a page).
      if (lines.length < 2 || (shownActions.length < 50 ? lines.length !== shownActions.length : lines.length < 50)) {
        throw new Error(`the export has ${lines.length} lines, the page shows ${shownActions.length} events`);
      }
      if (lines.some((e) => !e.action.startsWith('admin.'))) throw new Error('the export ignores the filter');
      const sequences = lines.map((e) => Number(e.sequence));
      if (sequences.some((s, i) => i > 0 && s <= sequences[i - 1])) throw new Error('the export is not oldest first');
      if (!lines.some((e) => e.action === 'admin.invite_revoked')) throw new Error('the export misses the revoked invite');
      await page.getByTestId('export-status').filter({ hasText: `Exported ${lines.length} events to ${download.suggestedFilename()}.` }).waitFor();
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
    await page.getByRole('button', { name: 'Verify chain' }).click();
    const verdict = page.getByTestId('verify-result').locator('p');
    await verdict.waitFor({ timeout: 20000 });
    if ((await verdict.getAttribute('data-ok')) !== 'true' || !/^The audit trail is intact: \d+ records/.test(await text(verdict))) {
      throw new Error(`unexpected verification: ${await text(verdict)}`);
    }
    await shoot(page, 'admin-audit');

    // ---- Capacity: the counts and the projected demand.
    await openAdmin(page, 'Capacity', 'admin-capacity-page');
    const running = page.getByTestId('capacity-running').locator('dd');
    await running.waitFor();
    if (Number(await running.innerText()) < 1) throw new Error('the capacity report counts no running workspace');
    const cpuDemand = await text(page.getByTestId('capacity-cpu'));
    if (!/[\d.]+ cores?/.test(cpuDemand)) throw new Error(`unexpected CPU demand "${cpuDemand}"`);
    const memoryDemand = await text(page.getByTestId('capacity-memory'));
    if (!/[\d.]+ (KiB|MiB|GiB|TiB)/.test(memoryDemand)) throw new Error(`unexpected memory demand "${memoryDemand}"`);
    await page.getByTestId('capacity-policy').getByText('Sleeps after').waitFor();
    await shoot(page, 'admin-capacity');

    // ---- 360 px: no page scrolls sideways (tables scroll inside their own box).
    await page.setViewportSize({ width: 360, height: 800 });
    for (const [label, testId, name, ready] of [
      ['Users', 'admin-users-page', 'users', '[data-testid="user-row"]'],
      ['Workspaces', 'admin-workspaces-page', 'workspaces', '[data-testid="workspace-memory"]'],
      ['Invites', 'admin-invites-page', 'invites', '[data-testid="invite-row"]'],
      ['Audit trail', 'admin-audit-page', 'audit', '[data-testid="audit-row"]'],
      ['Capacity', 'admin-capacity-page', 'capacity', '[data-testid="capacity-running"]'],
    ]) {
      await openAdmin(page, label, testId);
      await page.locator(ready).first().waitFor({ timeout: 15000 });
      const overflow = await sideways(page);
      if (overflow > 0) throw new Error(`the ${name} page is ${overflow}px wider than a 360px screen`);
      await shoot(page, `admin-${name}-360`);
    }
    await page.setViewportSize({ width: 1280, height: 720 });
    expectNoErrors(errors, 'the admin pages');
    await page.close();
  },

  // The acceptance: a person signs in through the identity provider, gets their
  // workspace and runs a command in the terminal. In another browser, the administrator suspends
  // them from the users page. The person's open terminal is closed by the edge (1008) and the app
  // shows the sign-in page at once; a reload still does, and signing in again is refused. Their
  // workspace is put on hold. Reinstated, they are shown active, and can sign in again.
  async adminSuspendsAUserWhoseTerminalThenCloses(browser, platform) {
    const login = 'casey';
    const { email } = IDP_PEOPLE[login];

    // The person, in their own browser context. Every WebSocket close is recorded with its code.
    const personContext = await browser.newContext();
    await personContext.addInitScript(() => {
      const Native = window.WebSocket;
      window.__closes = [];
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          this.addEventListener('close', (e) => window.__closes.push({ url: this.url, code: e.code }));
        }
      };
    });
    const person = await personContext.newPage();
    const personErrors = watch(person);
    await signInWithIdp(person, platform, login);
    await expectWorkspaceRunning(person);
    await person.getByText(`Signed in as ${email}`).waitFor();
    await shoot(person, 'admin-suspend-1-person-home');
    // Not an administrator: no Admin link, the not-found page at /admin, and the API refuses.
    if ((await person.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Admin' }).count()) !== 0) {
      throw new Error('a person who is not an administrator sees the Admin link');
    }
    await person.goto(`${platform.origin}/admin/users`);
    await person.getByTestId('notfound-page').waitFor();
    const listUsers = await person.evaluate(async () => (await fetch('/api/v1/auth/ListUsers', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Tidepool-CSRF': /tidepool_csrf=([^;]+)/.exec(document.cookie)?.[1] ?? '' },
      body: '{}',
    })).status);
    if (listUsers !== 403) throw new Error(`ListUsers answered ${listUsers} to a person who is not an administrator`);
    await person.goto(platform.origin);
    await person.getByTestId('home-page').waitFor();
    await person.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Terminal' }).click();
    await person.getByTestId('terminal-page').waitFor();
    await person.locator('[data-testid="terminal-status"][data-connection="connected"]').waitFor({ timeout: 30000 });
    await person.waitForFunction(() => (document.querySelector('.xterm-rows')?.textContent || '').trim().length > 0,
                                 null, { timeout: 30000 });
    await typeInTerminal(person, 'echo casey-$((6*7))-here');
    await person.locator('.xterm-rows').filter({ hasText: 'casey-42-here' }).waitFor({ timeout: 20000 });
    await shoot(person, 'admin-suspend-2-person-terminal');

    // The administrator, in a separate context, finds them on the users page.
    const adminContext = await browser.newContext();
    const admin = await adminContext.newPage();
    const adminErrors = watch(admin);
    await signInAsAdmin(admin, platform);
    await admin.goto(`${platform.origin}/admin/users`);
    await admin.getByTestId('admin-users-page').waitFor();
    await admin.getByLabel('Search').fill(login);
    await admin.getByRole('button', { name: 'Search', exact: true }).click();
    const row = admin.locator(`[data-testid="user-row"][data-email="${email}"]`);
    await row.waitFor();
    if ((await row.getAttribute('data-state')) !== 'USER_STATE_ACTIVE') throw new Error('the person is not active before');
    await row.getByRole('link', { name: `Running workspace of ${email}` }).waitFor({ timeout: 10000 });

    // Suspend: a reason is required; then the row says Suspended.
    await row.getByRole('button', { name: `Suspend ${email}` }).click();
    const dialog = admin.getByTestId('suspend-dialog');
    await dialog.waitFor();
    if (!(await dialog.evaluate((d) => d.open && d.matches(':modal')))) throw new Error('the suspend dialog is not modal');
    await dialog.getByRole('button', { name: 'Suspend', exact: true }).click();
    await dialog.getByRole('alert').filter({ hasText: /Say why first/ }).waitFor();
    await dialog.getByLabel('Reason').fill('End-to-end test: checking that live sessions end');
    await shoot(admin, 'admin-suspend-3-dialog');
    await dialog.getByRole('button', { name: 'Suspend', exact: true }).click();
    await dialog.waitFor({ state: 'detached' });
    await admin.locator(`[data-testid="user-row"][data-email="${email}"][data-state="USER_STATE_SUSPENDED"]`).waitFor();
    await row.getByText('Reason: End-to-end test: checking that live sessions end').waitFor();
    await admin.getByTestId('users-notice').filter({ hasText: /is suspended\. \d+ sessions? (was|were) ended/ }).waitFor();
    await row.getByRole('button', { name: `Reinstate ${email}` }).waitFor();
    await shoot(admin, 'admin-suspend-4-suspended');

    // The person's terminal is closed by the edge with 1008 and the app shows the sign-in page.
    await person.getByTestId('signin-page').waitFor({ timeout: 15000 });
    const closes = await person.evaluate(() => window.__closes);
    const terminalClose = closes.find((c) => c.url.includes('/_tidepool/v1/terminal'));
    if (!terminalClose) throw new Error('the terminal WebSocket was not closed');
    if (terminalClose.code !== 1008) throw new Error(`the terminal closed with ${terminalClose.code}, not 1008`);
    if ((await person.getByTestId('terminal-page').count()) !== 0) throw new Error('the terminal page is still shown');
    await shoot(person, 'admin-suspend-5-person-signed-out');
    // The next page load: still the sign-in page; the session is refused by the edge.
    await person.reload();
    await person.getByTestId('signin-page').waitFor();
    const sessionStatus = await person.evaluate(async () => (await fetch('/auth/session')).status);
    if (sessionStatus !== 401) throw new Error(`/auth/session answered ${sessionStatus} after the suspension`);
    // Signing in again is refused while suspended.
    await person.getByRole('button', { name: IDP_BUTTON }).click();
    await person.getByRole('heading', { name: 'Sign-in failed' }).waitFor({ timeout: 15000 });
    const refusal = await text(person.locator('body'));
    if (!/suspended/i.test(refusal)) throw new Error(`the refused sign-in says: ${refusal}`);
    await shoot(person, 'admin-suspend-6-person-refused');

    // Their workspace is on hold.
    await admin.goto(`${platform.origin}/admin/workspaces?owner=${encodeURIComponent(email)}`);
    await admin.getByTestId('admin-workspaces-page').waitFor();
    const wsRow = admin.locator(`[data-testid="workspace-row"][data-owner="${email}"]`);
    await waitFor(async () => {
      if ((await wsRow.getAttribute('data-state').catch(() => '')) === 'WORKSPACE_STATE_SUSPENDED') return true;
      await admin.getByRole('button', { name: 'Refresh' }).click();
      await admin.waitForTimeout(1000);
      return false;
    }, 'the workspace to be suspended', 30000);
    await wsRow.getByTestId('workspace-awake').filter({ hasText: 'On hold: the owner is suspended' }).waitFor();
    await shoot(admin, 'admin-suspend-7-workspace-on-hold');

    // Reinstated: active on the users page (and still after a reload).
    await admin.goto(`${platform.origin}/admin/users?q=${encodeURIComponent(email)}`);
    await row.waitFor();
    await row.getByRole('button', { name: `Reinstate ${email}` }).click();
    const reinstate = admin.getByTestId('reinstate-dialog');
    await reinstate.getByLabel('Reason (optional)').fill('Test over');
    await reinstate.getByRole('button', { name: 'Reinstate', exact: true }).click();
    await reinstate.waitFor({ state: 'detached' });
    await admin.locator(`[data-testid="user-row"][data-email="${email}"][data-state="USER_STATE_ACTIVE"]`).waitFor();
    await admin.getByTestId('users-notice').filter({ hasText: 'is active again' }).waitFor();
    await admin.reload();
    await admin.locator(`[data-testid="user-row"][data-email="${email}"][data-state="USER_STATE_ACTIVE"]`).waitFor();
    if ((await text(row.getByTestId('user-state'))) !== 'Active') throw new Error('the person is not shown active');
    await shoot(admin, 'admin-suspend-8-reinstated');

    // And they can sign in again; their workspace comes back.
    await person.goto(platform.origin);
    await person.getByTestId('signin-page').waitFor();
    await person.getByRole('button', { name: IDP_BUTTON }).click();
    await person.getByTestId('home-page').waitFor({ timeout: 30000 });
    await person.locator('[data-testid="workspace-state"][data-state="WORKSPACE_STATE_RUNNING"]').waitFor({ timeout: 60000 });
    await shoot(person, 'admin-suspend-9-person-back');

    expectNoErrors(personErrors, "the person's pages");
    expectNoErrors(adminErrors, 'the admin pages');
    await personContext.close();
    await adminContext.close();
  },
};
