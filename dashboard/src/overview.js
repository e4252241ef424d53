// @ts-check
// The overview (#/): every site in one table, updated in place as the feed reports changes.

import { bar, badge, h, when } from './dom.js';

/** @typedef {import('./api.js').SessionInfo} SessionInfo */
/** @typedef {import('./live.js').Feed} Feed */

/**
 * Shows the overview in `view`. @param {HTMLElement} view @param {Feed} feed
 * @param {SessionInfo} session @returns {() => void} what to undo when another view replaces it
 */
export function overview(view, feed, session) {
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
  const empty = h('p', {}, ['No sites yet. ', ...(session.can_create_sites ? [h('a', { href: '#/new' }, ['Create one.'])] : [])]);
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
  return feed.subscribe(render);
}
