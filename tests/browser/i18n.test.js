// Every UI string key used by the console and WebChat exists in both languages (no browser needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { root } from './harness.js';

const ASSETS = join(root, 'crates', 'moltbot-server', 'assets');

test('the dictionary covers every key in both languages', async () => {
  globalThis.localStorage ??= { getItem: () => null, setItem: () => {} };
  if (!globalThis.navigator) globalThis.navigator = { languages: ['en'] };
  const { DICT } = await import(join(ASSETS, 'i18n.js'));
  const en = Object.keys(DICT.en).sort();
  assert.deepEqual(Object.keys(DICT['zh-CN']).sort(), en, 'en and zh-CN have the same keys');
  const used = new Set();
  const dynamic = [
    'healthy', 'unhealthy', 'ok', 'failed', 'circuit_closed', 'circuit_open', 'circuit_half_open',
    'key_active', 'key_revoked', 'key_expired', 'group_day', 'group_key', 'group_model', 'empty_list',
  ];
  for (const k of dynamic) used.add(k);
  for (const file of readdirSync(ASSETS)) {
    const src = readFileSync(join(ASSETS, file), 'utf8');
    const patterns = [
      /\bt\('([a-z0-9_]+)'/g,
      /\btx\('[a-z0-9]+', '([a-z0-9_]+)'/g,
      /\bheading\('([a-z0-9_]+)'/g,
      /data-i18n(?:-placeholder|-aria)?="([a-z0-9_]+)"/g,
      /'data-i18n': '([a-z0-9_]+)'/g,
      /\bcard\('([a-z0-9_]+)'/g,
      /\bnum\('[a-z_]+', '([a-z0-9_]+)'/g,
      /\bempty: '([a-z0-9_]+)'/g,
      /\[\s*((?:'(?:col|f)_[a-z0-9_]+',?\s*)+)\]/g,
    ];
    for (const re of patterns) {
      for (const m of src.matchAll(re)) {
        for (const k of m[1].match(/[a-z0-9_]+/g)) used.add(k);
      }
    }
  }
  const missing = [...used].filter((k) => !(k in DICT.en));
  assert.deepEqual(missing, [], 'keys used but not in the dictionary');
  const unused = en.filter((k) => !used.has(k));
  assert.deepEqual(unused, [], 'dictionary keys nobody uses');
  assert.equal(DICT['zh-CN'].nav_overview, '概览');
});
