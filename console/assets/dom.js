// iotgate console: plain scripts, no framework, no build step. index.html
// loads them in order (dom.js, api.js, live.js, jsonschema.js, chart.js,
// commands.js, device.js, list.js, schema.js, app.js), all deferred; they
// share the page's global scope, and only app.js, last, runs anything.
//
// Rules these files keep:
// - API data reaches the page through textContent and attributes only,
//   never innerHTML (el() below is the only way nodes are made).
// - The token lives in sessionStorage (this tab only) and travels in the
//   Authorization header; never in localStorage, never in a URL.
// - Every loop and list is bounded: pages of devices, points on the chart,
//   rows of tables, the polling of a command's outcome.
//
// dom.js: making elements and the status line.

'use strict';

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

// labelChips shows a device's labels (key:value) as a list of chips.
function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return el('span', { class: 'sub', text: 'none' });
  return el('ul', { class: 'chips' }, entries.map(([k, v]) => el('li', {}, k + ':' + v)));
}
