// @ts-check
// The element helper every view builds with, and the small pieces that show a site's state, shared
// by the overview and the site page.

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

/** @param {string | null} at */
export function when(at) {
  return at ? new Date(at).toLocaleString() : 'no readings yet';
}

/** @param {SiteMetrics} site */
export function badge(site) {
  const over = site.compliance_status === 'Limit Exceeded';
  return h('span', { class: over ? 'badge over' : 'badge' }, [site.compliance_status]);
}

/** @param {SiteMetrics} site */
export function bar(site) {
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
