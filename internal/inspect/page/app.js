// The sluice inspector page: the list of requests, live over /api/events,
// and one request's view (#ID). Plain JavaScript, no build step.
//
// Every value from the API reaches the DOM as text (text nodes and
// attributes, never parsed as markup): a header, a path or a body is data.
'use strict';

const MASK = '••••••';
const HEX_LIMIT = 4096;   // bytes shown of a binary body
const ITEM_ROWS = 2000;   // stream items kept in the view; older rows go

const masked = new Set(document.body.dataset.masked.split(',').map((s) => s.toLowerCase()));

const reqs = new Map();   // id -> Request (record.go), as last seen
const rows = new Map();   // id -> <tr>
let view = null;          // the open request's view, see openView
let listGen = 0;          // which list load is current
let backlog = null;       // events that arrive while the list loads

const $ = (id) => document.getElementById(id);
const rowsBody = $('rows');
const viewBox = $('view');
const filters = { path: $('f-path'), status: $('f-status'), method: $('f-method') };

// el builds an element: props are attributes, except class, on (event
// listeners) and value; children are nodes or strings (made text nodes).
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'on') for (const [type, f] of Object.entries(v)) e.addEventListener(type, f);
    else if (k === 'value') e.value = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c != null && c !== false) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// ---- formatting

function bytes(n) {
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return n.toFixed(n < 10 ? 1 : 0) + ' ' + units[i];
}

function millis(ms) {
  if (ms < 1) return ms.toFixed(2) + ' ms';
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  const s = Math.round(ms / 1000);
  return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
}

// clock is a time of day; withDetail adds milliseconds, and the date when
// it is not today.
function clock(t, withDetail) {
  const d = new Date(t);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  let s = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  if (withDetail) {
    s += '.' + pad(d.getMilliseconds(), 3);
    if (d.toDateString() !== new Date().toDateString()) s = d.toLocaleDateString() + ' ' + s;
  }
  return s;
}

function inFlight(r) { return r.state === 'waiting' || r.state === 'streaming'; }

// duration is the request's duration, counted on here while it lasts.
function duration(r) {
  if (!inFlight(r)) return r.duration_ms;
  return Math.max(r.duration_ms, Date.now() - Date.parse(r.time));
}

function statusClass(r) {
  if (r.state === 'failed' && !r.status) return 'st-fail';
  if (!r.status) return 'st-wait';
  return 'st-' + String(r.status)[0];
}

function statusText(r) {
  if (r.status) return String(r.status);
  return r.state === 'failed' ? 'failed' : '…';
}

// header returns the first value of a header, by name in any case.
function header(h, name) {
  name = name.toLowerCase();
  for (const [k, vs] of Object.entries(h || {})) {
    if (k.toLowerCase() === name && vs.length) return vs[0];
  }
  return '';
}

function mediaType(h) {
  return header(h, 'Content-Type').split(';')[0].trim().toLowerCase();
}

// ---- the list

function matches(r) {
  const path = filters.path.value.trim().toLowerCase();
  if (path && !r.path.toLowerCase().includes(path)) return false;
  if (filters.method.value && r.method !== filters.method.value) return false;
  const status = filters.status.value.trim();
  return !status || statusMatches(r.status, status);
}

// statusMatches: spec is a list of 2xx-style classes, exact codes or
// prefixes ("4", "50"), separated by commas or spaces.
function statusMatches(status, spec) {
  return spec.toLowerCase().split(/[\s,]+/).filter(Boolean).some((t) => {
    if (/^[1-5]xx$/.test(t)) return Math.floor(status / 100) === Number(t[0]);
    if (/^\d+$/.test(t)) return String(status).startsWith(t);
    return false;
  });
}

function applyFilters() {
  for (const [id, tr] of rows) tr.hidden = !matches(reqs.get(id));
  updateEmpty();
}

function updateEmpty() {
  const empty = $('empty');
  if (reqs.size === 0) {
    empty.textContent = 'No requests yet. Requests through the tunnel appear here as they arrive.';
    empty.hidden = false;
  } else if (![...rows.values()].some((tr) => !tr.hidden)) {
    empty.textContent = 'No request matches the filters.';
    empty.hidden = false;
  } else {
    empty.hidden = true;
  }
}

