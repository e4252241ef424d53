// @ts-check
// The dashboard: an overview of every site, a page per site, a form to create one, and the queue of
// readings entered here. Views are chosen by the URL's fragment (#/, #/sites/7, #/new); each needs a
// session, and shows only what that session may do. Without one, the sign-in view stands in.

import { ApiError, createSite, existingSession, mayWrite, onSessionEnded, series, signIn, signOut } from './api.js';
import { drawSeries } from './chart.js';
import { Feed } from './live.js';
import { Queue } from './queue.js';

/** @typedef {import('./api-types').SiteMetrics} SiteMetrics */
/** @typedef {import('./api.js').SessionInfo} SessionInfo */
/** @typedef {import('./queue.js').QueuedBatch} QueuedBatch */

const feed = new Feed();
const queue = new Queue();
const view = /** @type {HTMLElement} */ (document.getElementById('view'));
/** What the current view must undo when another replaces it. */
let leaveView = () => {};
/** @type {SessionInfo | null} who is signed in; null while the sign-in view is shown */
let session = null;

/**
 * Makes an element. @param {string} tag @param {Record<string, string>} [attributes]
 * @param {(Node | string)[]} [children]
 */
function h(tag, attributes = {}, children = []) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/** @param {string | null} at */
function when(at) {
  return at ? new Date(at).toLocaleString() : 'no readings yet';
}

/** @param {SiteMetrics} site */
function badge(site) {
  const over = site.compliance_status === 'Limit Exceeded';
  return h('span', { class: over ? 'badge over' : 'badge' }, [site.compliance_status]);
}

/** @param {SiteMetrics} site */
function bar(site) {
  const percent = Number(site.utilization_pct);
  const fill = h('span', { style: `width: ${Math.min(100, percent)}%` });
  const over = site.compliance_status === 'Limit Exceeded';
  return h(
    'div',
    {
      class: over ? 'bar over' : 'bar',
      role: 'meter',
      'aria-valuemin': '0',
      'aria-valuemax': '100',
      'aria-valuenow': String(Math.min(100, percent)),
      'aria-label': `${site.utilization_pct}% of the limit`,
    },
    [fill],
  );
}

// ---- Overview ----------------------------------------------------------------------------------

function overview() {
  const body = h('tbody');
  const table = h('table', { id: 'sites' }, [
    h('caption', { class: 'visually-hidden' }, ['Every site, updated as readings arrive']),
    h('thead', {}, [
      h('tr', {}, [
        h('th', { scope: 'col' }, ['Site']),
        h('th', { scope: 'col' }, ['Total vs limit']),
        h('th', { scope: 'col', class: 'hide-narrow' }, ['Total (kg)']),
        h('th', { scope: 'col', class: 'hide-narrow' }, ['Limit (kg)']),
        h('th', { scope: 'col' }, ['Status']),
        h('th', { scope: 'col', class: 'hide-narrow' }, ['Last reading']),
      ]),
    ]),
    body,
  ]);
  const empty = h('p', {}, ['No sites yet. ', ...(session?.can_create_sites ? [h('a', { href: '#/new' }, ['Create one.'])] : [])]);
  /** @type {Map<number, HTMLElement>} each site's row, updated in place so focus stays put */
  const rows = new Map();
  const render = () => {
    const sites = [...feed.sites.values()].sort((a, b) => a.site_id - b.site_id);
    for (const site of sites) {
      let row = rows.get(site.site_id);
      if (!row) {
        row = h('tr', { 'data-site-id': String(site.site_id) }, [
          h('th', { scope: 'row' }, [h('a', { href: `#/sites/${site.site_id}` })]),
          h('td', { class: 'bar-cell' }),
          h('td', { class: 'total hide-narrow' }),
          h('td', { class: 'limit hide-narrow' }),
          h('td', { class: 'status' }),
          h('td', { class: 'last hide-narrow' }),
        ]);
        // Ids only grow: a new site goes last, and no existing row moves.
        body.append(row);
        rows.set(site.site_id, row);
      }
      const cell = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (row.querySelector(selector));
      cell('a').textContent = site.name;
      cell('.bar-cell').replaceChildren(bar(site));
      cell('.total').textContent = site.total_emissions_to_date;
      cell('.limit').textContent = site.emission_limit;
      cell('.status').replaceChildren(badge(site));
      cell('.last').textContent = when(site.last_reading_at);
    }
    empty.hidden = sites.length > 0 || feed.cursor === null;
    table.hidden = sites.length === 0;
  };
  view.replaceChildren(h('h1', {}, ['Sites']), empty, h('div', { class: 'scroll' }, [table]));
  render();
  leaveView = feed.subscribe(render);
}

