// iotgate console: one ES module, no framework, no build step.
//
// Rules this file keeps:
// - API data reaches the page through textContent and attributes only,
//   never innerHTML (el() below is the only way nodes are made).
// - The token lives in sessionStorage (this tab only) and travels in the
//   Authorization header; never in localStorage, never in a URL.
// - Every loop and list is bounded: pages of devices, points on the chart,
//   rows of tables, the polling of a command's outcome.

const TOKEN_KEY = 'iotgate.token';
const PAGE_LIMIT = 100;          // devices per page of GET /v1/devices
const MAX_DEVICE_PAGES = 20;     // so at most 2,000 devices in the list
const STATES_BATCH = 500;        // POST /v1/devices/states takes 500 JIDs
// The chart's history windows and their buckets (the first is the
// default: with make dev's reading every 5 s, a thermostat's temperature
// moves on it within seconds).
const CHART_WINDOWS = [
  { label: 'last 15 minutes', seconds: 15 * 60, every: '10s' },
  { label: 'last hour', seconds: 3600, every: '30s' },
  { label: 'last 24 hours', seconds: 86400, every: '5m' },
];
const MAX_CHART_FIELDS = 8;
const MAX_POINTS = 3000;         // points kept on the chart
const MAX_ROWS = 200;            // rows of the latest-reading table
const RECENT = 10;               // recent commands and rejections shown
const POLL_MS = 5000;            // polling when the event stream is down
const LIST_POLL_MS = 30000;      // the device list's polling then
const READY_MS = 15000;          // how often /readyz is asked
const MAX_TEXT = 200000;         // characters of an XSD shown
const OUTCOME_MS = 60000;        // how long a command's outcome is followed
const TERMINAL = new Set(['succeeded', 'failed', 'timed_out', 'expired', 'canceled']);
const COLORS = ['#1565c0', '#c62828', '#2e7d32', '#6a1b9a', '#ef6c00', '#00838f', '#5d4037', '#455a64'];

// ---- DOM -------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);

// el makes an element: attrs are attributes (text: its textContent,
// class, on<event>: a listener), children are nodes or strings (text).
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = String(v);
    else if (k === 'class') e.className = v;
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function timeEl(iso) {
  return iso ? el('time', { datetime: iso, title: iso }, fmtTime(iso)) : el('span', { text: '—' });
}

function badge(online) {
  return el('span', { class: online ? 'badge on' : 'badge off', 'data-online': String(online) }, online ? 'online' : 'offline');
}

function section(title, id) {
  const s = el('section', { 'aria-labelledby': id + '-h', id });
  s.append(el('h2', { id: id + '-h', text: title }));
  return s;
}

// setStatus shows a message in the live region; code is a stable name
// for it (data-code), kind "error" or "info".
function setStatus(text, kind = 'info', code = '') {
  const s = $('#status');
  s.textContent = text;
  s.className = 'status' + (text ? ' ' + kind : '');
  s.dataset.code = code;
}

// ---- the token ---------------------------------------------------------

const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  forget: () => sessionStorage.removeItem(TOKEN_KEY),
};

// ---- the API -----------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, details, retryAfter) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter;
  }
}

