// End-to-end tests of the real OpenClaw (npm `openclaw`, unmodified) in Tidepool workspaces:
// the whole platform (`tidepool up` with the `openclaw` profile as the default), two people
// signing in through the identity provider, real Chromium driving OpenClaw's own control UI
// through the edge, and a small OpenAI-compatible model server on loopback
// (tests/openclaw/model_server.py) as the administrator's shared model server.
//
//   node tests/web/openclaw.mjs --build-dir build [--only NAME[,NAME...]]
//
// The first scenario signs both people in and must run first (the others use its workspaces).
// Screenshots go to <build dir>/web-screenshots/openclaw-*.png. Exits 0 when every scenario
// passes.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  Platform, SOURCE, expectWorkspaceRunning, runSuite, shoot, signInWithIdp, typeInTerminal,
  waitFor,
} from './lib.mjs';

// The shared model server: a child process printing {"port", "base_url"} once it listens.
class ModelServer {
  static async start() {
    const server = new ModelServer();
    server.process = spawn('python3', [join(SOURCE, 'tests/openclaw/model_server.py')],
                           { stdio: ['ignore', 'pipe', 'pipe'] });
    server.process.stdout.on('data', (d) => { server.stdout += d; });
    server.process.stderr.on('data', (d) => { server.stderr += d; });
    process.once('exit', () => server.process.kill('SIGTERM'));
    const line = await waitFor(() => /^\{.*\}\n/.exec(server.stdout), 'the model server', 20000);
    Object.assign(server, JSON.parse(line[0]));
    return server;
  }

  constructor() { this.stdout = ''; this.stderr = ''; }

  async log() { return (await fetch(`http://127.0.0.1:${this.port}/__test/requests`)).json(); }

  async acceptKeys(keys) {
    await fetch(`http://127.0.0.1:${this.port}/__test/keys`, { method: 'POST', body: JSON.stringify({ keys }) });
  }

  async stop() {
    this.process.kill('SIGTERM');
    await new Promise((r) => (this.process.exitCode !== null ? r() : this.process.once('exit', r)));
  }
}

