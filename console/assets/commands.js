// commands.js: the command form generated from the schema, a sent
// command's outcome and the table of recent commands.

'use strict';

const OUTCOME_MS = 60000;        // how long a command's outcome is followed
const TERMINAL = new Set(['succeeded', 'failed', 'timed_out', 'expired', 'canceled']);

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
