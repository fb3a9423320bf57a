// The official OpenAI Node SDK against the moltbot binary and the fake upstream process.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import OpenAI from 'openai';

const root = resolve(import.meta.dirname, '..', '..');
const BIN = resolve(process.env.MOLTBOT_BIN ?? join(root, 'target', 'debug', 'moltbot'));
const FAKE = resolve(process.env.MOLTBOT_FAKE_UPSTREAM_BIN ?? join(root, 'target', 'debug', 'moltbot-fake-upstream'));

// The bootstrap admin key the fresh database starts with (MOLTBOT_BOOTSTRAP_ADMIN_KEY): the SDK uses it.
const ADMIN_KEY = `mb_node${randomBytes(24).toString('hex')}`;

let fake;
let moltbot;
let client;

async function waitFor(path, child, ms = 30000) {
  const start = Date.now();
  while (!existsSync(path)) {
    if (child.exitCode !== null) throw new Error(`process exited with ${child.exitCode}`);
    if (Date.now() - start > ms) throw new Error(`not ready within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

before(async () => {
  fake = spawn(FAKE, ['--echo', '--chunks', '3'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((res) => createInterface({ input: fake.stdout }).once('line', res));
  const dir = mkdtempSync(join(tmpdir(), 'moltbot-node-'));
  const ready = join(dir, 'ready.json');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MOLTBOT_')));
  Object.assign(env, {
    MODEL_ENDPOINT: url,
    API_KEY: 'sk-node-upstream',
    MODEL_NAME: 'fake-model',
    MOLTBOT_CHAT_ADDR: '127.0.0.1:0',
    MOLTBOT_ADMIN_ADDR: '127.0.0.1:0',
    MOLTBOT_SERVER__SHUTDOWN_DELAY: '50ms',
    MOLTBOT_BOOTSTRAP_ADMIN_KEY: ADMIN_KEY,
  });
  moltbot = spawn(BIN, ['serve', '--ready-file', ready], { cwd: dir, env, stdio: 'ignore' });
  await waitFor(ready, moltbot);
  const { chat_addr } = JSON.parse(readFileSync(ready, 'utf8'));
  // maxRetries: 0 so retries cannot hide errors.
  client = new OpenAI({ baseURL: `http://${chat_addr}/v1`, apiKey: ADMIN_KEY, maxRetries: 0 });
});

after(() => {
  moltbot?.kill('SIGTERM');
  fake?.kill('SIGTERM');
});

test('chat completion', async () => {
  const r = await client.chat.completions.create({ model: 'default', messages: [{ role: 'user', content: 'hi node' }] });
  assert.equal(r.choices[0].message.content, 'echo: hi node');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(r.usage.total_tokens > 0);
});

test('streaming with usage', async () => {
  const stream = await client.chat.completions.create({
    model: 'default',
    messages: [{ role: 'user', content: 'stream node' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  const chunks = [];
  for await (const c of stream) {
    chunks.push(c);
    text += c.choices[0]?.delta?.content ?? '';
  }
  assert.equal(text, 'echo: stream node');
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.deepEqual(chunks.at(-1).choices, []);
  assert.ok(chunks.at(-1).usage.completion_tokens > 0);
});

test('conversations', async () => {
  const conv = await client.conversations.create({ metadata: { sdk: 'node' } });
  await client.chat.completions.create({
    model: 'default',
    messages: [{ role: 'user', content: 'first' }],
    // @ts-ignore: moltbot's extension field
    conversation: conv.id,
  });
  const items = [];
  for await (const item of client.conversations.items.list(conv.id, { order: 'asc' })) items.push(item);
  assert.deepEqual(items.map((i) => i.content[0].text), ['first', 'echo: first']);
  const deleted = await client.conversations.delete(conv.id);
  assert.equal(deleted.deleted, true);
});

test('a wrong key is an AuthenticationError', async () => {
  const stranger = new OpenAI({ baseURL: client.baseURL, apiKey: 'mb_wrong_key', maxRetries: 0 });
  await assert.rejects(
    stranger.chat.completions.create({ model: 'default', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
  );
});

test('errors are SDK exceptions', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found',
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'default', n: 3, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'n',
  );
});
