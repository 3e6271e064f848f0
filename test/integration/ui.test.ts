/**
 * The UI in real Chromium (Debian's, driven by playwright-core) against a devnet: sign in through the URL
 * `allegra ui` prints, see an instance appear within a second of `allegra create`, a replica's state change
 * after it is killed, scale with the keyboard and see the replica count follow, read a line the app printed
 * (hostile markup shown as text, never run), add a team key, a revoked instance's disabled actions, the
 * network view, metrics plots; every input labelled; screenshots of each view under a temp dir.
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InstanceStatus } from '../../protocol/types.js';
import { cliJson, DEVNET_FREE_PORTS, type DevnetInfo, runCli, startDevnet } from '../helpers/cli.js';
import { sleep, tempDir, waitFor } from '../helpers/tmp.js';

// The callbacks given to page.evaluate run in the browser; this file compiles without the DOM library.
// biome-ignore lint/suspicious/noExplicitAny: browser globals, typed by the page
declare const document: any, window: any, location: any, MutationObserver: any;

const APP = fileURLToPath(new URL('../fixtures/ui-app/', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';

describe('the Allegra UI in Chromium', () => {
  const dir = tempDir('allegra-ui-');
  const shots = mkdtempSync(join(tmpdir(), 'allegra-ui-shots-'));
  const env = { ALLEGRA_HOME: join(dir.path, 'home') };
  let devnet: Awaited<ReturnType<typeof startDevnet>>;
  let info: DevnetInfo;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  const shot = async (name: string) => {
    await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  };
  const status = (name: string) => cliJson<InstanceStatus>(['status', name], env);
  const open = async (hash: string) => {
    await page.evaluate((h) => {
      location.hash = h;
    }, hash);
  };

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: node scripts/install-deps.mjs installs Debian's chromium`);
    console.log(`UI screenshots: ${shots}`);
    [devnet, browser] = await Promise.all([
      startDevnet([...DEVNET_FREE_PORTS, '--data', join(dir.path, 'devnet'), '--no-demo'], env),
      chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] }),
    ]);
    info = devnet.info;
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('pageerror', (err) => pageErrors.push(err.message));
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    if (devnet && devnet.child.exitCode === null) devnet.child.kill('SIGKILL');
    dir.cleanup();
  });

  it('signs in from the printed URL without the owner key, and takes the sign-in out of the address bar', async () => {
    const ui = await cliJson<{ url: string; owner: string; session: string; expiresAt: string }>(['ui', '--print', '--ttl', '30m'], env);
    expect(ui.url.startsWith(`${info.rpc.replace(/\/$/, '')}/ui/#k=`)).toBe(true);
    expect(ui.session).not.toBe(ui.owner);
    // The owner's private key (the seed inside the PKCS#8 file devnet wrote) is nowhere in the URL.
    const ownerSeed = createPrivateKey(readFileSync(join(env.ALLEGRA_HOME, 'key'), 'utf8'))
      .export({ format: 'der', type: 'pkcs8' })
      .subarray(-32)
      .toString('hex');
    expect(ui.url).not.toContain(ownerSeed);
    expect(Date.parse(ui.expiresAt) - Date.now()).toBeLessThanOrEqual(30 * 60_000);

    const res = await page.goto(ui.url);
    const csp = res?.headers()['content-security-policy'] ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'none'");
    await page.locator('[data-live="on"]').waitFor({ timeout: 10_000 });
    expect(new URL(page.url()).hash).toBe('#/');
    await expect(page.locator('header .who code').getAttribute('title')).resolves.toBe(ui.owner);

    // A delegation altered in the URL (a longer life) is refused by the agent, with its reason.
    const forged = new URL(ui.url);
    const params = new URLSearchParams(forged.hash.slice(1));
    const d = JSON.parse(Buffer.from(params.get('d') as string, 'base64url').toString());
    params.set('d', Buffer.from(JSON.stringify({ ...d, expiresAt: d.expiresAt + 3_600_000 })).toString('base64url'));
    const other = await browser.newPage();
    await other.goto(`${forged.origin}${forged.pathname}#${params.toString()}`);
    await other.getByText('delegation is not signed by its owner').first().waitFor({ timeout: 10_000 });
    await other.close();
  }, 60_000);

  it('shows an instance within a second of allegra create', async () => {
    await page.locator('#list-title').waitFor();
    await cliJson(['create', 'web', '--replicas', '2:2'], env);
    const created = Date.now();
    await page.locator('[data-instance="web"]').waitFor({ timeout: 1_000 });
    console.log(`instance visible ${Date.now() - created} ms after allegra create returned`);
    await cliJson(['deploy', 'web', APP, '--cmd', 'node server.mjs'], env);
    await page.locator('[data-instance="web"]', { hasText: 'healthy (2/2)' }).waitFor({ timeout: 30_000 });
    await shot('instances');
  }, 90_000);

  it('shows each replica per quorum member and watches a killed one change state', async () => {
    await open('#/i/web/replicas');
    const before = await status('web');
    const victim = before.replicas.find((r) => r.healthy && r.pid);
    if (!victim?.pid) throw new Error('no running replica to kill');
    const row = page.locator(`[data-replica="${victim.nodeId}.${victim.slot}"]`);
    await row.locator('text=running').first().waitFor({ timeout: 10_000 });
    await shot('instance-replicas');
    // Record every state the row shows from now on.
    await page.evaluate((sel) => {
      const seen: string[] = [];
      (window as unknown as { __states: string[] }).__states = seen;
      const observer = new MutationObserver(() => {
        const s = document.querySelector(sel)?.getAttribute('data-state');
        if (s && seen.at(-1) !== s) seen.push(s);
      });
      observer.observe(document.body, { subtree: true, attributes: true, childList: true });
    }, `[data-replica="${victim.nodeId}.${victim.slot}"]`);
    process.kill(victim.pid, 'SIGKILL');
    const states = await waitFor(
      async () => {
        const seen = await page.evaluate(() => (window as unknown as { __states: string[] }).__states);
        return seen.some((s) => s !== 'running') && seen.at(-1) === 'running' ? seen : undefined;
      },
      { timeoutMs: 20_000, what: 'the killed replica to leave and rejoin the running state' },
    );
    expect(states.some((s) => s === 'not running' || s === 'unhealthy')).toBe(true);
    expect(Number(await row.locator('td').nth(2).textContent())).toBe(victim.restarts + 1);
  }, 60_000);

  it('reads the lines the app printed, live, as text', async () => {
    await open('#/i/web/logs');
    await page.getByText('ui-app replica', { exact: false }).first().waitFor({ timeout: 15_000 });
    const marker = `/ui-test-${Date.now()}`;
    await request(`${info.http}${marker}`, { headers: { host: 'web.localhost' } }).then((r) => r.body.text());
    await page.getByText(`ui-app served ${marker}`, { exact: false }).first().waitFor({ timeout: 10_000 });
    // The app printed markup: it is shown as text and none of it ran.
    expect(await page.locator('.logs img, .logs script').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: string }).__pwned)).toBeUndefined();
    await expect(page.locator('.logs').textContent()).resolves.toContain('<script>');
    await shot('instance-logs');
  }, 60_000);

  it('scales from the keyboard and the replica count follows', async () => {
    await open('#/i/web/replicas');
    await page.locator('#scale-min').waitFor();
    await page.locator('#scale-min').fill('3');
    await page.locator('#scale-max').focus();
    await page.keyboard.press('Control+A');
    await page.keyboard.type('3');
    // Past the two optional fields to the button, by keyboard only.
    for (let i = 0; i < 3; i++) await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Scale');
    await page.keyboard.press('Enter');
    await page.locator('#replica-count', { hasText: '3 running, 3 healthy' }).waitFor({ timeout: 30_000 });
    const after = await status('web');
    expect(after.instance.replicas).toMatchObject({ min: 3, max: 3 });
  }, 60_000);

  it('stops and starts with Tab and Enter, with the CLI’s errors', async () => {
    let focused = '';
    for (let i = 0; i < 80 && focused !== 'Stop'; i++) {
      await page.keyboard.press('Tab');
      focused = (await page.evaluate(() => document.activeElement?.textContent ?? '')).trim();
    }
    expect(focused).toBe('Stop');
    await page.keyboard.press('Enter');
    await waitFor(async () => (await status('web')).instance.state === 'stopped', { timeoutMs: 10_000, what: 'stopped' });
    await page.locator('text=stop: done').waitFor({ timeout: 5_000 });
    await page.getByRole('button', { name: 'Start' }).click();
    await waitFor(async () => (await status('web')).instance.state === 'running', { timeoutMs: 10_000, what: 'running' });
    // A bad request is refused with the agent's own message, the one the CLI prints.
    await page.locator('#scale-min').fill('5');
    await page.locator('#scale-max').fill('2');
    await page.getByRole('button', { name: 'Scale' }).click();
    const alert = page.locator('[role="alert"]', { hasText: 'scale refused (400 bad_request)' });
    await alert.waitFor({ timeout: 5_000 });
    const cli = await runCli(['scale', 'web', '--min', '5', '--max', '2'], env);
    expect(cli.code).not.toBe(0);
  }, 60_000);

  it('adds a team key from the settings view', async () => {
    const teammate = join(dir.path, 'teammate.key');
    const { publicKey } = await cliJson<{ publicKey: string }>(['keys', 'init'], { ...env, ALLEGRA_KEY: teammate });
    await open('#/i/web/settings');
    await page.locator('#team-key').fill(publicKey);
    await page.locator('#team-key').press('Enter');
    await page.locator(`[data-key="${publicKey}"]`).waitFor({ timeout: 10_000 });
    const listed = await cliJson<{ keys: string[] }>(['auth', 'list', 'web'], env);
    expect(listed.keys).toContain(publicKey);
    // The teammate's own key now operates the instance through the CLI.
    expect((await runCli(['status', 'web'], { ...env, ALLEGRA_KEY: teammate })).code).toBe(0);
    await shot('instance-settings');
  }, 60_000);

  it('plots the traffic the gateways saw', async () => {
    await open('#/i/web/metrics');
    // Traffic through the gateway until the plot shows it (bounded: 20 s at most).
    let traffic = true;
    const load = (async () => {
      const until = Date.now() + 20_000;
      while (traffic && Date.now() < until) {
        await Promise.all(
          Array.from({ length: 5 }, () => request(`${info.http}/`, { headers: { host: 'web.localhost' } }).then((r) => r.body.text())),
        );
        await sleep(20);
      }
    })();
    const rpsShown = async () => {
      const caption = (await page.locator('figure.chart figcaption').first().textContent()) ?? '';
      return Number(/requests\/s ([\d.]+)/.exec(caption)?.[1] ?? 0);
    };
    try {
      expect(await waitFor(rpsShown, { timeoutMs: 15_000, what: 'requests per second above zero in the plot' })).toBeGreaterThan(0);
    } finally {
      traffic = false;
      await load;
    }
    expect(await page.locator('figure.chart canvas').count()).toBeGreaterThanOrEqual(5);
    await shot('instance-metrics');
  }, 60_000);

  it('deploys a bundle chosen in the browser, then rolls back to the earlier version', async () => {
    const v1 = (await status('web')).instance.artifact?.sha256;
    const next = join(dir.path, 'app-v2');
    cpSync(APP, next, { recursive: true });
    writeFileSync(join(next, 'VERSION'), '2\n');
    const bundle = join(dir.path, 'app-v2.tar.gz');
    execFileSync('tar', ['czf', bundle, '-C', next, '.']);
    await open('#/i/web/replicas');
    await page.locator('#deploy-file').setInputFiles(bundle);
    await page.locator('#deploy-cmd').fill('node server.mjs');
    await page.getByRole('button', { name: 'Deploy' }).click();
    await page.locator('text=deploy: done').waitFor({ timeout: 30_000 });
    const v2 = await status('web');
    expect(v2.instance.version).toBe(2);
    expect(v2.instance.artifact?.sha256).not.toBe(v1);
    expect(v2.instance.cmd).toBe('node server.mjs');
    await open('#/i/web/deployments');
    const button = page.getByRole('button', { name: 'Roll back to 1' });
    await button.waitFor({ timeout: 10_000 });
    await shot('instance-deployments');
    await button.focus();
    await page.keyboard.press('Enter');
    await page.locator('[data-version="3"]', { hasText: 'rollback to 1' }).waitFor({ timeout: 15_000 });
    const back = await status('web');
    expect(back.instance.version).toBe(3);
    expect(back.instance.artifact?.sha256).toBe(v1);
    // The chain still verifies with the rollback in it.
    expect((await runCli(['history', 'web', '--verify'], env)).code).toBe(0);
  }, 90_000);

  it('shows events and domains', async () => {
    await open('#/i/web/events');
    await page.locator('.events li', { hasText: 'restarted' }).first().waitFor({ timeout: 10_000 });
    await page.locator('.events li', { hasText: 'replicas 2–2 → 3–3' }).first().waitFor({ timeout: 10_000 });
    await shot('instance-events');
    await open('#/i/web/domains');
    await page.locator('th', { hasText: 'web.localhost' }).first().waitFor({ timeout: 10_000 });
    await shot('instance-domains');
  }, 60_000);

  it('says why a revoked instance’s actions are disabled', async () => {
    await cliJson(['create', 'frozen'], env);
    await cliJson(['revoke', 'frozen', '--yes'], env);
    await open('#/i/frozen/replicas');
    const reason = page.locator('#revoked-reason');
    await reason.waitFor({ timeout: 10_000 });
    expect(await reason.textContent()).toContain('immutable');
    const stop = page.getByRole('button', { name: 'Stop' });
    expect(await stop.isDisabled()).toBe(true);
    expect(await stop.getAttribute('aria-describedby')).toBe('revoked-reason');
    await shot('instance-revoked');
  }, 60_000);

  it('shows the network to operators', async () => {
    await open('#/network');
    await page.locator('[data-node]').nth(2).waitFor({ timeout: 10_000 });
    expect(await page.locator('[data-node]').count()).toBe(info.agents.length);
    await page.locator('h2', { hasText: 'Gateways' }).waitFor();
    await shot('network');
  }, 30_000);

  it('labels every input and lets the keyboard reach every control', async () => {
    for (const tab of ['replicas', 'domains', 'settings']) {
      await open(`#/i/web/${tab}`);
      await page.locator('fieldset').first().waitFor({ timeout: 10_000 });
      const unlabelled = await page.evaluate(() =>
        [...document.querySelectorAll('input, select, textarea')]
          .filter(
            (el: { labels?: unknown[]; getAttribute(n: string): string | null }) =>
              el.labels?.length === 0 && !el.getAttribute('aria-label'),
          )
          .map((el) => el.outerHTML),
      );
      expect(unlabelled).toEqual([]);
      const unnamedButtons = await page.evaluate(
        () => [...document.querySelectorAll('button')].filter((b) => !(b.textContent ?? '').trim() && !b.getAttribute('aria-label')).length,
      );
      expect(unnamedButtons).toBe(0);
    }
    expect(pageErrors).toEqual([]);
  }, 30_000);
});
