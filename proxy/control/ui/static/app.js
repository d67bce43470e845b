// The live view: plain DOM over the control API. Everything a sandbox can
// influence (hosts, paths, console lines) is written with textContent only.
'use strict';

const TOKEN_KEY = 'outbound.adminToken';
const MAX_DECISIONS = 500;
const MAX_CONSOLE = 200;
const POLL_MS = 5000;

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);
let handlersByClass = {};
const rows = new Map(); // instance id -> {tr, json, cells}
let pendingToken = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k in e && typeof v !== 'string') e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function setConn(state, text) {
  const c = $('conn');
  c.dataset.state = state;
  c.textContent = text;
}

function say(text, isError) {
  const m = $('action-msg');
  m.textContent = text;
  m.classList.toggle('error', !!isError);
}

// askToken shows the token dialog once, however many calls are waiting.
function askToken(why) {
  if (pendingToken) return pendingToken;
  const dlg = $('token-dialog');
  $('token-why').textContent = why;
  $('token').value = '';
  pendingToken = new Promise((resolve) => {
    $('token-form').onsubmit = (ev) => {
      ev.preventDefault();
      token = $('token').value.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      dlg.close();
      pendingToken = null;
      $('change-token').hidden = false;
      resolve();
    };
  });
  dlg.showModal();
  $('token').focus();
  return pendingToken;
}

// api calls the control API with the token as a header, asking for the
// token (again) when the server refuses it.
async function api(path, opts = {}) {
  for (;;) {
    const headers = new Headers(opts.headers || {});
    if (token) headers.set('Authorization', 'Bearer ' + token);
    const res = await fetch(path, { ...opts, headers, cache: 'no-store' });
    if (res.status !== 401) return res;
    setConn('auth', 'Waiting for the admin token');
    await askToken(token
      ? 'The server refused that token. Enter the admin token again.'
      : 'This outbound needs its admin token (--admin-token). It is kept in this tab only and sent as a header.');
  }
}

async function apiJSON(path, opts) {
  const res = await api(path, opts);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || res.status + ' ' + res.statusText);
  return body;
}

// --- script status ---

async function loadStatus() {
  const st = await apiJSON('/v1/status');
  handlersByClass = st.outboundHandlers || {};
  const s = st.script;
  $('script-status').textContent = s.path + ': generation ' + s.generation +
    (s.error ? ' keeps serving' : ' serving') + '; classes ' + (st.classes.join(', ') || 'none');
  const errs = [];
  if (s.error) errs.push('Last reload failed: ' + s.error);
  if (s.envError) errs.push('Env file: ' + s.envError);
  $('script-error').textContent = errs.join('\n');
  $('script-error').hidden = errs.length === 0;
  for (const r of rows.values()) fillHandlerChoices(r, r.view);
}

// --- instances ---

function list(v) {
  if (v === null || v === undefined) return 'not set';
  return v.length ? v.join(', ') : 'none (empty list)';
}

function handlerText(h) {
  if (!h) return 'none set';
  return h.method + (h.params === null || h.params === undefined ? '' : ' ' + JSON.stringify(h.params));
}

function byHostText(m) {
  const e = Object.entries(m || {});
  return e.length ? e.map(([host, h]) => host + ' \u2192 ' + handlerText(h)).join('; ') : 'none set';
}

function newRow(id, n) {
  const tr = el('tr', { 'data-instance': id });
  const cells = {};
  for (const k of ['id', 'class', 'internet', 'https', 'allowed', 'denied', 'byhost']) {
    cells[k] = el(k === 'id' ? 'th' : 'td', k === 'id' ? { scope: 'row' } : {});
    tr.append(cells[k]);
  }
  cells.current = el('span', { class: 'current' });
  const sel = el('select', { id: 'handler-' + n, name: 'handler' });
  const params = el('input', { id: 'params-' + n, name: 'params', placeholder: 'params as JSON (optional)', autocomplete: 'off', spellcheck: false });
  const form = el('form', { class: 'switch' },
    el('label', { for: 'handler-' + n, class: 'visually-hidden' }, 'Outbound handler for ' + id), sel,
    el('label', { for: 'params-' + n, class: 'visually-hidden' }, 'Params for ' + id), params,
    el('button', { type: 'submit', 'aria-label': 'Switch the outbound handler of ' + id }, 'Switch'));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); switchHandler(id, sel, params); });
  tr.append(el('td', {}, el('p', {}, 'Now: ', cells.current), form));
  const har = el('button', { type: 'button' }, 'Download HAR');
  har.setAttribute('aria-label', 'Download HAR of ' + id);
  har.addEventListener('click', () => downloadHAR(id));
  tr.append(el('td', {}, har));
  cells.id.textContent = id;
  return { tr, cells, sel, params, form, choices: '' };
}

