// The admin console: sign-in with an admin API key (the server answers with an HttpOnly session
// cookie and a CSRF token; the token lives in memory only and is fetched again from
// GET /admin/api/session after a reload), then hash-routed pages over /admin/api.
import { t, getLang, setLang, LANGS, translatePage, onLangChange } from './i18n.js';
import {
  h,
  tx,
  clear,
  copyButton,
  jsonOrThrow,
  HttpError,
  fmtNumber,
  fmtPercent,
  fmtMs,
  fmtTime,
  dateToUnix,
  unixToDate,
} from './util.js';
import { renderMarkdown } from './markdown.js';
import { lineChart, barChart } from './charts.js';

const API = '/admin/api';
const SCOPES = ['chat', 'conversations', 'admin', 'metrics'];
const REFRESH_MS = 5000;

let session = null; // {csrf_token, expires_at, key:{id,name}}
let timer = null; // the current page's refresh timer
let generation = 0; // bumps on every navigation so late answers of a left page are dropped

const main = () => document.getElementById('main');

/** fetch against the admin API with the session cookie; state-changing calls carry the CSRF token. */
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && session?.csrf_token) headers['X-CSRF-Token'] = session.csrf_token;
  const resp = await fetch(API + path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401 && path !== '/session') {
    session = null;
    showSignIn(t('session_expired'));
    throw new HttpError(401, t('session_expired'), 'unauthorized');
  }
  return jsonOrThrow(resp);
}

function notice(message, kind = 'error') {
  const box = document.getElementById('notice');
  clear(box);
  if (!message) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.className = `notice ${kind}`;
  box.append(h('span', { text: message }), h('button', { type: 'button', class: 'link', onclick: () => notice(null) }, '×'));
}

function failed(e) {
  if (e instanceof HttpError && e.status === 401) return;
  notice(`${t('error')}: ${e.message}`);
}

// ---- sign-in ---------------------------------------------------------------------------------

function showSignIn(message) {
  stopTimer();
  document.getElementById('app').hidden = true;
  const box = document.getElementById('signin');
  box.hidden = false;
  const err = document.getElementById('signin-error');
  err.textContent = message ?? '';
  err.hidden = !message;
  document.getElementById('signin-key').focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const input = document.getElementById('signin-key');
  const err = document.getElementById('signin-error');
  err.hidden = true;
  try {
    const resp = await fetch(`${API}/session`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      credentials: 'same-origin',
      body: JSON.stringify({ api_key: input.value.trim() }),
    });
    session = await jsonOrThrow(resp);
  } catch (e) {
    err.textContent =
      e.status === 401 ? t('signin_wrong_key') : e.status === 403 ? t('signin_not_admin') : e.message;
    err.hidden = false;
    return;
  }
  input.value = '';
  enterApp();
}

async function signOut() {
  try {
    await api('DELETE', '/session');
  } catch {
    // the cookie may already be gone
  }
  session = null;
  location.hash = '';
  showSignIn();
}

function enterApp() {
  document.getElementById('signin').hidden = true;
  document.getElementById('app').hidden = false;
  document.getElementById('whoami').textContent = session?.key?.name ?? '';
  route();
}

// ---- routing ---------------------------------------------------------------------------------

const PAGES = {
  overview: overviewPage,
  keys: keysPage,
  conversations: conversationsPage,
  usage: usagePage,
  backends: backendsPage,
  webhooks: webhooksPage,
  settings: settingsPage,
};

function stopTimer() {
  if (timer) clearInterval(timer);
  timer = null;
}

