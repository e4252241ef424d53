// The overview's view of a fleet, without a browser: its address, and how it picks, orders and
// counts sites.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_VIEW, isSilent, pageCount, parseView, select, summarise, viewHash } from '../src/fleet.js';

const NOW = Date.parse('2026-12-04T12:00:00Z');

/** A site as the change feed reports it. */
function site(site_id, name, total, limit, lastMinutesAgo) {
  return {
    site_id,
    name,
    emission_limit: limit,
    total_emissions_to_date: total,
    compliance_status: Number(total) > Number(limit) ? 'Limit Exceeded' : 'Within Limit',
    utilization_pct: ((Number(total) / Number(limit)) * 100).toFixed(2),
    reading_count: lastMinutesAgo === null ? 0 : 1,
    first_reading_at: null,
    last_reading_at: lastMinutesAgo === null ? null : new Date(NOW - lastMinutesAgo * 60_000).toISOString(),
    version: 1,
  };
}

const FLEET = [
  site(1, 'Permian 2', '50.000000', '100.000000', 5),
  site(2, 'Bakken', '150.000000', '100.000000', 90),
  site(3, 'Permian 10', '0.000000', '10.000000', null),
  site(4, 'permian 1', '900.000000', '1000.000000', 3000),
];

test('a view is kept in the address, only what differs from the default, and junk is the default', () => {
  assert.equal(viewHash(DEFAULT_VIEW), '#/');
  const view = { q: 'perm ian', status: 'over', sort: 'total-desc', page: 3, silent: 15 };
  assert.equal(viewHash(view), '#/?q=perm+ian&status=over&sort=total-desc&page=3&silent=15');
  assert.deepEqual(parseView(viewHash(view)), view);
  assert.deepEqual(parseView('#/?status=evil&sort=price&page=-1&silent=7'), DEFAULT_VIEW);
  assert.deepEqual(parseView(''), DEFAULT_VIEW);
  assert.deepEqual(parseView('#/'), DEFAULT_VIEW);
});

test('sites are searched by name in any case, filtered by status, and ordered with ties by id', () => {
  const ids = (view) => select(FLEET, { ...DEFAULT_VIEW, ...view }, NOW).map((s) => s.site_id);
  assert.deepEqual(ids({}), [1, 2, 3, 4]);
  assert.deepEqual(ids({ q: 'PERMIAN' }), [1, 3, 4]);
  assert.deepEqual(ids({ sort: 'name' }), [2, 4, 1, 3], 'numbers in names in numeric order');
  assert.deepEqual(ids({ sort: 'total-desc' }), [4, 2, 1, 3]);
  assert.deepEqual(ids({ sort: 'utilisation-desc' }), [2, 4, 1, 3]);
  assert.deepEqual(ids({ sort: 'last-asc' }), [4, 2, 1, 3], 'oldest first, never read last');
  assert.deepEqual(ids({ sort: 'last-desc' }), [1, 2, 4, 3], 'newest first, never read last');
  assert.deepEqual(ids({ status: 'over' }), [2]);
  assert.deepEqual(ids({ status: 'within' }), [1, 3, 4]);
  assert.deepEqual(ids({ status: 'silent' }), [2, 4]);
  assert.deepEqual(ids({ status: 'silent', silent: 1440 }), [4]);
  assert.deepEqual(ids({ status: 'none' }), [3]);
});

test('the summary counts sites over their limit, silent and never read', () => {
  assert.deepEqual(summarise(FLEET, NOW, 60), { sites: 4, over: 1, silent: 2, none: 1 });
  assert.equal(isSilent(FLEET[0], NOW, 5), false, 'exactly at the limit is not yet silent');
  assert.equal(pageCount(0), 1);
  assert.equal(pageCount(50), 1);
  assert.equal(pageCount(1000), 20);
});