// api calls iotgate with the token; it returns the decoded JSON (or the
// text, with text: true) and throws ApiError for any other answer.
async function api(method, path, { body, signal, text = false, retried = false } = {}) {
  const headers = { Authorization: 'Bearer ' + token.get(), Accept: text ? '*/*' : 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(path, {
      method, headers, signal, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', "iotgate can't be reached: " + e.message);
  }
  // Too many list requests of this token at once (several tabs): the
  // server says when to retry; once, after at most 2 s.
  if (r.status === 429 && !retried && r.headers.get('Retry-After') !== null) {
    let p = {};
    try { p = JSON.parse(await r.text()); } catch { /* not a problem body */ }
    if (p.code === 'too_many_concurrent') {
      const wait = Math.min(2, Number(r.headers.get('Retry-After')) || 1);
      await new Promise((ok) => setTimeout(ok, wait * 1000));
      return api(method, path, { body, signal, text, retried: true });
    }
    throw new ApiError(r.status, p.code || '429', p.message || r.statusText, p.details, r.headers.get('Retry-After'));
  }
  const t = await r.text();
  if (!r.ok) {
    let p = {};
    try { p = JSON.parse(t); } catch { /* not a problem body */ }
    throw new ApiError(r.status, p.code || String(r.status), p.message || r.statusText, p.details, r.headers.get('Retry-After'));
  }
  if (text) return t;
  return t ? JSON.parse(t) : null;
}

const esc = encodeURIComponent;

// explain turns an error into the sentence the user sees.
function explain(err) {
  switch (true) {
    case err.status === 401:
      return { code: 'unauthorized', text: 'The token was refused: it is wrong, revoked or expired. Paste a new token.' };
    case err.status === 403:
      return { code: 'forbidden', text: 'This token lacks the scope for this: ' + err.message };
    case err.status === 429:
      return { code: 'rate_limited', text: 'Rate limited by iotgate: try again in ' + (err.retryAfter || 'a few') + ' seconds. (' + err.message + ')' };
    case err.code === 'xmpp_unavailable':
      return { code: 'xmpp_unavailable', text: "iotgate can't reach the XMPP server: devices can't be reached now. (" + err.message + ')' };
    case err.status === 0:
      return { code: 'network', text: err.message };
    default:
      return { code: err.code || 'error', text: (err.status ? err.status + ' ' : '') + (err.code ? err.code + ': ' : '') + err.message };
  }
}

function showError(err) {
  if (!err || err.name === 'AbortError') return;
  if (!(err instanceof ApiError)) {
    console.error(err);
    setStatus('Something went wrong in the console: ' + err.message, 'error', 'console');
    return;
  }
  const x = explain(err);
  if (err.status === 401) {
    closeView();
    token.forget();
    showTokenForm();
  }
  setStatus(x.text, 'error', x.code);
}

// ---- views and routing -------------------------------------------------

// A view is what the page shows for one route; closing it aborts its
// requests and stops its timers and streams.
let current = null;

function newView() {
  const ctl = new AbortController();
  const cleanups = [];
  return {
    signal: ctl.signal,
    closed: false,
    onClose(f) { cleanups.push(f); },
    close() {
      this.closed = true;
      ctl.abort();
      for (const f of cleanups) { try { f(); } catch (e) { console.error(e); } }
    },
  };
}

function closeView() {
  if (current) current.close();
  current = null;
}

function parseHash() {
  const h = location.hash;
  if (!h.startsWith('#/')) return null;
  const [p, q] = h.slice(2).split('?');
  let parts;
  try { parts = p.split('/').map(decodeURIComponent); } catch { return null; }
  return { parts, query: new URLSearchParams(q || '') };
}

async function route() {
  const r = parseHash();
  if (!r) {
    location.replace('#/devices');
    return;
  }
  closeView();
  setStatus('');
  renderTokenBar();
  checkReady();
  const main = $('#main');
  main.replaceChildren();
  if (!token.get()) {
    showTokenForm();
    return;
  }
  const view = newView();
  current = view;
  try {
    if (r.parts[0] === 'devices' && r.parts[1]) await devicePage(view, main, r.parts[1]);
    else if (r.parts[0] === 'devices') await deviceList(view, main, r.query);
    else if (r.parts[0] === 'schemas' && r.parts[1]) await schemaPage(view, main, r.parts[1], r.query);
    else location.replace('#/devices');
  } catch (e) {
    if (!view.closed) showError(e);
  }
}

function renderTokenBar() {
  const bar = $('#tokenbar');
  bar.replaceChildren();
  if (token.get()) {
    bar.append(el('button', {
      type: 'button', id: 'forget', onclick: () => {
        token.forget();
        closeView();
        renderTokenBar();
        showTokenForm();
        setStatus('Token forgotten: it is no longer kept in this tab.', 'info', 'forgotten');
      },
    }, 'Forget token'));
  }
}

function showTokenForm() {
  const main = $('#main');
  const input = el('input', {
    id: 'token-input', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, maxlength: 4096, 'aria-describedby': 'token-help',
  });
  const form = el('form', { id: 'token-form', class: 'card' },
    el('label', { for: 'token-input' }, 'API token'),
    input,
    el('button', { type: 'submit' }, 'Use token'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const t = input.value.trim();
    if (!t) return;
    token.set(t);
    route();
  });
  main.replaceChildren(
    el('h1', { text: 'Sign in with an API token' }),
    el('p', { id: 'token-help' },
      'Paste an iotgate API token (scope devices:read; commands:send to send commands; schemas:read for schemas). ',
      'It is kept in this tab only (sessionStorage), sent in the Authorization header, and dropped when the tab closes or you press "Forget token".'),
    form);
  input.focus();
}

// ---- readiness: can iotgate reach the XMPP server? ---------------------

async function checkReady() {
  const banner = $('#xmpp');
  try {
    const r = await fetch('/readyz', { cache: 'no-store', credentials: 'omit' });
    const body = await r.json();
    const x = body && body.checks && body.checks.xmpp;
    if (x && !x.ok) {
      banner.textContent = "iotgate can't reach the XMPP server" + (x.since ? ' (since ' + fmtTime(x.since) + ')' : '') +
        ': devices are unreachable; commands fail or wait, and no readings arrive.';
      banner.hidden = false;
      return;
    }
  } catch { /* iotgate itself unreachable: the calls say so */ }
  banner.hidden = true;
}

// ---- the device list ---------------------------------------------------

async function deviceList(view, main, q) {
  const labels = q.getAll('label');
  const online = q.get('online') || '';
  main.append(el('h1', { text: 'Devices' }));

  const labelInput = el('input', { id: 'f-label', name: 'label', value: labels.join(' '), placeholder: 'room:kitchen', autocomplete: 'off', maxlength: 500 });
  const onlineSel = el('select', { id: 'f-online', name: 'online' },
    [['', 'Any'], ['true', 'Online'], ['false', 'Offline']].map(([v, t]) =>
      el('option', { value: v, selected: v === online }, t)));
  const form = el('form', { class: 'filters', role: 'search', 'aria-label': 'Filter devices' },
    el('div', { class: 'field' }, el('label', { for: 'f-label' }, 'Labels (key:value, space-separated)'), labelInput),
    el('div', { class: 'field' }, el('label', { for: 'f-online' }, 'Presence'), onlineSel),
    el('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const l of labelInput.value.split(/[\s,]+/).filter(Boolean).slice(0, 16)) p.append('label', l);
    if (onlineSel.value) p.set('online', onlineSel.value);
    const h = '#/devices' + (p.toString() ? '?' + p : '');
    if (location.hash === h) route(); else location.hash = h;
  });
  main.append(form);
  const out = el('div', { id: 'device-list', 'aria-busy': 'true' }, el('p', { text: 'Loading devices…' }));
  main.append(out);

  const params = new URLSearchParams({ limit: String(PAGE_LIMIT) });
  for (const l of labels) params.append('label', l);
  if (online) params.set('online', online);
  const devices = [];
  let truncated = false;
  const states = new Map();
  try {
    let cursor = '';
    for (let i = 0; i < MAX_DEVICE_PAGES; i++) {
      if (cursor) params.set('cursor', cursor);
      const page = await api('GET', '/v1/devices?' + params, { signal: view.signal });
      devices.push(...(page.items || []));
      cursor = page.next_cursor || '';
      if (!cursor) break;
      if (i === MAX_DEVICE_PAGES - 1) truncated = true;
    }
    for (let i = 0; i < devices.length; i += STATES_BATCH) {
      const jids = devices.slice(i, i + STATES_BATCH).map((d) => d.jid);
      const r = await api('POST', '/v1/devices/states', { body: { jids }, signal: view.signal });
      for (const s of r.items || []) states.set(s.jid, s);
    }
  } catch (e) {
    // A bad filter (400) or a refusal: say it where the list would be too.
    if (e.name !== 'AbortError') {
      out.replaceChildren(el('p', { class: 'error-text' }, 'No list: ' + explain(e).text));
      out.setAttribute('aria-busy', 'false');
    }
    throw e;
  }

  // The rows follow the event stream (presence, readings, device changes,
  // with the same label filter): a device that stops matching the filter
  // (goes offline under "Online", is deleted) leaves the list, one that
  // starts matching (comes online, is registered or relabelled onto it)
  // joins it. The stream filters device events by the new labels, so one
  // relabelled off the filter is not seen: it stays until a refresh.
  const wantOnline = online === '' ? null : online === 'true';
  const maxRows = PAGE_LIMIT * MAX_DEVICE_PAGES;
  const listed = new Map();   // JID -> {row, presenceCell, lastCell, online}
  const tbody = el('tbody', {});
  const countEl = el('p', { id: 'device-count' });
  const empty = el('p', { id: 'device-empty', text: 'No device matches.' });
  const table = el('div', { class: 'table-wrap' },
    el('table', { class: 'cards' },
      el('caption', { class: 'visually-hidden' }, 'Devices'),
      el('thead', {}, el('tr', {}, ['Device', 'Presence', 'Labels', 'Schema', 'Last reading'].map((h) => el('th', { scope: 'col' }, h)))),
      tbody));
  // stale: a device may match the filter and not be listed (the list is
  // full, or a device could not be read): the user is told, with a button.
  let stale = false;
  const staleNote = el('p', { id: 'device-stale', class: 'warn', hidden: true },
    'This list may be out of date: devices changed that it could not follow. ',
    el('button', { type: 'button', id: 'device-refresh', onclick: () => route() }, 'Refresh'));
  const recount = () => {
    const n = listed.size;
    countEl.textContent = n + (n === 1 ? ' device' : ' devices') + (truncated ? ' (the first ' + devices.length + ' only)' : '');
    empty.hidden = n > 0;
    table.hidden = n === 0;
    staleNote.hidden = !stale;
  };
  const markStale = () => { stale = true; recount(); };
  const labelsMatch = (d) => labels.every((l) => {
    const i = l.indexOf(':');
    return i > 0 && (d.labels || {})[l.slice(0, i)] === l.slice(i + 1);
  });
  const matches = (d, isOnline) => labelsMatch(d) && (wantOnline === null || isOnline === wantOnline);
  const addRow = (d, isOnline, receivedAt) => {
    const presenceCell = el('td', { 'data-label': 'Presence' }, badge(isOnline));
    const lastCell = el('td', { 'data-label': 'Last reading', class: 'last-reading' }, timeEl(receivedAt));
    const row = el('tr', { 'data-jid': d.jid },
      el('td', { 'data-label': 'Device' }, el('span', {},
        el('a', { href: '#/devices/' + esc(d.jid) }, d.name || d.jid),
        d.name ? el('span', { class: 'sub block' }, d.jid) : null)),
      presenceCell,
      el('td', { 'data-label': 'Labels' }, labelChips(d.labels)),
      el('td', { 'data-label': 'Schema' },
        el('a', { href: '#/schemas/' + esc(d.schema) + '?v=' + d.schema_version }, d.schema + ' v' + d.schema_version)),
      lastCell);
    const old = listed.get(d.jid);
    if (old) old.row.replaceWith(row); else tbody.append(row);
    listed.set(d.jid, { row, presenceCell, lastCell, online: isOnline });
  };
  const removeRow = (jid) => {
    const c = listed.get(jid);
    if (!c) return;
    c.row.remove();
    listed.delete(jid);
    recount();
  };
  for (const d of devices) {
    const s = states.get(d.jid) || {};
    const isOnline = s.online !== undefined ? s.online : d.online;
    // The states are newer than the page: one that no longer matches is
    // left out.
    if (wantOnline !== null && isOnline !== wantOnline) continue;
    addRow(d, isOnline, s.reading && s.reading.received_at);
  }
  const live = el('p', { id: 'live', class: 'sub' }, 'Connecting…');
  out.replaceChildren(countEl, live, staleNote, empty, table);
  recount();
  out.setAttribute('aria-busy', 'false');

  // A device not listed that may now match: read it (once at a time per
  // JID, and never past the list's bound) and list it if it does. known is
  // its presence as the event said (the record read may lag behind it).
  const reading = new Set();
  const presenceOf = new Map(); // JID -> the latest presence an event said, while read
  const consider = async (jid, known) => {
    if (listed.has(jid) || reading.has(jid) || view.closed) return;
    if (listed.size + reading.size >= maxRows) { markStale(); return; }
    reading.add(jid);
    try {
      const d = await api('GET', '/v1/devices/' + esc(jid), { signal: view.signal });
      const isOnline = presenceOf.has(jid) ? presenceOf.get(jid) : typeof known === 'boolean' ? known : d.online;
      if (!view.closed && !listed.has(jid) && matches(d, isOnline)) {
        addRow(d, isOnline, d.last_seen_at);
        recount();
      }
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e.status !== 404) markStale();
    } finally {
      reading.delete(jid);
      presenceOf.delete(jid);
    }
  };
  const setState = (jid, st) => {
    const c = listed.get(jid);
    if (!c) {
      if (reading.has(jid) && st.online !== undefined) presenceOf.set(jid, st.online);
      if (st.online === wantOnline) consider(jid, st.online);
      return;
    }
    if (st.online !== undefined) {
      if (wantOnline !== null && st.online !== wantOnline) { removeRow(jid); return; }
      c.online = st.online;
      c.presenceCell.replaceChildren(badge(st.online));
    }
    if (st.received_at) c.lastCell.replaceChildren(timeEl(st.received_at));
  };
  const onDevice = (x, ev) => {
    const jid = ev.device;
    if (!x || x.action === 'deleted') { removeRow(jid); return; }
    const d = x.device;
    if (!d || !d.jid) return;
    const c = listed.get(jid);
    if (!c) {
      // The event's record may not hold the device's presence: read it.
      if (labelsMatch(d)) consider(jid);
      return;
    }
    if (!matches(d, c.online)) { removeRow(jid); return; }
    addRow(d, c.online, c.lastCell.querySelector('time')?.getAttribute('datetime'));
    recount();
  };
  follow(view, {
    filter: labels.map((l) => '&label=' + esc(l)).join(''),
    types: ['presence', 'reading', 'device'],
    liveEl: live,
    liveText: 'Live: devices, their presence and last readings update as they happen.',
    pollMs: LIST_POLL_MS,
    // Polling reads the listed devices' states: those that stop matching
    // leave; those that start matching can't be seen, so the list says
    // it may be stale.
    poll: async () => {
      const jids = [...listed.keys()];
      for (let i = 0; i < jids.length; i += STATES_BATCH) {
        const r = await api('POST', '/v1/devices/states', { body: { jids: jids.slice(i, i + STATES_BATCH) }, signal: view.signal });
        for (const st of r.items || []) setState(st.jid, { online: st.online, received_at: st.reading && st.reading.received_at });
      }
      if (wantOnline !== null || labels.length) markStale();
    },
    on: {
      presence: (p, ev) => setState(ev.device, { online: p.online }),
      reading: (r, ev) => setState(ev.device, { received_at: r.received_at }),
      device: onDevice,
    },
  });
}

function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return el('span', { class: 'sub', text: 'none' });
  return el('ul', { class: 'chips' }, entries.map(([k, v]) => el('li', {}, k + ':' + v)));
}

