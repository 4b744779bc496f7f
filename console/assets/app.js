// app.js: views, routing, the token form, the XMPP banner and the start;
// loaded last, it is the only file that runs anything as it loads.

'use strict';

const READY_MS = 15000;          // how often /readyz is asked

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
