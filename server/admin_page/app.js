// The operator page's logic: polls /metrics and /channels, derives rates from counter deltas
// between two polls, and renders them. Read-only; no dependencies.
'use strict';

const POLL_INTERVAL_MS = 1000;
const REQUEST_TIMEOUT_MS = 3000;
const MAX_CHANNEL_ROWS = 500;
const DOORS = ['native', 'grpc'];

// --- Prometheus text exposition -------------------------------------------------------------

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL_PAIR = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Parses the text format into [{name, labels, value}]. */
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = SAMPLE_LINE.exec(line);
    if (!match) continue;
    const labels = {};
    if (match[2]) {
      for (const pair of match[2].matchAll(LABEL_PAIR)) {
        labels[pair[1]] = pair[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      }
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** A poll's samples with lookups by name and labels. */
class Snapshot {
  constructor(samples, time) {
    this.time = time;
    this.byName = new Map();
    for (const sample of samples) {
      if (!this.byName.has(sample.name)) this.byName.set(sample.name, []);
      this.byName.get(sample.name).push(sample);
    }
  }

  has(name) {
    return this.byName.has(name);
  }

  /** Sum of the samples of `name` whose labels include every pair of `match`. */
  sum(name, match = {}) {
    let total = 0;
    for (const sample of this.byName.get(name) || []) {
      if (Object.entries(match).every(([k, v]) => sample.labels[k] === v)) total += sample.value;
    }
    return total;
  }

  /** The distinct values of label `label` among the samples of `name`, in exposition order. */
  labelValues(name, label) {
    const values = [];
    for (const sample of this.byName.get(name) || []) {
      const value = sample.labels[label];
      if (value !== undefined && !values.includes(value)) values.push(value);
    }
    return values;
  }

  labelsOf(name) {
    const samples = this.byName.get(name);
    return samples && samples.length ? samples[0].labels : {};
  }
}

let previous = null;
let current = null;

/** Per-second rate of a counter between the last two polls; null until there are two, or after
 * a reset (the relay restarted). */
function rate(name, match = {}) {
  if (!previous || !current) return null;
  const seconds = (current.time - previous.time) / 1000;
  const delta = current.sum(name, match) - previous.sum(name, match);
  if (seconds <= 0 || delta < 0) return null;
  return delta / seconds;
}

// --- formatting ------------------------------------------------------------------------------

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

function formatCount(value) {
  return value === null || value === undefined || Number.isNaN(value) ? '–' : integer.format(value);
}

function formatBytes(value, suffix = '') {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let scaled = value;
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || scaled >= 100 ? 0 : 1;
  return `${scaled.toFixed(digits)} ${units[unit]}${suffix}`;
}

function formatRate(value) {
  if (value === null || value === undefined) return '–';
  if (value === 0) return '0';
  return value < 10 ? value.toFixed(1) : integer.format(value);
}

// --- rendering -------------------------------------------------------------------------------

function byId(id) {
  return document.getElementById(id);
}

/** Sets an element's text and, for tests and scripts, its raw number as data-value. */
function show(element, text, raw) {
  element.textContent = text;
  if (raw === null || raw === undefined) element.removeAttribute('data-value');
  else element.dataset.value = String(raw);
}

function cell(row, text, className, raw) {
  const td = document.createElement('td');
  if (className) td.className = className;
  show(td, text, raw);
  row.appendChild(td);
  return td;
}

function replaceRows(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows);
}

function renderHeader(snapshot) {
  const draining = snapshot.sum('switchboard_draining') > 0;
  const status = byId('status');
  status.dataset.state = draining ? 'draining' : 'live';
  status.textContent = draining ? 'draining' : 'live';
  const build = snapshot.labelsOf('switchboard_build_info');
  byId('build').textContent = build.version ? `version ${build.version}` : '';
  const started = snapshot.sum('switchboard_start_time_seconds');
  byId('started').textContent = started
    ? `started ${new Date(started * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}`
    : '';
}

function renderTiles(snapshot) {
  show(byId('tile-channels'), formatCount(snapshot.sum('switchboard_channels')),
    snapshot.sum('switchboard_channels'));
  show(byId('tile-peers'), formatCount(snapshot.sum('switchboard_peers')),
    snapshot.sum('switchboard_peers'));
  const streams = snapshot.sum('switchboard_streams_open');
  show(byId('tile-streams-open'), formatCount(streams), streams);
  const connections = snapshot.sum('switchboard_connections_open');
  show(byId('tile-connections-open'), formatCount(connections), connections);
  const queued = snapshot.sum('switchboard_queued_bytes');
  show(byId('tile-queued-bytes'), formatBytes(queued), queued);
  const received = rate('switchboard_bytes_received_total');
  const sent = rate('switchboard_bytes_sent_total');
  const total = received === null || sent === null ? null : received + sent;
  show(byId('tile-throughput'), formatBytes(total, '/s'), total);
}

function renderDoors(snapshot) {
  const rows = DOORS.map((door) => {
    const match = { door };
    const row = document.createElement('tr');
    row.id = `door-${door}`;
    cell(row, door);
    const received = rate('switchboard_bytes_received_total', match);
    cell(row, formatBytes(received, '/s'), 'num rate-in', received);
    const sent = rate('switchboard_bytes_sent_total', match);
    cell(row, formatBytes(sent, '/s'), 'num rate-out', sent);
    const open = snapshot.sum('switchboard_connections_open', match);
    cell(row, formatCount(open), 'num', open);
    const connecting = rate('switchboard_connections_total', match);
    cell(row, formatRate(connecting), 'num', connecting);
    const streams = snapshot.sum('switchboard_streams_open', match);
    cell(row, formatCount(streams), 'num streams-open', streams);
    const started = rate('switchboard_streams_started_total', match);
    cell(row, formatRate(started), 'num', started);
    const total = snapshot.sum('switchboard_connections_total', match);
    cell(row, formatCount(total), 'num', total);
    return row;
  });
  replaceRows(byId('doors'), rows);
  const note = byId('grpc-transports');
  if (snapshot.has('switchboard_grpc_transports_open')) {
    note.textContent = `gRPC door: ${formatCount(snapshot.sum('switchboard_grpc_transports_open'))} ` +
      `HTTP/2 connections open, ${formatCount(snapshot.sum('switchboard_grpc_transports_total'))} ` +
      'accepted since start (each gRPC call counts as a connection above).';
  } else {
    note.textContent = 'This relay runs without the gRPC door.';
  }
}

function renderChannels(channels) {
  const list = [...channels.channels].sort((a, b) => b.peers - a.peers || a.id.localeCompare(b.id));
  const rows = list.slice(0, MAX_CHANNEL_ROWS).map((channel) => {
    const row = document.createElement('tr');
    row.dataset.channel = channel.id;
    cell(row, channel.id, 'id');
    cell(row, formatCount(channel.peers), 'num peers', channel.peers);
    cell(row, formatCount(channel.version), 'num', channel.version);
    return row;
  });
  replaceRows(byId('channels'), rows);
  byId('channel-count').textContent = `(${formatCount(channels.channel_count)})`;
  byId('channels-note').textContent = list.length === 0
    ? 'No channel has a peer.'
    : list.length > MAX_CHANNEL_ROWS
      ? `Showing the ${MAX_CHANNEL_ROWS} channels with the most peers of ${formatCount(list.length)}.`
      : '';
}

function renderStreams(snapshot) {
  const statuses = snapshot.labelValues('switchboard_streams_total', 'status');
  const rows = [];
  for (const status of statuses) {
    const values = DOORS.map((door) => snapshot.sum('switchboard_streams_total', { door, status }));
    if (status !== 'OK' && values.every((v) => v === 0)) continue;
    const row = document.createElement('tr');
    row.dataset.status = status;
    cell(row, status, status === 'OK' ? '' : 'warn');
    values.forEach((v) => cell(row, formatCount(v), 'num', v));
    const perSecond = rate('switchboard_streams_total', { status });
    cell(row, formatRate(perSecond), 'num', perSecond);
    rows.push(row);
  }
  replaceRows(byId('streams'), rows);
}

/** One row of the failures table. `scope` is 'doors' (one value per door), 'both' (one value
 * for the relay, across both columns) or 'grpc' (a counter of the gRPC door alone). */
function problemRow(snapshot, label, name, match, scope) {
  const row = document.createElement('tr');
  // Breakdowns by reason are indented under their total.
  if (label.startsWith('  ')) cell(row, label.trim(), 'sub');
  else cell(row, label);
  const valueCell = (value) => cell(row, formatCount(value), value > 0 ? 'num bad' : 'num', value);
  if (scope === 'doors') {
    for (const door of DOORS) valueCell(snapshot.sum(name, { ...match, door }));
  } else if (scope === 'grpc') {
    cell(row, '–', 'num');
    valueCell(snapshot.sum(name, match));
  } else {
    const td = valueCell(snapshot.sum(name, match));
    td.colSpan = 2;
    td.classList.add('both');
  }
  const perSecond = rate(name, match);
  cell(row, formatRate(perSecond), 'num', perSecond);
  return row;
}

function renderProblems(snapshot) {
  const rows = [
    problemRow(snapshot, 'Connections refused (limit)', 'switchboard_connections_refused_total', {}, 'doors'),
    problemRow(snapshot, 'Connections throttled', 'switchboard_connections_throttled_total', {}, 'doors'),
    problemRow(snapshot, 'Handshake failures', 'switchboard_handshake_failures_total', {}, 'doors'),
  ];
  for (const reason of snapshot.labelValues('switchboard_handshake_failures_total', 'reason')) {
    if (snapshot.sum('switchboard_handshake_failures_total', { reason }) === 0) continue;
    rows.push(problemRow(snapshot, `  handshake: ${reason}`, 'switchboard_handshake_failures_total',
      { reason }, 'doors'));
  }
  rows.push(
    problemRow(snapshot, 'TLS handshake failures', 'switchboard_tls_handshake_failures_total', {}, 'doors'),
    problemRow(snapshot, 'Protocol errors', 'switchboard_protocol_errors_total', {}, 'doors'),
    problemRow(snapshot, 'Slow consumer drops', 'switchboard_slow_consumer_drops_total', {}, 'doors'),
    problemRow(snapshot, 'Credit stalls', 'switchboard_credit_stalls_total', {}, 'doors'),
    problemRow(snapshot, 'Auth failures (both doors)', 'switchboard_auth_failures_total', {}, 'both'),
  );
  for (const reason of snapshot.labelValues('switchboard_auth_failures_total', 'reason')) {
    if (snapshot.sum('switchboard_auth_failures_total', { reason }) === 0) continue;
    rows.push(problemRow(snapshot, `  auth: ${reason}`, 'switchboard_auth_failures_total',
      { reason }, 'both'));
  }
  if (snapshot.has('switchboard_grpc_guard_violations_total')) {
    rows.push(
      problemRow(snapshot, 'HTTP/2 streams refused', 'switchboard_grpc_refused_streams_total', {},
        'grpc'),
      problemRow(snapshot, 'HTTP/2 guard closes', 'switchboard_grpc_guard_violations_total', {},
        'grpc'),
    );
  }
  replaceRows(byId('problems'), rows);
}

// --- polling ---------------------------------------------------------------------------------

async function fetchWithTimeout(path) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  try {
    const response = await fetch(path, { cache: 'no-store', signal: controller.signal });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response;
  } finally {
    clearTimeout(timer);
  }
}