function route() {
  if (!session) return;
  stopTimer();
  notice(null);
  generation += 1;
  const [name = 'overview', ...rest] = location.hash.replace(/^#\/?/, '').split('?')[0].split('/');
  const page = PAGES[name] ? name : 'overview';
  for (const a of document.querySelectorAll('nav a[data-page]')) {
    a.classList.toggle('active', a.dataset.page === page);
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = clear(main());
  view.dataset.page = page;
  PAGES[page](view, rest.map(decodeURIComponent), generation).catch(failed);
}

const current = (gen) => gen === generation;

function heading(key) {
  return tx('h1', key);
}

function table(headKeys, rows, { empty = 'empty_list' } = {}) {
  if (rows.length === 0) return tx('p', empty, { class: 'empty' });
  return h(
    'div',
    { class: 'table-wrap' },
    h('table', {}, h('thead', {}, h('tr', {}, headKeys.map((k) => tx('th', k)))), h('tbody', {}, rows)),
  );
}

function statusBadge(ok, yes, no) {
  return h('span', { class: `badge ${ok ? 'ok' : 'bad'}` }, t(ok ? yes : no));
}

// ---- overview --------------------------------------------------------------------------------

async function overviewPage(view, _args, gen) {
  const cards = h('div', { class: 'cards' });
  const charts = h('div', { class: 'charts' });
  const backends = h('div');
  view.append(heading('nav_overview'), tx('p', 'overview_hint', { class: 'hint' }), cards, charts, backends);
  const load = async () => {
    const o = await api('GET', '/overview');
    if (!current(gen)) return;
    const tot = o.totals ?? {};
    clear(cards).append(
      card('m_rps', fmtNumber(tot.requests_per_second, 2)),
      card('m_error_rate', fmtPercent(tot.error_rate)),
      card('m_p50', fmtMs(tot.p50_ms)),
      card('m_p95', fmtMs(tot.p95_ms)),
      card('m_tps', fmtNumber(tot.tokens_per_second, 1)),
      card('m_streams', fmtNumber(tot.active_streams)),
    );
    const s = o.series ?? [];
    const step = o.interval_seconds || 10;
    const pts = (f) => s.map((b) => ({ t: b.t, v: f(b) }));
    clear(charts).append(
      lineChart(pts((b) => b.requests / step), { title: t('m_rps'), format: (v) => fmtNumber(v, 2) }),
      lineChart(pts((b) => (b.requests ? b.errors / b.requests : 0)), { title: t('m_error_rate'), format: fmtPercent }),
      lineChart(pts((b) => b.p95_ms ?? 0), { title: t('m_p95'), format: fmtMs }),
      lineChart(pts((b) => b.tokens / step), { title: t('m_tps'), format: (v) => fmtNumber(v, 1) }),
    );
    clear(backends).append(
      tx('h2', 'backend_health'),
      table(
        ['col_name', 'col_kind', 'col_health', 'col_circuit'],
        (o.backends ?? []).map((b) =>
          h(
            'tr',
            {},
            h('td', {}, b.name),
            h('td', {}, b.kind),
            h('td', {}, statusBadge(b.healthy, 'healthy', 'unhealthy')),
            h('td', {}, circuit(b.circuit)),
          ),
        ),
        { empty: 'no_backends' },
      ),
    );
  };
  await load();
  if (current(gen)) timer = setInterval(() => load().catch(failed), REFRESH_MS);
}

function card(key, value) {
  return h('div', { class: 'card' }, tx('div', key, { class: 'card-label' }), h('div', { class: 'card-value' }, value));
}

function circuit(state) {
  const cls = state === 'closed' ? 'ok' : state === 'open' ? 'bad' : 'warn';
  return h('span', { class: `badge ${cls}` }, t(`circuit_${state}`) || state);
}

// ---- API keys --------------------------------------------------------------------------------

function limitInputs(k = {}) {
  const num = (name, key) =>
    h(
      'label',
      {},
      tx('span', key),
      h('input', { type: 'number', min: 1, name, value: k[name] ?? '', placeholder: t('no_limit') }),
    );
  return [
    num('requests_per_minute', 'f_rpm'),
    num('tokens_per_minute', 'f_tpm'),
    num('daily_tokens', 'f_daily'),
    num('concurrent_streams', 'f_streams'),
  ];
}

function scopeBoxes(selected) {
  return h(
    'fieldset',
    { class: 'scopes' },
    tx('legend', 'f_scopes'),
    SCOPES.map((s) =>
      h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'scope', value: s, checked: selected.includes(s) }), s),
    ),
  );
}

function readLimits(form, patch) {
  const out = {};
  for (const name of ['requests_per_minute', 'tokens_per_minute', 'daily_tokens', 'concurrent_streams']) {
    const v = form.elements[name].value.trim();
    if (v) out[name] = Number(v);
    else if (patch) out[name] = null;
  }
  return out;
}

function readScopes(form) {
  return [...form.querySelectorAll('input[name=scope]:checked')].map((i) => i.value);
}

