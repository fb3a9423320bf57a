// WebChat: sign in with an API key (kept in sessionStorage, this tab only, never in a URL), pick a
// model, chat with replies streamed over the WebSocket (/v1/ws, one-time ticket), falling back to
// SSE (fetch + ReadableStream on /v1/chat/completions) when the socket cannot be used.
import { t, getLang, setLang, LANGS, translatePage, onLangChange } from './i18n.js';
import { h, clear, copyButton, jsonOrThrow, HttpError, fmtTime, randomId } from './util.js';
import { renderMarkdown } from './markdown.js';

const KEY_STORAGE = 'moltbot.key';
const MODEL_STORAGE = 'moltbot.model';

let apiKey = sessionStorage.getItem(KEY_STORAGE);
let conversation = null; // the open conversation id
let active = null; // the turn being streamed: {id, text, el, body, transport, cancel, state}
let ws = null; // an open WebSocket, reused across turns
let wsBroken = false; // the socket failed before it opened: use SSE from now on
const $ = (id) => document.getElementById(id);

function auth(extra = {}) {
  return { Authorization: `Bearer ${apiKey}`, Accept: 'application/json', ...extra };
}

async function call(method, path, body) {
  const resp = await fetch(path, {
    method,
    headers: auth(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) {
    signOut(t('session_expired'));
    throw new HttpError(401, t('session_expired'), 'invalid_api_key');
  }
  return jsonOrThrow(resp);
}

function notice(message) {
  const box = $('notice');
  clear(box);
  box.hidden = !message;
  if (message) box.append(h('span', { text: message }), h('button', { type: 'button', class: 'link', onclick: () => notice(null) }, '×'));
}

// ---- sign-in ---------------------------------------------------------------------------------

async function signIn(ev) {
  ev.preventDefault();
  const input = $('signin-key');
  const err = $('signin-error');
  err.hidden = true;
  const key = input.value.trim();
  const resp = await fetch('/v1/models', { headers: { Authorization: `Bearer ${key}`, Accept: 'application/json' } }).catch(
    () => null,
  );
  if (!resp || !resp.ok) {
    err.textContent = resp?.status === 401 ? t('signin_wrong_key') : t('signin_failed');
    err.hidden = false;
    return;
  }
  apiKey = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  input.value = '';
  enter(await resp.json());
}

function signOut(message) {
  if (active) stop();
  ws?.close();
  ws = null;
  apiKey = null;
  conversation = null;
  sessionStorage.removeItem(KEY_STORAGE);
  $('app').hidden = true;
  $('signin').hidden = false;
  const err = $('signin-error');
  err.textContent = typeof message === 'string' ? message : '';
  err.hidden = typeof message !== 'string';
}

function enter(models) {
  $('signin').hidden = true;
  $('app').hidden = false;
  const select = clear($('model'));
  const ids = (models?.data ?? []).map((m) => m.id);
  for (const id of ids) select.append(h('option', { value: id }, id));
  const saved = localStorage.getItem(MODEL_STORAGE);
  select.value = ids.includes(saved) ? saved : ids.includes('default') ? 'default' : (ids[0] ?? '');
  newChat();
  loadConversations().catch((e) => notice(e.message));
  $('input').focus();
}

// ---- conversations ---------------------------------------------------------------------------

async function loadConversations() {
  const list = await call('GET', '/v1/conversations?limit=50');
  const ul = clear($('conv-list'));
  for (const c of list.data ?? []) {
    ul.append(
      h(
        'li',
        {},
        h(
          'button',
          {
            type: 'button',
            class: `conv${c.id === conversation ? ' active' : ''}`,
            'data-conv': c.id,
            onclick: () => openConversation(c.id),
          },
          h('span', { class: 'conv-title' }, c.title || t('untitled')),
          h('span', { class: 'meta' }, fmtTime(c.updated_at)),
        ),
      ),
    );
  }
  if (!ul.firstChild) ul.append(h('li', { class: 'empty' }, t('no_conversations')));
}

function markActive() {
  for (const b of document.querySelectorAll('#conv-list .conv')) b.classList.toggle('active', b.dataset.conv === conversation);
}

function newChat() {
  if (active) stop();
  conversation = null;
  clear($('messages')).append(h('p', { id: 'empty', class: 'empty', 'data-i18n': 'chat_empty' }, t('chat_empty')));
  markActive();
  closeSidebar();
}

function partsText(content) {
  if (typeof content === 'string') return content;
  return (content ?? []).map((p) => p.text ?? '').join('');
}

async function openConversation(id) {
  if (active) stop();
  const items = await call('GET', `/v1/conversations/${encodeURIComponent(id)}/items?order=asc&limit=100`);
  conversation = id;
  const box = clear($('messages'));
  for (const item of items.data ?? []) {
    if (item.type && item.type !== 'message') continue;
    if (item.role !== 'user' && item.role !== 'assistant') continue;
    box.append(messageEl(item.role, partsText(item.content), 'done'));
  }
  markActive();
  closeSidebar();
  scrollDown(true);
}

// ---- messages --------------------------------------------------------------------------------

function messageEl(role, text, state) {
  const body = h('div', { class: 'md' });
  const el = h(
    'article',
    { class: `msg ${role}`, 'data-role': role, 'data-state': state },
    body,
    h('footer', {}, h('span', { class: 'status meta' }), copyButton(() => el.dataset.text ?? '', 'copy small')),
  );
  setText(el, text);
  return el;
}

function setText(el, text) {
  el.dataset.text = text;
  const body = el.querySelector('.md');
  clear(body);
  if (el.dataset.role === 'user') body.append(h('p', { class: 'plain' }, text));
  else body.append(renderMarkdown(text));
}

function scrollDown(force) {
  const box = $('messages');
  if (force || box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
}

let frame = 0;
function renderSoon() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    if (active) {
      setText(active.el, active.text);
      scrollDown(false);
    }
  });
}

