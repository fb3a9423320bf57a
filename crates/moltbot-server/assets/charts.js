// Hand-written SVG charts: a line chart for time series and a bar chart for grouped totals.
const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function text(x, y, value, attrs = {}) {
  const el = svg('text', { x, y, ...attrs });
  el.textContent = value;
  return el;
}

/**
 * A line chart of `points` ([{t, v}], t in unix seconds, oldest first) with the latest value and the
 * maximum as labels. `format` formats a value.
 */
export function lineChart(points, { title, format = String, width = 320, height = 120 } = {}) {
  const pad = { l: 8, r: 8, t: 22, b: 18 };
  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    class: 'chart line',
    role: 'img',
    'aria-label': title ?? '',
  });
  if (title) root.append(text(pad.l, 14, title, { class: 'chart-title' }));
  const values = points.map((p) => (Number.isFinite(p.v) ? p.v : 0));
  const max = Math.max(0, ...values);
  const w = width - pad.l - pad.r;
  const hgt = height - pad.t - pad.b;
  root.append(svg('line', { x1: pad.l, y1: pad.t + hgt, x2: pad.l + w, y2: pad.t + hgt, class: 'axis' }));
  if (points.length === 0) {
    root.append(text(width / 2, pad.t + hgt / 2, '—', { 'text-anchor': 'middle', class: 'chart-empty' }));
    return root;
  }
  const t0 = points[0].t;
  const t1 = points[points.length - 1].t;
  const span = Math.max(1, t1 - t0);
  const x = (t) => pad.l + ((t - t0) / span) * w;
  const y = (v) => pad.t + hgt - (max > 0 ? (v / max) * hgt : 0);
  const d = points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(values[i]).toFixed(1)}`).join(' ');
  const area = `${d} L${x(t1).toFixed(1)},${pad.t + hgt} L${x(t0).toFixed(1)},${pad.t + hgt} Z`;
  root.append(svg('path', { d: area, class: 'area' }), svg('path', { d, class: 'stroke' }));
  root.append(
    text(width - pad.r, 14, `${format(values[values.length - 1])} (max ${format(max)})`, {
      'text-anchor': 'end',
      class: 'chart-value',
    }),
  );
  const clock = (s) => new Date(s * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  root.append(text(pad.l, height - 4, clock(t0), { class: 'chart-axis' }));
  root.append(text(width - pad.r, height - 4, clock(t1), { class: 'chart-axis', 'text-anchor': 'end' }));
  return root;
}

/** A horizontal bar chart of `items` ([{label, value}]). */
export function barChart(items, { title, format = String, width = 640 } = {}) {
  const row = 22;
  const labelW = Math.min(200, width * 0.35);
  const top = title ? 24 : 4;
  const height = top + Math.max(1, items.length) * row + 4;
  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    class: 'chart bar',
    role: 'img',
    'aria-label': title ?? '',
  });
  if (title) root.append(text(4, 15, title, { class: 'chart-title' }));
  if (items.length === 0) {
    root.append(text(width / 2, top + 15, '—', { 'text-anchor': 'middle', class: 'chart-empty' }));
    return root;
  }
  const max = Math.max(1, ...items.map((i) => i.value));
  const barMax = width - labelW - 90;
  items.forEach((item, n) => {
    const y = top + n * row;
    const label = item.label.length > 28 ? `${item.label.slice(0, 27)}…` : item.label;
    root.append(text(labelW - 6, y + 15, label, { 'text-anchor': 'end', class: 'chart-axis' }));
    const bw = Math.max(1, (item.value / max) * barMax);
    root.append(svg('rect', { x: labelW, y: y + 3, width: bw.toFixed(1), height: row - 6, rx: 2, class: 'barfill' }));
    root.append(text(labelW + bw + 6, y + 15, format(item.value), { class: 'chart-value' }));
  });
  return root;
}