// ---- Site page ---------------------------------------------------------------------------------

/** @type {Record<string, () => { from: Date, to: Date }>} */
const RANGES = {
  hour: () => {
    const to = new Date();
    to.setUTCMinutes(0, 0, 0);
    to.setUTCHours(to.getUTCHours() + 1);
    return { from: new Date(to.getTime() - 48 * 3600e3), to };
  },
  day: () => {
    const to = new Date();
    to.setUTCHours(0, 0, 0, 0);
    to.setUTCDate(to.getUTCDate() + 1);
    return { from: new Date(to.getTime() - 60 * 86400e3), to };
  },
  month: () => {
    const now = new Date();
    const to = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
    return { from: new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 23, 1)), to };
  },
};
const RANGE_NAMES = { hour: 'per hour, last 48 hours', day: 'per day, last 60 days', month: 'per month, last 24 months' };

/**
 * A labelled input with room for its error. @param {string} name @param {string} label
 * @param {Record<string, string>} attributes @param {string} [hint]
 */
function field(name, label, attributes, hint) {
  const id = `field-${name}`;
  const input = attributes.tag === 'select' ? h('select', { id, name }) : h('input', { id, name, ...attributes });
  const error = h('p', { class: 'field-error', id: `${id}-error`, hidden: '' });
  input.setAttribute('aria-describedby', hint ? `${id}-hint ${id}-error` : `${id}-error`);
  const children = [h('label', { for: id }, [label]), input, error];
  if (hint) children.splice(2, 0, h('small', { id: `${id}-hint` }, [hint]));
  return { element: h('div', { class: 'field' }, children), input, error };
}

/**
 * Shows the envelope's problems beside their fields; any other goes to `notice`.
 * @param {Record<string, { input: HTMLElement, error: HTMLElement }>} fields
 * @param {HTMLElement} notice
 * @param {ApiError} error
 * @param {(path: string) => string} fieldOf maps a problem's path to a field name
 */
function showErrors(fields, notice, error, fieldOf) {
  clearErrors(fields, notice);
  const unplaced = [];
  for (const detail of error.details) {
    const target = fields[fieldOf(detail.path)];
    if (target) {
      target.error.textContent = `${detail.message}.`;
      target.error.hidden = false;
      target.input.setAttribute('aria-invalid', 'true');
    } else {
      unplaced.push(`${detail.path} ${detail.message}`);
    }
  }
  if (error.details.length === 0 || unplaced.length > 0) {
    notice.textContent = unplaced.length > 0 ? unplaced.join('; ') : error.message;
  }
  const first = Object.values(fields).find((f) => f.input.getAttribute('aria-invalid') === 'true');
  first?.input.focus();
}

/** @param {Record<string, { input: HTMLElement, error: HTMLElement }>} fields @param {HTMLElement} notice */
function clearErrors(fields, notice) {
  for (const { input, error } of Object.values(fields)) {
    error.hidden = true;
    error.textContent = '';
    input.removeAttribute('aria-invalid');
  }
  notice.textContent = '';
}