function setBusy(busy) {
  $('send').hidden = busy;
  $('stop').hidden = !busy;
}

/** Ends the active turn: `stop`, `length`, `cancelled` or `error`. */
function finish(turn, reason, message) {
  if (turn.state !== 'streaming') return;
  turn.state = reason === 'error' ? 'error' : reason === 'cancelled' ? 'cancelled' : 'done';
  if (frame) cancelAnimationFrame(frame);
  frame = 0;
  setText(turn.el, turn.text);
  turn.el.dataset.state = turn.state;
  const status = turn.el.querySelector('.status');
  if (turn.state === 'cancelled') status.textContent = t('stopped');
  else if (reason === 'length') status.textContent = t('truncated');
  else if (turn.state === 'error') {
    status.textContent = '';
    turn.el.querySelector('.md').append(h('p', { class: 'error-text' }, message || t('error')));
  }
  if (active === turn) {
    active = null;
    setBusy(false);
  }
}

// ---- sending ---------------------------------------------------------------------------------

async function send(ev) {
  ev?.preventDefault();
  const input = $('input');
  const text = input.value.trim();
  if (!text || active) return;
  input.value = '';
  $('empty')?.remove();
  const box = $('messages');
  box.append(messageEl('user', text, 'done'));
  const el = messageEl('assistant', '', 'streaming');
  box.append(el);
  scrollDown(true);
  const turn = { id: randomId('c_'), text: '', el, state: 'streaming', started: false, cancel: null };
  active = turn;
  setBusy(true);
  const model = $('model').value;
  localStorage.setItem(MODEL_STORAGE, model);
  try {
    await viaSocket(turn, model, text);
  } catch (e) {
    if (turn.started || turn.state !== 'streaming') {
      finish(turn, 'error', e.message);
      return;
    }
    try {
      await viaSse(turn, model, text);
    } catch (e2) {
      if (e2.name === 'AbortError') finish(turn, 'cancelled');
      else finish(turn, 'error', e2.message);
    }
  }
}

function stop() {
  const turn = active;
  if (!turn) return;
  turn.cancel?.();
  // The server confirms with `done: cancelled`; end it here too if that does not come quickly.
  setTimeout(() => finish(turn, 'cancelled'), 3000);
}

