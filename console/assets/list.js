// list.js: the device list, its filters and its live rows.

'use strict';

const MAX_DEVICE_PAGES = 20;     // so at most 2,000 devices in the list
const LIST_POLL_MS = 30000;      // the device list's polling then

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