function rowFor(r) {
  const tr = el('tr', { 'data-id': r.id, class: view && view.id === r.id ? 'selected' : null },
    el('td', { class: 'time', title: new Date(r.time).toLocaleString() }, clock(r.time)),
    el('td', { class: 'method' }, r.method),
    el('td', { class: 'path' },
      el('a', { href: '#' + encodeURIComponent(r.id), title: r.path }, r.path),
      r.replay_of && el('span', { class: 'badge replay', title: 'Replay of #' + r.replay_of }, 'replay'),
      r.stream && el('span', { class: 'badge stream' }, r.stream)),
    el('td', {}, el('span', { class: 'status ' + statusClass(r), title: r.error || r.state }, statusText(r))),
    el('td', { class: 'num duration' }, millis(duration(r))),
    el('td', { class: 'num' }, r.status ? bytes(r.response_body_size) : ''));
  tr.hidden = !matches(r);
  return tr;
}

// putRow shows r in the list: in place if it is there, else by ID, newest
// first. In place means the row and its unchanged cells stay the same
// nodes, only changed cells are swapped: a click on a request that
// completes meanwhile (its status, size and duration change) is not lost.
function putRow(r) {
  const tr = rowFor(r);
  const old = rows.get(r.id);
  if (old) {
    old.className = tr.className;
    old.hidden = tr.hidden;
    [...tr.cells].forEach((cell, i) => {
      if (!old.cells[i].isEqualNode(cell)) old.cells[i].replaceWith(cell);
    });
    return;
  }
  rows.set(r.id, tr);
  const n = Number(r.id);
  let before = null;
  for (const other of rowsBody.children) {
    if (Number(other.dataset.id) < n) { before = other; break; }
  }
  rowsBody.insertBefore(tr, before);
}

function removeRow(id) {
  const tr = rows.get(id);
  if (tr) tr.remove();
  rows.delete(id);
  reqs.delete(id);
}

rowsBody.addEventListener('click', (e) => {
  const tr = e.target.closest('tr');
  if (!tr || e.target.closest('a')) return; // a link navigates by itself
  location.hash = encodeURIComponent(tr.dataset.id);
});

for (const f of Object.values(filters)) f.addEventListener('input', applyFilters);
$('filters').addEventListener('submit', (e) => e.preventDefault());

// ---- live updates

function setLive(on) {
  const live = $('live');
  live.textContent = on ? 'live' : 'reconnecting…';
  live.classList.toggle('on', on);
}

// loadList replaces the list with GET /api/requests, then applies the
// events that came meanwhile (they are newer). Called on every (re)connect
// of the event stream.
async function loadList() {
  const gen = ++listGen;
  backlog = [];
  let list;
  try {
    const res = await fetch('/api/requests', { cache: 'no-store' });
    if (!res.ok) throw new Error(res.status + ' ' + res.statusText);
    list = await res.json();
  } catch (err) {
    if (gen === listGen) {
      backlog = null;
      setTimeout(() => { if (gen === listGen) loadList(); }, 2000);
    }
    console.warn('inspector: loading the list:', err.message);
    return;
  }
  if (gen !== listGen) return;
  reqs.clear();
  rows.clear();
  rowsBody.replaceChildren();
  for (const r of list) {
    reqs.set(r.id, r);
    const tr = rowFor(r);
    rows.set(r.id, tr);
    rowsBody.append(tr); // the API lists newest first
  }
  const pending = backlog;
  backlog = null;
  for (const [type, data] of pending) onEvent(type, data);
  updateEmpty();
}

function onEvent(type, data) {
  if (backlog) { backlog.push([type, data]); return; }
  switch (type) {
    case 'request': {
      const old = reqs.get(data.id);
      reqs.set(data.id, data);
      putRow(data);
      if (view && view.id === data.id) viewUpdated(data, old);
      break;
    }
    case 'item':
      if (view && view.id === data.id) viewItem(data.item);
      break;
    case 'removed':
      removeRow(data.id);
      if (view && view.id === data.id) viewRemoved();
      break;
  }
  updateEmpty();
}

