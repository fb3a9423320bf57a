// Starts the fake upstream process and the moltbot binary the way a user would (env vars, a working
// directory, a ready file) and hands back an official OpenAI client pointed at moltbot.
import { spawn } from 'node:child_process';
import { mkdtempSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import OpenAI from 'openai';

const root = resolve(import.meta.dirname, '..', '..');
export const BIN = resolve(process.env.MOLTBOT_BIN ?? join(root, 'target', 'debug', 'moltbot'));
export const FAKE = resolve(process.env.MOLTBOT_FAKE_UPSTREAM_BIN ?? join(root, 'target', 'debug', 'moltbot-fake-upstream'));

async function waitFor(path, child, ms = 30000) {
  const start = Date.now();
  while (!existsSync(path)) {
    if (child.exitCode !== null) throw new Error(`process exited with ${child.exitCode}`);
    if (Date.now() - start > ms) throw new Error(`not ready within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/// Start both processes; `env` adds moltbot settings. Returns { client, dir, stop }.
export async function startMoltbot({ fakeArgs = ['--echo', '--chunks', '3'], env: extra = {} } = {}) {
  // The bootstrap admin key the fresh database starts with (MOLTBOT_BOOTSTRAP_ADMIN_KEY): the SDK uses it.
  const adminKey = `mb_node${randomBytes(24).toString('hex')}`;
  const fake = spawn(FAKE, fakeArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
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
    MOLTBOT_BOOTSTRAP_ADMIN_KEY: adminKey,
    ...extra,
  });
  const moltbot = spawn(BIN, ['serve', '--ready-file', ready], { cwd: dir, env, stdio: 'ignore' });
  await waitFor(ready, moltbot);
  const { chat_addr } = JSON.parse(readFileSync(ready, 'utf8'));
  // maxRetries: 0 so retries cannot hide errors.
  const client = new OpenAI({ baseURL: `http://${chat_addr}/v1`, apiKey: adminKey, maxRetries: 0 });
  const stop = () => {
    moltbot.kill('SIGTERM');
    fake.kill('SIGTERM');
  };
  return { client, dir, stop };
}
