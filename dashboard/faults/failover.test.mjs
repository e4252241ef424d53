// A fault: two plume processes on one database behind load balancers, and the one holding the
// dashboards' long polls is killed (SIGKILL) while they wait. Each dashboard must reconnect to the
// other process, through the same origin, and show every change: those committed just before the
// kill, which the dead process may never have announced, and those made through the survivor at
// once after it. One dashboard is behind a balancer that passes a refused connection on to the
// next process: the browser itself sends the cut poll again, and it lands there. The other is
// behind one that learns of the death only from its next health check, resetting connections
// until then: there the dashboard's own retries must reconnect it. Run by
// `scripts/dashboard-test.sh --faults`, apart from the ordinary browser tests.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { createSite, post, startAll, startFailoverProxy } from '../tests/harness.mjs';

/** How soon after the kill every change must be on the overview. */
const BOUND_MS = 5000;

/** How often the second balancer checks its upstreams. */
const HEALTH_CHECK_MS = 1000;

let env;
/** The balancers, each with a word on how it fails over. */
const balancers = [];
before(async () => {
  env = await startAll();
  // The harness's first process owns the embedded cluster (killing it would stop the database), so
  // the second is the one the balancers prefer, and the one killed.
  balancers.push({
    which: 'the balancer passing refused connections on',
    proxy: await startFailoverProxy([env.two, env.one]),
  });
  balancers.push({
    which: `the balancer checking every ${HEALTH_CHECK_MS} ms`,
    proxy: await startFailoverProxy([env.two, env.one], { healthCheckMs: HEALTH_CHECK_MS }),
  });
});
after(async () => {
  for (const { proxy } of balancers) await proxy.close();
  await env?.stop();
});

/** Signs `page` in through the sign-in form it shows. */
async function signIn(page) {
  await page.fill('#sign-in-token', env.token);
  await page.click('#sign-in-form button[type="submit"]');
  await page.locator('#account-name').waitFor();
}

/**
 * The overview's total cell for `siteId` once it holds exactly `kg` (the cell shows the figure
 * rounded for people; its title keeps the exact one).
 */
function exactTotal(page, siteId, kg) {
  return page.locator(`tr[data-site-id="${siteId}"] td.total[title="${kg} kg"]`);
}

/** How many long polls wait now in the process at `address` (its `plume_changes_waiting` gauge). */
async function waitingPolls(address) {
  const response = await fetch(`${address}/metrics`, { headers: { authorization: `Bearer ${env.token}` } });
  assert.equal(response.status, 200);
  return Number((await response.text()).match(/^plume_changes_waiting (\d+)$/m)?.[1]);
}

/**
 * Stores a reading of `value` for `siteId` through `address`, from a source of its own (a second
 * reading from the same source in the same second would be a repeat, and move no total); fails
 * unless it is stored now.
 */
async function stored(address, siteId, value) {
  const timestamp = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000).toISOString().replace('.000Z', 'Z');
  const { status, body } = await post(address, '/v1/ingest', {
    site_id: siteId,
    readings: [{ source_id: `failover-${randomUUID()}`, timestamp, value }],
  }, { 'idempotency-key': randomUUID() });
  assert.equal(status, 201, JSON.stringify(body));
  assert.equal(body.data.readings_accepted, 1, JSON.stringify(body));
}

/** Whether the overview shows each site's total as `want` has it: [site id, total] pairs. */
function allShown(want) {
  return want.every(([id, total]) => document.querySelector(`tr[data-site-id="${id}"] td.total`)?.title === `${total} kg`);
}

/**
 * Every /v2/changes request `page` makes, each with whether it is still under way (no answer, no
 * failure yet).
 */
function watchPolls(page) {
  const polls = [];
  page.on('request', (request) => {
    if (!request.url().includes('/v2/changes')) return;
    const poll = { request, pending: true };
    polls.push(poll);
    request.response().then(() => { poll.pending = false; }, () => { poll.pending = false; });
  });
  page.on('requestfailed', (request) => {
    const poll = polls.find((each) => each.request === request);
    if (poll) poll.pending = false;
  });
  return polls;
}

