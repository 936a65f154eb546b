// End-to-end tests of the web UI: the real platform (`tidepool up`, every service, real sandboxes)
// and real Chromium (Debian's package) driven by playwright-core. Every page visited is saved as
// a screenshot under <build dir>/web-screenshots/ so the pages can be looked at.
//
//   node tests/web/e2e.mjs --build-dir build [--only NAME[,NAME...]]
//
// Exits 0 when every scenario passes; prints one line per scenario and, for a failure, the
// error and where the logs are (the temporary directory is then kept). The scenarios live in
// tests/web/scenarios/ and run in the order listed below (later ones build on earlier ones: the
// first sets the administrator's password, so `--only` lists it too; the admin suite suspends
// people last).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Platform, SOURCE, runSuite } from './lib.mjs';
import { scenarios as basics } from './scenarios/basics.mjs';
import { scenarios as workspace } from './scenarios/workspace.mjs';
import { scenarios as admin } from './scenarios/admin.mjs';

await runSuite({
  prefix: 'tidepool-web-',
  scenarios: { ...basics, ...workspace, ...admin },
  async start(dir) {
    if (!existsSync(join(SOURCE, 'web/dist/index.html'))) {
      throw new Error('web/dist is not built (node web/build.mjs)');
    }
    return { platform: await Platform.start(dir) };
  },
});
