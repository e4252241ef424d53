// @ts-check
// A site's page (#/sites/7): its figures as the feed reports them, a chart of its emissions per
// hour, day or month with links to export what it shows, its sources with their last readings,
// and, when the session may write to it, the forms that queue readings for it.

import { ApiError, exportHref, mayWrite, series } from './api.js';
import { drawSeries } from './chart.js';
import { badge, h, silentBadge } from './dom.js';
import { count, mass, percent, time } from './format.js';
import { readingForm, sensorForm } from './forms.js';
import { isSilent } from './fleet.js';
import { overviewHref, silentMinutes } from './overview.js';
import { sourcesPanel } from './sources-panel.js';

/** @typedef {import('./api.js').SessionInfo} SessionInfo */
/** @typedef {import('./live.js').Feed} Feed */
/** @typedef {import('./queue.js').Queue} Queue */
/** @typedef {import('./queue.js').QueuedBatch} QueuedBatch */

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
 * Shows the page of `siteId` in `view`. @param {HTMLElement} view @param {Feed} feed
 * @param {Queue} queue @param {SessionInfo} session @param {number} siteId
 * @returns {() => void} what to undo when another view replaces it
 */
export function sitePage(view, feed, queue, session, siteId) {
  const heading = h('h1', {}, [`Site ${siteId}`]);
  const stats = h('dl', { class: 'stats' });
  // Live regions are in the page from the start (empty), so their first message is announced.
  const status = h('p', { class: 'notice', role: 'status' });
  const chart = h('div', { class: 'chart', id: 'chart', role: 'img', 'aria-label': 'Chart of the emissions per bucket', 'aria-describedby': 'chart-note' });
  const bucket = /** @type {HTMLSelectElement} */ (h('select', { id: 'bucket' }, ['hour', 'day', 'month'].map((b) => h('option', { value: b }, [b]))));
  const chartNote = h('p', { id: 'chart-note' });
  const exportLinks = h('p', { id: 'chart-export' });
  const panel = sourcesPanel(siteId, silentMinutes);

  const showMetrics = () => {
    const site = feed.sites.get(siteId);
    if (!site) {
      stats.replaceChildren(h('div', {}, [h('dt', {}, ['Site']), h('dd', {}, [feed.cursor ? 'not found' : 'loading…'])]));
      return;
    }
    heading.textContent = site.name;
    const now = Date.now();
    const stat = (/** @type {string} */ label, /** @type {(Node | string)[]} */ value, /** @type {Record<string, string>} */ attributes = {}) =>
      h('div', {}, [h('dt', {}, [label]), h('dd', attributes, value)]);
    const quiet = isSilent(site, now, silentMinutes()) && site.last_reading_at;
    stats.replaceChildren(
      stat('Total', [mass(site.total_emissions_to_date)], { id: 'site-total', title: `${site.total_emissions_to_date} kg` }),
      stat('Limit', [mass(site.emission_limit)], { title: `${site.emission_limit} kg` }),
      stat('Of the limit', [percent(site.utilization_pct)]),
      stat('Status', [h('span', { class: 'badges' }, [badge(site), ...(quiet ? [silentBadge(quiet, now)] : [])])]),
      stat('Readings', [count(site.reading_count)], { id: 'site-readings' }),
      stat('Last reading', [time(site.last_reading_at)]),
    );
  };

  /** Links to the readings the chart adds up, from `from` to `to`. @param {Date} from @param {Date} to */
  const showExports = (from, to) => {
    if (!session.can_export) {
      exportLinks.textContent = 'This session may not export readings.';
      return;
    }
    const link = (/** @type {'csv' | 'parquet'} */ format, /** @type {string} */ words) =>
      h('a', { href: exportHref(siteId, from, to, format), download: '', id: `export-${format}` }, [words]);
    exportLinks.replaceChildren('The readings this chart adds up: ', link('csv', 'CSV'), ' or ', link('parquet', 'Parquet'), '.');
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
      showExports(from, to);
      drawSeries(chart, buckets, `kg ${RANGE_NAMES[name]}`);
    } catch (error) {
      if (mine === drawing) chartNote.textContent = `The chart cannot be loaded: ${error instanceof ApiError ? error.message : error}.`;
    }
  };
  bucket.addEventListener('change', showSeries);

  /** @param {string} text */
  const say = (text) => {
    status.textContent = text;
  };
  const reading = readingForm(queue, siteId, say);
  const sensor = sensorForm(queue, siteId, say);

  view.replaceChildren(
    h('p', {}, [h('a', { href: overviewHref(), id: 'all-sites' }, ['← All sites'])]),
    heading,
    status,
    stats,
    h('section', { 'aria-labelledby': 'chart-title' }, [
      h('h2', { id: 'chart-title' }, ['Emissions']),
      h('label', { for: 'bucket' }, ['Bucket ']),
      bucket,
      chartNote,
      chart,
      exportLinks,
    ]),
    panel.element,
    mayWrite(session, siteId)
      ? h('div', { class: 'columns' }, [reading.form, sensor])
      : h('p', { id: 'read-only' }, ['This session may view this site but not enter readings for it.']),
  );
  showMetrics();
  showSeries();
  panel.refresh();

  const unsubscribe = feed.subscribe((changed) => {
    showMetrics();
    if (changed.some((site) => site.site_id === siteId)) {
      showSeries();
      panel.refresh();
    }
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
    reading.refuse(error);
    say('The server refused the reading; nothing was stored. Correct it and send it again.');
  };
  queue.deliveredListeners.add(delivered);
  queue.rejectedListeners.add(rejected);
  return () => {
    unsubscribe();
    queue.deliveredListeners.delete(delivered);
    queue.rejectedListeners.delete(rejected);
  };
}
