// @ts-check
// The overview's view of the fleet: which sites it shows (search, status, sort, page, and how long
// a sensor may be silent), as the address keeps it (#/?q=north&status=over&sort=total-desc&page=2),
// and the functions that pick, order and count the sites for it. No page here: node tests it as is.

/** @typedef {import('./api-types').SiteMetrics} SiteMetrics */

/** Sites per page. */
export const PAGE_SIZE = 50;

/** The status filters, in the order offered. */
export const STATUSES = {
  all: 'Every status',
  over: 'Over the limit',
  within: 'Within the limit',
  silent: 'Silent',
  none: 'No readings yet',
};

/** The orders, in the order offered. */
export const SORTS = {
  id: 'Oldest site first',
  name: 'Name',
  'total-desc': 'Total, highest first',
  'total-asc': 'Total, lowest first',
  'utilisation-desc': 'Utilisation, highest first',
  'utilisation-asc': 'Utilisation, lowest first',
  'last-desc': 'Last reading, newest first',
  'last-asc': 'Last reading, oldest first',
};

/** How long a site may go without a reading before it counts as silent, in minutes. */
export const SILENCES = {
  15: '15 minutes',
  60: '1 hour',
  360: '6 hours',
  1440: '24 hours',
  10080: '7 days',
};

/**
 * @typedef {object} View
 * @property {string} q names containing this (any case)
 * @property {keyof typeof STATUSES} status
 * @property {keyof typeof SORTS} sort
 * @property {number} page from 1
 * @property {number} silent minutes without a reading after which a site is silent
 */

/** @type {Readonly<View>} */
export const DEFAULT_VIEW = Object.freeze({ q: '', status: 'all', sort: 'id', page: 1, silent: 60 });

/**
 * The view an overview address asks for (`#/?…`); what it does not say, or says wrongly, is the
 * default. @param {string} hash @returns {View}
 */
export function parseView(hash) {
  const query = new URLSearchParams(hash.replace(/^#\/?\??/, ''));
  const status = query.get('status') ?? '';
  const sort = query.get('sort') ?? '';
  const page = Number(query.get('page'));
  const silent = query.get('silent') ?? '';
  return {
    q: (query.get('q') ?? '').slice(0, 200),
    status: Object.hasOwn(STATUSES, status) ? /** @type {View['status']} */ (status) : DEFAULT_VIEW.status,
    sort: Object.hasOwn(SORTS, sort) ? /** @type {View['sort']} */ (sort) : DEFAULT_VIEW.sort,
    page: Number.isInteger(page) && page >= 1 ? page : DEFAULT_VIEW.page,
    silent: Object.hasOwn(SILENCES, silent) ? Number(silent) : DEFAULT_VIEW.silent,
  };
}

/** The address of `view`: only what differs from the default, so that `#/` is every site. @param {View} view */
export function viewHash(view) {
  const query = new URLSearchParams();
  for (const key of /** @type {(keyof View)[]} */ (['q', 'status', 'sort', 'page', 'silent'])) {
    if (view[key] !== DEFAULT_VIEW[key]) query.set(key, String(view[key]));
  }
  const text = query.toString();
  return text ? `#/?${text}` : '#/';
}

/**
 * Whether `site` has readings but none for longer than `silentMinutes` before `now`.
 * @param {SiteMetrics} site @param {number} now ms since the epoch @param {number} silentMinutes
 */
export function isSilent(site, now, silentMinutes) {
  return site.last_reading_at !== null && now - Date.parse(site.last_reading_at) > silentMinutes * 60_000;
}

/** @param {SiteMetrics} site @param {View['status']} status @param {number} now @param {number} silentMinutes */
function hasStatus(site, status, now, silentMinutes) {
  switch (status) {
    case 'over': return site.compliance_status === 'Limit Exceeded';
    case 'within': return site.compliance_status === 'Within Limit';
    case 'silent': return isSilent(site, now, silentMinutes);
    case 'none': return site.last_reading_at === null;
    default: return true;
  }
}

const NAMES = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

/**
 * Each site's sort key for `sort` (a site without readings has none for `last-*`: it goes last).
 * @type {Record<string, (site: SiteMetrics) => number | string | null>}
 */
const KEYS = {
  id: (site) => site.site_id,
  name: (site) => site.name,
  total: (site) => Number(site.total_emissions_to_date),
  utilisation: (site) => Number(site.utilization_pct),
  last: (site) => (site.last_reading_at === null ? null : Date.parse(site.last_reading_at)),
};

/**
 * The sites `view` shows, every page of them, in its order (ties by id).
 * @param {Iterable<SiteMetrics>} sites @param {View} view @param {number} now ms since the epoch
 * @returns {SiteMetrics[]}
 */
export function select(sites, view, now) {
  const needle = view.q.trim().toLowerCase();
  const [field, direction] = view.sort.split('-');
  const key = KEYS[field];
  const sign = direction === 'desc' ? -1 : 1;
  /** @type {{ key: number | string | null, site: SiteMetrics }[]} */
  const chosen = [];
  for (const site of sites) {
    if (needle && !site.name.toLowerCase().includes(needle)) continue;
    if (!hasStatus(site, view.status, now, view.silent)) continue;
    chosen.push({ key: key(site), site });
  }
  chosen.sort((a, b) => {
    if (a.key !== b.key) {
      if (a.key === null) return 1;
      if (b.key === null) return -1;
      const order = typeof a.key === 'string' ? NAMES.compare(a.key, /** @type {string} */ (b.key)) : a.key - /** @type {number} */ (b.key);
      if (order !== 0) return sign * order;
    }
    return a.site.site_id - b.site.site_id;
  });
  return chosen.map((entry) => entry.site);
}

/** The number of pages `count` sites fill (at least one). @param {number} count */
export function pageCount(count) {
  return Math.max(1, Math.ceil(count / PAGE_SIZE));
}

/**
 * The summary of the fleet: how many sites, over their limit, silent, and without readings.
 * @param {Iterable<SiteMetrics>} sites @param {number} now @param {number} silentMinutes
 */
export function summarise(sites, now, silentMinutes) {
  const summary = { sites: 0, over: 0, silent: 0, none: 0 };
  for (const site of sites) {
    summary.sites += 1;
    if (site.compliance_status === 'Limit Exceeded') summary.over += 1;
    if (site.last_reading_at === null) summary.none += 1;
    else if (isSilent(site, now, silentMinutes)) summary.silent += 1;
  }
  return summary;
}
