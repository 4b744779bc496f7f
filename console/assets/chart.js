// chart.js: the device page's chart (uPlot): which fields, their scales,
// the history and the live points.

'use strict';

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
const COLORS = ['#1565c0', '#c62828', '#2e7d32', '#6a1b9a', '#ef6c00', '#00838f', '#5d4037', '#455a64'];

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