// ---- JSON Schema helpers -----------------------------------------------

function resolveRef(js, s) {
  for (let i = 0; s && s.$ref && i < 32; i++) {
    const m = /^#\/\$defs\/(.+)$/.exec(s.$ref);
    s = m ? js.$defs[m[1]] : null;
  }
  return s || null;
}

// rootElements returns the global elements of a JSON Schema generated by
// iotgate: [name, schema] in the XSD's order.
function rootElements(js) {
  const out = [];
  for (const r of (js && js.anyOf) || []) {
    const m = /^#\/\$defs\/(.+)$/.exec(r.$ref || '');
    if (m && js.$defs[m[1]]) out.push([m[1], resolveRef(js, js.$defs[m[1]])]);
  }
  return out;
}

function isNumeric(s) {
  return s && (s.type === 'number' || s.type === 'integer');
}

// readingRoot is the global element the device's readings are: the one
// whose properties hold every key of the latest reading, else "reading",
// else the first.
function readingRoot(js, data) {
  const roots = rootElements(js);
  const keys = Object.keys(data || {});
  if (keys.length) {
    const fit = roots.find(([, s]) => s && s.properties && keys.every((k) => k in s.properties));
    if (fit) return fit;
  }
  return roots.find(([n]) => n === 'reading') || roots[0] || null;
}