/** @param {number} siteId */
function sitePage(siteId) {
  const heading = h('h1', {}, [`Site ${siteId}`]);
  const stats = h('dl', { class: 'stats' });
  // Live regions are in the page from the start (empty), so their first message is announced.
  const status = h('p', { class: 'notice', role: 'status' });
  const chart = h('div', { class: 'chart', id: 'chart', role: 'img', 'aria-label': 'Chart of the emissions per bucket', 'aria-describedby': 'chart-note' });
  const bucket = /** @type {HTMLSelectElement} */ (h('select', { id: 'bucket' }, ['hour', 'day', 'month'].map((b) => h('option', { value: b }, [b]))));
  const chartNote = h('p', { id: 'chart-note' });

  const showMetrics = () => {
    const site = feed.sites.get(siteId);
    if (!site) {
      stats.replaceChildren(h('div', {}, [h('dt', {}, ['Site']), h('dd', {}, [feed.cursor ? 'not found' : 'loading…'])]));
      return;
    }
    heading.textContent = site.name;
    const stat = (/** @type {string} */ label, /** @type {Node | string} */ value, id = '') =>
      h('div', {}, [h('dt', {}, [label]), h('dd', id ? { id } : {}, [value])]);
    stats.replaceChildren(
      stat('Total (kg)', site.total_emissions_to_date, 'site-total'),
      stat('Limit (kg)', site.emission_limit),
      stat('Of the limit', `${site.utilization_pct}%`),
      stat('Status', badge(site)),
      stat('Readings', String(site.reading_count), 'site-readings'),
      stat('Last reading', when(site.last_reading_at)),
    );
  };

  let drawing = 0;
  const showSeries = async () => {
    const name = /** @type {'hour' | 'day' | 'month'} */ (bucket.value);
    const { from, to } = RANGES[name]();
    const mine = ++drawing;
    try {
      const buckets = await series(siteId, name, from, to);
      if (mine !== drawing) return;
      chartNote.textContent = `${buckets.length} ${name}s with readings, emissions ${RANGE_NAMES[name]} (UTC).`;
      drawSeries(chart, buckets, `kg ${RANGE_NAMES[name]}`);
    } catch (error) {
      if (mine === drawing) chartNote.textContent = `The chart cannot be loaded: ${error instanceof ApiError ? error.message : error}.`;
    }
  };
  bucket.addEventListener('change', showSeries);

  // Manual entry.
  const fields = {
    source_id: field('source_id', 'Source', { value: 'manual', required: '', maxlength: '64', autocomplete: 'off' }),
    timestamp: field('timestamp', 'Time of the reading', { type: 'datetime-local', step: '1', value: localNow() }, 'Your local time'),
    value: field('value', 'Value', { inputmode: 'decimal', autocomplete: 'off' }, 'A decimal number, e.g. 12.5'),
    unit: field('unit', 'Unit', { tag: 'select' }),
  };
  fields.unit.input.append(...['kg', 'g', 't'].map((unit) => h('option', { value: unit }, [unit])));
  const formNotice = h('p', { class: 'notice error', role: 'alert' });
  const form = h('form', { id: 'ingest-form', novalidate: '' }, [
    h('h2', {}, ['Enter a reading']),
    formNotice,
    ...Object.values(fields).map((f) => f.element),
    h('button', { type: 'submit' }, ['Queue and send']),
  ]);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(fields, formNotice);
    const value = (/** @type {keyof typeof fields} */ name) => /** @type {HTMLInputElement} */ (fields[name].input).value;
    const local = value('timestamp');
    const at = new Date(local);
    const reading = {
      source_id: value('source_id'),
      timestamp: Number.isNaN(at.getTime()) ? local : at.toISOString(),
      value: value('value'),
      unit: value('unit'),
    };
    await queue.add(siteId, [reading], 'form');
    say('The reading is queued; it is sent now and kept until the server has stored it.');
  });

  const count = field('sensor_count', 'Readings to generate', { type: 'number', min: '1', max: '1000', value: '20' });
  const sensor = h('form', { id: 'sensor-form' }, [
    h('h2', {}, ['Simulate a sensor']),
    h('p', {}, ['Generates readings one a minute up to now, from source ', h('code', {}, ['simulated']), ', as one batch.']),
    count.element,
    h('button', { type: 'submit', class: 'secondary' }, ['Simulate sensor']),
  ]);
  sensor.addEventListener('submit', async (event) => {
    event.preventDefault();
    const n = Math.max(1, Math.min(1000, Number(/** @type {HTMLInputElement} */ (count.input).value) || 20));
    const now = Math.floor(Date.now() / 60000) * 60000;
    const readings = Array.from({ length: n }, (_, i) => ({
      source_id: 'simulated',
      timestamp: new Date(now - (n - 1 - i) * 60000).toISOString(),
      value: (0.5 + Math.random() * 2).toFixed(3),
      unit: 'kg',
    }));
    await queue.add(siteId, readings, 'sensor');
    say(`${n} simulated readings are queued.`);
  });

  /** @param {string} text */
  const say = (text) => {
    status.textContent = text;
  };

  view.replaceChildren(
    h('p', {}, [h('a', { href: '#/' }, ['← All sites'])]),
    heading,
    status,
    stats,
    h('section', { 'aria-labelledby': 'chart-title' }, [
      h('h2', { id: 'chart-title' }, ['Emissions']),
      h('label', { for: 'bucket' }, ['Bucket ']),
      bucket,
      chartNote,
      chart,
    ]),
    mayWrite(session, siteId)
      ? h('div', { class: 'columns' }, [form, sensor])
      : h('p', { id: 'read-only' }, ['This session may view this site but not enter readings for it.']),
  );
  showMetrics();
  showSeries();

  const unsubscribe = feed.subscribe((changed) => {
    showMetrics();
    if (changed.some((site) => site.site_id === siteId)) showSeries();
  });
  /** @param {QueuedBatch} batch @param {number} httpStatus */
  const delivered = (batch, httpStatus) => {
    if (batch.siteId !== siteId) return;
    say(httpStatus === 200
      ? 'Delivered: the server had already stored this batch, so it answered from the stored result and counted nothing twice.'
      : 'Delivered and stored.');
  };
  /** @param {QueuedBatch} batch @param {ApiError} error */
  const rejected = (batch, error) => {
    if (batch.siteId !== siteId || batch.origin !== 'form') return;
    const fieldOf = (/** @type {string} */ path) => path.replace(/^readings\[\d+\]\./, '');
    showErrors(fields, formNotice, error, fieldOf);
    say('The server refused the reading; nothing was stored. Correct it and send it again.');
  };
  queue.deliveredListeners.add(delivered);
  queue.rejectedListeners.add(rejected);
  leaveView = () => {
    unsubscribe();
    queue.deliveredListeners.delete(delivered);
    queue.rejectedListeners.delete(rejected);
  };
}

