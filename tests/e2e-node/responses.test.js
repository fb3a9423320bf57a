// The official OpenAI Node SDK's Responses API and function calling against moltbot (bridged onto the
// fake Chat Completions upstream; its echo script calls a tool when told `call NAME {json}`).
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

const weather = {
  type: 'function',
  name: 'get_weather',
  description: 'Current weather for a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false },
  strict: true,
};

test('responses.create, retrieve, input items, delete', async () => {
  const r = await client.responses.create({ model: 'default', input: 'hello node responses' });
  assert.equal(r.status, 'completed');
  assert.equal(r.output_text, 'echo: hello node responses');
  assert.ok(r.usage.total_tokens > 0);
  const again = await client.responses.retrieve(r.id);
  assert.equal(again.output_text, r.output_text);
  const items = [];
  for await (const i of client.responses.inputItems.list(r.id)) items.push(i);
  assert.deepEqual(items.map((i) => i.content[0].text), ['hello node responses']);
  await client.responses.delete(r.id);
  await assert.rejects(client.responses.retrieve(r.id), (e) => e instanceof OpenAI.NotFoundError);
});

test('responses.create with stream: true', async () => {
  const stream = await client.responses.create({ model: 'default', input: 'stream node', stream: true });
  const events = [];
  for await (const e of stream) events.push(e);
  assert.equal(events[0].type, 'response.created');
  assert.equal(events.at(-1).type, 'response.completed');
  assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
  const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
  assert.equal(text, 'echo: stream node');
});

test('responses.stream helper and previous_response_id', async () => {
  const first = await client.responses.create({ model: 'default', input: 'I live in Lyon.' });
  const stream = client.responses.stream({ model: 'default', input: 'Where do I live?', previous_response_id: first.id });
  let deltas = '';
  stream.on('response.output_text.delta', (e) => { deltas += e.delta; });
  const final = await stream.finalResponse();
  assert.equal(deltas, 'echo: Where do I live?');
  // finalResponse() carries no output_text helper in the Node SDK (as against OpenAI): read the items.
  assert.equal(final.output[0].content[0].text, 'echo: Where do I live?');
  assert.equal(final.previous_response_id, first.id);
  // The upstream received 3 messages (the fake reports prompt_tokens = messages received).
  assert.equal(final.usage.input_tokens, 3);
});

test('responses with a conversation', async () => {
  const conv = await client.conversations.create({ items: [{ type: 'message', role: 'user', content: 'Remember 42.' }] });
  const r = await client.responses.create({ model: 'default', input: 'What number?', conversation: conv.id });
  assert.equal(r.usage.input_tokens, 2);
  const items = [];
  for await (const i of client.conversations.items.list(conv.id, { order: 'asc' })) items.push(i);
  assert.deepEqual(items.map((i) => i.content[0].text), ['Remember 42.', 'What number?', 'echo: What number?']);
});

test('function calling through responses', async () => {
  const first = await client.responses.create({ model: 'default', input: 'call get_weather {"city":"Kyoto"}', tools: [weather] });
  const call = first.output.find((o) => o.type === 'function_call');
  assert.equal(call.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.arguments), { city: 'Kyoto' });
  const second = await client.responses.create({
    model: 'default',
    previous_response_id: first.id,
    tools: [weather],
    input: [{ type: 'function_call_output', call_id: call.call_id, output: '25C' }],
  });
  assert.equal(second.output_text, 'echo: tool result: 25C');
});

test('function calling through chat completions, streamed', async () => {
  const tools = [{ type: 'function', function: { name: weather.name, description: weather.description, parameters: weather.parameters } }];
  const stream = client.chat.completions.stream({
    model: 'default',
    messages: [{ role: 'user', content: 'call get_weather {"city":"Lima"}' }],
    tools,
  });
  const final = await stream.finalChatCompletion();
  const call = final.choices[0].message.tool_calls[0];
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Lima' });
});

test('bad responses input is a BadRequestError naming the field', async () => {
  await assert.rejects(
    client.responses.create({ model: 'default', input: [{ type: 'unknown_thing' }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'input[0].type',
  );
  await assert.rejects(
    client.responses.create({ model: 'default', input: 'x', previous_response_id: 'resp_nope' }),
    (e) => e instanceof OpenAI.NotFoundError && e.param === 'previous_response_id',
  );
});
