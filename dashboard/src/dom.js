// @ts-check
// The element helper every view builds with, and the small pieces that show a site's state, shared
// by the overview and the site page.

import { duration, percent } from './format.js';

/** @typedef {import('./api-types').SiteMetrics} SiteMetrics */

/**
 * Makes an element. @param {string} tag @param {Record<string, string>} [attributes]
 * @param {(Node | string)[]} [children]
 */
export function h(tag, attributes = {}, children = []) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/** @param {SiteMetrics} site */
export function badge(site) {
  const over = site.compliance_status === 'Limit Exceeded';
  return h('span', { class: over ? 'badge over' : 'badge' }, [site.compliance_status]);
}

/**
 * The badge of a site or source with no reading for longer than it should.
 * @param {string} at its last reading (RFC 3339) @param {number} now ms since the epoch
 */
export function silentBadge(at, now) {
  const quiet = duration(now - Date.parse(at));
  return h('span', { class: 'badge silent', title: `No reading for ${quiet}` }, ['Silent']);
}

/** @param {SiteMetrics} site */
export function bar(site) {
  const share = Number(site.utilization_pct);
  const fill = h('span', { style: `width: ${Math.min(100, share)}%` });
  const over = site.compliance_status === 'Limit Exceeded';
  return h(
    'div',
    {
      class: over ? 'bar over' : 'bar',
      role: 'meter',
      'aria-valuemin': '0',
      'aria-valuemax': '100',
      'aria-valuenow': String(Math.min(100, share)),
      'aria-label': `${percent(site.utilization_pct)} of the limit`,
    },
    [fill],
  );
}