function connect() {
  const es = new EventSource('/api/events');
  es.addEventListener('open', () => { setLive(true); loadList(); });
  es.addEventListener('error', () => setLive(false)); // it reconnects by itself
  for (const type of ['request', 'item', 'removed']) {
    es.addEventListener(type, (e) => {
      let data;
      try { data = JSON.parse(e.data); } catch { return; }
      onEvent(type, data);
    });
  }
}

// Durations of requests in flight count on.
setInterval(() => {
  for (const [id, r] of reqs) {
    if (!inFlight(r)) continue;
    const cell = rows.get(id)?.querySelector('.duration');
    if (cell) cell.textContent = millis(duration(r));
  }
  if (view && view.rec && inFlight(view.rec)) {
    const d = viewBox.querySelector('.v-duration');
    if (d) d.textContent = millis(duration(view.rec)) + ' so far';
  }
}, 500);

// ---- a request's view

function route() {
  const id = decodeURIComponent(location.hash.slice(1));
  for (const [rid, tr] of rows) tr.classList.toggle('selected', rid === id);
  if (!id) {
    view = null;
    viewBox.replaceChildren(el('p', { class: 'empty' }, 'Select a request to see its headers, bodies and stream.'));
    return;
  }
  openView(id);
}

// openView fetches the request and shows it. Items that arrive before the
// fetch returns wait in view.pending; view.lastN is the last item shown, so
// that none is shown twice.
async function openView(id) {
  const v = { id, rec: null, lastN: 0, pending: [], revealed: new Set(), parts: {} };
  view = v;
  viewBox.replaceChildren(el('p', { class: 'empty' }, 'Loading #' + id + '…'));
  let rec;
  try {
    const res = await fetch('/api/requests/' + encodeURIComponent(id), { cache: 'no-store' });
    if (res.status === 404) {
      if (view === v) viewBox.replaceChildren(el('p', { class: 'empty' }, 'Request #' + id + ' is not kept (any more).'));
      return;
    }
    if (!res.ok) throw new Error(res.status + ' ' + res.statusText);
    rec = await res.json();
  } catch (err) {
    if (view === v) viewBox.replaceChildren(el('p', { class: 'error' }, 'Cannot load #' + id + ': ' + err.message));
    return;
  }
  if (view !== v) return;
  // A newer record from the event stream wins over the fetched one.
  const live = reqs.get(id);
  v.rec = live && liveNewer(live, rec) ? { ...live } : rec;
  renderView(v, rec.items || []);
  const pending = v.pending;
  v.pending = null;
  for (const it of pending) viewItem(it);
}

function liveNewer(live, rec) {
  const order = { waiting: 0, streaming: 1, done: 2, failed: 2 };
  return order[live.state] > order[rec.state];
}

function renderView(v, items) {
  const r = v.rec;
  v.parts.summary = el('div', { class: 'summary' });
  v.parts.request = el('section', { class: 'part' });
  v.parts.response = el('section', { class: 'part' });
  v.parts.editor = el('div', { class: 'editor', hidden: true });
  v.parts.message = el('p', { class: 'message', hidden: true });
  viewBox.replaceChildren(
    el('div', { class: 'view-head' },
      el('h2', {}, el('span', { class: 'method' }, r.method), ' ', el('span', { class: 'path' }, r.path)),
      el('div', { class: 'actions' },
        el('button', { type: 'button', id: 'replay', on: { click: () => replay(v, null) } }, 'Replay'),
        el('button', { type: 'button', id: 'edit', on: { click: () => openEditor(v) } }, 'Edit and replay'),
        el('a', { class: 'close', href: '#', title: 'Close', 'aria-label': 'Close' }, '×'))),
    v.parts.message, v.parts.editor, v.parts.summary, v.parts.request, v.parts.response);
  renderSummary(v);
  renderSide(v, 'request');
  renderSide(v, 'response');
  if (r.stream || items.length) {
    ensureStream(v, r.stream || kindOf(items[0]));
    for (const it of items) viewItem(it);
  }
}