/** An open socket: a one-time ticket from POST /v1/ws/ticket, then the upgrade with it. */
async function openSocket() {
  if (ws && ws.readyState === WebSocket.OPEN) return ws;
  if (wsBroken || typeof WebSocket !== 'function') throw new Error('websocket unavailable');
  const { ticket } = await call('POST', '/v1/ws/ticket');
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws?ticket=${encodeURIComponent(ticket)}`;
  return new Promise((resolve, reject) => {
    let opened = false;
    let socket;
    try {
      socket = new WebSocket(url, 'moltbot.v1');
    } catch (e) {
      wsBroken = true;
      reject(e);
      return;
    }
    const timer = setTimeout(() => {
      if (!opened) {
        wsBroken = true;
        socket.close();
        reject(new Error('websocket timeout'));
      }
    }, 5000);
    socket.addEventListener('open', () => {
      opened = true;
      clearTimeout(timer);
      ws = socket;
      document.body.dataset.transport = 'ws';
      resolve(socket);
    });
    socket.addEventListener('message', (ev) => onFrame(ev.data));
    socket.addEventListener('close', () => {
      clearTimeout(timer);
      if (ws === socket) ws = null;
      if (!opened) {
        wsBroken = true;
        reject(new Error('websocket closed'));
      } else if (active && active.transport === 'ws') {
        finish(active, 'error', t('connection_lost'));
      }
    });
  });
}

async function viaSocket(turn, model, text) {
  const socket = await openSocket();
  turn.transport = 'ws';
  turn.cancel = () => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'cancel', id: turn.id }));
  };
  socket.send(JSON.stringify({ type: 'chat', id: turn.id, model, content: text, conversation }));
}

function onFrame(data) {
  let m;
  try {
    m = JSON.parse(data);
  } catch {
    return;
  }
  const turn = active && m.id === active.id ? active : null;
  switch (m.type) {
    case 'start':
      if (!turn) return;
      turn.started = true;
      if (m.conversation && m.conversation !== conversation) {
        conversation = m.conversation;
        loadConversations().catch(() => {});
      }
      break;
    case 'delta':
      if (!turn) return;
      turn.text += m.content ?? '';
      renderSoon();
      break;
    case 'done':
      if (turn) finish(turn, m.finish_reason ?? 'stop');
      loadConversations().catch(() => {});
      break;
    case 'error':
      if (turn) finish(turn, 'error', m.error?.message);
      else notice(m.error?.message ?? t('error'));
      break;
    default:
      break;
  }
}

/** The SSE fallback. A conversation is created first so the exchange is kept like over the socket. */
async function viaSse(turn, model, text) {
  turn.transport = 'sse';
  document.body.dataset.transport = 'sse';
  const ctrl = new AbortController();
  turn.cancel = () => ctrl.abort();
  if (!conversation) {
    try {
      conversation = (await call('POST', '/v1/conversations', {})).id;
    } catch {
      conversation = null; // a key without the conversations scope still chats, without history
    }
  }
  const body = { model, stream: true, messages: [{ role: 'user', content: text }] };
  if (conversation) body.conversation = conversation;
  const resp = await fetch('/v1/chat/completions', {
    method: 'POST',
    headers: auth({ 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
    body: JSON.stringify(body),
    signal: ctrl.signal,
  });
  if (!resp.ok) await jsonOrThrow(resp);
  turn.started = true;
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let reason = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, '');
      const data = event
        .split(/\r?\n/)
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, ''))
        .join('\n');
      if (!data || data === '[DONE]') continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message ?? t('error'));
      const choice = chunk.choices?.[0];
      if (choice?.delta?.content) {
        turn.text += choice.delta.content;
        renderSoon();
      }
      if (choice?.finish_reason) reason = choice.finish_reason;
    }
  }
  finish(turn, reason ?? 'stop');
  loadConversations().catch(() => {});
}

// ---- layout ----------------------------------------------------------------------------------

function closeSidebar() {
  document.body.classList.remove('sidebar-open');
  $('toggle-sidebar').setAttribute('aria-expanded', 'false');
}

function toggleSidebar() {
  const open = document.body.classList.toggle('sidebar-open');
  $('toggle-sidebar').setAttribute('aria-expanded', String(open));
}

async function boot() {
  translatePage(document);
  for (const sel of document.querySelectorAll('select.lang')) {
    for (const [code, name] of Object.entries(LANGS)) sel.append(h('option', { value: code }, name));
    sel.value = getLang();
    sel.addEventListener('change', () => setLang(sel.value));
  }
  onLangChange(() => {
    for (const sel of document.querySelectorAll('select.lang')) sel.value = getLang();
  });
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', () => signOut());
  $('new-chat').addEventListener('click', newChat);
  $('toggle-sidebar').addEventListener('click', toggleSidebar);
  $('composer').addEventListener('submit', send);
  $('stop').addEventListener('click', stop);
  $('input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) send(ev);
  });
  if (apiKey) {
    try {
      enter(await call('GET', '/v1/models'));
      return;
    } catch (e) {
      if (e.status === 401) return; // call() has shown the sign-in form with a message
    }
  }
  signOut();
}

boot();
