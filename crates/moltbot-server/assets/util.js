// Small DOM and formatting helpers shared by the console and WebChat. Text always goes in through
// text nodes: nothing here parses HTML.
import { t } from './i18n.js';

/** createElement with attributes, event handlers (`onclick: fn`) and children (strings become text). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = Boolean(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.append(c);
    else el.append(document.createTextNode(String(c)));
  }
}

/** An element whose text is the dictionary entry `key` (re-translated when the language changes). */
export function tx(tag, key, attrs = {}) {
  const el = h(tag, attrs);
  el.dataset.i18n = key;
  el.textContent = t(key);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** Copies text to the clipboard; resolves to true on success. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h('textarea', { class: 'offscreen', readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

/** A "Copy" button that copies `get()` and briefly says "Copied". */
export function copyButton(get, cls = 'copy') {
  const btn = h('button', { type: 'button', class: cls, 'data-role': 'copy' });
  btn.textContent = t('copy');
  btn.addEventListener('click', async () => {
    const ok = await copyText(get());
    btn.textContent = ok ? t('copied') : t('copy_failed');
    setTimeout(() => {
      btn.textContent = t('copy');
    }, 1500);
  });
  return btn;
}

/** Error message of an OpenAI-style error envelope, or the status line. */
export async function errorMessage(resp) {
  try {
    const body = await resp.json();
    if (body?.error?.message) return body.error.message;
  } catch {
    // not JSON
  }
  return `${resp.status} ${resp.statusText}`;
}

export class HttpError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Throws HttpError for non-2xx responses; returns the parsed JSON body (or null when empty). */
export async function jsonOrThrow(resp) {
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    let code = null;
    try {
      const body = await resp.json();
      if (body?.error?.message) message = body.error.message;
      code = body?.error?.code ?? null;
    } catch {
      // not JSON
    }
    throw new HttpError(resp.status, message, code);
  }
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export function fmtNumber(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function fmtPercent(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  return `${(x * 100).toFixed(x < 0.01 && x > 0 ? 2 : 1)}%`;
}

export function fmtMs(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  return `${Math.round(x)} ms`;
}

/** Unix seconds → local date and time; '—' for null. */
export function fmtTime(unix) {
  if (!unix) return '—';
  return new Date(unix * 1000).toLocaleString();
}

/** 'YYYY-MM-DD' (a date input's value) → unix seconds at local midnight; null when empty. */
export function dateToUnix(value, endOfDay = false) {
  if (!value) return null;
  const d = new Date(`${value}T00:00:00`);
  if (Number.isNaN(d.getTime())) return null;
  return Math.floor(d.getTime() / 1000) + (endOfDay ? 86399 : 0);
}

export function unixToDate(unix) {
  if (!unix) return '';
  const d = new Date(unix * 1000);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** A random id for client-side correlation. */
export function randomId(prefix) {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