function renderSummary(v) {
  const r = v.rec;
  const fields = [
    ['Status', el('span', { class: 'status ' + statusClass(r) }, statusText(r))],
    ['State', r.state + (r.error ? ': ' + r.error : '')],
    ['Started', clock(r.time, true)],
  ];
  if (r.status && r.headers_ms) fields.push(['Headers after', millis(r.headers_ms)]);
  fields.push(
    ['Duration', el('span', { class: 'v-duration' }, millis(duration(r)) + (inFlight(r) ? ' so far' : ''))],
    ['Host', r.host],
    ['Protocol', r.proto]);
  if (r.remote_addr) fields.push(['From', r.remote_addr]);
  if (r.replay_of) fields.push(['Replay of', el('a', { href: '#' + encodeURIComponent(r.replay_of) }, '#' + r.replay_of)]);
  v.parts.summary.replaceChildren(el('dl', {}, fields.map(([k, val]) => el('div', {}, el('dt', {}, k), el('dd', {}, val)))));
  if (r.capture_note) v.parts.summary.append(el('p', { class: 'note' }, 'Capture: ' + r.capture_note));
}

// renderSide shows the request's or the response's headers and body.
function renderSide(v, side) {
  const r = v.rec;
  const box = v.parts[side];
  const hdrs = side === 'request' ? r.request_headers : r.response_headers;
  const trailers = side === 'request' ? r.request_trailers : r.response_trailers;
  box.replaceChildren(el('h3', {}, side === 'request' ? 'Request' : 'Response'));
  if (side === 'response' && !r.status) {
    box.append(el('p', { class: 'muted' }, r.state === 'failed' ? 'No response.' : 'Waiting for the response…'));
    return;
  }
  box.append(headerTable(v, side, hdrs));
  if (trailers && Object.keys(trailers).length) {
    box.append(el('h4', {}, 'Trailers'), headerTable(v, side + '-trailers', trailers));
  }
  if (r.stream === 'websocket') return; // its messages are the bodies
  const body = el('div', { class: 'body' });
  const size = r[side + '_body_size'];
  const title = el('h4', {}, 'Body', size > 0 && el('span', { class: 'meta' }, bytes(size) + (mediaType(hdrs) ? ' · ' + mediaType(hdrs) : '')));
  if (side === 'response' && r.stream) {
    // The items above are the stream; the raw bytes on demand.
    const details = el('details', {}, el('summary', {}, 'Raw bytes'), body);
    details.addEventListener('toggle', () => { if (details.open) showBody(body, r, side); }, { once: true });
    box.append(title, details);
    return;
  }
  box.append(title, body);
  showBody(body, r, side);
}

function headerTable(v, side, h) {
  const names = Object.keys(h || {}).sort();
  if (!names.length) return el('p', { class: 'muted' }, 'No headers.');
  const tbody = el('tbody');
  for (const name of names) {
    for (const value of h[name]) {
      tbody.append(el('tr', {}, el('th', {}, name), el('td', {}, headerValue(v, side, name, value))));
    }
  }
  return el('table', { class: 'headers' }, tbody);
}

// headerValue is a header's value, masked for the names in Masked until
// the user reveals it.
function headerValue(v, side, name, value) {
  if (!masked.has(name.toLowerCase())) return value;
  const key = side + ':' + name.toLowerCase();
  const text = el('span', { class: 'masked' });
  const button = el('button', { type: 'button', class: 'reveal' });
  const show = () => {
    const open = v.revealed.has(key);
    text.textContent = open ? value : MASK;
    text.classList.toggle('revealed', open);
    button.textContent = open ? 'Hide' : 'Reveal';
  };
  button.addEventListener('click', () => {
    if (v.revealed.has(key)) v.revealed.delete(key); else v.revealed.add(key);
    for (const f of v.maskShowers.get(key)) f();
  });
  // Every value of the name follows one Reveal.
  v.maskShowers ??= new Map();
  if (!v.maskShowers.has(key)) v.maskShowers.set(key, []);
  v.maskShowers.get(key).push(show);
  show();
  return el('span', { class: 'masked-value' }, text, ' ', button);
}

function bodyURL(id, side) {
  return '/api/requests/' + encodeURIComponent(id) + '/body?side=' + side;
}

