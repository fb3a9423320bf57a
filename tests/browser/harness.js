// Starts the real binaries (two fake upstreams and `moltbot serve`) on free 127.0.0.1 ports and
// Debian's Chromium through playwright-core; helpers for page weight and screenshots.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

export const root = resolve(import.meta.dirname, '..', '..');
const BIN = resolve(process.env.MOLTBOT_BIN ?? join(root, 'target', 'debug', 'moltbot'));
const FAKE = resolve(process.env.MOLTBOT_FAKE_UPSTREAM_BIN ?? join(root, 'target', 'debug', 'moltbot-fake-upstream'));
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
export const SHOTS = join(root, 'target', 'browser-test', 'screenshots');

/** The slow model streams 40 chunks 150 ms apart: about 6 s, long enough to stop it mid-stream. */
export const SLOW_CHUNKS = 40;

async function startFake(args) {
  const child = spawn(FAKE, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((res, rej) => {
    child.once('exit', (code) => rej(new Error(`fake upstream exited with ${code}`)));
    createInterface({ input: child.stdout }).once('line', res);
  });
  return { child, url };
}

async function waitFor(path, child, ms = 30000) {
  const start = Date.now();
  while (!existsSync(path)) {
    if (child.exitCode !== null) throw new Error(`moltbot exited with ${child.exitCode}`);
    if (Date.now() - start > ms) throw new Error(`moltbot not ready within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * moltbot with models `default` (fast echo) and `slow` (slow echo), a fresh SQLite database, the
 * bootstrap admin key, and both listeners on 127.0.0.1:0.
 */
export async function startStack() {
  for (const bin of [BIN, FAKE, CHROMIUM]) {
    if (!existsSync(bin)) throw new Error(`${bin} is missing (make bins; apt-get install chromium)`);
  }
  const fast = await startFake(['--echo', '--chunks', '3']);
  const slow = await startFake(['--echo', '--chunks', String(SLOW_CHUNKS), '--interval-ms', '150']);
  const dir = mkdtempSync(join(tmpdir(), 'moltbot-browser-'));
  writeFileSync(
    join(dir, 'moltbot.toml'),
    [
      '[[models]]',
      'name = "default"',
      `endpoint = "${fast.url}"`,
      'api_key = "sk-browser-fast"',
      '',
      '[[models]]',
      'name = "slow"',
      `endpoint = "${slow.url}"`,
      'api_key = "sk-browser-slow"',
      '',
      '[[hooks]]',
      'name = "ops"',
      'token = "browser-hook-token-0123456789"',
      '',
    ].join('\n'),
  );
  const adminKey = `mb_browser${randomBytes(24).toString('hex')}`;
  const ready = join(dir, 'ready.json');
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('MOLTBOT_') && !['MODEL_ENDPOINT', 'API_KEY', 'MODEL_NAME'].includes(k)),
  );
  Object.assign(env, {
    MOLTBOT_CHAT_ADDR: '127.0.0.1:0',
    MOLTBOT_ADMIN_ADDR: '127.0.0.1:0',
    MOLTBOT_SERVER__SHUTDOWN_DELAY: '50ms',
    MOLTBOT_BOOTSTRAP_ADMIN_KEY: adminKey,
  });
  const moltbot = spawn(BIN, ['serve', '--ready-file', ready], { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  moltbot.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-20000);
  });
  await waitFor(ready, moltbot);
  const { chat_addr, admin_addr } = JSON.parse(readFileSync(ready, 'utf8'));
  return {
    adminKey,
    chatUrl: `http://${chat_addr}`,
    adminUrl: `http://${admin_addr}`,
    stderr: () => stderr,
    stop() {
      moltbot.kill('SIGTERM');
      fast.child.kill('SIGTERM');
      slow.child.kill('SIGTERM');
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

/**
 * A new page in a fresh context that records every response body size (uncompressed) and fails the
 * test on any dialog it did not expect, console error or CSP violation.
 */
export async function newPage(browser, { locale = 'en-US', viewport = { width: 1280, height: 860 }, init } = {}) {
  const context = await browser.newContext({ locale, viewport, acceptDownloads: true });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  const problems = [];
  const bodies = [];
  page.on('response', (resp) => {
    bodies.push(
      resp
        .body()
        .then((b) => ({ url: resp.url(), bytes: b.length }))
        .catch(() => ({ url: resp.url(), bytes: 0 })),
    );
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/status of 40[134]/.test(msg.text())) problems.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('dialog', async (d) => {
    if (d.type() === 'confirm' && page.acceptConfirms) {
      await d.accept();
    } else {
      problems.push(`unexpected ${d.type()}: ${d.message()}`);
      await d.dismiss();
    }
  });
  return {
    page,
    context,
    problems,
    /** Sum of the response bodies seen since the page was opened. */
    async weight() {
      const all = await Promise.all(bodies);
      return { bytes: all.reduce((n, r) => n + r.bytes, 0), responses: all };
    },
  };
}

export async function screenshot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
