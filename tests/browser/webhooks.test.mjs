// Outbound event webhooks in the console, in Chromium against the real moltbot binary: create a
// subscription (the signing secret is shown once), send a test event to a real receiver that checks
// the Standard Webhooks signature, see the delivery and its attempts, redeliver it with the same id.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { startStack, launchBrowser, newPage, screenshot } from './harness.js';

const TIMEOUT = 15000;

let stack;
let browser;
let receiver;

/** A receiver on 127.0.0.1:0 recording every request, with its signature checked against `secret`. */
async function startReceiver() {
  const hits = [];
  const state = { secret: null };
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const id = req.headers['webhook-id'];
      const ts = req.headers['webhook-timestamp'];
      const key = Buffer.from(String(state.secret ?? '').replace(/^whsec_/, ''), 'base64');
      const expected = createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest();
      const valid = String(req.headers['webhook-signature'] ?? '')
        .split(' ')
        .filter((s) => s.startsWith('v1,'))
        .map((s) => Buffer.from(s.slice(3), 'base64'))
        .some((sig) => sig.length === expected.length && timingSafeEqual(sig, expected));
      hits.push({ id, ts: Number(ts), valid, body: JSON.parse(body) });
      res.writeHead(valid ? 204 : 401).end();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}/events`, hits, state, close: () => server.close() };
}

async function until(what, pred, ms = TIMEOUT) {
  const start = Date.now();
  for (;;) {
    const v = pred();
    if (v) return v;
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  stack = await startStack();
  browser = await launchBrowser();
  receiver = await startReceiver();
});

after(async () => {
  await browser?.close();
  stack?.stop();
  receiver?.close();
});

test('console: webhook subscription, secret once, test event, delivery log, redeliver', async () => {
  const p = await newPage(browser);
  const { page } = p;
  page.acceptConfirms = true;
  await page.goto(stack.adminUrl);
  await page.fill('#signin-key', stack.adminKey);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');

  await page.goto(`${stack.adminUrl}/#/webhooks`);
  await page.waitForSelector('#main[data-page=webhooks] #create-subscription');
  // The inbound list shows the configured hook with its path and mode; nothing is subscribed yet.
  await page.waitForSelector('#wh-channels tbody tr');
  const inbound = await page.textContent('#wh-channels');
  assert.match(inbound, /\/hooks\/ops/);
  assert.match(inbound, /sync/);
  await page.waitForSelector('#wh-subs .empty');

  // Bad input: the server's message is shown.
  await page.fill('#create-subscription input[name=url]', 'http://example.com/x');
  for (const box of await page.locator('#create-subscription input[name=event]').all()) await box.uncheck();
  await page.click('#create-subscription button[type=submit]');
  await page.waitForSelector('#notice:not([hidden])');
  assert.match(await page.textContent('#notice'), /event/i);
  await page.click('#notice button');

  // Create: only some events; the secret is shown once.
  await page.fill('#create-subscription input[name=url]', receiver.url);
  await page.check('#create-subscription input[value="key.revoked"]');
  await page.check('#create-subscription input[value="conversation.created"]');
  await page.fill('#create-subscription input[name=description]', 'browser receiver');
  await page.click('#create-subscription button[type=submit]');
  const secretEl = page.locator('#secret-box .secret-value');
  await secretEl.waitFor({ timeout: TIMEOUT });
  const secret = (await secretEl.textContent()).trim();
  assert.match(secret, /^whsec_[A-Za-z0-9+/=]{40,}$/);
  receiver.state.secret = secret;
  const row = page.locator('#wh-subs tr[data-subscription]');
  await row.waitFor();
  assert.match(await row.textContent(), /browser receiver/);
  assert.match(await row.textContent(), /conversation\.created, key\.revoked/);
  await screenshot(page, 'console-webhook-created');

  // Gone after navigating away and back.
  await page.click('nav a[data-page=overview]');
  await page.waitForSelector('#main[data-page=overview]');
  await page.click('nav a[data-page=webhooks]');
  await page.waitForSelector('#main[data-page=webhooks] tr[data-subscription]');
  assert.equal(await page.locator('#secret-box .secret-value').count(), 0);
  assert.equal((await page.content()).includes(secret), false, 'secret gone after navigation');
  const subs = await page.evaluate(() => fetch('/admin/api/webhooks/subscriptions').then((r) => r.json()));
  assert.equal(JSON.stringify(subs).includes(secret), false, 'the API never shows it again');

  // Send a test event: it reaches the receiver, correctly signed, and shows up as delivered.
  await page.click('#wh-subs tr[data-subscription] button.wh-test');
  const test = await until('the test event', () => receiver.hits.find((h) => h.body.type === 'webhook.test'));
  assert.equal(test.valid, true, 'valid Standard Webhooks signature');
  assert.match(test.id, /^evt_/);
  const delivered = page.locator(`#wh-deliveries tr[data-event="${test.id}"][data-status=delivered]`);
  await delivered.waitFor({ timeout: TIMEOUT });
  assert.match(await delivered.textContent(), /webhook\.test/);
  assert.match(await delivered.textContent(), /204/);

  // Its attempts.
  await delivered.locator('button.wh-attempts').click();
  const attempts = page.locator(`#wh-deliveries tr.attempts`);
  await attempts.waitFor();
  assert.match(await attempts.textContent(), /204/);
  await screenshot(page, 'console-webhook-delivery');

  // Redeliver: the receiver gets the same event id again.
  await delivered.locator('button.wh-redeliver').click();
  await until('the redelivery', () => receiver.hits.filter((h) => h.id === test.id).length === 2);
  assert.ok(receiver.hits.every((h) => h.valid));
  await page.waitForFunction(
    (id) => document.querySelector(`#wh-deliveries tr[data-event="${id}"][data-status=delivered] td.num`)?.textContent === '2',
    test.id,
    { timeout: TIMEOUT },
  );

  // Disable: the row says so.
  await page.click('#wh-subs tr[data-subscription] button.wh-toggle');
  await page.waitForSelector('#wh-subs tr[data-subscription].muted');

  // Delete: gone with its log.
  await page.click('#wh-subs tr[data-subscription] button.danger');
  await page.waitForSelector('#wh-subs .empty');
  await page.waitForSelector('#wh-deliveries .empty');
  // The one expected problem: the browser logs the 400 of the bad input above.
  const problems = p.problems.filter((x) => !/status of 400/.test(x));
  assert.deepEqual(problems, [], 'no console errors, CSP violations, page errors or dialogs');
});