// showBody renders a captured body by its Content-Type: JSON pretty,
// form fields as a table, images as an image, text as text, anything else
// as a hex dump.
async function showBody(box, r, side) {
  const size = r[side + '_body_size'];
  const captured = r[side + '_body_captured'];
  const h = side === 'request' ? r.request_headers : r.response_headers;
  box.replaceChildren();
  if (!size) {
    box.append(el('p', { class: 'muted' }, side === 'response' && inFlight(r) ? 'No body yet.' : 'No body.'));
    return;
  }
  if (r[side + '_body_truncated']) {
    box.append(el('p', { class: 'note' }, 'Showing the first ' + bytes(captured) + ' of ' + bytes(size) +
      ': the body was cut at the capture limit.'));
  }
  if (!captured) {
    box.append(el('p', { class: 'muted' }, 'Not captured.'));
    return;
  }
  const type = mediaType(h);
  const encoding = header(h, 'Content-Encoding').toLowerCase();
  if (type.startsWith('image/') && (!encoding || encoding === 'identity')) {
    box.append(el('img', { class: 'body-image', src: bodyURL(r.id, side), alt: side + ' body (' + type + ')' }));
    return;
  }
  let buf;
  try {
    const res = await fetch(bodyURL(r.id, side), { cache: 'no-store' });
    if (!res.ok) throw new Error(res.status + ' ' + res.statusText);
    buf = new Uint8Array(await res.arrayBuffer());
  } catch (err) {
    box.append(el('p', { class: 'error' }, 'Cannot load the body: ' + err.message));
    return;
  }
  if (['gzip', 'deflate'].includes(encoding) && !r[side + '_body_truncated']) {
    try {
      buf = await decompress(buf, encoding);
      box.append(el('p', { class: 'muted' }, 'Decoded from ' + encoding + '.'));
    } catch { /* shown as it is */ }
  }
  box.append(bodyView(buf, type));
}

