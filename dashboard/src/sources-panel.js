// @ts-check
// A site page's list of the site's sources, each with its last reading, a silent one marked: a
// page of 100 at first, more on demand. Read again when the site changes.

import { ApiError, sources } from './api.js';
import { h, silentBadge } from './dom.js';
import { mass, time } from './format.js';

/** @typedef {import('./api.js').SourceSummary} SourceSummary */

/**
 * The panel of `siteId`'s sources, and `refresh` to read them again.
 * @param {number} siteId @param {() => number} silentMinutes how long a source may be silent
 */
export function sourcesPanel(siteId, silentMinutes) {
  const note = h('p', { id: 'sources-note' });
  const body = h('tbody');
  const table = h('table', { id: 'sources', hidden: '' }, [
    h('caption', { class: 'visually-hidden' }, ['The site\'s sources and their last readings']),
    h('thead', {}, [h('tr', {}, [
      h('th', { scope: 'col' }, ['Source']),
      h('th', { scope: 'col' }, ['Last reading']),
      h('th', { scope: 'col' }, ['Value']),
    ])]),
    body,
  ]);
  const more = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'secondary', id: 'sources-more', hidden: '' }, ['Show more sources']));
  const element = h('section', { 'aria-labelledby': 'sources-title' }, [h('h2', { id: 'sources-title' }, ['Sources']), note, h('div', { class: 'scroll' }, [table]), more]);

  /** @type {SourceSummary[]} */
  let listed = [];
  /** @type {string | null} */
  let nextCursor = null;
  /** Counts reads: an answer to any but the latest is dropped. */
  let reading = 0;

  /** @param {SourceSummary} source @param {number} now */
  const row = (source, now) => {
    const at = source.last_reading_at;
    const quiet = at !== null && now - Date.parse(at) > silentMinutes() * 60_000;
    const value = h('td', source.last_value === null ? {} : { title: `${source.last_value} kg` }, [source.last_value === null ? '–' : mass(source.last_value)]);
    return h('tr', { 'data-source-id': source.source_id }, [
      h('th', { scope: 'row' }, [source.source_id === '' ? h('em', {}, ['(none)']) : source.source_id]),
      h('td', {}, [time(at, 'none kept'), ...(quiet && at ? [' ', silentBadge(at, now)] : [])]),
      value,
    ]);
  };

  const show = () => {
    const now = Date.now();
    body.replaceChildren(...listed.map((source) => row(source, now)));
    table.hidden = listed.length === 0;
    more.hidden = nextCursor === null;
    note.textContent = listed.length === 0 ? 'No source has reported yet.' : `${listed.length}${nextCursor ? '+' : ''} sources, by name.`;
  };

  /** Reads the sources shown again, or with `after` the next page too. @param {boolean} [after] */
  const load = async (after = false) => {
    const mine = ++reading;
    try {
      /** @type {SourceSummary[]} */
      const gathered = after ? [...listed] : [];
      let cursor = after ? nextCursor : null;
      // A refresh reads as many sources as were shown, so that "more" stays open.
      const wanted = after ? gathered.length + 1 : Math.max(1, listed.length);
      do {
        const page = await sources(siteId, cursor);
        if (mine !== reading) return;
        gathered.push(...page.sources);
        cursor = page.nextCursor;
      } while (cursor !== null && gathered.length < wanted);
      listed = gathered;
      nextCursor = cursor;
      show();
    } catch (error) {
      if (mine !== reading) return;
      note.textContent = error instanceof ApiError && error.status === 403
        ? 'This session may not list the site\'s sources.'
        : `The sources cannot be loaded: ${error instanceof ApiError ? error.message : error}.`;
    }
  };
  more.addEventListener('click', () => load(true));
  return { element, refresh: () => load() };
}