// chartFields are the numeric fields worth charting: from the schema if
// there is one, else from the latest reading; attributes (@seq, @at) left
// out, as they are counters and times rather than measurements. Each is
// {name, unit}: unit names the quantity, and fields of one unit share a
// scale on the chart. A JSON Schema has no units: the unit is the
// property's "unit" (or "x-unit") keyword if it has one, else its declared
// range (fields of one XSD simple type, like a thermostat's temperature
// and target, have the same), else the field itself.
function chartFields(js, data) {
  const root = js ? readingRoot(js, data) : null;
  let fields;
  if (root && root[1] && root[1].properties) {
    fields = Object.entries(root[1].properties).map(([k, s]) => [k, resolveRef(js, s)])
      .filter(([, s]) => isNumeric(s)).map(([k, s]) => ({ name: k, unit: unitOf(k, s) }));
  } else {
    fields = Object.entries(data || {}).filter(([, v]) => typeof v === 'number').map(([k]) => ({ name: k, unit: 'field ' + k }));
  }
  return fields.filter((f) => !f.name.startsWith('@') && !f.name.includes('.')).slice(0, MAX_CHART_FIELDS);
}

function unitOf(name, s) {
  for (const k of ['unit', 'x-unit']) {
    if (typeof s[k] === 'string' && s[k]) return 'unit ' + s[k].slice(0, 40);
  }
  const lo = s.minimum ?? s.exclusiveMinimum;
  const hi = s.maximum ?? s.exclusiveMaximum;
  if (typeof lo === 'number' && typeof hi === 'number') return 'range ' + lo + '…' + hi;
  return 'field ' + name;
}

// chartScales gives each unit of fields a scale, the unit of most fields
// first (then in the fields' order): the first has the left axis, the
// second the right one; a third and more get a scale of their own
// without an axis (each drawn over the chart's full height: the legend
// says so). It returns, per field, {scale, side: 'left'|'right'|''} and
// the axes' options.
function chartScales(fields) {
  const units = [];
  for (const f of fields) if (!units.includes(f.unit)) units.push(f.unit);
  const n = (u) => fields.filter((f) => f.unit === u).length;
  units.sort((a, b) => n(b) - n(a)); // stable: ties keep the fields' order
  const scaleOf = (u) => (units.indexOf(u) === 0 ? 'y' : 'y' + (units.indexOf(u) + 1));
  const sideOf = (u) => ['left', 'right'][units.indexOf(u)] || '';
  const per = fields.map((f) => ({ scale: scaleOf(f.unit), side: sideOf(f.unit) }));
  const axes = units.slice(0, 2).map((u, i) => {
    const first = fields.findIndex((f) => f.unit === u);
    const axis = { scale: scaleOf(u), side: i === 0 ? 3 : 1, size: 50, grid: { show: i === 0 } };
    // With two axes, each is drawn in the colour of its first field.
    if (units.length > 1) axis.stroke = COLORS[first % COLORS.length];
    return axis;
  });
  return { per, axes, units: units.length };
}

function valueAt(data, path) {
  let v = data;
  for (const k of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = v[k];
  }
  return v;
}

// ---- the device page ---------------------------------------------------