async function keysPage(view, _args, gen) {
  const secretBox = h('div', { id: 'secret-box' });
  const list = h('div');
  const form = h(
    'form',
    { class: 'panel form-grid', id: 'create-key' },
    tx('h2', 'create_key'),
    h('label', {}, tx('span', 'f_name'), h('input', { name: 'name', required: true, maxlength: 100, autocomplete: 'off' })),
    scopeBoxes(['chat', 'conversations']),
    limitInputs(),
    h('label', {}, tx('span', 'f_expires_days'), h('input', { type: 'number', min: 1, name: 'expires_days', placeholder: t('never') })),
    h('div', { class: 'actions' }, tx('button', 'create', { type: 'submit', class: 'primary' })),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { name: form.elements.name.value.trim(), scopes: readScopes(form), ...readLimits(form, false) };
    const days = form.elements.expires_days.value.trim();
    if (days) body.expires_in = Math.round(Number(days) * 86400);
    try {
      const key = await api('POST', '/keys', body);
      form.reset();
      showSecret(secretBox, key);
      await load();
    } catch (e) {
      failed(e);
    }
  });
  view.append(heading('nav_keys'), secretBox, form, list);
  const load = async () => {
    const keys = await api('GET', '/keys');
    if (!current(gen)) return;
    clear(list).append(
      tx('h2', 'key_list'),
      table(
        ['col_name', 'col_prefix', 'col_scopes', 'col_created', 'col_last_used', 'col_expires', 'col_status', 'col_actions'],
        (keys.data ?? []).map((k) => keyRow(k, load)),
      ),
    );
  };
  await load();
}

function showSecret(box, key) {
  // The secret lives only in this DOM node: navigating away or reloading drops it for good.
  clear(box).append(
    h(
      'div',
      { class: 'panel secret', role: 'status' },
      h('strong', {}, t('secret_once', { name: key.name })),
      h('div', { class: 'secret-row' }, h('code', { class: 'secret-value', text: key.secret }), copyButton(() => key.secret)),
      h('button', { type: 'button', class: 'link', onclick: () => clear(box) }, t('dismiss')),
    ),
  );
}

function keyRow(k, reload) {
  const revoked = Boolean(k.revoked_at);
  const expired = k.expires_at && k.expires_at * 1000 < Date.now();
  const status = revoked ? 'revoked' : expired ? 'expired' : 'active';
  const row = h(
    'tr',
    { 'data-key': k.id, class: revoked ? 'muted' : '' },
    h('td', {}, k.name),
    h('td', {}, h('code', {}, `${k.prefix}…`)),
    h('td', {}, k.scopes.join(', ')),
    h('td', {}, fmtTime(k.created_at)),
    h('td', {}, fmtTime(k.last_used_at)),
    h('td', {}, k.expires_at ? fmtTime(k.expires_at) : t('never')),
    h('td', {}, h('span', { class: `badge ${status === 'active' ? 'ok' : 'bad'}` }, t(`key_${status}`))),
    h(
      'td',
      {},
      revoked
        ? null
        : h('div', { class: 'row-actions' }, [
            h('button', { type: 'button', onclick: () => editKey(row, k, reload) }, t('edit')),
            h(
              'button',
              {
                type: 'button',
                class: 'danger',
                onclick: async () => {
                  if (!confirm(t('confirm_revoke', { name: k.name }))) return;
                  try {
                    await api('DELETE', `/keys/${encodeURIComponent(k.id)}`);
                    await reload();
                  } catch (e) {
                    failed(e);
                  }
                },
              },
              t('revoke'),
            ),
          ]),
    ),
  );
  return row;
}

function editKey(row, k, reload) {
  const form = h(
    'form',
    { class: 'form-grid inline-edit' },
    scopeBoxes(k.scopes),
    limitInputs(k),
    h('label', {}, tx('span', 'f_expires_at'), h('input', { type: 'date', name: 'expires_at', value: unixToDate(k.expires_at) })),
    h(
      'div',
      { class: 'actions' },
      tx('button', 'save', { type: 'submit', class: 'primary' }),
      h('button', { type: 'button', onclick: () => reload().catch(failed) }, t('cancel')),
    ),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { scopes: readScopes(form), ...readLimits(form, true) };
    body.expires_at = dateToUnix(form.elements.expires_at.value, true);
    try {
      await api('PATCH', `/keys/${encodeURIComponent(k.id)}`, body);
      await reload();
    } catch (e) {
      failed(e);
    }
  });
  const cell = h('td', { colspan: 8 }, form);
  row.replaceWith(h('tr', { class: 'editing' }, cell));
}

// ---- conversations ---------------------------------------------------------------------------