function fillHandlerChoices(r, view) {
  if (!view) return;
  const names = handlersByClass[view.class] || [];
  const key = names.join('\n');
  if (key !== r.choices) {
    r.choices = key;
    r.sel.replaceChildren(el('option', { value: '', disabled: true }, 'choose a handler'),
      ...names.map((n) => el('option', { value: n }, n)));
  }
  if (document.activeElement !== r.sel) {
    const cur = view.outboundHandler && view.outboundHandler.method;
    r.sel.value = names.includes(cur) ? cur : '';
  }
  r.form.hidden = names.length === 0;
  if (names.length === 0) r.cells.current.title = 'The class has no outboundHandlers';
}

function showInstance(r, view) {
  r.view = view;
  const c = r.cells;
  c.class.textContent = view.class + (view.classMissing ? ' (missing from the script: blocked)' : '');
  c.internet.textContent = view.enableInternet ? 'on' : 'off';
  c.https.textContent = view.interceptHttps ? 'on' : 'off';
  c.allowed.textContent = list(view.allowedHosts);
  c.denied.textContent = list(view.deniedHosts);
  c.byhost.textContent = byHostText(view.outboundByHost);
  const stale = (view.stale || []).filter((s) => s.override === 'outboundHandler').length ? ' (stale: not in the script)' : '';
  c.current.textContent = handlerText(view.outboundHandler) + stale;
  fillHandlerChoices(r, view);
}

let rowSeq = 0;
async function loadInstances() {
  const views = await apiJSON('/v1/instances');
  const seen = new Set();
  const tbody = $('instances').tBodies[0];
  for (const v of views) {
    seen.add(v.id);
    let r = rows.get(v.id);
    if (!r) {
      r = newRow(v.id, rowSeq++);
      rows.set(v.id, r);
      tbody.append(r.tr);
      addInstanceOption(v.id);
    }
    const json = JSON.stringify(v);
    if (json !== r.json) {
      r.json = json;
      showInstance(r, v);
    }
  }
  for (const [id, r] of rows) {
    if (!seen.has(id)) {
      r.tr.remove();
      rows.delete(id);
    }
  }
  $('no-instances').hidden = rows.size > 0;
}

function addInstanceOption(id) {
  const sel = $('f-instance');
  if (![...sel.options].some((o) => o.value === id)) sel.append(el('option', { value: id }, id));
}

async function switchHandler(id, sel, paramsInput) {
  if (!sel.value) {
    say('Choose a handler for ' + id + ' first.', true);
    sel.focus();
    return;
  }
  const args = [sel.value];
  const raw = paramsInput.value.trim();
  if (raw) {
    try {
      args.push(JSON.parse(raw));
    } catch (e) {
      say('Params for ' + id + ' are not JSON: ' + e.message, true);
      paramsInput.focus();
      return;
    }
  }
  try {
    const view = await apiJSON('/v1/instances/' + encodeURIComponent(id) + '/setOutboundHandler', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(args),
    });
    const r = rows.get(id);
    if (r) {
      r.json = JSON.stringify(view);
      showInstance(r, view);
    }
    say(id + ' now uses handler ' + handlerText(view.outboundHandler) + '.');
  } catch (e) {
    say('Switching ' + id + ' failed: ' + e.message, true);
  }
}

async function downloadHAR(id) {
  try {
    const res = await api('/v1/instances/' + encodeURIComponent(id) + '/har');
    if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || res.statusText);
    const url = URL.createObjectURL(await res.blob());
    const a = el('a', { href: url, download: id + '.har' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    say('HAR of ' + id + ' downloaded.');
  } catch (e) {
    say('HAR of ' + id + ' failed: ' + e.message, true);
  }
}

// --- decisions and console ---

function two(n, w = 2) { return String(n).padStart(w, '0'); }
function clock(iso) {
  const d = new Date(iso);
  return two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds()) + '.' + two(d.getMilliseconds(), 3);
}

