// @ts-check
// The site page's chart of the series endpoint, drawn by uPlot.

import uPlot from '../vendor/uPlot.esm.js';

/** @typedef {import('./api-types').SeriesBucket} SeriesBucket */

/**
 * Draws `buckets` (emissions per bucket, kg) into `container`, replacing what was there.
 * @param {HTMLElement} container
 * @param {SeriesBucket[]} buckets
 * @param {string} label
 */
export function drawSeries(container, buckets, label) {
  container.replaceChildren();
  const times = buckets.map((bucket) => Date.parse(bucket.start) / 1000);
  const sums = buckets.map((bucket) => Number(bucket.sum));
  const width = Math.max(280, container.clientWidth || 600);
  /** @type {uPlot.Options} */
  const options = {
    width,
    height: 260,
    series: [{}, { label, stroke: '#0b5cad', fill: 'rgba(11, 92, 173, 0.12)', width: 2, points: { show: buckets.length < 60 } }],
    axes: [{}, { label: 'kg', size: 60 }],
    scales: { x: { time: true } },
  };
  new uPlot(options, [times, sums], container);
}
