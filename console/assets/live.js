// live.js: the event stream (with polling while it is down).

'use strict';

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
