// device.js: the device page (summary, chart, latest reading, resources,
// commands and rejections).

'use strict';

const MAX_ROWS = 200;            // rows of the latest-reading table
const RECENT = 10;               // recent commands and rejections shown
const POLL_MS = 5000;            // polling when the event stream is down

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
