// @ts-check
// The overview (#/): a summary of the fleet, then its sites a page at a time, searched by name,
// filtered by status and sorted as the address says (#/?q=…&status=…&sort=…&page=…&silent=…), so
// that a view can be shared and survives a reload. Every site is kept in the page (the feed lists
// them all); only the rows of the page shown are in the document, and a change from the feed
// rewrites only the rows whose site changed.

import { badge, bar, h, silentBadge } from './dom.js';
import { PAGE_SIZE, SILENCES, SORTS, STATUSES, isSilent, pageCount, parseView, select, summarise, viewHash } from './fleet.js';
import { count, mass, rate, time } from './format.js';

/** @typedef {import('./api.js').SessionInfo} SessionInfo */
/** @typedef {import('./api-types').SiteMetrics} SiteMetrics */
/** @typedef {import('./live.js').Feed} Feed */
/** @typedef {import('./fleet.js').View} View */

/** Where the last overview shown was, for the way back from a site page. */
const REMEMBERED = 'plume.overview';
/** How often silences and the ingest rate are brought up to date when nothing else changes. */
const TICK_MS = 5000;

/** The address of the overview as last shown in this tab (`#/` before any). */
export function overviewHref() {
  return sessionStorage.getItem(REMEMBERED) ?? '#/';
}

/** How long a site may be silent in the overview last shown, in minutes. */
export function silentMinutes() {
  return parseView(overviewHref()).silent;
}

/**
 * A labelled `<select>` of `options`, `value` chosen. @param {string} id @param {string} label
 * @param {Record<string, string>} options @param {string} value
 */
function choice(id, label, options, value) {
  const select = /** @type {HTMLSelectElement} */ (h('select', { id }, Object.entries(options).map(([key, words]) => h('option', { value: key }, [words]))));
  select.value = value;
  return { select, element: h('div', { class: 'field' }, [h('label', { for: id }, [label]), select]) };
}

/** The summary's figures, each a `<dd>` under its label. @param {string} id @param {string} label */
function figure(id, label) {
  const value = h('dd', { id });
  return { value, element: h('div', {}, [h('dt', {}, [label]), value]) };
}

/**
 * Shows the overview in `view`. @param {HTMLElement} view @param {Feed} feed
 * @param {SessionInfo} session @returns {() => void} what to undo when another view replaces it
 */