function markUnreachable(error) {
  const status = byId('status');
  status.dataset.state = 'unreachable';
  status.textContent = 'relay unreachable';
  status.title = String(error && error.message ? error.message : error);
  document.body.classList.add('stale');
  // A restarted relay starts its counters again: rates resume after two good polls.
  previous = null;
  current = null;
}

async function poll() {
  let fetched = null;
  try {
    const [metricsResponse, channelsResponse] = await Promise.all([
      fetchWithTimeout('/metrics'),
      fetchWithTimeout('/channels'),
    ]);
    fetched = await Promise.all([metricsResponse.text(), channelsResponse.json()]);
  } catch (error) {
    markUnreachable(error);
  }
  try {
    // Outside the catch above: a rendering bug must surface as an error, not as "unreachable".
    if (fetched) render(fetched[0], fetched[1]);
  } finally {
    setTimeout(poll, POLL_INTERVAL_MS);
  }
}

function render(metricsText, channels) {
  previous = current;
  current = new Snapshot(parseMetrics(metricsText), performance.now());
  document.body.classList.remove('stale');
  byId('status').removeAttribute('title');
  renderHeader(current);
  renderTiles(current);
  renderDoors(current);
  renderChannels(channels);
  renderStreams(current);
  renderProblems(current);
}

poll();