/** Now, as a datetime-local value (local time, to the second). */
function localNow() {
  const now = new Date();
  now.setMinutes(now.getMinutes() - now.getTimezoneOffset());
  return now.toISOString().slice(0, 19);
}

// ---- Create a site -----------------------------------------------------------------------------

function newSite() {
  if (!session?.can_create_sites) {
    view.replaceChildren(h('h1', {}, ['New site']), h('p', {}, ['This session may not create sites.']));
    return;
  }
  const fields = {
    name: field('name', 'Name', { required: '', maxlength: '200', autocomplete: 'off' }),
    emission_limit: field('emission_limit', 'Emission limit (kg)', { inputmode: 'decimal', required: '', autocomplete: 'off' }),
  };
  const notice = h('p', { class: 'notice error', role: 'alert' });
  const form = h('form', { id: 'site-form', novalidate: '' }, [
    notice,
    ...Object.values(fields).map((f) => f.element),
    h('button', { type: 'submit' }, ['Create site']),
  ]);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(fields, notice);
    const value = (/** @type {'name' | 'emission_limit'} */ name) => /** @type {HTMLInputElement} */ (fields[name].input).value;
    try {
      const site = await createSite({ name: value('name'), emission_limit: value('emission_limit') });
      location.hash = `#/sites/${site.id}`;
    } catch (error) {
      const refused = error instanceof ApiError ? error : new ApiError(0, 'NETWORK', String(error), []);
      showErrors(fields, notice, refused, (path) => path);
    }
  });
  view.replaceChildren(h('h1', {}, ['New site']), form);
}

// ---- The queue panel ---------------------------------------------------------------------------

/** @type {Map<string, HTMLElement>} each queued batch's row, updated in place so focus stays put */
const queueRows = new Map();

let queueRenders = 0;

