// Markdown for model text, safe by construction: the output is built from createElement and text
// nodes only (never innerHTML), so markup in the text stays text. Supported: paragraphs, headings,
// **bold**, *em* / _em_, `code`, fenced code blocks (with a copy button), bullet and numbered lists,
// block quotes, and links whose URL is absolute http:, https: or mailto: (any other link is shown as
// the plain text it was written as). Images are not rendered.
import { copyButton } from './util.js';

const SAFE_PROTOCOLS = new Set(['http:', 'https:', 'mailto:']);

/** The URL as an absolute http(s)/mailto href, or null. */
export function safeHref(raw) {
  let url;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
}

/** Renders `text` into a DocumentFragment. */
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  const lines = String(text ?? '').replace(/\r\n?/g, '\n').split('\n');
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/.exec(line);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence[1])) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence (an unclosed fence runs to the end: a reply still streaming)
      frag.append(codeBlock(body.join('\n'), fence[2]));
      continue;
    }
    if (/^\s*$/.test(line)) {
      i += 1;
      continue;
    }
    const heading = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading) {
      const el = document.createElement(`h${Math.min(6, heading[1].length + 2)}`);
      inline(heading[2], el);
      frag.append(el);
      i += 1;
      continue;
    }
    if (/^\s{0,3}>/.test(line)) {
      const body = [];
      while (i < lines.length && /^\s{0,3}>/.test(lines[i])) {
        body.push(lines[i].replace(/^\s{0,3}>\s?/, ''));
        i += 1;
      }
      const quote = document.createElement('blockquote');
      quote.append(renderMarkdown(body.join('\n')));
      frag.append(quote);
      continue;
    }
    const item = listItem(line);
    if (item) {
      const list = document.createElement(item.ordered ? 'ol' : 'ul');
      if (item.ordered && item.start !== 1) list.start = item.start;
      let current = null;
      while (i < lines.length) {
        const next = listItem(lines[i]);
        if (next && next.ordered === item.ordered) {
          current = document.createElement('li');
          inline(next.text, current);
          list.append(current);
          i += 1;
        } else if (current && /^\s{2,}\S/.test(lines[i])) {
          // a continuation line of the item
          current.append(document.createElement('br'));
          inline(lines[i].trim(), current);
          i += 1;
        } else {
          break;
        }
      }
      frag.append(list);
      continue;
    }
    // A paragraph: consecutive lines up to a blank line or another block.
    const p = document.createElement('p');
    let first = true;
    while (i < lines.length && !/^\s*$/.test(lines[i]) && !startsBlock(lines[i])) {
      if (!first) p.append(document.createElement('br'));
      inline(lines[i], p);
      first = false;
      i += 1;
    }
    frag.append(p);
  }
  return frag;
}

function startsBlock(line) {
  return (
    /^\s{0,3}(`{3,}|~{3,})/.test(line) ||
    /^\s{0,3}#{1,6}\s/.test(line) ||
    /^\s{0,3}>/.test(line) ||
    listItem(line) !== null
  );
}

function listItem(line) {
  let m = /^\s{0,3}[-*+]\s+(.*)$/.exec(line);
  if (m) return { ordered: false, text: m[1] };
  m = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/.exec(line);
  if (m) return { ordered: true, start: Number(m[1]), text: m[2] };
  return null;
}

function codeBlock(source, lang) {
  const wrap = document.createElement('div');
  wrap.className = 'codeblock';
  const bar = document.createElement('div');
  bar.className = 'codebar';
  const label = document.createElement('span');
  label.textContent = lang || '';
  bar.append(label, copyButton(() => source, 'copy small'));
  const pre = document.createElement('pre');
  const code = document.createElement('code');
  code.textContent = source;
  pre.append(code);
  wrap.append(bar, pre);
  return wrap;
}

const LINK = /^\[((?:[^\[\]\\]|\\.)*)\]\(\s*<?([^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)>?(?:\s+"[^"]*")?\s*\)/;
const AUTOLINK = /^(?:https?:\/\/|mailto:)[^\s<>()]*[^\s<>().,;:!?'"]/;

/** Inline spans of `text` appended to `parent`. */
function inline(text, parent) {
  let buf = '';
  const flush = () => {
    if (buf) parent.append(document.createTextNode(buf));
    buf = '';
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    const rest = text.slice(i);
    if (c === '\\' && i + 1 < text.length && /[\\`*_[\]()#+\-.!>~]/.test(text[i + 1])) {
      buf += text[i + 1];
      i += 2;
      continue;
    }
    if (c === '`') {
      const ticks = /^`+/.exec(rest)[0];
      const end = text.indexOf(ticks, i + ticks.length);
      if (end > i) {
        flush();
        const code = document.createElement('code');
        code.textContent = text.slice(i + ticks.length, end).replace(/^ (.+) $/, '$1');
        parent.append(code);
        i = end + ticks.length;
        continue;
      }
      buf += ticks;
      i += ticks.length;
      continue;
    }
    if ((rest.startsWith('**') || rest.startsWith('__')) && rest.length > 4 && !/\s/.test(rest[2])) {
      const mark = rest.slice(0, 2);
      const end = text.indexOf(mark, i + 3);
      if (end > i + 2 && !/\s/.test(text[end - 1])) {
        flush();
        const strong = document.createElement('strong');
        inline(text.slice(i + 2, end), strong);
        parent.append(strong);
        i = end + 2;
        continue;
      }
    }
    if ((c === '*' || c === '_') && rest.length > 2 && !/\s/.test(rest[1]) && rest[1] !== c) {
      const before = i > 0 ? text[i - 1] : ' ';
      if (c === '*' || !/[\p{L}\p{N}]/u.test(before)) {
        let end = text.indexOf(c, i + 1);
        while (end > 0 && text[end + 1] === c) end = text.indexOf(c, end + 2);
        if (end > i + 1 && !/\s/.test(text[end - 1])) {
          flush();
          const em = document.createElement('em');
          inline(text.slice(i + 1, end), em);
          parent.append(em);
          i = end + 1;
          continue;
        }
      }
    }
    if (c === '[') {
      const m = LINK.exec(rest);
      if (m) {
        flush();
        const href = safeHref(m[2]);
        if (href) {
          const a = document.createElement('a');
          a.href = href;
          a.rel = 'noopener noreferrer nofollow';
          a.target = '_blank';
          inline(m[1], a);
          parent.append(a);
        } else {
          parent.append(document.createTextNode(m[0]));
        }
        i += m[0].length;
        continue;
      }
    }
    if ((c === 'h' || c === 'm') && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      const m = AUTOLINK.exec(rest);
      const href = m && safeHref(m[0]);
      if (href) {
        flush();
        const a = document.createElement('a');
        a.href = href;
        a.rel = 'noopener noreferrer nofollow';
        a.target = '_blank';
        a.textContent = m[0];
        parent.append(a);
        i += m[0].length;
        continue;
      }
    }
    buf += c;
    i += 1;
  }
  flush();
}