async function conversationsPage(view, args, gen) {
  if (args[0]) return transcriptPage(view, args[0], gen);
  const params = new URLSearchParams(location.hash.split('?')[1] ?? '');
  const form = h(
    'form',
    { class: 'panel form-row', id: 'conv-search' },
    h('label', {}, tx('span', 'f_search_text'), h('input', { type: 'search', name: 'q', value: params.get('q') ?? '' })),
    h('label', {}, tx('span', 'f_key_id'), h('input', { name: 'key_id', value: params.get('key_id') ?? '' })),
    h('label', {}, tx('span', 'f_model'), h('input', { name: 'model', value: params.get('model') ?? '' })),
    h('label', {}, tx('span', 'f_since'), h('input', { type: 'date', name: 'since' })),
    h('label', {}, tx('span', 'f_until'), h('input', { type: 'date', name: 'until' })),
    h('div', { class: 'actions' }, tx('button', 'search', { type: 'submit', class: 'primary' })),
  );
  const results = h('div');
  let after = null;
  const search = async (more) => {
    const q = new URLSearchParams({ limit: '50' });
    for (const name of ['q', 'key_id', 'model']) {
      const v = form.elements[name].value.trim();
      if (v) q.set(name, v);
    }
    const since = dateToUnix(form.elements.since.value);
    const until = dateToUnix(form.elements.until.value, true);
    if (since) q.set('since', since);
    if (until) q.set('until', until);
    if (more && after) q.set('after', after);
    const list = await api('GET', `/conversations?${q}`);
    if (!current(gen)) return;
    after = list.last_id;
    const rows = (list.data ?? []).map((c) =>
      h(
        'tr',
        { 'data-conv': c.id },
        h('td', {}, h('a', { href: `#/conversations/${encodeURIComponent(c.id)}` }, c.title || t('untitled'))),
        h('td', {}, c.key_name || c.owner || '—'),
        h('td', {}, (c.models ?? []).join(', ')),
        h('td', { class: 'num' }, fmtNumber(c.message_count)),
        h('td', {}, fmtTime(c.updated_at)),
      ),
    );
    if (!more) clear(results);
    const tbl = results.querySelector('tbody');
    if (more && tbl) tbl.append(...rows);
    else
      results.append(
        table(['col_title', 'col_key', 'col_models', 'col_messages', 'col_updated'], rows, { empty: 'no_conversations' }),
      );
    results.querySelector('.more')?.remove();
    if (list.has_more) {
      results.append(h('button', { type: 'button', class: 'more', onclick: () => search(true).catch(failed) }, t('load_more')));
    }
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    search(false).catch(failed);
  });
  view.append(heading('nav_conversations'), form, results);
  await search(false);
}

async function transcriptPage(view, id, gen) {
  const c = await api('GET', `/conversations/${encodeURIComponent(id)}`);
  if (!current(gen)) return;
  const base = `${API}/conversations/${encodeURIComponent(id)}/export`;
  view.append(
    h('p', {}, h('a', { href: '#/conversations' }, `← ${t('back')}`)),
    h('h1', {}, c.title || t('untitled')),
    h(
      'p',
      { class: 'meta' },
      `${c.id} · ${c.key_name || c.owner || ''} · ${(c.models ?? []).join(', ')} · ${fmtTime(c.created_at)}`,
    ),
    h(
      'div',
      { class: 'actions' },
      h('a', { class: 'button', href: `${base}?format=json`, download: `${c.id}.json`, id: 'export-json' }, t('export_json')),
      h('a', { class: 'button', href: `${base}?format=markdown`, download: `${c.id}.md`, id: 'export-md' }, t('export_md')),
      h(
        'button',
        {
          type: 'button',
          class: 'danger',
          onclick: async () => {
            if (!confirm(t('confirm_delete_conv'))) return;
            try {
              await api('DELETE', `/conversations/${encodeURIComponent(id)}`);
              location.hash = '#/conversations';
            } catch (e) {
              failed(e);
            }
          },
        },
        t('delete'),
      ),
    ),
    memoryNote(c.messages ?? []),
    h('div', { class: 'transcript' }, (c.messages ?? []).map(transcriptMessage)),
  );
}

/** The summary in force (conversation memory), if any: how many messages it stands for. */
function memoryNote(messages) {
  const active = messages.filter((m) => m.compaction && !m.compacted_by).pop();
  if (!active) return null;
  return h('p', { class: 'memory-note', id: 'memory-note' }, t('memory_note', { n: active.compaction.message_count }));
}

