// The official OpenAI Node SDK against the moltbot binary and the fake upstream process.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startMoltbot } from './harness.js';

let moltbot;
let client;

before(async () => {
  moltbot = await startMoltbot();
  client = moltbot.client;
});

after(() => moltbot?.stop());

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
