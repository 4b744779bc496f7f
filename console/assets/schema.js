// schema.js: the schema page (versions, XSD, an example reading).

'use strict';

const MAX_TEXT = 200000;         // characters of an XSD shown

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