function transcriptMessage(m) {
  const summary = m.compaction;
  const classes = ['msg', m.role, summary ? 'summary' : '', m.compacted_by ? 'compacted' : ''].filter(Boolean);
  return h(
    'article',
    { class: classes.join(' '), 'data-id': m.id },
    h(
      'header',
      {},
      h('strong', {}, summary ? t('memory_summary') : m.role),
      ' ',
      m.compacted_by ? h('span', { class: 'badge warn' }, t('memory_compacted')) : null,
      m.compacted_by ? ' ' : null,
      h('span', { class: 'meta' }, [m.model, fmtTime(m.created_at), m.finish_reason].filter(Boolean).join(' · ')),
      m.completion_tokens != null ? h('span', { class: 'meta' }, ` · ${m.prompt_tokens ?? 0}+${m.completion_tokens} tok`) : null,
    ),
    summary
      ? h(
          'p',
          { class: 'meta compaction' },
          t('memory_compacted_n', { n: summary.message_count, model: summary.model, trigger: summary.trigger }),
        )
      : null,
    h('div', { class: 'md' }, renderMarkdown(m.content ?? '')),
  );
}

// ---- usage -----------------------------------------------------------------------------------

async function usagePage(view, _args, gen) {
  const form = h(
    'form',
    { class: 'panel form-row' },
    h(
      'label',
      {},
      tx('span', 'f_group_by'),
      h('select', { name: 'group_by' }, ['day', 'key', 'model'].map((g) => h('option', { value: g }, t(`group_${g}`)))),
    ),
    h('label', {}, tx('span', 'f_since'), h('input', { type: 'date', name: 'since' })),
    h('label', {}, tx('span', 'f_until'), h('input', { type: 'date', name: 'until' })),
    h('div', { class: 'actions' }, tx('button', 'apply', { type: 'submit', class: 'primary' })),
  );
  const csv = h('a', { class: 'button', id: 'usage-csv' }, t('export_csv'));
  const out = h('div');
  const query = () => {
    const q = new URLSearchParams({ group_by: form.elements.group_by.value });
    const since = dateToUnix(form.elements.since.value);
    const until = dateToUnix(form.elements.until.value, true);
    if (since) q.set('since', since);
    if (until) q.set('until', until);
    return q;
  };
  const load = async () => {
    const q = query();
    const u = await api('GET', `/usage?${q}`);
    if (!current(gen)) return;
    q.set('format', 'csv');
    csv.href = `${API}/usage?${q}`;
    csv.setAttribute('download', `usage-${u.group_by}.csv`);
    const rows = u.data ?? [];
    const label = (r) => (u.group_by === 'key' && r.key_name ? `${r.key_name} (${r.group})` : r.group);
    clear(out).append(
      barChart(
        rows.map((r) => ({ label: label(r), value: r.total_tokens })),
        { title: t('total_tokens'), format: (v) => fmtNumber(v) },
      ),
      table(
        ['col_group', 'col_requests', 'col_errors', 'col_prompt_tokens', 'col_completion_tokens', 'col_total_tokens'],
        rows.map((r) =>
          h(
            'tr',
            {},
            h('td', {}, label(r)),
            ...[r.requests, r.errors, r.prompt_tokens, r.completion_tokens, r.total_tokens].map((n) =>
              h('td', { class: 'num' }, fmtNumber(n)),
            ),
          ),
        ),
        { empty: 'no_usage' },
      ),
    );
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    load().catch(failed);
  });
  form.elements.group_by.addEventListener('change', () => load().catch(failed));
  view.append(heading('nav_usage'), form, h('div', { class: 'actions' }, csv), out);
  await load();
}

// ---- backends --------------------------------------------------------------------------------

async function backendsPage(view, _args, gen) {
  const list = h('div');
  view.append(heading('nav_backends'), list);
  const load = async () => {
    const b = await api('GET', '/backends');
    if (!current(gen)) return;
    const open = new Set([...list.querySelectorAll('.test-result:not(:empty)')].map((e) => e.dataset.backend));
    if (open.size) return; // keep a shown test result instead of redrawing over it
    clear(list).append(...(b.data ?? []).map(backendPanel));
    if ((b.data ?? []).length === 0) list.append(tx('p', 'no_backends', { class: 'empty' }));
  };
  await load();
  if (current(gen)) timer = setInterval(() => load().catch(failed), REFRESH_MS);
}