function filterRow(tr) {
  const inst = $('f-instance').value;
  const outcome = document.querySelector('input[name="f-outcome"]:checked').value;
  tr.hidden = (inst !== '' && tr.dataset.instance !== inst) ||
    (outcome !== 'all' && tr.dataset.outcome !== outcome);
}

function applyFilters() {
  for (const tr of $('decisions').tBodies[0].rows) filterRow(tr);
}

function onDecision(d) {
  const blocked = d.blocked === true; // the server's word: no list of steps here
  const tr = el('tr', { 'data-instance': d.instance, 'data-outcome': blocked ? 'blocked' : 'allowed', class: blocked ? 'blocked' : '' },
    el('td', {}, clock(d.time)),
    el('td', {}, d.instance || '(none)'),
    el('td', {}, el('span', { class: 'badge ' + (blocked ? 'b-blocked' : 'b-allowed') }, blocked ? 'blocked' : 'allowed')),
    el('td', {}, d.method),
    el('td', {}, d.host),
    el('td', { class: 'path' }, d.path),
    el('td', {}, d.step),
    el('td', {}, d.handler ?? ''),
    el('td', {}, d.status),
    el('td', { class: 'num' }, d.ms.toFixed(2)));
  filterRow(tr);
  const tbody = $('decisions').tBodies[0];
  tbody.prepend(tr);
  while (tbody.rows.length > MAX_DECISIONS) tbody.lastElementChild.remove();
  if (d.instance && !rows.has(d.instance)) refreshSoon();
}

function onConsole(c) {
  const ol = $('console');
  ol.prepend(el('li', { class: 'lvl-' + c.level },
    el('span', { class: 'when' }, clock(c.time)), ' ',
    el('span', { class: 'who' }, c.instance || '(script)'), ' ',
    el('span', { class: 'lvl' }, c.level), ' ',
    el('span', { class: 'msg' }, c.message)));
  while (ol.children.length > MAX_CONSOLE) ol.lastElementChild.remove();
}

let dropped = 0;
function onEvent(kind, data) {
  switch (kind) {
    case 'decision': onDecision(data); break;
    case 'console': onConsole(data); break;
    case 'reload': loadStatus().catch(() => {}); loadInstances().catch(() => {}); break;
    case 'dropped':
      dropped += data.dropped;
      $('dropped').textContent = dropped + ' events were dropped because this page fell behind.';
      $('dropped').hidden = false;
      break;
  }
}

let refreshTimer = null;
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; loadInstances().catch(() => {}); }, 300);
}

// parseBlock reads one Server-Sent Events block.
function parseBlock(block) {
  let kind = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') kind = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length) onEvent(kind, JSON.parse(data.join('\n')));
}

// stream reads /v1/events with fetch, since EventSource cannot send the
// token as a header, and reconnects when the stream ends.
async function stream() {
  let backoff = 1000;
  for (;;) {
    try {
      const res = await api('/v1/events');
      if (!res.ok) throw new Error(res.status + ' ' + res.statusText);
      setConn('live', 'Live');
      backoff = 1000;
      // Catch up on what changed while the stream was down.
      loadStatus().catch(() => {});
      loadInstances().catch(() => {});
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          parseBlock(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
      setConn('down', 'Stream ended; reconnecting…');
    } catch (e) {
      setConn('down', 'Disconnected (' + e.message + '); reconnecting…');
    }
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 15000);
  }
}

async function poll() {
  for (;;) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    await loadInstances().catch(() => {});
  }
}

function init() {
  $('change-token').hidden = !token;
  $('change-token').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  // Nothing works without the token: Escape does not dismiss the question.
  $('token-dialog').addEventListener('cancel', (ev) => ev.preventDefault());
  $('f-instance').addEventListener('change', applyFilters);
  for (const r of document.querySelectorAll('input[name="f-outcome"]')) r.addEventListener('change', applyFilters);
  $('clear').addEventListener('click', () => {
    $('decisions').tBodies[0].replaceChildren();
    $('console').replaceChildren();
    dropped = 0;
    $('dropped').hidden = true;
  });
  loadStatus().catch((e) => { $('script-status').textContent = 'Status unavailable: ' + e.message; });
  loadInstances().catch((e) => say('Instances unavailable: ' + e.message, true));
  stream();
  poll();
}

init();