export function overview(view, feed, session) {
  /** @type {View} */
  const state = parseView(location.hash);

  const sites = figure('summary-sites', 'Sites');
  const over = figure('summary-over', 'Over their limit');
  const silent = figure('summary-silent', 'Silent');
  const none = figure('summary-none', 'No readings yet');
  const ingest = figure('summary-rate', 'Ingest rate');
  const summary = h('dl', { class: 'stats summary', 'aria-label': 'The fleet' }, [sites.element, over.element, silent.element, none.element, ingest.element]);

  const search = /** @type {HTMLInputElement} */ (h('input', { id: 'site-search', type: 'search', autocomplete: 'off', 'aria-keyshortcuts': '/', placeholder: 'Press / to search' }));
  search.value = state.q;
  const status = choice('status-filter', 'Status', STATUSES, state.status);
  const sort = choice('sort-order', 'Order', SORTS, state.sort);
  const silence = choice('silence', 'Silent after', SILENCES, String(state.silent));
  const toolbar = h('form', { class: 'toolbar', role: 'search', 'aria-label': 'Sites shown' }, [
    h('div', { class: 'field grow' }, [h('label', { for: 'site-search' }, ['Search by name']), search]),
    status.element,
    sort.element,
    silence.element,
  ]);

  const results = h('p', { id: 'results', role: 'status' });
  const body = h('tbody');
  /** @type {Record<string, HTMLElement>} the header cell of each column a sort orders by */
  const sortable = {};
  const column = (/** @type {string} */ label, /** @type {string} */ key, narrow = false) => {
    const cell = h('th', { scope: 'col', ...(narrow ? { class: 'hide-narrow' } : {}) }, [label]);
    if (key) sortable[key] = cell;
    return cell;
  };
  const table = h('table', { id: 'sites' }, [
    h('caption', { class: 'visually-hidden' }, ['Sites, updated as readings arrive']),
    h('thead', {}, [
      h('tr', {}, [
        column('Site', 'name'),
        column('Total vs limit', 'utilisation'),
        column('Total', 'total', true),
        column('Limit', '', true),
        column('Status', ''),
        column('Last reading', 'last', true),
      ]),
    ]),
    body,
  ]);
  const previous = h('button', { type: 'button', id: 'page-previous', class: 'secondary' }, ['← Previous']);
  const next = h('button', { type: 'button', id: 'page-next', class: 'secondary' }, ['Next →']);
  const position = h('span', { id: 'page-position' });
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of sites' }, [previous, position, next]);
  const empty = h('p', { id: 'no-sites' }, ['No sites yet. ', ...(session.can_create_sites ? [h('a', { href: '#/new' }, ['Create one.'])] : [])]);

  /** @type {Map<number, { row: HTMLElement, shown: string }>} the rows in the document, by site */
  const rows = new Map();

  /** The row of `site`, rewritten if what it shows has changed. @param {SiteMetrics} site @param {number} now */
  const rowOf = (site, now) => {
    let entry = rows.get(site.site_id);
    if (!entry) {
      const row = h('tr', { 'data-site-id': String(site.site_id) }, [
        h('th', { scope: 'row' }, [h('a', { href: `#/sites/${site.site_id}` })]),
        h('td', { class: 'bar-cell' }),
        h('td', { class: 'total hide-narrow' }),
        h('td', { class: 'limit hide-narrow' }),
        h('td', { class: 'status' }),
        h('td', { class: 'last hide-narrow' }),
      ]);
      entry = { row, shown: '' };
      rows.set(site.site_id, entry);
    }
    const quiet = isSilent(site, now, state.silent);
    const shown = `${site.version} ${quiet}`;
    if (entry.shown === shown) return entry.row;
    entry.shown = shown;
    const cell = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (entry.row.querySelector(selector));
    cell('a').textContent = site.name;
    cell('.bar-cell').replaceChildren(bar(site));
    const total = cell('.total');
    total.textContent = mass(site.total_emissions_to_date);
    total.title = `${site.total_emissions_to_date} kg`;
    const limit = cell('.limit');
    limit.textContent = mass(site.emission_limit);
    limit.title = `${site.emission_limit} kg`;
    const badges = [badge(site), ...(quiet && site.last_reading_at ? [silentBadge(site.last_reading_at, now)] : [])];
    cell('.status').replaceChildren(h('span', { class: 'badges' }, badges));
    cell('.last').replaceChildren(time(site.last_reading_at));
    return entry.row;
  };

  /** Puts `wanted` in the body in order, moving only rows out of place, and drops the rest. @param {HTMLElement[]} wanted */
  const place = (wanted) => {
    let at = body.firstElementChild;
    for (const row of wanted) {
      if (row === at) at = at.nextElementSibling;
      else body.insertBefore(row, at);
    }
    while (at) {
      const gone = at;
      at = at.nextElementSibling;
      gone.remove();
      rows.delete(Number(gone.getAttribute('data-site-id')));
    }
  };

  /** Sets `element`'s text unless it is already that (a live region would announce it again). @param {HTMLElement} element @param {string} text */
  const say = (element, text) => {
    if (element.textContent !== text) element.textContent = text;
  };

  const render = () => {
    const now = Date.now();
    const all = feed.sites.values();
    const fleet = summarise(feed.sites.values(), now, state.silent);
    say(sites.value, count(fleet.sites));
    say(over.value, count(fleet.over));
    say(silent.value, count(fleet.silent));
    say(none.value, count(fleet.none));
    const perSecond = feed.ingestRate(now);
    say(ingest.value, perSecond === null ? '–' : rate(perSecond));

    const chosen = select(all, state, now);
    const pages = pageCount(chosen.length);
    const page = Math.min(state.page, pages);
    const first = (page - 1) * PAGE_SIZE;
    const shown = chosen.slice(first, first + PAGE_SIZE);
    place(shown.map((site) => rowOf(site, now)));

    const [key, direction] = state.sort.split('-');
    for (const [column, cell] of Object.entries(sortable)) {
      if (column === key) cell.setAttribute('aria-sort', direction === 'desc' ? 'descending' : 'ascending');
      else cell.removeAttribute('aria-sort');
    }
    const filtered = state.q.trim() !== '' || state.status !== 'all';
    say(results, chosen.length === 0
      ? (fleet.sites === 0 ? '' : 'No site matches.')
      : `Sites ${count(first + 1)}–${count(first + shown.length)} of ${count(chosen.length)}${filtered ? ` (of ${count(fleet.sites)} in all)` : ''}`);
    say(position, `Page ${count(page)} of ${count(pages)}`);
    previous.setAttribute('aria-disabled', String(page <= 1));
    next.setAttribute('aria-disabled', String(page >= pages));
    pager.hidden = pages <= 1;
    empty.hidden = fleet.sites > 0 || feed.cursor === null;
    table.hidden = chosen.length === 0;
  };

  /** Applies a change of view: the address, the tab's memory of it, and the rows. @param {Partial<View>} change */
  const change = (change) => {
    Object.assign(state, change);
    const hash = viewHash(state);
    history.replaceState(history.state, '', hash);
    sessionStorage.setItem(REMEMBERED, hash);
    render();
  };

  search.addEventListener('input', () => change({ q: search.value, page: 1 }));
  status.select.addEventListener('change', () => change({ status: /** @type {View['status']} */ (status.select.value), page: 1 }));
  sort.select.addEventListener('change', () => change({ sort: /** @type {View['sort']} */ (sort.select.value), page: 1 }));
  silence.select.addEventListener('change', () => change({ silent: Number(silence.select.value) }));
  toolbar.addEventListener('submit', (event) => event.preventDefault());
  const turn = (/** @type {number} */ by) => {
    const pages = pageCount(select(feed.sites.values(), state, Date.now()).length);
    const page = Math.min(Math.max(1, Math.min(state.page, pages) + by), pages);
    if (page !== state.page) change({ page });
  };
  previous.addEventListener('click', () => turn(-1));
  next.addEventListener('click', () => turn(1));
  /** `/` anywhere but in a field goes to the search. @param {KeyboardEvent} event */
  const shortcut = (event) => {
    const target = /** @type {HTMLElement} */ (event.target);
    if (event.key !== '/' || event.ctrlKey || event.metaKey || event.altKey || target.closest('input, select, textarea')) return;
    event.preventDefault();
    search.focus();
    search.select();
  };
  document.addEventListener('keydown', shortcut);

  sessionStorage.setItem(REMEMBERED, viewHash(state));
  view.replaceChildren(h('h1', {}, ['Sites']), summary, toolbar, results, empty, h('div', { class: 'scroll' }, [table]), pager);
  render();
  const unsubscribe = feed.subscribe(render);
  const ticker = setInterval(render, TICK_MS);
  return () => {
    unsubscribe();
    clearInterval(ticker);
    document.removeEventListener('keydown', shortcut);
  };
}