async function decompress(buf, encoding) {
  const stream = new Blob([buf]).stream().pipeThrough(new DecompressionStream(encoding));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function utf8(buf) {
  try { return new TextDecoder('utf-8', { fatal: true }).decode(buf); } catch { return null; }
}

function bodyView(buf, type) {
  const text = utf8(buf);
  if (text !== null) {
    if (type === 'application/json' || type.endsWith('+json')) {
      try { return el('pre', { class: 'code json' }, JSON.stringify(JSON.parse(text), null, 2)); } catch { /* as text */ }
    }
    if (type === 'application/x-www-form-urlencoded') return formTable(text);
    if (!/[\x00-\x08\x0e-\x1f\x7f]/.test(text)) return el('pre', { class: 'code' }, text);
  }
  return hexDump(buf);
}

function formTable(text) {
  const tbody = el('tbody');
  for (const [k, val] of new URLSearchParams(text)) tbody.append(el('tr', {}, el('th', {}, k), el('td', {}, val)));
  return el('table', { class: 'headers form' }, tbody);
}

function hexDump(buf) {
  const lines = [];
  const n = Math.min(buf.length, HEX_LIMIT);
  for (let off = 0; off < n; off += 16) {
    const chunk = buf.subarray(off, Math.min(off + 16, n));
    let hex = '';
    let ascii = '';
    for (let i = 0; i < 16; i++) {
      hex += i < chunk.length ? chunk[i].toString(16).padStart(2, '0') + ' ' : '   ';
      if (i === 7) hex += ' ';
      if (i < chunk.length) ascii += chunk[i] >= 0x20 && chunk[i] < 0x7f ? String.fromCharCode(chunk[i]) : '.';
    }
    lines.push(off.toString(16).padStart(8, '0') + '  ' + hex + ' ' + ascii);
  }
  const parts = [el('pre', { class: 'code hex' }, lines.join('\n'))];
  if (buf.length > n) parts.unshift(el('p', { class: 'note' }, 'Binary: the first ' + bytes(n) + ' of ' + bytes(buf.length) + ' as hex.'));
  return el('div', {}, parts);
}

// ---- stream items

function kindOf(it) {
  return { event: 'sse', line: 'ndjson', message: 'websocket' }[it.kind] || '';
}

const streamTitles = { sse: 'SSE events', ndjson: 'NDJSON lines', websocket: 'WebSocket messages' };
const streamColumns = {
  sse: ['#', 'Time', 'Event', 'ID', 'Data'],
  ndjson: ['#', 'Time', 'Line'],
  websocket: ['#', 'Time', '', 'Opcode', 'Size', 'Text'],
};

// ensureStream adds the stream's part to the view if it is not there.
function ensureStream(v, kind) {
  if (v.parts.stream || !streamTitles[kind]) return;
  v.stream = kind;
  v.parts.count = el('span', { class: 'count' }, '0');
  v.parts.dropped = el('p', { class: 'note', hidden: true });
  v.parts.items = el('tbody');
  v.parts.stream = el('section', { class: 'part stream' },
    el('h3', {}, streamTitles[kind], ' ', v.parts.count,
      kind === 'websocket' && el('span', { class: 'legend' }, '↑ client to local server · ↓ local server to client')),
    v.parts.dropped,
    el('div', { class: 'items-box' },
      el('table', { class: 'items ' + kind },
        el('thead', {}, el('tr', {}, streamColumns[kind].map((c) => el('th', {}, c)))),
        v.parts.items)));
  // Above the response's headers: the stream is what one watches.
  v.parts.response.before(v.parts.stream);
  updateDropped(v);
}

function updateDropped(v) {
  const d = v.rec.items_dropped;
  if (v.parts.dropped && d) {
    const noun = { sse: 'events', ndjson: 'lines', websocket: 'messages' }[v.stream];
    v.parts.dropped.textContent = d + ' ' + noun + ' beyond the capture limit were not kept.';
    v.parts.dropped.hidden = false;
  }
}

function viewItem(it) {
  const v = view;
  if (!v) return;
  if (v.pending) { v.pending.push(it); return; }
  if (it.n <= v.lastN) return;
  v.lastN = it.n;
  ensureStream(v, kindOf(it));
  if (!v.parts.items) return;
  const box = v.parts.items.closest('.items-box');
  const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  const text = el('td', { class: 'text' }, it.text, it.truncated && el('span', { class: 'badge' }, 'cut'));
  const cells = [el('td', { class: 'num' }, it.n), el('td', { class: 'num' }, '+' + millis(it.time_ms))];
  if (v.stream === 'sse') {
    cells.push(el('td', {}, it.event || 'message'), el('td', {}, it.event_id || ''), text);
  } else if (v.stream === 'ndjson') {
    cells.push(text);
  } else {
    const out = it.direction === 'out';
    cells.push(
      el('td', { class: 'dir ' + (out ? 'out' : 'in'), title: out ? 'local server to client' : 'client to local server' }, out ? '↓' : '↑'),
      el('td', {}, it.opcode), el('td', { class: 'num' }, bytes(it.size)), text);
  }
  v.parts.items.append(el('tr', { 'data-n': it.n, class: it.direction || null }, cells));
  while (v.parts.items.children.length > ITEM_ROWS) v.parts.items.firstChild.remove();
  v.parts.count.textContent = String(it.n);
  if (atEnd) box.scrollTop = box.scrollHeight;
}

// viewUpdated follows a "request" event of the open request: the summary
// always; the headers and bodies when the response came or the request
// ended (its bodies are whole then).
function viewUpdated(r, old) {
  const v = view;
  if (!v.rec) return; // still loading: openView takes the newer record
  const prev = v.rec;
  v.rec = r;
  renderSummary(v);
  updateDropped(v);
  if (r.stream) ensureStream(v, r.stream);
  if (prev.status !== r.status || prev.state !== r.state || prev.stream !== r.stream) {
    v.maskShowers = null;
    renderSide(v, 'request');
    renderSide(v, 'response');
  }
}

function viewRemoved() {
  view.parts.message.textContent = 'This request is no longer kept: the inspector keeps the newest ones only.';
  view.parts.message.hidden = false;
}

// ---- replay

// replay sends the request again, with edits ({method, path, headers,
// body}) or as recorded (edits null), and opens the new request.
async function replay(v, edits) {
  const msg = v.parts.message;
  msg.hidden = true;
  for (const b of viewBox.querySelectorAll('.actions button, .editor button')) b.disabled = true;
  try {
    const res = await fetch('/api/requests/' + encodeURIComponent(v.id) + '/replay', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: edits ? JSON.stringify(edits) : '{}',
    });
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new Error(data?.error?.message || res.status + ' ' + res.statusText);
    if (!reqs.has(data.id)) {
      reqs.set(data.id, data);
      putRow(data);
      updateEmpty();
    }
    location.hash = encodeURIComponent(data.id);
  } catch (err) {
    if (view === v) {
      msg.textContent = 'Replay failed: ' + err.message;
      msg.hidden = false;
    }
  } finally {
    for (const b of viewBox.querySelectorAll('.actions button, .editor button')) b.disabled = false;
  }
}

