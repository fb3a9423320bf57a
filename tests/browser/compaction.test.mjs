// Conversation memory in the console, in Chromium against the real moltbot binary: a conversation is
// compacted through POST /v1/conversations/{id}/compact, and its transcript shows the summary, how many
// earlier messages it replaced, and those messages marked as compacted.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, launchBrowser, newPage, screenshot } from './harness.js';

const TIMEOUT = 15000;

let stack;
let browser;

before(async () => {
  stack = await startStack();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  stack?.stop();
});

async function api(method, path, body) {
  const resp = await fetch(`${stack.chatUrl}${path}`, {
    method,
    headers: { Authorization: `Bearer ${stack.adminKey}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: resp.status, body: await resp.json() };
}

test('console: a compacted conversation shows its summary and the compacted messages', async () => {
  const turns = ['I am Ada and my locker code is 7319.', 'I prefer tea.', 'Remind me on Friday.', 'What was my code?'];
  const items = [{ role: 'system', content: 'You are a terse assistant.' }];
  for (const text of turns) {
    items.push({ role: 'user', content: text }, { role: 'assistant', content: `noted: ${text}` });
  }
  const conv = await api('POST', '/v1/conversations', { items });
  assert.equal(conv.status, 200, JSON.stringify(conv.body));
  const id = conv.body.id;

  // Nothing to compact when every turn is kept: 400 naming the field.
  const none = await api('POST', `/v1/conversations/${id}/compact`, { model: 'default', keep_recent: 4 });
  assert.equal(none.status, 400);
  assert.equal(none.body.error.param, 'keep_recent');
  // Keep the latest turn: the first three turns (6 messages) become a summary (the echo model's answer).
  const done = await api('POST', `/v1/conversations/${id}/compact`, { model: 'default', keep_recent: 1 });
  assert.equal(done.status, 200, JSON.stringify(done.body));
  assert.equal(done.body.type, 'compaction');
  assert.equal(done.body.compaction.message_count, 6);
  assert.match(done.body.content[0].text, /locker code is 7319/);

  const p = await newPage(browser);
  const { page } = p;
  await page.goto(stack.adminUrl);
  await page.fill('#signin-key', stack.adminKey);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])');
  await page.goto(`${stack.adminUrl}/#/conversations/${id}`);
  const summary = page.locator('.transcript .msg.summary');
  await summary.waitFor({ timeout: TIMEOUT });
  assert.equal(await summary.count(), 1);
  assert.equal(await summary.getAttribute('data-id'), done.body.id);
  const head = await summary.locator('header').textContent();
  assert.match(head, /Summary/);
  assert.match(await summary.locator('.compaction').textContent(), /6 earlier messages compacted into this summary \(default, manual\)/);
  assert.match(await summary.locator('.md').textContent(), /locker code is 7319/);
  assert.match(await page.textContent('#memory-note'), /6 earlier messages were compacted/);

  // The replaced messages are still shown, dimmed and badged; the kept turn and the system prompt are not.
  const compacted = page.locator('.transcript .msg.compacted');
  assert.equal(await compacted.count(), 6);
  for (const badge of await compacted.locator('.badge').all()) assert.equal((await badge.textContent()).trim(), 'compacted');
  const replaced = new Set(done.body.compaction.replaced_item_ids);
  for (const el of await compacted.all()) assert.ok(replaced.has(await el.getAttribute('data-id')));
  const kept = page.locator('.transcript .msg:not(.compacted):not(.summary)');
  const keptText = (await kept.allTextContents()).join('\n');
  assert.match(keptText, /You are a terse assistant/);
  assert.match(keptText, /What was my code\?/);
  await screenshot(page, 'console-compacted-conversation');
  assert.deepEqual(p.problems, []);
  await p.context.close();
});