async function devicePage(view, main, jid) {
  const signal = view.signal;
  const base = '/v1/devices/' + esc(jid);
  const dev = await api('GET', base, { signal });
  const [state, js] = await Promise.all([
    api('GET', base + '/state', { signal }),
    api('GET', '/v1/schemas/' + esc(dev.schema) + '/versions/' + dev.schema_version + '/json-schema', { signal })
      .catch((e) => { if (e.status === 403 || e.status === 404) return null; throw e; }),
  ]);
  const presence = el('span', { id: 'presence' }, badge(state.online));
  main.append(
    el('h1', { id: 'device-title' }, dev.name || dev.jid),
    el('dl', { class: 'summary' },
      el('dt', {}, 'JID'), el('dd', { class: 'jid' }, dev.jid),
      el('dt', {}, 'Presence'), el('dd', {}, presence),
      el('dt', {}, 'Last seen'), el('dd', {}, timeEl(state.last_seen_at)),
      el('dt', {}, 'Schema'), el('dd', {}, el('a', { href: '#/schemas/' + esc(dev.schema) + '?v=' + dev.schema_version }, dev.schema + ' v' + dev.schema_version)),
      el('dt', {}, 'Labels'), el('dd', {}, labelChips(dev.labels))));

  // The chart.
  const chartSec = section('Live chart', 'chart-section');
  const live = el('p', { id: 'live', class: 'sub', 'aria-live': 'polite' }, 'Connecting…');
  const windowSel = el('select', { id: 'chart-window', name: 'window' },
    CHART_WINDOWS.map((w, i) => el('option', { value: String(i) }, w.label + ' (' + w.every + ' buckets)')));
  const fig = el('figure', { id: 'chart', 'data-points': '0' });
  chartSec.append(live, el('div', { class: 'field narrow' }, el('label', { for: 'chart-window' }, 'History'), windowSel), fig);
  main.append(chartSec);

  const latestSec = section('Latest reading', 'latest-section');
  const latest = el('div', { id: 'latest' });
  latestSec.append(latest);
  const resSec = section('Presence resources', 'resources-section');
  const resources = el('div', { id: 'resources' });
  resSec.append(resources);
  const cmdSec = section('Send a command', 'command-section');
  const cmdsSec = section('Recent commands', 'commands-section');
  const cmds = el('div', { id: 'commands' });
  cmdsSec.append(cmds);
  const rejSec = section('Recent rejections', 'rejections-section');
  const rejs = el('div', { id: 'rejections' });
  rejSec.append(rejs);
  main.append(latestSec, resSec, cmdSec, cmdsSec, rejSec);

  let lastReading = state.reading || null;
  renderLatest(latest, lastReading);
  renderResources(resources, state);

  // Commands and rejections, newest first.
  const commandList = [];
  const renderCommands = () => renderCommandTable(cmds, commandList);
  const upsertCommand = (c) => {
    const i = commandList.findIndex((x) => x.id === c.id);
    if (i >= 0) commandList[i] = c; else commandList.unshift(c);
    commandList.sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
    commandList.length = Math.min(commandList.length, RECENT);
    renderCommands();
  };
  const rejectionList = [];
  const renderRejections = () => renderRejectionTable(rejs, rejectionList);

  const outcome = commandForm(view, cmdSec, js, jid, dev, upsertCommand);

  // Commands and rejections may be refused to this token (scope): the
  // rest of the page still works.
  api('GET', base + '/commands?limit=' + RECENT, { signal }).then((r) => {
    for (const c of (r.items || []).reverse()) upsertCommand(c);
    if (!commandList.length) renderCommands();
  }).catch((e) => { if (e.name !== 'AbortError') cmds.replaceChildren(el('p', {}, explain(e).text)); });
  api('GET', base + '/rejections?limit=' + RECENT, { signal }).then((r) => {
    rejectionList.push(...(r.items || []).slice(0, RECENT));
    renderRejections();
  }).catch((e) => { if (e.name !== 'AbortError') rejs.replaceChildren(el('p', {}, explain(e).text)); });

  // History, then live.
  const fields = chartFields(js, lastReading && lastReading.data);
  let chart = { add() {}, destroy() {} };
  view.onClose(() => chart.destroy());
  let generation = 0;
  const drawChart = async () => {
    const mine = ++generation;
    chart.destroy();
    chart = { add() {}, destroy() {} };
    fig.replaceChildren();
    fig.dataset.points = '0';
    delete fig.dataset.last;
    // Drawn into a box of its own: a newer choice replaces it whole.
    const box = el('div');
    fig.append(box);
    try {
      const c = await makeChart(view, fig, box, base, fields, CHART_WINDOWS[Number(windowSel.value)] || CHART_WINDOWS[0]);
      if (view.closed || mine !== generation) {
        c.destroy();
        return;
      }
      chart = c;
    } catch (e) {
      // No history (429, 403, 504...): the rest of the page still goes live.
      if (view.closed || mine !== generation || e.name === 'AbortError') return;
      box.replaceChildren(el('p', { class: 'error-text chart-note' }, 'No chart: ' + explain(e).text));
    }
  };
  windowSel.addEventListener('change', drawChart);
  await drawChart();
  if (view.closed) return;
  const onReading = (r) => {
    if (!r || (lastReading && r.id <= lastReading.id)) return;
    lastReading = r;
    renderLatest(latest, r);
    chart.add(r);
  };
  const applyState = (st) => {
    onReading(st.reading);
    presence.replaceChildren(badge(st.online));
    renderResources(resources, st);
  };
  follow(view, {
    filter: '&device=' + esc(jid),
    types: ['reading', 'presence', 'command', 'rejection'],
    liveEl: live,
    liveText: 'Live: readings arrive as the device sends them.',
    pollMs: POLL_MS,
    poll: async () => applyState(await api('GET', base + '/state', { signal })),
    on: {
      reading: onReading,
      presence: (p) => {
        presence.replaceChildren(badge(p.online));
        renderResources(resources, p);
      },
      command: (c) => { upsertCommand(c); outcome.update(c); },
      rejection: (r) => {
        rejectionList.unshift(r);
        rejectionList.length = Math.min(rejectionList.length, RECENT);
        renderRejections();
      },
    },
  });
}

function renderLatest(box, r) {
  if (!r) {
    box.replaceChildren(el('p', { text: 'No reading yet.' }));
    return;
  }
  const rows = [];
  const walk = (v, path) => {
    if (rows.length >= MAX_ROWS) return;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) walk(x, path ? path + '.' + k : k);
    } else {
      rows.push(el('tr', { 'data-field': path },
        el('th', { scope: 'row' }, path),
        el('td', {}, typeof v === 'string' ? v : JSON.stringify(v))));
    }
  };
  walk(r.data, '');
  box.replaceChildren(
    el('p', { class: 'sub' }, 'Received ', timeEl(r.received_at), r.device_time ? el('span', {}, ', device time ', timeEl(r.device_time)) : null),
    el('div', { class: 'table-wrap' },
      el('table', { class: 'kv' },
        el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Field'), el('th', { scope: 'col' }, 'Value'))),
        el('tbody', {}, rows))));
}