// One person's browser: a context of its own, signed in through the identity provider.
class Person {
  static async signIn(browser, platform, login) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const person = new Person(login, context, await context.newPage());
    person.page.on('pageerror', (e) => person.errors.push(String(e)));
    const started = Date.now();
    await signInWithIdp(person.page, platform, login);
    await expectWorkspaceRunning(person.page);
    person.session = await person.call('GET', '/auth/session');
    person.workspaceId = (await person.call('POST', '/api/v1/provisioner/EnsureWorkspace', {})).json.workspace.workspaceId;
    // The gateway answers through the edge once it is ready (its /readyz is the health check).
    await waitFor(async () => (await person.call('GET', `/w/${person.workspaceId}/control-ui-config.json`)).status === 200,
                  `${login}'s OpenClaw gateway`, 120000);
    person.readyMs = Date.now() - started;
    return person;
  }

  constructor(login, context, page) {
    Object.assign(this, { login, context, page, errors: [] });
  }

  get userId() { return this.session.json.userId; }

  // A call from this person's browser (their cookies; CSRF on POST), as the page would make it.
  async call(method, path, body) {
    return this.page.evaluate(async ({ method, path, body }) => {
      const csrf = (document.cookie.match(/(?:^|; )(?:__Host-)?tidepool_csrf=([^;]+)/) || [])[1] || '';
      const response = await fetch(path, {
        method,
        headers: method === 'GET' ? {} : { 'Content-Type': 'application/json', 'X-Tidepool-CSRF': csrf },
        body: method === 'GET' ? undefined : JSON.stringify(body ?? {}),
        credentials: 'same-origin',
      });
      const text = await response.text();
      let json;
      try { json = JSON.parse(text); } catch { json = undefined; }
      return { status: response.status, text, json };
    }, { method, path, body });
  }

  // Whether a WebSocket to `path` on the platform opens (it is closed again at once).
  async webSocketOpens(path) {
    return this.page.evaluate((path) => new Promise((resolve) => {
      const socket = new WebSocket(`${location.origin.replace(/^http/, 'ws')}${path}`);
      socket.onopen = () => { socket.close(); resolve(true); };
      socket.onerror = () => resolve(false);
      setTimeout(() => resolve(false), 10000);
    }), path);
  }

  // The tool's process as the supervisor reports it: {pid, restarts}.
  async tool() {
    const status = await this.call('POST', `/w/${this.workspaceId}/_tidepool/v1/GetStatus`, {});
    if (status.status !== 200) throw new Error(`GetStatus answered ${status.status}: ${status.text}`);
    return { pid: status.json.tool.pid, restarts: status.json.tool.restarts ?? 0 };
  }

  // Opens the agent (OpenClaw's control UI through the edge) and says `words` in the chat;
  // resolves once the model's answer is on the page.
  async chat(words, { timeout = 60000 } = {}) {
    await this.page.goto(`${this.page.url().replace(/(https?:\/\/[^/]+).*/, '$1')}/w/${this.workspaceId}/`);
    const box = this.page.getByPlaceholder(/^Message /);
    await box.waitFor({ timeout: 60000 });
    await box.fill(words);
    await box.press('Enter');
    await this.page.getByText(`Tidepool test model says: ${words}`).first().waitFor({ timeout });
  }

  // Uploads `bytes` to `path` in the home folder through the supervisor's upload route.
  async upload(path, bytes) {
    return this.page.evaluate(async ({ base, path, text }) => {
      const csrf = (document.cookie.match(/(?:^|; )(?:__Host-)?tidepool_csrf=([^;]+)/) || [])[1] || '';
      const query = new URLSearchParams({ upload_id: `up${Date.now()}`, path, offset: '0',
                                          total_size: String(new Blob([text]).size), overwrite: 'true' });
      const response = await fetch(`${base}/upload?${query}`, { method: 'PUT', body: text, headers: { 'X-Tidepool-CSRF': csrf } });
      return response.status;
    }, { base: `/w/${this.workspaceId}/_tidepool/v1`, path, text: bytes });
  }

  // Stores `value` for the provider's field on the keys page, as the person would.
  async storeKey(platform, provider, field, label, value) {
    await this.page.goto(`${platform.origin}/keys`);
    const block = this.page.getByTestId(`provider-${provider}`);
    await block.waitFor();
    await block.getByLabel(new RegExp(`^New value for ${label}`)).fill(value);
    await block.getByRole('button', { name: /^Save\b/ }).click();
    await this.page.getByTestId(`status-${provider}-${field}`).filter({ hasText: /^Stored$/ }).waitFor();
  }

  // Throws if the gateway's process is not the one `before` (from tool()) named.
  async expectSameGateway(before) {
    const after = await this.tool();
    if (after.pid !== before.pid || after.restarts !== before.restarts) {
      throw new Error(`the gateway was restarted: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
    }
  }

  async download(path) {
    const answer = await this.call('GET', `/w/${this.workspaceId}/_tidepool/v1/download?path=${encodeURIComponent(path)}`);
    return answer;
  }

  // Runs a command in this person's terminal page (output is read from files, not the screen).
  async runInTerminal(command) {
    await this.page.goto(`${this.page.url().replace(/(https?:\/\/[^/]+).*/, '$1')}/terminal`);
    await this.page.locator('[data-testid="terminal-status"][data-connection="connected"]').waitFor({ timeout: 30000 });
    await typeInTerminal(this.page, command);
  }
}

const nonce = () => Math.random().toString(36).slice(2, 10);
let casey;
let robin;

const scenarios = {
  // Two people sign in; each gets their own OpenClaw gateway, reaches its control UI through the
  // edge with WebSockets, and completes a chat turn against the shared model server.
  async twoPeopleEachChatWithTheirOwnAgent(browser, platform, model) {
    // Casey signs in once the provisioner's started spare is ready, and claims it: her gateway
    // is the spare's, stamped for her while it runs. Robin, right behind her, gets one started
    // for him (the next spare is not ready yet).
    await waitFor(async () => (await platform.metric('provisioner', 'tidepool_provisioner_ready_spares')) >= 1,
                  'a started spare', 120000);
    casey = await Person.signIn(browser, platform, 'casey');
    robin = await Person.signIn(browser, platform, 'robin');
    console.log(`  sign-in to gateway ready: casey ${casey.readyMs} ms (a spare), robin ${robin.readyMs} ms`);
    const claimed = await platform.metric('provisioner', 'tidepool_provisioner_spares_claimed_total');
    if (claimed !== 1) throw new Error(`expected one claimed spare, the provisioner counts ${claimed}`);
    if (casey.workspaceId === robin.workspaceId) throw new Error('both people got the same workspace');
    const said = { casey: `hello from casey ${nonce()}`, robin: `hello from robin ${nonce()}` };
    await casey.chat(said.casey);
    await shoot(casey.page, 'openclaw-chat-casey');
    await robin.chat(said.robin);
    await shoot(robin.page, 'openclaw-chat-robin');
    // Each turn reached the model server from its own gateway, as its own person.
    const { requests } = await model.log();
    const turn = (words) => requests.find((r) => r.last_user_message.includes(words));
    if (!turn(said.casey) || !turn(said.robin)) throw new Error(`the model server did not see both turns: ${JSON.stringify(requests)}`);
    // The gateway's own token never reaches a browser: there is none (trusted-proxy auth), and
    // the config the control UI reads names no secret.
    const config = await casey.call('GET', `/w/${casey.workspaceId}/control-ui-config.json`);
    if (/token|password|tidepool-shared/i.test(config.text.replace(/"[a-zA-Z]*(Token|Password)[a-zA-Z]*":(false|null|true)/g, ''))) {
      throw new Error(`the control UI config carries a credential: ${config.text.slice(0, 400)}`);
    }
  },

  // Robin cannot reach Casey's gateway, conversations, files or keys by any route.
  async neitherReachesTheOthersAgentFilesOrKeys(browser, platform, model) {
    const theirs = `/w/${casey.workspaceId}`;
    // Casey's words and files, to look for.
    const secretWords = `casey private ${nonce()}`;
    await casey.chat(secretWords);
    if ((await casey.upload('private/notes.txt', secretWords)) !== 200) throw new Error('the upload failed');
    const key = `tpk-casey-${nonce()}${nonce()}`;
    const put = await casey.call('POST', '/api/v1/secrets/Put', { providerId: 'brave', fieldId: 'api_key', value: key });
    const probes = [
      ['GET', `${theirs}/`], ['GET', `${theirs}`], ['GET', `${theirs}/control-ui-config.json`],
      ['GET', `${theirs}/readyz`], ['GET', `${theirs}/sessions/agent:main:main/history`],
      ['POST', `${theirs}/tools/invoke`, { tool: 'read', args: { path: 'private/notes.txt' } }],
      ['POST', `${theirs}/_tidepool/v1/ListFiles`, { path: '' }],
      ['GET', `${theirs}/_tidepool/v1/download?path=private%2Fnotes.txt`],
      ['POST', `${theirs}/_tidepool/v1/GetStatus`, {}],
      ['POST', '/api/v1/provisioner/GetWorkspace', { workspaceId: casey.workspaceId }],
      ['POST', '/api/v1/provisioner/GetUsage', { workspaceId: casey.workspaceId }],
      ['POST', '/api/v1/provisioner/WakeWorkspace', { workspaceId: casey.workspaceId }],
      ['POST', '/api/v1/scaler/GetIdleStatus', { workspaceIds: [casey.workspaceId] }],
      ['POST', '/api/v1/scaler/ListJobRuns', { workspaceId: casey.workspaceId }],
    ];
    for (const [method, path, body] of probes) {
      const answer = await robin.call(method, path, body);
      if (answer.status !== 404) throw new Error(`robin's ${method} ${path} answered ${answer.status}, not 404: ${answer.text.slice(0, 200)}`);
      if (answer.text.includes(secretWords) || answer.text.includes(key)) throw new Error(`robin saw casey's data at ${path}`);
    }
    if (await robin.webSocketOpens(theirs)) throw new Error("a WebSocket to casey's gateway opened for robin");
    if (await robin.webSocketOpens(`${theirs}/_tidepool/v1/terminal?session_id=x&cols=80&rows=24`)) {
      throw new Error("casey's terminal opened for robin");
    }
    // Keys: Robin's list never holds Casey's (and no answer carries a value).
    if (put.status !== 200) throw new Error(`casey's key was not stored: ${put.text}`);
    const list = await robin.call('POST', '/api/v1/secrets/List', {});
    if (list.text.includes('brave') || list.text.includes(key)) throw new Error(`robin's key list shows casey's: ${list.text}`);
    // Robin's own agent shows none of Casey's conversation.
    await robin.page.goto(`${platform.origin}/w/${robin.workspaceId}/`);
    await robin.page.getByPlaceholder(/^Message /).waitFor({ timeout: 60000 });
    await robin.page.waitForTimeout(1000);
    if ((await robin.page.content()).includes(secretWords)) throw new Error("casey's conversation shows in robin's agent");
    // Inside Robin's workspace, naming Casey to Robin's own gateway gets nothing either: it
    // trusts only its owner's identity (and Casey's gateway is in another network namespace).
    await robin.runInTerminal(
      `curl -s -o ~/forged.out -w '%{http_code}' -H 'x-forwarded-user: ${casey.userId}' ` +
      `-H 'x-forwarded-proto: https' -H 'x-forwarded-for: 192.0.2.1' ` +
      `http://127.0.0.1:18789/w/${robin.workspaceId}/control-ui-config.json > ~/forged.code`);
    const code = await waitFor(async () => {
      const answer = await robin.download('forged.code');
      return answer.status === 200 && answer.text.length === 3 ? answer.text : null;
    }, 'the forged request', 30000);
    if (code !== '401') throw new Error(`robin's gateway answered ${code} to casey's identity`);
    await shoot(robin.page, 'openclaw-forged');
  },

  // A key added on the keys page works without restarting the gateway: the model server now
  // wants Casey's personal key; the page stores it; the next turn carries it; same process.
  async aModelKeyAddedOnTheKeysPageWorksWithoutARestart(browser, platform, model) {
    const before = await casey.tool();
    const personal = `tpk-${nonce()}${nonce()}${nonce()}`;
    await model.acceptKeys([personal]);
    try {
      await casey.storeKey(platform, 'model_server', 'api_key', 'API key', personal);
      await shoot(casey.page, 'openclaw-keys');
      const words = `with my own key ${nonce()}`;
      await casey.chat(words, { timeout: 90000 });
      const { requests } = await model.log();
      const turn = requests.find((r) => r.last_user_message.includes(words));
      if (!turn || turn.key_suffix !== personal.slice(-4)) throw new Error(`the turn did not use the new key: ${JSON.stringify(turn)}`);
      await casey.expectSameGateway(before);
    } finally {
      await model.acceptKeys(['tidepool']);
    }
  },

  // A Telegram bot token added on the keys page starts OpenClaw's Telegram channel in the
  // running Gateway (a hot reload of channels.telegram), without restarting it: only the channel
  // starts. The channel cannot reach Telegram (the egress proxy refuses it: not on the
  // allowlist); the Gateway stays ready regardless. The token is in no platform log.
  async aChannelTokenStartsOnlyTheChannel(browser, platform) {
    const before = await casey.tool();
    const token = `${100000000 + Math.floor(Math.random() * 800000000)}:AA${(nonce() + nonce() + nonce() + nonce()).padEnd(33, 'x')}`;
    await casey.storeKey(platform, 'telegram', 'bot_token', 'Bot token', token);
    // The Gateway's log says it reloaded the channel's config, and the channel, started, tries
    // Telegram's API through the platform's egress proxy, which refuses it (not on the list).
    await waitFor(async () => {
      const answer = await casey.download('.openclaw/logs/gateway.log');
      return answer.status === 200 && /config hot reload applied \([^)]*channels\.telegram/.test(answer.text);
    }, "the Gateway's reload of channels.telegram", 60000);
    await waitFor(() => (platform.stdout + platform.stderr).split('\n').some((line) =>
      line.includes('"destination":"api.telegram.org:443"') && line.includes(casey.workspaceId)),
    "the Telegram channel's first call, refused by the egress proxy", 60000);
    await casey.expectSameGateway(before);
    if ((await casey.call('GET', `/w/${casey.workspaceId}/control-ui-config.json`)).status !== 200) {
      throw new Error('the Gateway stopped answering its owner');
    }
    if ((platform.stdout + platform.stderr).includes(token)) throw new Error("the bot token is in the platform's log");
  },

  // A job scheduled in OpenClaw (its own CLI in the person's terminal, with the Gateway's local
  // password read from its process, as anyone in the workspace can) appears on the schedules page, in local time and UTC, and the
  // scaler plans a wake-up for it.
  async anAutomationShowsOnTheSchedulesPageAndPlansAWake(browser, platform) {
    await casey.runInTerminal(
      "export OPENCLAW_GATEWAY_PASSWORD=$(tr '\\0' '\\n' < /proc/$(pgrep -o openclaw-gatew)/environ | " +
      "sed -n 's/^OPENCLAW_GATEWAY_PASSWORD=//p'); openclaw cron add --agent main --name 'Morning summary' " +
      "--cron '0 9 * * 1-5' --tz Europe/Berlin --message 'summarize my notes' --no-deliver " +
      '> ~/cron.out 2>&1; echo $? > ~/cron.code');
    const code = await waitFor(async () => {
      const answer = await casey.download('cron.code');
      return answer.status === 200 && answer.text.trim() !== '' ? answer.text.trim() : null;
    }, 'openclaw cron add', 120000);
    if (code !== '0') throw new Error(`openclaw cron add failed: ${(await casey.download('cron.out')).text.slice(-600)}`);
    const page = casey.page;
    await page.goto(`${platform.origin}/schedules`);
    await page.getByTestId('schedules-page').waitFor();
    const job = page.locator('article, section, li').filter({ hasText: 'Morning summary' }).first();
    await job.waitFor({ timeout: 30000 });
    const shown = (await job.innerText()).replace(/\s+/g, ' ');
    if (!shown.includes('0 9 * * 1-5') || !/UTC/.test(shown)) throw new Error(`the job shows as: ${shown}`);
    await shoot(page, 'openclaw-schedules');
    // The scaler reads the same jobs and plans the wake before the next weekday 09:00 Berlin.
    const wake = await waitFor(async () => {
      const status = await casey.call('POST', '/api/v1/scaler/GetIdleStatus', { workspaceIds: [casey.workspaceId] });
      return status.json?.statuses?.[0]?.nextScheduledWakeTime ?? null;
    }, 'the scaler to plan a wake', 30000);
    const at = new Date(wake);
    const berlin = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', weekday: 'short', hour: '2-digit', minute: '2-digit', hour12: false }).format(at);
    // Within the half hour before a weekday 09:00 in Berlin (the scaler wakes it a little early).
    if (!/^(Mon|Tue|Wed|Thu|Fri) (08:[3-5]\d|09:00)$/.test(berlin)) {
      throw new Error(`the planned wake ${wake} is not shortly before a weekday 09:00 in Berlin (${berlin})`);
    }
  },

  // Every dangerous key flipped from inside the workspace is restored and audited, the stamp the
  // gateway reads cannot be written, and the gateway keeps its hardened settings (same process,
  // still refusing a request without the platform's identity).
  async dangerousKeysFlippedFromInsideAreRestoredAndAudited(browser, platform) {
    const before = await casey.tool();
    const script = readFileSync(join(SOURCE, 'tests/openclaw/flip.py'), 'utf8');
    if ((await casey.upload('flip.py', script)) !== 200) throw new Error('the script upload failed');
    const since = new Date().toISOString();
    await casey.runInTerminal(`python3 ~/flip.py ${casey.workspaceId}`);
    const out = await waitFor(async () => {
      const answer = await casey.download('flip.out');
      return answer.status === 200 ? JSON.parse(answer.text) : null;
    }, 'the flip script', 180000);
    await shoot(casey.page, 'openclaw-flips');
    const unrestored = out.flips.filter((f) => !f.restored).map((f) => f.key);
    if (unrestored.length > 0) throw new Error(`not restored: ${unrestored.join(', ')}`);
    if (!out.cli.restored) throw new Error(`openclaw config set was not undone: ${JSON.stringify(out.cli)}`);
    // EACCES (the sandbox user may only read the platform's file) or EROFS (the mount).
    if (!['Permission denied', 'Read-only file system'].includes(out.stamp_write)) {
      throw new Error(`the stamp could be written: ${out.stamp_write}`);
    }
    if (!out.stamp_mount_options.split(',').includes('ro')) {
      throw new Error(`the stamp's directory is not a read-only mount: ${out.stamp_mount_options}`);
    }
    if (out.gateway_before !== 401 || out.gateway_after !== 401) {
      throw new Error(`the gateway answered ${out.gateway_before} / ${out.gateway_after} without identity, not 401`);
    }
    const slowest = Math.max(...out.flips.map((f) => f.seconds));
    console.log(`  ${out.flips.length} flips restored, slowest ${(slowest * 1000).toFixed(1)} ms`);
    const after = await casey.tool();
    if (after.pid !== before.pid) throw new Error('the gateway restarted (it must never see a flipped value)');
    // Audited: one config.tamper_detected event per flip at least.
    const audited = await waitFor(() => {
      const lines = platform.ctl('audit', 'query', '--action', 'config.tamper_detected', '--workspace',
                                 casey.workspaceId, '--since', since, '--limit', '1000', '--json')
          .split('\n').filter(Boolean);
      return lines.length >= out.flips.length + 1 ? lines : null;
    }, 'the tamper events in the audit trail', 30000);
    if (!audited.every((l) => JSON.parse(l).outcome === 'OUTCOME_SUCCESS' || /restored/.test(l))) {
      throw new Error(`unexpected audit events: ${audited.slice(0, 3).join('\n')}`);
    }
  },
};

await runSuite({
  prefix: 'tidepool-openclaw-',
  scenarios,
  async start(dir, defer) {
    if (!existsSync(join(SOURCE, 'tools/openclaw/node_modules/openclaw/openclaw.mjs'))) {
      throw new Error('OpenClaw is not installed in tools/ (scripts/setup --deps)');
    }
    const model = await ModelServer.start();
    defer(() => model.stop());
    const platform = await Platform.start(dir, { defaultProfile: 'openclaw', modelServer: model.base_url, modelName: 'tidepool-test' });
    return { platform, extra: model };
  },
  async onFailure(name) {
    for (const person of [casey, robin]) {
      if (person) await shoot(person.page, `openclaw-failure-${name}-${person.login}`).catch(() => {});
    }
  },
});
