// `client.embeddings.create` of the official OpenAI Node SDK against moltbot: the remote model over the
// fake upstream, and local GGUF models generated for the test (no download): a tiny embedding model
// (mean pooling in its metadata) and a tiny generative model (no pooling, so no embeddings).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import OpenAI from 'openai';
import { startMoltbot } from './harness.js';

const root = resolve(import.meta.dirname, '..', '..');
const SYNTHETIC_GGUF = resolve(
  process.env.MOLTBOT_SYNTHETIC_GGUF_BIN ?? join(root, 'target', 'debug', 'examples', 'synthetic_gguf'),
);
const LOCAL_CONTEXT = 64;

let moltbot;
let client;

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'moltbot-node-embed-'));
  let toml = '';
  for (const [name, pooling] of [['tiny-embed', ['--pooling', 'mean']], ['tiny-chat', []]]) {
    const path = join(dir, `${name}.gguf`);
    execFileSync(SYNTHETIC_GGUF, [path, ...pooling]);
    toml += `[[models]]\nname = "${name}"\nbackend = "local"\nmodel_path = "${path}"\n`
      + `context_window = ${LOCAL_CONTEXT}\nmax_tokens = 16\nthreads = 1\nparallel = 1\n\n`;
  }
  const config = join(dir, 'moltbot.toml');
  writeFileSync(config, toml);
  moltbot = await startMoltbot({ env: { MOLTBOT_CONFIG: config } });
  client = moltbot.client;
});

after(() => moltbot?.stop());

const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
const f32 = (v) => Array.from(Float32Array.from(v));
const fromBase64 = (text) => {
  const bytes = Buffer.from(text, 'base64');
  return Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
};

test('float embeddings from the remote model', async () => {
  const r = await client.embeddings.create({ model: 'default', input: ['hello world', 'bye'], encoding_format: 'float' });
  assert.equal(r.object, 'list');
  assert.equal(r.model, 'default');
  assert.deepEqual(r.data.map((d) => d.index), [0, 1]);
  const [a, b] = r.data.map((d) => d.embedding);
  assert.equal(a.length, 16);
  assert.ok(Math.abs(norm(a) - 1) < 1e-5);
  assert.notDeepEqual(a, b);
  // The fake upstream counts one token per word.
  assert.equal(r.usage.prompt_tokens, 3);
  assert.equal(r.usage.total_tokens, 3);
});

test('base64: raw, decoded by the SDK, and asked for explicitly', async () => {
  const floats = (await client.embeddings.create({ model: 'default', input: 'same text', encoding_format: 'float' }))
    .data[0].embedding;
  // Without encoding_format the SDK asks for base64 and decodes it itself.
  const raw = await client.embeddings.create({ model: 'default', input: 'same text' }).asResponse();
  const body = await raw.json();
  assert.equal(typeof body.data[0].embedding, 'string');
  assert.deepEqual(fromBase64(body.data[0].embedding), f32(floats));
  const decoded = (await client.embeddings.create({ model: 'default', input: 'same text' })).data[0].embedding;
  assert.ok(Array.isArray(decoded));
  assert.deepEqual(f32(decoded), f32(floats));
  const explicit = await client.embeddings.create({ model: 'default', input: 'same text', encoding_format: 'base64' });
  assert.equal(typeof explicit.data[0].embedding, 'string');
  assert.deepEqual(fromBase64(explicit.data[0].embedding), f32(floats));
  const short = await client.embeddings.create({ model: 'default', input: 'x', dimensions: 4, encoding_format: 'float' });
  assert.equal(short.data[0].embedding.length, 4);
});

test('local embedding model', async () => {
  const r = await client.embeddings.create({ model: 'tiny-embed', input: ['alpha', 'beta', 'alpha'] });
  const v = r.data.map((d) => d.embedding);
  for (const x of v) {
    assert.equal(x.length, 256);
    assert.ok(Math.abs(norm(x) - 1) < 1e-4, `|v| = ${norm(x)}`);
  }
  const diff = (x, y) => Math.max(...x.map((e, i) => Math.abs(e - y[i])));
  assert.ok(diff(v[0], v[2]) < 1e-5);
  assert.ok(diff(v[0], v[1]) > 1e-3);
  assert.ok(r.usage.prompt_tokens > 0);
});

test('bad requests are SDK exceptions naming the field', async () => {
  const cases = [
    [{ model: 'default', input: [] }, 'input'],
    [{ model: 'default', input: '' }, 'input'],
    [{ model: 'default', input: Array(2049).fill('x') }, 'input'],
    [{ model: 'default', input: 'x', encoding_format: 'hex' }, 'encoding_format'],
    [{ model: 'tiny-embed', input: 'x', dimensions: 8 }, 'dimensions'],
    [{ model: 'tiny-chat', input: 'x' }, 'model'],
  ];
  for (const [params, param] of cases) {
    await assert.rejects(
      client.embeddings.create(params),
      (e) => e instanceof OpenAI.BadRequestError && e.param === param,
      JSON.stringify(params).slice(0, 80),
    );
  }
  await assert.rejects(
    client.embeddings.create({ model: 'tiny-embed', input: ['fine', 'word '.repeat(100)] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'input' && e.code === 'context_length_exceeded'
      && e.message.includes(`maximum context length is ${LOCAL_CONTEXT} tokens`),
  );
  await assert.rejects(
    client.embeddings.create({ model: 'nope', input: 'x' }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found',
  );
});