/** Waits until at least `count` long polls wait in the process at `address`. */
async function untilWaiting(address, count) {
  for (let i = 0; (await waitingPolls(address)) < count; i++) {
    assert.ok(i < 100, `${count} long polls wait in ${address} within 5 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Opens the overview through `proxy`'s origin in a fresh browser context, signed in, its feed live,
 * showing `sites`; resolves with the page and its polls.
 */
async function openThrough(proxy, sites) {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error));
  const polls = watchPolls(page);
  await page.goto(`${proxy.address}/`);
  await signIn(page);
  await page.locator('#connection[data-state="live"]').waitFor({ timeout: 10_000 });
  for (const site of sites) await exactTotal(page, site, '0.000000').waitFor();
  return { context, page, polls };
}

test('a process killed under the dashboards\' long polls: they reconnect to the other and miss no change', async () => {
  const [primary, standby] = [env.two, env.one];
  const sites = [];
  for (const name of ['Failover A', 'Failover B', 'Failover C', 'Failover D']) sites.push(await createSite(standby, name));
  const dashboards = [];
  for (const balancer of balancers) dashboards.push({ ...balancer, ...(await openThrough(balancer.proxy, sites)) });

  // Both long polls wait in the primary, the only upstream used so far.
  await untilWaiting(primary, dashboards.length);
  assert.equal(await waitingPolls(standby), 0, 'no long poll waits in the standby');

  // Just before the kill: a change through the primary, which it may or may not announce before it
  // stalls (SIGSTOP); then, while it stalls, one through the standby, which it cannot announce. A
  // poll of each page waits in the stalled primary (the kernel still accepts its connections), on
  // a cursor from before the second change at least.
  await stored(primary, sites[0], '1.5');
  await env.signal(primary, 'SIGSTOP');
  await stored(standby, sites[1], '0.125');
  for (const { polls } of dashboards) {
    for (let i = 0; !polls.some((poll) => poll.pending); i++) {
      assert.ok(i < 100, 'a poll of the page waits in the primary within 5 s');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  for (const { proxy } of dashboards) assert.equal(proxy.routed[1], 0, 'no connection went to the standby');
  const killed = Date.now();
  await env.signal(primary, 'SIGKILL');
  // And at once, while the pages reconnect, changes through the survivor.
  await stored(standby, sites[0], '2.25');
  await stored(standby, sites[2], '3');
  const want = [[sites[0], '3.750000'], [sites[1], '0.125000'], [sites[2], '3.000000'], [sites[3], '0.000000']];
  // Each dashboard on its own, so that a failure tells which of them missed what.
  const outcomes = await Promise.allSettled(dashboards.map(async ({ which, proxy, page }) => {
    try {
      await page.waitForFunction(allShown, want, { timeout: BOUND_MS, polling: 10 });
    } catch {
      const totals = await page.evaluate(() => [...document.querySelectorAll('tr[data-site-id]')]
        .map((row) => `${row.getAttribute('data-site-id')}: ${row.querySelector('td.total')?.title}`));
      assert.fail(`behind ${which}, not every change shown within ${BOUND_MS} ms of the kill: the overview shows `
        + `${totals.join(', ')}; it should show ${want.map(([id, total]) => `${id}: ${total}`).join(', ')}`);
    }
    console.log(`failover: change shown ${Date.now() - killed} ms after the kill, behind ${which}`);
    assert.ok(proxy.routed[1] > 0, `behind ${which}, the page reconnected through the standby`);
    await page.locator('#connection[data-state="live"]').waitFor();
  }));
  const failures = outcomes.filter((outcome) => outcome.status === 'rejected').map((outcome) => outcome.reason.message);
  assert.deepEqual(failures, []);

  // Reconnected, each feed is live again: a further change shows as fast as ever.
  await untilWaiting(standby, dashboards.length);
  const started = Date.now();
  await stored(standby, sites[3], '0.5');
  for (const { page } of dashboards) await exactTotal(page, sites[3], '0.500000').waitFor({ timeout: 1000 });
  assert.ok(Date.now() - started <= 1000, `${Date.now() - started} ms`);
  for (const { context } of dashboards) await context.close();
});