async function showQueue() {
  const mine = ++queueRenders;
  const entries = await queue.all();
  // A later render is under way with later data: this one's would be stale.
  if (mine !== queueRenders) return;
  const table = /** @type {HTMLTableElement} */ (document.getElementById('queue-table'));
  const empty = /** @type {HTMLElement} */ (document.getElementById('queue-empty'));
  table.hidden = entries.length === 0;
  empty.hidden = entries.length > 0;
  const keys = new Set(entries.map((entry) => entry.key));
  for (const [key, row] of queueRows) {
    if (!keys.has(key)) {
      row.remove();
      queueRows.delete(key);
    }
  }
  for (const entry of entries) {
    let row = queueRows.get(entry.key);
    if (!row) {
      const discard = h('button', { type: 'button', class: 'secondary', 'aria-label': `Discard batch ${entry.key.slice(0, 8)}`, hidden: '' }, ['Discard']);
      discard.addEventListener('click', () => queue.remove(entry.key));
      row = h('tr', { 'data-key': entry.key }, [
        h('td', {}, [h('code', { title: entry.key }, [entry.key.slice(0, 8)])]),
        h('td', {}, [String(entry.siteId)]),
        h('td', {}, [String(entry.batch.readings.length)]),
        h('td', { class: 'state' }),
        h('td', { class: 'attempts' }),
        h('td', {}, [discard]),
      ]);
      // Oldest first, and a new batch is the newest: rows are only ever appended.
      table.tBodies[0].append(row);
      queueRows.set(entry.key, row);
    }
    const cell = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (row.querySelector(selector));
    // Signed out, every batch waits for the same thing: a sign-in.
    const held = queue.held && entry.state !== 'rejected';
    row.dataset.state = held ? 'held' : entry.state;
    cell('.state').textContent = held ? 'waiting for you to sign in'
      : entry.state === 'retrying' ? `retrying at ${new Date(entry.nextAt).toLocaleTimeString()} (${entry.lastError})`
      : entry.state === 'rejected' ? `refused: ${entry.lastError}` : entry.state;
    cell('.attempts').textContent = String(entry.attempts);
    cell('button').hidden = entry.state !== 'rejected';
  }
}

// ---- Signing in --------------------------------------------------------------------------------
// A token is typed into a password field or arrives in a sign-in link's fragment (#sign-in=<token>);
// either way it goes straight to POST /v2/session, which answers with an HttpOnly cookie that the
// page never sees. The token itself is never kept: not in storage, not in the address bar, not in
// the console.

/**
 * The token of a sign-in link, if the address is one. The fragment is removed at once, replacing
 * this history entry, so that the token is neither bookmarked, shared nor kept in the history.
 */
