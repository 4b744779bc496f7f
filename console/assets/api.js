// api.js: the token, calls to iotgate's REST API and the sentences its
// problem JSON becomes.

'use strict';

const TOKEN_KEY = 'iotgate.token';
const PAGE_LIMIT = 100;          // devices per page of GET /v1/devices
const STATES_BATCH = 500;        // POST /v1/devices/states takes 500 JIDs

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