function renderResources(box, s) {
  const res = s.resources || [];
  const note = s.presence_stale ? el('p', { class: 'warn' }, 'Presence may be stale: iotgate is not connected to the XMPP server.') : null;
  if (!res.length) {
    box.replaceChildren(el('p', { text: s.online ? 'Online, no resource listed.' : 'No available resource: the device is offline.' }), note || '');
    return;
  }
  box.replaceChildren(note || '', el('div', { class: 'table-wrap' },
    el('table', {},
      el('thead', {}, el('tr', {}, ['Resource', 'Show', 'Status', 'Priority', 'Since'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, res.map((r) => el('tr', {},
        el('td', { class: 'jid' }, r.jid), el('td', {}, r.show || 'available'), el('td', {}, r.status || ''),
        el('td', {}, String(r.priority)), el('td', {}, timeEl(r.since))))))));
}

function rootName(payload) {
  const m = /^\s*<(?:[\w.-]+:)?([\w.-]+)/.exec(payload || '');
  return m ? m[1] : '';
}

function commandSummary(c) {
  if (c.status === 'succeeded') {
    if (c.response && c.response.data) return JSON.stringify(c.response.data);
    return 'answered';
  }
  if (c.xmpp_error) return c.xmpp_error.condition + (c.xmpp_error.text ? ': ' + c.xmpp_error.text : '');
  return c.error || '';
}

function renderCommandTable(box, list) {
  if (!list.length) {
    box.replaceChildren(el('p', { text: 'No command yet.' }));
    return;
  }
  box.replaceChildren(el('div', { class: 'table-wrap' },
    el('table', {},
      el('thead', {}, el('tr', {}, ['Sent', 'Command', 'Status', 'Outcome'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, list.map((c) => el('tr', { 'data-command': c.id },
        el('td', {}, timeEl(c.created_at)),
        el('td', {}, rootName(c.payload) || c.type),
        el('td', {}, el('span', { class: 'cstatus ' + c.status }, c.status)),
        el('td', { class: 'outcome-cell' }, commandSummary(c))))))));
}

function renderRejectionTable(box, list) {
  if (!list.length) {
    box.replaceChildren(el('p', { text: 'No rejection: every payload was valid.' }));
    return;
  }
  box.replaceChildren(el('div', { class: 'table-wrap' },
    el('table', {},
      el('thead', {}, el('tr', {}, ['Received', 'Via', 'Reason'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, list.map((r) => el('tr', {},
        el('td', {}, timeEl(r.received_at)), el('td', {}, r.via || ''), el('td', { class: 'reason' }, r.reason || '')))))));
}

// ---- the chart ---------------------------------------------------------

// describeScales reads from a uPlot which scale each of fields uses, that
// scale's range and the side of the axis showing it ('' for none).
function describeScales(u, fields) {
  return fields.map((f, i) => {
    const key = u.series[i + 1].scale;
    const axis = u.axes.find((a) => a.scale === key && a.show !== false);
    const r = u.scales[key] || {};
    return { field: f, scale: key, min: r.min, max: r.max, axis: axis ? (axis.side === 1 ? 'right' : 'left') : '' };
  });
}

// makeChart draws the aggregate history of fields over win into box (in
// fig, whose data-points and data-last it keeps up to date) and returns
// {add(reading), destroy()}: add appends a live reading. A field the aggregate endpoint refuses
// (422 field_not_numeric, field_unknown) is dropped.
async function makeChart(view, fig, box, base, fields, win) {
  const noChart = { add() {}, destroy() {} };
  if (!fields.length) {
    box.append(el('p', { class: 'chart-note' }, 'No numeric field to chart.'));
    return noChart;
  }
  let agg = null;
  let fs = fields.map((f) => f.name);
  for (let tries = 0; tries <= fields.length && fs.length; tries++) {
    const q = new URLSearchParams({
      fields: fs.join(','), every: win.every, fn: 'avg',
      from: new Date(Date.now() - win.seconds * 1000).toISOString(),
    });
    try {
      agg = await api('GET', base + '/readings/aggregate?' + q, { signal: view.signal });
      break;
    } catch (e) {
      const bad = e.status === 422 && e.details && e.details.field;
      if (!bad || !fs.includes(bad)) throw e;
      fs = fs.filter((f) => f !== bad);
    }
  }
  if (!fs.length) {
    box.append(el('p', { class: 'chart-note' }, 'No numeric field to chart.'));
    return noChart;
  }
  const kept = fields.filter((f) => fs.includes(f.name));
  const sc = chartScales(kept);
  const data = [[], ...fs.map(() => [])];
  for (const b of (agg && agg.buckets) || []) {
    data[0].push(Date.parse(b.start) / 1000 + (agg.every_seconds || 0) / 2);
    fs.forEach((f, i) => {
      const v = b.values && b.values[f] && b.values[f].avg;
      data[i + 1].push(v === null || v === undefined ? null : Number(v));
    });
  }
  box.append(el('p', { class: 'sub chart-note' },
    'The ' + win.label + ' in ' + win.every + ' averages, then each reading as it arrives. ' +
    'Click a field in the legend to hide or show it (the scale follows).' +
    (sc.units > 1 ? ' Fields of different units have their own scales: the legend says which axis each uses.' : '')));
  const plot = el('div', { class: 'chart-box' });
  box.append(plot);
  const width = () => Math.max(200, Math.min(plot.clientWidth || fig.clientWidth || 600, 1200));
  const axisName = { left: ' (left axis)', right: ' (right axis)', '': ' (own scale, no axis)' };
  const u = new uPlot({
    width: width(), height: 260,
    scales: { x: { time: true } },
    series: [{}, ...fs.map((f, i) => ({
      label: f + (sc.units > 1 ? axisName[sc.per[i].side] : ''), scale: sc.per[i].scale,
      stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true, points: { show: true, size: 4 },
    }))],
    axes: [{}, ...sc.axes],
    // What the chart shows, read from uPlot itself, for tests and tools:
    // each field's scale, its range and the side of its axis.
    hooks: { draw: [(p) => { fig.dataset.scales = JSON.stringify(describeScales(p, fs)); }] },
  }, data, plot);
  const count = () => { fig.dataset.points = String(data[0].length); };
  count();
  const ro = new ResizeObserver(() => u.setSize({ width: width(), height: 260 }));
  ro.observe(fig);
  let destroyed = false;
  return {
    destroy() {
      if (destroyed) return;
      destroyed = true;
      ro.disconnect();
      u.destroy();
    },
    add(r) {
      const x = Date.parse(r.received_at) / 1000;
      if (destroyed || !isFinite(x)) return;
      // Keep x sorted: a reading older than the last point goes in its place.
      let i = data[0].length;
      while (i > 0 && data[0][i - 1] > x) i--;
      data[0].splice(i, 0, x);
      fs.forEach((f, k) => {
        const v = valueAt(r.data, f);
        data[k + 1].splice(i, 0, typeof v === 'number' ? v : null);
      });
      if (data[0].length > MAX_POINTS) for (const s of data) s.splice(0, data[0].length - MAX_POINTS);
      u.setData(data);
      fig.dataset.last = fs.map((f) => f + '=' + JSON.stringify(valueAt(r.data, f))).join(' ');
      count();
    },
  };
}

// follow receives events from the event stream (a ticket, then
// EventSource on its URL with filter, e.g. "&device=..." or "&label=...",
// and types); while the stream is down it calls poll every pollMs and
// tries the stream again, backing off (5 s, 10 s, ... at most a minute).
// on has a handler per type: on[type](event.data, event).
function follow(view, { filter, types, on, poll, pollMs, liveEl, liveText }) {
  let es = null;
  let lastId = '';
  let pollTimer = null;
  let retryTimer = null;
  let failures = 0;
  const setLive = (mode, text) => { liveEl.dataset.mode = mode; liveEl.textContent = text; };
  const pollOnce = async () => {
    try {
      await poll();
    } catch (e) {
      if (e.status === 401) showError(e);
    }
  };
  const startPolling = () => {
    if (pollTimer || view.closed) return;
    pollTimer = setInterval(pollOnce, pollMs);
    pollOnce();
  };
  const stopPolling = () => { clearInterval(pollTimer); pollTimer = null; };
  const retry = () => {
    failures++;
    startPolling();
    setLive('polling', 'Updated by polling every ' + pollMs / 1000 + ' s (the event stream is not available; retrying).');
    if (!view.closed) retryTimer = setTimeout(open, Math.min(60000, 5000 * failures));
  };
  const open = async () => {
    if (view.closed) return;
    let t;
    try {
      t = await api('POST', '/v1/events/tickets', { signal: view.signal });
    } catch (e) {
      if (view.closed || e.name === 'AbortError') return;
      if (e.status === 401) { showError(e); return; }
      retry();
      return;
    }
    let url = t.url + '&types=' + types.join(',') + filter;
    if (lastId) url += '&after=' + esc(lastId);
    es = new EventSource(url);
    es.onopen = () => {
      failures = 0;
      stopPolling();
      setLive('stream', liveText);
    };
    for (const type of types) {
      es.addEventListener(type, (e) => {
        if (e.lastEventId) lastId = e.lastEventId;
        let ev;
        try { ev = JSON.parse(e.data); } catch { return; }
        on[type](ev.data, ev);
      });
    }
    // Events were lost (the log was trimmed): read the state again.
    es.addEventListener('gap', pollOnce);
    es.onerror = () => {
      // The ticket was spent: EventSource's own reconnection would fail.
      es.close();
      es = null;
      if (!view.closed) retry();
    };
  };
  view.onClose(() => { if (es) es.close(); clearTimeout(retryTimer); stopPolling(); });
  open();
}

// ---- the command form --------------------------------------------------

// commandForm builds a form from the JSON Schema's global elements and
// returns {update(command)}, which shows a command's progress if it is the
// one the form sent.
function commandForm(view, sec, js, jid, dev, onCommand) {
  const outcome = el('div', { id: 'outcome', role: 'status', 'aria-live': 'polite' });
  let sentId = '';
  let sentStatus = '';
  const showOutcome = (c) => {
    if (!c || c.id !== sentId) return;
    // The stream and the polling may bring the changes out of order.
    if (TERMINAL.has(sentStatus) && !TERMINAL.has(c.status)) return;
    sentStatus = c.status;
    outcome.dataset.status = c.status;
    const steps = (c.history || []).map((h) => h.status);
    if (!steps.length || steps[steps.length - 1] !== c.status) steps.push(c.status);
    const parts = [el('p', { class: 'steps' }, el('strong', {}, 'Command ' + c.id + ': '), steps.join(' → '))];
    if (c.status === 'succeeded') {
      parts.push(el('p', {}, 'The device answered' + (c.response && c.response.data ? ':' : '.')));
      if (c.response && c.response.data) parts.push(el('pre', { class: 'answer', id: 'answer' }, JSON.stringify(c.response.data, null, 2)));
    } else if (TERMINAL.has(c.status)) {
      parts.push(el('p', { class: 'error-text' }, commandSummary(c) || c.status));
    }
    outcome.replaceChildren(...parts);
    // Ended: the form is free again, even while the poll sleeps.
    if (TERMINAL.has(c.status)) send.disabled = false;
  };
  if (!js) {
    sec.append(el('p', {}, 'No form: the schema (JSON Schema of ' + dev.schema + ' v' + dev.schema_version + ') could not be read with this token (scope schemas:read).'));
    return { update() {} };
  }
  const roots = rootElements(js);
  if (!roots.length) {
    sec.append(el('p', {}, 'The schema declares no element to send.'));
    return { update() {} };
  }
  const readingName = (readingRoot(js, null) || [''])[0];
  const elementSel = el('select', { id: 'cmd-element', name: 'element' },
    roots.map(([n]) => el('option', { value: n }, n)));
  const preferred = roots.find(([n]) => n !== readingName);
  if (preferred) elementSel.value = preferred[0];
  const fieldsBox = el('div', { id: 'cmd-fields' });
  const send = el('button', { type: 'submit', id: 'cmd-send' }, 'Send command');
  const queue = el('input', { type: 'checkbox', id: 'cmd-queue', name: 'queue' });
  const form = el('form', { id: 'cmd-form', class: 'card', novalidate: true },
    el('div', { class: 'field' }, el('label', { for: 'cmd-element' }, 'Element'), elementSel),
    fieldsBox,
    el('div', { class: 'field check' }, queue,
      el('label', { for: 'cmd-queue' }, 'Queue it if the device is offline', el('span', { class: 'hint' }, ' (delivered when it comes online, or expired after an hour)'))),
    send);
  sec.append(form, outcome);

  let controls = [];
  const renderFields = () => {
    const s = resolveRef(js, js.$defs[elementSel.value]);
    const props = (s && s.properties) || {};
    const required = new Set((s && s.required) || []);
    controls = Object.entries(props).map(([key, ps], i) => {
      const p = resolveRef(js, ps) || {};
      const id = 'cmd-f-' + i;
      const errId = id + '-err';
      let input;
      let kind;
      if (Array.isArray(p.enum)) {
        kind = 'enum';
        input = el('select', { id, name: key },
          el('option', { value: '' }, required.has(key) ? '— choose —' : '— leave out —'),
          p.enum.map((v, j) => el('option', { value: String(j) }, String(v))));
        input.enumValues = p.enum;
      } else if (p.type === 'boolean') {
        kind = 'boolean';
        input = el('select', { id, name: key },
          el('option', { value: '' }, required.has(key) ? '— choose —' : '— leave out —'),
          el('option', { value: 'true' }, 'true'), el('option', { value: 'false' }, 'false'));
      } else if (isNumeric(p)) {
        kind = p.type;
        input = el('input', {
          id, name: key, type: 'number', inputmode: 'decimal', step: p.type === 'integer' ? '1' : 'any',
          min: p.minimum, max: p.maximum, autocomplete: 'off',
        });
      } else if (p.type === 'string') {
        kind = 'string';
        input = el('input', { id, name: key, type: 'text', autocomplete: 'off', maxlength: p.maxLength || 10000 });
      } else {
        kind = 'json';
        input = el('textarea', { id, name: key, rows: 3, spellcheck: 'false', placeholder: 'JSON' });
      }
      input.setAttribute('aria-describedby', errId);
      if (required.has(key)) input.setAttribute('aria-required', 'true');
      const hint = [kind === 'json' ? 'JSON' : kind, p.minimum !== undefined ? 'min ' + p.minimum : '', p.maximum !== undefined ? 'max ' + p.maximum : '']
        .filter(Boolean).join(', ');
      const wrap = el('div', { class: 'field', 'data-key': key },
        el('label', { for: id }, key, required.has(key) ? el('span', { class: 'req' }, ' (required)') : null,
          el('span', { class: 'hint' }, ' ' + hint)),
        input,
        el('span', { id: errId, class: 'field-error', 'aria-live': 'polite' }));
      return { key, kind, input, wrap, err: wrap.lastChild, required: required.has(key) };
    });
    fieldsBox.replaceChildren(...(controls.length ? controls.map((c) => c.wrap) : [el('p', { class: 'sub' }, 'This element has no content to fill in.')]));
  };
  elementSel.addEventListener('change', renderFields);
  renderFields();

  const clearErrors = () => controls.forEach((c) => { c.err.textContent = ''; c.input.removeAttribute('aria-invalid'); });
  const fieldError = (key, text) => {
    const c = controls.find((x) => x.key === key);
    if (!c) return false;
    c.err.textContent = text;
    c.input.setAttribute('aria-invalid', 'true');
    return true;
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors();
    const data = {};
    let bad = null;
    for (const c of controls) {
      const raw = c.input.value;
      if (raw === '') {
        if (c.required && !bad) bad = c;
        if (c.required) fieldError(c.key, 'Required.');
        continue;
      }
      if (c.kind === 'enum') data[c.key] = c.input.enumValues[Number(raw)];
      else if (c.kind === 'boolean') data[c.key] = raw === 'true';
      else if (c.kind === 'number' || c.kind === 'integer') {
        const n = Number(raw);
        if (!isFinite(n)) { fieldError(c.key, 'Not a number.'); bad = bad || c; continue; }
        data[c.key] = n;
      } else if (c.kind === 'json') {
        try { data[c.key] = JSON.parse(raw); } catch { fieldError(c.key, 'Not valid JSON.'); bad = bad || c; }
      } else data[c.key] = raw;
    }
    if (bad) { bad.input.focus(); return; }
    send.disabled = true;
    sentId = '';
    outcome.dataset.status = 'sending';
    outcome.replaceChildren(el('p', {}, 'Sending…'));
    try {
      const c = await api('POST', '/v1/devices/' + esc(jid) + '/commands', { body: { element: elementSel.value, data, mode: queue.checked ? 'queue' : 'async' }, signal: view.signal });
      sentId = c.id;
      showOutcome(c);
      onCommand(c);
      await followCommand(view, c, (x) => { showOutcome(x); onCommand(x); }, () => TERMINAL.has(sentStatus));
    } catch (err) {
      if (err.name === 'AbortError') return;
      const d = err.details || {};
      const key = typeof d.path === 'string' ? d.path.replace(/^data\.?/, '').split(/[.[]/)[0] : '';
      outcome.dataset.status = 'refused';
      const x = explain(err);
      outcome.replaceChildren(el('p', { class: 'error-text', 'data-code': x.code }, 'Not sent: ' + x.text));
      if (err.code === 'json_not_mappable' && key) fieldError(key, d.reason || err.message);
      if (err.status === 401) showError(err);
      if (d.id && d.status) onCommand(d);
    } finally {
      send.disabled = false;
    }
  });
  return { update: showOutcome };
}

// followCommand polls a command until it ends, done() says the event
// stream showed its end, or OUTCOME_MS passes.
async function followCommand(view, c, update, done) {
  const until = Date.now() + OUTCOME_MS + (c.timeout_ms || 0);
  let delay = 250;
  while (!TERMINAL.has(c.status) && !done() && Date.now() < until && !view.closed) {
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 2000);
    if (done()) break;
    c = await api('GET', '/v1/commands/' + esc(c.id), { signal: view.signal });
    update(c);
  }
}

// ---- the schema page ---------------------------------------------------

async function schemaPage(view, main, name, q) {
  const signal = view.signal;
  const base = '/v1/schemas/' + esc(name);
  const list = await api('GET', base + '/versions', { signal });
  const versions = (list.items || []).slice().sort((a, b) => a.version - b.version);
  main.append(el('h1', { id: 'schema-title' }, 'Schema ' + name));
  if (!versions.length) {
    main.append(el('p', { text: 'No version.' }));
    return;
  }
  const want = Number(q.get('v'));
  const v = versions.find((x) => x.version === want) || versions[versions.length - 1];

  const vs = section('Versions', 'versions-section');
  vs.append(el('div', { class: 'table-wrap' },
    el('table', {},
      el('thead', {}, el('tr', {}, ['Version', 'Description', 'Namespace', 'Elements', 'Registered'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, versions.map((x) => el('tr', { 'aria-current': x.version === v.version ? 'true' : null },
        el('td', {}, el('a', { href: '#/schemas/' + esc(name) + '?v=' + x.version }, 'v' + x.version)),
        el('td', {}, x.description || ''),
        el('td', { class: 'jid' }, x.target_namespace || ''),
        el('td', {}, (x.global_elements || []).join(', ')),
        el('td', {}, timeEl(x.created_at))))))));
  main.append(vs);

  const xs = section('XSD of v' + v.version, 'xsd-section');
  const pre = el('pre', { id: 'xsd', class: 'code', tabindex: '0' }, 'Loading…');
  xs.append(pre);
  const ex = section('Example reading', 'example-section');
  const exBox = el('div', { id: 'example' }, el('p', {}, 'Looking for a device of this version…'));
  ex.append(exBox);
  main.append(xs, ex);

  const xsd = await api('GET', base + '/versions/' + v.version + '/xsd', { signal, text: true });
  pre.textContent = xsd.length > MAX_TEXT ? xsd.slice(0, MAX_TEXT) + '\n… (cut at ' + MAX_TEXT + ' characters)' : xsd;

  try {
    const devs = await api('GET', '/v1/devices?' + new URLSearchParams({ schema: name, limit: String(PAGE_LIMIT) }), { signal });
    const jids = (devs.items || []).filter((d) => d.schema_version === v.version).map((d) => d.jid);
    let best = null;
    if (jids.length) {
      const st = await api('POST', '/v1/devices/states', { body: { jids }, signal });
      for (const s of st.items || []) {
        if (s.reading && (!best || Date.parse(s.reading.received_at) > Date.parse(best.reading.received_at))) best = s;
      }
    }
    if (!best) {
      exBox.replaceChildren(el('p', {}, 'None: no device using v' + v.version + ' has sent a reading yet.'));
      return;
    }
    exBox.replaceChildren(
      el('p', { class: 'sub' }, 'The latest reading of ', el('a', { href: '#/devices/' + esc(best.jid) }, best.jid), ', ', timeEl(best.reading.received_at), ', as JSON:'),
      el('pre', { class: 'code', tabindex: '0' }, JSON.stringify(best.reading.data, null, 2)),
      best.reading.xml ? el('details', {}, el('summary', {}, 'As XML'), el('pre', { class: 'code' }, best.reading.xml)) : '');
  } catch (e) {
    if (e.name === 'AbortError') return;
    exBox.replaceChildren(el('p', {}, 'No example: ' + explain(e).text));
  }
}

// ---- start -------------------------------------------------------------

$('#skip').addEventListener('click', (e) => {
  // The hash is the router's: move the focus without touching it.
  e.preventDefault();
  $('#main').focus();
});
addEventListener('hashchange', route);
checkReady();
setInterval(checkReady, READY_MS);
route();