function backendPanel(b) {
  const prompt = h('input', { name: 'prompt', value: 'Say hello.', 'aria-label': t('test_prompt') });
  const result = h('div', { class: 'test-result', 'data-backend': b.name });
  const test = async (ev) => {
    ev.preventDefault();
    clear(result).append(h('span', { class: 'meta' }, t('testing')));
    try {
      const r = await api('POST', `/backends/${encodeURIComponent(b.name)}/test`, { prompt: prompt.value });
      clear(result).append(
        statusBadge(r.ok, 'ok', 'failed'),
        h('span', { class: 'meta' }, ` ${fmtMs(r.latency_ms)} `),
        r.ok ? h('div', { class: 'md' }, renderMarkdown(r.reply ?? '')) : h('div', { class: 'error-text' }, r.error ?? ''),
      );
    } catch (e) {
      clear(result).append(h('div', { class: 'error-text' }, e.message));
    }
  };
  const form = h('form', { class: 'form-row' }, prompt, tx('button', 'test_prompt', { type: 'submit' }));
  form.addEventListener('submit', test);
  return h(
    'section',
    { class: 'panel backend', 'data-backend': b.name },
    h('h2', {}, b.name, ' ', h('span', { class: 'meta' }, b.kind)),
    h(
      'dl',
      { class: 'facts' },
      tx('dt', 'col_models'),
      h('dd', {}, (b.models ?? []).join(', ') || '—'),
      tx('dt', 'col_health'),
      h('dd', {}, statusBadge(b.healthy, 'healthy', 'unhealthy')),
      tx('dt', 'col_circuit'),
      h('dd', {}, circuit(b.circuit)),
      tx('dt', 'col_requests'),
      h('dd', {}, `${fmtNumber(b.requests)} / ${t('col_errors')} ${fmtNumber(b.errors)}`),
      tx('dt', 'col_latency'),
      h('dd', {}, `p50 ${fmtMs(b.p50_ms)} · p95 ${fmtMs(b.p95_ms)}`),
    ),
    tx('h3', 'recent_errors'),
    (b.recent_errors ?? []).length
      ? h('ul', { class: 'errors' }, b.recent_errors.map((e) => h('li', {}, h('span', { class: 'meta' }, fmtTime(e.at)), ' ', e.message)))
      : tx('p', 'no_errors', { class: 'empty' }),
    form,
    result,
  );
}

// ---- webhooks, settings ----------------------------------------------------------------------

const WEBHOOK_EVENTS = ['conversation.created', 'message.created', 'message.failed', 'key.revoked'];

/** Inbound channels (read-only), outbound event subscriptions and their delivery log. */
async function webhooksPage(view, _args, gen) {
  const channels = h('div', { id: 'wh-channels' });
  const secretBox = h('div', { id: 'secret-box' });
  const subs = h('div', { id: 'wh-subs' });
  const log = h('div', { id: 'wh-deliveries' });
  const load = async () => {
    const [w, s, d] = await Promise.all([
      api('GET', '/webhooks'),
      api('GET', '/webhooks/subscriptions'),
      api('GET', '/webhooks/deliveries?limit=50'),
    ]);
    if (!current(gen)) return;
    clear(channels).append(channelTable(w.data ?? []));
    const byId = Object.fromEntries((s.data ?? []).map((x) => [x.id, x]));
    clear(subs).append(
      table(
        ['col_url', 'col_events', 'col_description', 'col_status', 'col_created', 'col_actions'],
        (s.data ?? []).map((x) => subscriptionRow(x, secretBox, load)),
        { empty: 'wh_no_subscriptions' },
      ),
    );
    // Keep an open attempt log instead of redrawing over it.
    if (log.querySelector('tr.attempts')) return;
    clear(log).append(
      table(
        ['col_event', 'col_url', 'col_status', 'col_attempts', 'col_last_result', 'col_time', 'col_actions'],
        (d.data ?? []).map((x) => deliveryRow(x, byId[x.subscription_id], load)),
        { empty: 'wh_no_deliveries' },
      ),
    );
  };
  const form = subscriptionForm(async (sub) => {
    showSubscriptionSecret(secretBox, sub);
    await load();
  });
  view.append(
    heading('nav_webhooks'),
    tx('h2', 'wh_channels'),
    channels,
    tx('h2', 'wh_subscriptions'),
    tx('p', 'wh_hint', { class: 'hint' }),
    secretBox,
    form,
    subs,
    tx('h2', 'wh_deliveries'),
    log,
  );
  await load();
  if (current(gen)) timer = setInterval(() => load().catch(failed), REFRESH_MS);
}