function takeLinkToken() {
  const link = location.hash.match(/^#sign-in=([^&]+)$/);
  if (!link) return null;
  history.replaceState(history.state, '', `${location.pathname}${location.search}`);
  return link[1];
}

/**
 * Why a token was not accepted, in words. @param {unknown} error
 * @param {boolean} [link] whether it came from a sign-in link
 */
function refusal(error, link = false) {
  if (!(error instanceof ApiError)) return `Signing in failed: ${error}.`;
  if (error.status === 401) {
    return link
      ? 'This sign-in link was not accepted: each link works once, and only for a while. Sign in with a token instead.'
      : 'This token was not accepted: it may be mistyped, expired or revoked.';
  }
  if (error.status === 429) return `Too many attempts: try again in ${error.retryAfter || 'a few'} seconds.`;
  if (error.status === 0) return 'The server cannot be reached: try again in a moment.';
  return `Signing in failed: ${error.message}.`;
}

/**
 * Shows the sign-in form in place of the view; enters the dashboard once a token is accepted.
 * @param {{ reason?: string, error?: string }} why the form is shown, and a refusal to show at once
 */
function showSignIn({ reason = '', error = '' }) {
  const input = /** @type {HTMLInputElement} */ (h('input', {
    id: 'sign-in-token',
    name: 'token',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    required: '',
    'aria-describedby': 'sign-in-reason sign-in-token-hint sign-in-error',
  }));
  const problem = h('p', { id: 'sign-in-error', class: 'notice error', role: 'alert' }, [error]);
  const button = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit' }, ['Sign in']));
  const form = h('form', { id: 'sign-in-form', novalidate: '' }, [
    problem,
    h('div', { class: 'field' }, [
      h('label', { for: 'sign-in-token' }, ['Token']),
      input,
      h('small', { id: 'sign-in-token-hint' }, ['A plume token (plume_…), from your administrator or ', h('code', {}, ['plume tokens create'])]),
    ]),
    button,
  ]);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    problem.textContent = '';
    if (!token) {
      problem.textContent = 'Enter a token.';
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      const signedIn = await signIn(token);
      input.value = '';
      enter(signedIn);
    } catch (caught) {
      problem.textContent = refusal(caught);
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  view.replaceChildren(
    h('h1', {}, ['Sign in']),
    h('p', { id: 'sign-in-reason', class: 'notice', role: 'status' }, [reason]),
    form,
  );
  input.focus();
}

// ---- Start-up: routing, the connection state, the session --------------------------------------

const STATE_WORDS = {
  live: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  'signed-out': 'Signed out',
  refused: 'This session may not follow the sites',
};

function route() {
  // Signed out, the sign-in view stays whatever the address: the view asked for opens after.
  if (!session) return;
  leaveView();
  leaveView = () => {};
  const site = location.hash.match(/^#\/sites\/(\d+)$/);
  if (site) sitePage(Number(site[1]));
  else if (location.hash === '#/new') newSite();
  else overview();
  view.focus();
}

const connection = /** @type {HTMLElement} */ (document.getElementById('connection'));
feed.onState((state) => {
  connection.dataset.state = state;
  connection.textContent = STATE_WORDS[state];
});
const drop = /** @type {HTMLInputElement} */ (document.getElementById('drop-responses'));
drop.checked = localStorage.getItem('plume.dropFirstResponse') === 'true';
queue.dropFirstResponse = drop.checked;
drop.addEventListener('change', () => {
  queue.dropFirstResponse = drop.checked;
  localStorage.setItem('plume.dropFirstResponse', String(drop.checked));
});

const account = /** @type {HTMLElement} */ (document.getElementById('account'));
const accountName = /** @type {HTMLElement} */ (document.getElementById('account-name'));
const accountError = /** @type {HTMLElement} */ (document.getElementById('account-error'));
const newSiteLink = /** @type {HTMLElement} */ (document.getElementById('nav-new'));

/** Opens the dashboard for a session: the view asked for, the live feed, the queue's deliveries. */
function enter(/** @type {SessionInfo} */ signedIn) {
  session = signedIn;
  accountName.textContent = `${signedIn.client_name} (${signedIn.kind})`;
  accountError.textContent = '';
  account.hidden = false;
  newSiteLink.hidden = !signedIn.can_create_sites;
  // The feed first: it forgets the last session's sites before a view shows them.
  feed.start();
  route();
  queue.resume();
}

/**
 * Shows the sign-in view in place of the dashboard. The feed stops; the queue keeps its batches,
 * under their keys, for the next session. A sign-in form already shown is left as the user left it.
 * @param {{ reason?: string, error?: string }} why
 */
function leave(why) {
  feed.stop();
  queue.hold();
  if (!session && document.getElementById('sign-in-form') && !why.error) return;
  session = null;
  account.hidden = true;
  leaveView();
  leaveView = () => {};
  showSignIn(why);
}

/** Signs in with a sign-in link's token, if the address is one. @returns {Promise<boolean>} whether it was */
async function followLink() {
  const token = takeLinkToken();
  if (token === null) return false;
  try {
    enter(await signIn(token));
  } catch (error) {
    leave({ error: refusal(error, true) });
  }
  return true;
}

onSessionEnded(() => leave({
  reason: 'Your session has ended: it expired, was revoked, or was signed out elsewhere. Sign in again; readings waiting to be delivered are kept and sent once you do.',
}));
/** @type {HTMLElement} */ (document.getElementById('sign-out')).addEventListener('click', async () => {
  accountError.textContent = '';
  try {
    await signOut();
  } catch (error) {
    // A 401 says the session had ended already: signed out either way.
    if (!(error instanceof ApiError && error.status === 401)) {
      accountError.textContent = `Not signed out: ${error instanceof ApiError ? error.message : error}.`;
      return;
    }
  }
  leave({ reason: 'You are signed out.' });
});
window.addEventListener('hashchange', async () => {
  if (!(await followLink())) route();
});
queue.changeListeners.add(showQueue);
showQueue();
queue.start();
if (!(await followLink())) {
  const existing = await existingSession();
  if (existing) enter(existing);
  else leave({});
}
