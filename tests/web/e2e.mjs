// End-to-end tests of the web UI: the real platform (`tidepool up`, every service, real sandboxes)
// and real Chromium (Debian's package) driven by playwright-core. Every page visited is saved as
// a screenshot under <build dir>/web-screenshots/ so the pages can be looked at.
//
//   node tests/web/e2e.mjs --build-dir build [--only NAME[,NAME...]]
//
// Exits 0 when every scenario passes; prints one line per scenario and, for a failure, the
// error and where the logs are (the temporary directory is then kept). The scenarios live in
// tests/web/scenarios/ and run in the order of SUITES (later ones build on earlier ones: the
// first sets the administrator's password, so `--only` lists it too; the admin suite suspends
// people last).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, ONLY, Platform, SHOTS, SOURCE } from './lib.mjs';
import { scenarios as basics } from './scenarios/basics.mjs';
import { scenarios as workspace } from './scenarios/workspace.mjs';
import { scenarios as admin } from './scenarios/admin.mjs';

const scenarios = { ...basics, ...workspace, ...admin };

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
    if (ONLY && !ONLY.split(',').includes(name)) continue;
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