function channelTable(data) {
  return table(
    ['col_name', 'col_kind', 'col_path', 'col_mode', 'col_status', 'col_last_event', 'col_queue'],
    data.map((x) =>
      h(
        'tr',
        { 'data-channel': x.name },
        h('td', {}, x.name),
        h('td', {}, x.kind),
        h('td', {}, h('code', {}, x.path)),
        h('td', {}, x.mode ?? '—', x.leader ? h('span', { class: 'meta' }, ` (${x.leader})`) : null),
        h('td', {}, x.status),
        h('td', {}, fmtTime(x.last_event_at)),
        h('td', { class: 'num' }, `${fmtNumber(x.queued ?? 0)} / ${fmtNumber(x.done ?? 0)} / ${fmtNumber(x.failed ?? 0)}`),
      ),
    ),
    { empty: 'no_webhooks' },
  );
}

function subscriptionForm(created) {
  const form = h(
    'form',
    { class: 'panel form-grid', id: 'create-subscription' },
    tx('h2', 'wh_create'),
    h('label', {}, tx('span', 'f_url'), h('input', { type: 'url', name: 'url', required: true, placeholder: 'https://example.com/moltbot-events', autocomplete: 'off' })),
    h(
      'fieldset',
      { class: 'scopes' },
      tx('legend', 'f_events'),
      WEBHOOK_EVENTS.map((e) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'event', value: e, checked: true }), e)),
    ),
    h('label', {}, tx('span', 'f_description'), h('input', { name: 'description', maxlength: 500, autocomplete: 'off' })),
    h('div', { class: 'actions' }, tx('button', 'create', { type: 'submit', class: 'primary' })),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = {
      url: form.elements.url.value.trim(),
      events: [...form.querySelectorAll('input[name=event]:checked')].map((i) => i.value),
      description: form.elements.description.value.trim(),
    };
    try {
      const sub = await api('POST', '/webhooks/subscriptions', body);
      form.reset();
      await created(sub);
    } catch (e) {
      failed(e);
    }
  });
  return form;
}

function showSubscriptionSecret(box, sub) {
  // Like a new API key's secret: only in this DOM node, gone after navigating away or a reload.
  clear(box).append(
    h(
      'div',
      { class: 'panel secret', role: 'status' },
      h('strong', {}, t('wh_secret_once', { url: sub.url })),
      h('div', { class: 'secret-row' }, h('code', { class: 'secret-value', text: sub.secret }), copyButton(() => sub.secret)),
      h('button', { type: 'button', class: 'link', onclick: () => clear(box) }, t('dismiss')),
    ),
  );
}

function subscriptionRow(x, secretBox, reload) {
  const act = (label, handler, cls) =>
    h(
      'button',
      {
        type: 'button',
        class: cls,
        onclick: async () => {
          try {
            await handler();
            await reload();
          } catch (e) {
            failed(e);
          }
        },
      },
      label,
    );
  const path = `/webhooks/subscriptions/${encodeURIComponent(x.id)}`;
  return h(
    'tr',
    { 'data-subscription': x.id, class: x.enabled ? '' : 'muted' },
    h('td', {}, h('code', {}, x.url)),
    h('td', {}, x.events.join(', ')),
    h('td', {}, x.description || '—'),
    h('td', {}, h('span', { class: `badge ${x.enabled ? 'ok' : 'bad'}` }, x.enabled ? t('wh_enabled') : t('wh_disabled'))),
    h('td', {}, fmtTime(x.created_at)),
    h(
      'td',
      {},
      h('div', { class: 'row-actions' }, [
        act(t('wh_send_test'), () => api('POST', `${path}/test`), 'wh-test'),
        x.enabled
          ? act(t('wh_disable'), () => api('PATCH', path, { enabled: false }), 'wh-toggle')
          : act(t('wh_enable'), () => api('PATCH', path, { enabled: true }), 'wh-toggle'),
        act(
          t('wh_rotate'),
          async () => {
            if (!confirm(t('wh_confirm_rotate', { url: x.url }))) return;
            showSubscriptionSecret(secretBox, await api('PATCH', path, { rotate_secret: true }));
          },
          'wh-rotate',
        ),
        act(
          t('delete'),
          async () => {
            if (!confirm(t('wh_confirm_delete', { url: x.url }))) return;
            await api('DELETE', path);
          },
          'danger',
        ),
      ]),
    ),
  );
}

