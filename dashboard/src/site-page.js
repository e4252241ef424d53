// @ts-check
// A site's page (#/sites/7): its figures as the feed reports them, a chart of its emissions per
// hour, day or month, and, when the session may write to it, the forms that queue readings for it.

import { ApiError, mayWrite, series } from './api.js';
import { drawSeries } from './chart.js';
import { badge, h, when } from './dom.js';
import { readingForm, sensorForm } from './forms.js';

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

  /** @param {string} text */
  const say = (text) => {
    status.textContent = text;
  };
  const reading = readingForm(queue, siteId, say);
  const sensor = sensorForm(queue, siteId, say);

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
      ? h('div', { class: 'columns' }, [reading.form, sensor])
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