// openEditor shows the form of "Edit and replay": method, path, headers
// (one "Name: value" a line; masked values stay masked and are sent as
// recorded) and the body (sent as recorded unless edited).
async function openEditor(v) {
  const r = v.rec;
  const box = v.parts.editor;
  if (!box.hidden) { box.hidden = true; return; }
  const lines = [];
  for (const name of Object.keys(r.request_headers || {}).sort()) {
    for (const value of r.request_headers[name]) lines.push(name + ': ' + (masked.has(name.toLowerCase()) ? MASK : value));
  }
  const headersText = lines.join('\n');
  const method = el('input', { value: r.method, 'aria-label': 'Method', class: 'e-method', autocomplete: 'off' });
  const path = el('input', { value: r.path, 'aria-label': 'Path', class: 'e-path', autocomplete: 'off' });
  const headers = el('textarea', { rows: Math.min(12, lines.length + 1), 'aria-label': 'Headers', class: 'e-headers', spellcheck: 'false' });
  headers.value = headersText;
  const body = el('textarea', { rows: 8, 'aria-label': 'Body', class: 'e-body', spellcheck: 'false' });
  const bodyNote = el('p', { class: 'muted' });
  if (r.request_body_size) {
    if (r.request_body_truncated) {
      bodyNote.textContent = 'The recorded body was cut at the capture limit: write a body to send one.';
    } else {
      try {
        const res = await fetch(bodyURL(r.id, 'request'), { cache: 'no-store' });
        const text = utf8(new Uint8Array(await res.arrayBuffer()));
        if (text === null) bodyNote.textContent = 'The recorded body is binary (' + bytes(r.request_body_size) + '): it is sent as recorded unless you write another here.';
        else body.value = text;
      } catch { /* left empty */ }
    }
  }
  const bodyText = body.value;
  const send = (e) => {
    e.preventDefault();
    const edits = {};
    if (method.value.trim() !== r.method) edits.method = method.value.trim();
    if (path.value !== r.path) edits.path = path.value;
    if (headers.value !== headersText) edits.headers = parseHeaders(headers.value, r.request_headers);
    if (body.value !== bodyText) edits.body = body.value;
    replay(v, edits);
  };
  box.replaceChildren(el('form', { on: { submit: send } },
    el('h3', {}, 'Edit and replay'),
    el('div', { class: 'line' }, method, path),
    el('label', {}, 'Headers', headers),
    el('p', { class: 'muted hint' }, 'One "Name: value" a line; ' + MASK + ' stands for the recorded value.'),
    el('label', {}, 'Body', body), bodyNote,
    el('div', { class: 'actions' },
      el('button', { type: 'submit', class: 'primary' }, 'Send'),
      el('button', { type: 'button', on: { click: () => { box.hidden = true; } } }, 'Cancel'))));
  box.hidden = false;
  method.focus();
}

// parseHeaders reads "Name: value" lines; a masked value stands for the
// recorded values of that name.
function parseHeaders(text, recorded) {
  const out = {};
  const recordedValues = (name) => {
    for (const [k, vs] of Object.entries(recorded || {})) if (k.toLowerCase() === name.toLowerCase()) return vs;
    return [];
  };
  const expanded = new Set();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).trim();
    const value = line.slice(i + 1).trim();
    if (!name) continue;
    if (value !== MASK) {
      (out[name] ??= []).push(value);
    } else if (!expanded.has(name.toLowerCase())) {
      expanded.add(name.toLowerCase());
      (out[name] ??= []).push(...recordedValues(name));
    }
  }
  return out;
}

window.addEventListener('hashchange', route);
route();
connect();