function deliveryStatus(status) {
  const label = { pending: t('wh_pending'), delivered: t('wh_delivered'), dead: t('wh_dead') }[status] ?? status;
  const cls = status === 'delivered' ? 'ok' : status === 'dead' ? 'bad' : 'warn';
  return h('span', { class: `badge ${cls}` }, label);
}

function lastResult(x) {
  if (x.last_status == null && !x.last_error) return '—';
  return [x.last_status ?? t('wh_no_answer'), x.last_error].filter(Boolean).join(' · ');
}

function deliveryRow(x, sub, reload) {
  const row = h(
    'tr',
    { 'data-delivery': x.id, 'data-event': x.event_id, 'data-status': x.status },
    h('td', {}, x.event_type, h('div', { class: 'meta' }, h('code', {}, x.event_id))),
    h('td', {}, sub ? h('code', {}, sub.url) : x.subscription_id),
    h('td', {}, deliveryStatus(x.status)),
    h('td', { class: 'num' }, fmtNumber(x.attempts)),
    h('td', { class: x.status === 'dead' ? 'error-text' : '' }, lastResult(x)),
    h('td', {}, fmtTime(x.delivered_at ?? x.updated_at)),
    h(
      'td',
      {},
      h('div', { class: 'row-actions' }, [
        h('button', { type: 'button', class: 'wh-attempts', onclick: () => toggleAttempts(row, x).catch(failed) }, t('wh_attempts')),
        h(
          'button',
          {
            type: 'button',
            class: 'wh-redeliver',
            onclick: async () => {
              try {
                await api('POST', `/webhooks/deliveries/${encodeURIComponent(x.id)}/redeliver`);
                if (row.nextElementSibling?.classList.contains('attempts')) row.nextElementSibling.remove();
                await reload();
              } catch (e) {
                failed(e);
              }
            },
          },
          t('wh_redeliver'),
        ),
      ]),
    ),
  );
  return row;
}

async function toggleAttempts(row, x) {
  const next = row.nextElementSibling;
  if (next?.classList.contains('attempts')) {
    next.remove();
    return;
  }
  const d = await api('GET', `/webhooks/deliveries/${encodeURIComponent(x.id)}`);
  const detail = table(
    ['col_time', 'col_status_code', 'col_error', 'col_duration'],
    (d.attempt_log ?? []).map((a) =>
      h(
        'tr',
        {},
        h('td', {}, fmtTime(a.attempted_at)),
        h('td', {}, a.status_code ?? t('wh_no_answer')),
        h('td', { class: a.error ? 'error-text' : '' }, a.error ?? '—'),
        h('td', { class: 'num' }, fmtMs(a.duration_ms)),
      ),
    ),
    { empty: 'wh_no_attempts' },
  );
  row.after(h('tr', { class: 'attempts', 'data-attempts-of': x.id }, h('td', { colspan: 7 }, detail)));
}

async function settingsPage(view, _args, gen) {
  const s = await api('GET', '/settings');
  if (!current(gen)) return;
  const json = JSON.stringify(s.config, null, 2);
  view.append(
    heading('nav_settings'),
    h('p', {}, tx('span', 'profile'), ': ', h('strong', {}, s.profile ?? '—')),
    tx('p', 'settings_hint', { class: 'hint' }),
    h('div', { class: 'codeblock' }, h('div', { class: 'codebar' }, h('span', {}, 'config'), copyButton(() => json, 'copy small')), h('pre', {}, h('code', { text: json }))),
  );
}

// ---- boot ------------------------------------------------------------------------------------

function buildLangSelect(select) {
  for (const [code, name] of Object.entries(LANGS)) select.append(h('option', { value: code }, name));
  select.value = getLang();
  select.addEventListener('change', () => setLang(select.value));
}

async function boot() {
  translatePage(document);
  for (const sel of document.querySelectorAll('select.lang')) buildLangSelect(sel);
  onLangChange(() => {
    for (const sel of document.querySelectorAll('select.lang')) sel.value = getLang();
    // Redraw the page in the new language, except while a new key's secret is on screen.
    if (session && !document.querySelector('#secret-box .secret')) route();
  });
  document.getElementById('signin-form').addEventListener('submit', signIn);
  document.getElementById('signout').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  try {
    const resp = await fetch(`${API}/session`, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    session = resp.ok ? await resp.json() : null;
  } catch {
    session = null;
  }
  if (session) enterApp();
  else showSignIn();
}

boot();
