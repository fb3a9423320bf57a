// The admin console and WebChat in Chromium against the real moltbot binary and fake upstreams.
// Tests run in order and share one server: the chat made in WebChat is found and exported in the console.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startStack, launchBrowser, newPage, screenshot, SLOW_CHUNKS } from './harness.js';

const WEIGHT_LIMIT = 200 * 1024;
const TIMEOUT = 15000;

let stack;
let browser;
/** The console page, signed in by the first test and reused. */
let admin;

before(async () => {
  stack = await startStack();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  stack?.stop();
});

function noProblems(p) {
  assert.deepEqual(p.problems, [], 'no console errors, CSP violations, page errors or dialogs');
}

/** Everything the page has loaded so far (it is never navigated away), once it settles; printed and checked. */
async function measure(p, label) {
  await p.page.waitForLoadState('networkidle');
  const w = await p.weight();
  const lines = w.responses.map((r) => `    ${String(r.bytes).padStart(7)}  ${r.url}`).join('\n');
  console.log(`page weight ${label}: ${w.bytes} bytes (${(w.bytes / 1024).toFixed(1)} KiB)\n${lines}`);
  assert.ok(w.bytes < WEIGHT_LIMIT, `${label} weighs ${w.bytes} bytes, limit ${WEIGHT_LIMIT}`);
  return w.bytes;
}

async function chatSignIn(p) {
  if (!p.page.url().startsWith(stack.chatUrl)) await p.page.goto(stack.chatUrl);
  await p.page.fill('#signin-key', stack.adminKey);
  await p.page.click('#signin-form button[type=submit]');
  await p.page.waitForSelector('#app:not([hidden])');
  await p.page.waitForFunction(() => document.querySelectorAll('#model option').length >= 2);
}

/** Sends `text` in WebChat with `model`; returns the assistant message's locator. */
async function chat(page, model, text) {
  await page.selectOption('#model', model);
  await page.fill('#input', text);
  await page.click('#send');
  return page.locator('article[data-role=assistant]').last();
}

test('pages are served with a strict CSP, ETag revalidation and public access', async () => {
  for (const [base, page] of [
    [stack.chatUrl, 'webchat'],
    [stack.adminUrl, 'console'],
  ]) {
    const r = await fetch(`${base}/`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/html/);
    const csp = r.headers.get('content-security-policy');
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self';/);
    assert.match(csp, /frame-ancestors 'none'/);
    const html = await r.text();
    assert.match(html, new RegExp(`/assets/${page}\\.js`));
    assert.doesNotMatch(html, /<script>|<style|style=|https?:\/\//, 'no inline code, no third-party origins');
    const js = await fetch(`${base}/assets/${page}.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /^text\/javascript/);
    const etag = js.headers.get('etag');
    assert.ok(etag, 'assets carry an ETag');
    assert.equal(js.headers.get('cache-control'), 'no-cache');
    const again = await fetch(`${base}/assets/${page}.js`, { headers: { 'If-None-Match': etag } });
    assert.equal(again.status, 304);
    const missing = await fetch(`${base}/assets/nope.js`);
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.param, 'file');
  }
  // Each listener serves only its own page's files.
  assert.equal((await fetch(`${stack.chatUrl}/assets/console.js`)).status, 404);
  assert.equal((await fetch(`${stack.adminUrl}/assets/webchat.js`)).status, 404);
});

test('console: sign in, page weight, every page renders', async () => {
  admin = await newPage(browser);
  const { page } = admin;
  page.acceptConfirms = true;
  await page.goto(stack.adminUrl);
  await page.waitForSelector('#signin:not([hidden])');
  await measure(admin, 'console (sign-in)');
  await screenshot(page, 'console-signin');
  await page.fill('#signin-key', 'mb_wrong');
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#signin-error:not([hidden])');
  await page.fill('#signin-key', stack.adminKey);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForSelector('#main .card');
  const cookies = await admin.context.cookies();
  const session = cookies.find((c) => c.name === 'moltbot_admin');
  assert.ok(session?.httpOnly, 'the session cookie is HttpOnly');
  assert.equal(await page.evaluate(() => document.cookie), '', 'scripts cannot read the cookie');
  const keyInStorage = await page.evaluate(
    (key) => JSON.stringify({ ...localStorage, ...sessionStorage }).includes(key),
    stack.adminKey,
  );
  assert.equal(keyInStorage, false, 'the admin key is not stored');
  await measure(admin, 'console (overview, signed in)');
  await screenshot(page, 'console-overview');
  for (const name of ['keys', 'conversations', 'usage', 'backends', 'webhooks', 'settings']) {
    await page.goto(`${stack.adminUrl}/#/${name}`);
    await page.waitForSelector(`#main[data-page=${name}] h1`);
    await page.waitForLoadState('networkidle');
    assert.equal(await page.isVisible('#notice'), false, `no error on the ${name} page: ${await page.textContent('#notice')}`);
    await screenshot(page, `console-${name}`);
  }
  assert.ok(await page.locator('#main pre code').textContent().then((t) => t.includes('models')), 'settings shows config');
  await page.goto(`${stack.adminUrl}/#/webhooks`);
  await page.waitForSelector('#main .empty');
  noProblems(admin);
});

test('console: the reload keeps the session and fetches the CSRF token again', async () => {
  const { page } = admin;
  await page.reload();
  await page.waitForSelector('#app:not([hidden])');
  assert.equal(await page.isVisible('#signin'), false);
});

test('console: a new key secret is shown once', async () => {
  const { page } = admin;
  await page.goto(`${stack.adminUrl}/#/keys`);
  await page.waitForSelector('#create-key');
  await page.fill('#create-key input[name=name]', 'browser-key');
  await page.fill('#create-key input[name=requests_per_minute]', '30');
  await page.fill('#create-key input[name=expires_days]', '7');
  await page.click('#create-key button[type=submit]');
  const secretEl = page.locator('#secret-box .secret-value');
  await secretEl.waitFor({ timeout: TIMEOUT });
  const secret = (await secretEl.textContent()).trim();
  assert.match(secret, /^mb_/);
  await screenshot(page, 'console-key-created');
  // The secret works.
  const models = await fetch(`${stack.chatUrl}/v1/models`, { headers: { Authorization: `Bearer ${secret}` } });
  assert.equal(models.status, 200);
  const row = page.locator('tr', { hasText: 'browser-key' });
  await row.waitFor();
  assert.match(await row.textContent(), /chat, conversations/);
  // Gone after navigating away and back, and after a reload.
  await page.click('nav a[data-page=overview]');
  await page.waitForSelector('#main[data-page=overview]');
  await page.click('nav a[data-page=keys]');
  await page.waitForSelector('#main[data-page=keys] tr >> text=browser-key');
  assert.equal(await page.locator('#secret-box .secret-value').count(), 0);
  assert.equal((await page.content()).includes(secret), false, 'secret gone after navigation');
  await page.reload();
  await page.waitForSelector('#main[data-page=keys] tr >> text=browser-key');
  assert.equal((await page.content()).includes(secret), false, 'secret gone after reload');
  // Edit the limits, then revoke.
  await page.locator('tr', { hasText: 'browser-key' }).locator('button', { hasText: 'Edit' }).click();
  await page.fill('tr.editing input[name=requests_per_minute]', '45');
  await page.click('tr.editing button[type=submit]');
  await page.waitForSelector('tr[data-key] >> text=browser-key');
  const keys = await page.evaluate(() => fetch('/admin/api/keys').then((r) => r.json()));
  const created = keys.data.find((k) => k.name === 'browser-key');
  assert.equal(created.requests_per_minute, 45);
  await page.locator('tr', { hasText: 'browser-key' }).locator('button.danger').click();
  await page.waitForSelector(`tr[data-key="${created.id}"].muted`);
  const revoked = await fetch(`${stack.chatUrl}/v1/models`, { headers: { Authorization: `Bearer ${secret}` } });
  assert.equal(revoked.status, 401);
  noProblems(admin);
});

test('console: a cookie-authenticated POST needs the CSRF token', async () => {
  const { page } = admin;
  const result = await page.evaluate(async () => {
    const body = JSON.stringify({ name: 'csrf-probe', scopes: ['chat'] });
    const headers = { 'Content-Type': 'application/json' };
    const without = await fetch('/admin/api/keys', { method: 'POST', headers, body });
    const withoutBody = await without.json();
    const session = await fetch('/admin/api/session').then((r) => r.json());
    const withToken = await fetch('/admin/api/keys', {
      method: 'POST',
      headers: { ...headers, 'X-CSRF-Token': session.csrf_token },
      body,
    });
    return { without: without.status, code: withoutBody.error?.code, with: withToken.status };
  });
  assert.equal(result.without, 403);
  assert.equal(result.code, 'csrf_token_invalid');
  assert.ok(result.with >= 200 && result.with < 300, `with the token: ${result.with}`);
  // The same through page.request (shares the cookie jar, no browser CSRF header).
  const req = await admin.context.request.post(`${stack.adminUrl}/admin/api/keys`, {
    data: { name: 'csrf-probe-2', scopes: ['chat'] },
  });
  assert.equal(req.status(), 403);
  admin.problems.length = 0; // the 403s above log console errors by design
});

let chatTitle;

test('webchat: sign in, streamed reply over the WebSocket, stop mid-stream', async () => {
  const p = await newPage(browser);
  const { page } = p;
  await page.goto(stack.chatUrl);
  await page.waitForSelector('#signin:not([hidden])');
  await measure(p, 'webchat (sign-in)');
  await screenshot(page, 'webchat-signin');
  await chatSignIn(p);
  assert.equal(await page.evaluate(() => location.href.includes('mb_')), false, 'key never in the URL');
  assert.equal(await page.evaluate(() => Object.keys(localStorage).some((k) => localStorage[k].startsWith('mb_'))), false);
  chatTitle = `hello browser ${Date.now()}`;
  const reply = await chat(page, 'default', chatTitle);
  await page.waitForSelector('article[data-role=assistant][data-state=done]', { timeout: TIMEOUT });
  assert.equal((await reply.locator('.md').textContent()).trim(), `echo: ${chatTitle}`);
  assert.equal(await page.evaluate(() => document.body.dataset.transport), 'ws');
  await page.waitForSelector(`#conv-list .conv >> text=${chatTitle}`, { timeout: TIMEOUT });
  await measure(p, 'webchat (signed in, after a chat)');

  // The slow model: text appears while streaming, then Stop ends it.
  const full = 'echo: count slowly to forty please';
  const slow = await chat(page, 'slow', 'count slowly to forty please');
  await page.waitForFunction(
    () => {
      const m = [...document.querySelectorAll('article[data-role=assistant]')].at(-1);
      return m.dataset.state === 'streaming' && m.querySelector('.md').textContent.length > 0;
    },
    null,
    { timeout: TIMEOUT },
  );
  assert.equal(await page.isVisible('#stop'), true);
  await screenshot(page, 'webchat-streaming');
  await page.click('#stop');
  await page.waitForSelector('article[data-role=assistant][data-state=cancelled]', { timeout: TIMEOUT });
  const partial = (await slow.locator('.md').textContent()).trim();
  assert.ok(partial.length > 0 && partial.length < full.length, `stopped mid-stream: "${partial}"`);
  assert.ok(full.startsWith(partial), `"${partial}" is a prefix of the reply`);
  await page.waitForTimeout(1000);
  assert.equal((await slow.locator('.md').textContent()).trim(), partial, 'nothing arrives after stop');
  assert.equal(await page.isVisible('#send'), true);
  void SLOW_CHUNKS;
  await screenshot(page, 'webchat-chat');
  // 375 px wide: nothing overflows horizontally.
  await page.setViewportSize({ width: 375, height: 740 });
  await page.waitForTimeout(300); // the sidebar slides away
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scroll at 375 px (${overflow}px)`);
  await screenshot(page, 'webchat-mobile');
  noProblems(p);
  await p.context.close();
});

test('webchat: model markup stays text (no img, no javascript: links)', async () => {
  const p = await newPage(browser);
  const { page } = p;
  await chatSignIn(p);
  const hostile =
    'see <img src=x onerror=alert(1)> and [x](javascript:alert(1)) and [ok](https://example.com/a) **bold** `code`\n\n```js\nlet a = "<b>";\n```\n\n- one\n- two';
  const reply = await chat(page, 'default', hostile);
  await page.waitForSelector('article[data-role=assistant][data-state=done]', { timeout: TIMEOUT });
  const facts = await page.evaluate(() => ({
    imgs: document.querySelectorAll('img').length,
    jsHrefs: [...document.querySelectorAll('[href]')].filter((e) => /^\s*javascript:/i.test(e.getAttribute('href'))).length,
    onerror: document.querySelectorAll('[onerror]').length,
    bold: document.querySelectorAll('article[data-role=assistant] strong').length,
    pre: document.querySelectorAll('article[data-role=assistant] pre code').length,
    items: document.querySelectorAll('article[data-role=assistant] li').length,
    links: [...document.querySelectorAll('article[data-role=assistant] a')].map((a) => a.href),
  }));
  assert.equal(facts.imgs, 0, 'no img element');
  assert.equal(facts.jsHrefs, 0, 'no javascript: href');
  assert.equal(facts.onerror, 0);
  assert.equal(facts.bold, 1);
  assert.equal(facts.pre, 1);
  assert.equal(facts.items, 2);
  assert.deepEqual(facts.links, ['https://example.com/a']);
  const text = await reply.locator('.md').textContent();
  assert.ok(text.includes('<img src=x onerror=alert(1)>'), 'the markup is shown as text');
  assert.ok(text.includes('[x](javascript:alert(1))'), 'the unsafe link is shown as text');
  await screenshot(page, 'webchat-markdown');
  noProblems(p);
  await p.context.close();
});

test('webchat: falls back to SSE when the WebSocket fails, and stop aborts it', async () => {
  const p = await newPage(browser, {
    init: () => {
      window.WebSocket = function BrokenSocket() {
        throw new Error('WebSocket disabled by the test');
      };
    },
  });
  const { page } = p;
  await chatSignIn(p);
  const reply = await chat(page, 'default', 'over sse');
  await page.waitForSelector('article[data-role=assistant][data-state=done]', { timeout: TIMEOUT });
  assert.equal((await reply.locator('.md').textContent()).trim(), 'echo: over sse');
  assert.equal(await page.evaluate(() => document.body.dataset.transport), 'sse');
  const slow = await chat(page, 'slow', 'slow over sse');
  await page.waitForFunction(
    () => [...document.querySelectorAll('article[data-role=assistant]')].at(-1).querySelector('.md').textContent.length > 0,
    null,
    { timeout: TIMEOUT },
  );
  await page.click('#stop');
  await page.waitForSelector('article[data-role=assistant][data-state=cancelled]', { timeout: TIMEOUT });
  assert.ok((await slow.locator('.md').textContent()).trim().length < 'echo: slow over sse'.length);
  noProblems(p);
  await p.context.close();
});

test('console: find the WebChat conversation and export it', async () => {
  const { page } = admin;
  await page.goto(`${stack.adminUrl}/#/conversations`);
  await page.waitForSelector('#conv-search');
  await page.fill('#conv-search input[name=q]', chatTitle.toUpperCase());
  await page.click('#conv-search button[type=submit]');
  const link = page.locator('tr[data-conv] a', { hasText: chatTitle });
  await link.waitFor({ timeout: TIMEOUT });
  await link.click();
  await page.waitForSelector('.transcript .msg.assistant');
  assert.ok((await page.textContent('.transcript')).includes(`echo: ${chatTitle}`));
  await screenshot(page, 'console-transcript');

  const [json] = await Promise.all([page.waitForEvent('download'), page.click('#export-json')]);
  const exported = JSON.parse(readFileSync(await json.path(), 'utf8'));
  assert.match(json.suggestedFilename(), /^conv_.*\.json$/);
  const texts = JSON.stringify(exported);
  assert.ok(texts.includes(chatTitle) && texts.includes(`echo: ${chatTitle}`), 'JSON export has both messages');

  const [md] = await Promise.all([page.waitForEvent('download'), page.click('#export-md')]);
  const markdown = readFileSync(await md.path(), 'utf8');
  assert.match(md.suggestedFilename(), /^conv_.*\.md$/);
  assert.ok(markdown.includes(chatTitle) && markdown.includes(`echo: ${chatTitle}`), 'Markdown export has both messages');
  noProblems(admin);
});

test('console: usage CSV, backend test prompt, redacted settings', async () => {
  const { page } = admin;
  await page.goto(`${stack.adminUrl}/#/usage`);
  await page.selectOption('#main select[name=group_by]', 'model');
  await page.waitForSelector('#main svg.chart.bar rect.barfill');
  const [csv] = await Promise.all([page.waitForEvent('download'), page.click('#usage-csv')]);
  const lines = readFileSync(await csv.path(), 'utf8').trim().split(/\r?\n/);
  assert.match(lines[0], /^group,/);
  assert.ok(lines.some((l) => l.startsWith('default,')), `a row for the default model: ${lines.join(' | ')}`);

  await page.goto(`${stack.adminUrl}/#/backends`);
  const panel = page.locator('section.backend[data-backend=default]');
  await panel.locator('input[name=prompt]').fill('ping from the console');
  await panel.locator('button[type=submit]').click();
  await panel.locator('.test-result .badge.ok').waitFor({ timeout: TIMEOUT });
  assert.ok((await panel.locator('.test-result').textContent()).includes('echo: ping from the console'));
  await screenshot(page, 'console-backend-test');

  await page.goto(`${stack.adminUrl}/#/settings`);
  await page.waitForSelector('#main pre code');
  const config = await page.textContent('#main pre code');
  assert.ok(config.includes('***'), 'secrets are shown redacted');
  assert.ok(!config.includes('sk-browser-fast') && !config.includes(stack.adminKey), 'no secret in the settings page');
  noProblems(admin);
});

test('console: the hostile conversation renders safely in the transcript too', async () => {
  const { page } = admin;
  await page.goto(`${stack.adminUrl}/#/conversations`);
  await page.fill('#conv-search input[name=q]', 'onerror');
  await page.click('#conv-search button[type=submit]');
  await page.locator('tr[data-conv] a').first().click();
  await page.waitForSelector('.transcript .msg.assistant');
  const facts = await page.evaluate(() => ({
    imgs: document.querySelectorAll('.transcript img').length,
    jsHrefs: [...document.querySelectorAll('[href]')].filter((e) => /^\s*javascript:/i.test(e.getAttribute('href'))).length,
  }));
  assert.deepEqual(facts, { imgs: 0, jsHrefs: 0 });
  noProblems(admin);
});

test('language: switch to zh-CN, remembered; WebChat follows navigator.languages', async () => {
  const { page } = admin;
  await page.goto(`${stack.adminUrl}/#/overview`);
  await page.waitForSelector('#main .card');
  await page.selectOption('#app select.lang', 'zh-CN');
  await page.waitForSelector('nav a[data-page=overview] >> text=概览');
  assert.equal(await page.getAttribute('html', 'lang'), 'zh-CN');
  assert.ok((await page.textContent('#main')).includes('每秒请求数'));
  await page.reload();
  await page.waitForSelector('nav a[data-page=keys] >> text=API 密钥');
  await screenshot(page, 'console-zh-CN');
  await page.selectOption('#app select.lang', 'en');
  await page.waitForSelector('nav a[data-page=overview] >> text=Overview');

  const zh = await newPage(browser, { locale: 'zh-CN' });
  await zh.page.goto(stack.chatUrl);
  await zh.page.waitForSelector('#signin-form button >> text=登录');
  await chatSignIn(zh);
  await zh.page.waitForSelector('#new-chat >> text=新对话');
  await screenshot(zh.page, 'webchat-zh-CN');
  noProblems(zh);
  await zh.context.close();
});

test('console: sign out ends the session', async () => {
  const { page } = admin;
  await page.click('#signout');
  await page.waitForSelector('#signin:not([hidden])');
  const status = await page.evaluate(() => fetch('/admin/api/session').then((r) => r.status));
  assert.equal(status, 401);
  admin.problems.length = 0; // the 401 above is logged by the browser
  await admin.context.close();
});
