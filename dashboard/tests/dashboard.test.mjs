// The dashboard in a real browser (Debian's Chromium, headless) against two real plume processes
// and their database.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { CHROMIUM, createSite, holdSiteLock, ingest, metrics, startAll } from './harness.mjs';

let env;
before(async () => {
  env = await startAll();
});
after(async () => {
  await env?.stop();
});

const UNAVAILABLE = JSON.stringify({
  error: { code: 'UNAVAILABLE', message: 'the service is unavailable', details: [] },
  meta: { request_id: 'gateway' },
});

/** A page in a fresh browser context (its own IndexedDB), opened at `url`, its feed live. */
async function open(url) {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error));
  await page.goto(url);
  await page.locator('#connection[data-state="live"]').waitFor({ timeout: 10_000 });
  return { context, page };
}

/** The total shown for `siteId` on the overview. */
function overviewTotal(page, siteId) {
  return page.locator(`tr[data-site-id="${siteId}"] td.total`);
}

test('the overview updates within a second of an ingest made by another client', async () => {
  const site = await createSite(env.one, 'Overview site');
  const { context, page } = await open(`${env.one}/`);
  await assert.doesNotReject(overviewTotal(page, site).filter({ hasText: '0.000000' }).waitFor());
  const started = Date.now();
  const { status } = await ingest(env.one, site, '4.25');
  assert.equal(status, 201);
  await overviewTotal(page, site).filter({ hasText: '4.250000' }).waitFor({ timeout: 1000 });
  assert.ok(Date.now() - started <= 1000, `${Date.now() - started} ms`);
  await context.close();
});

test('an ingest through one plume process wakes a dashboard served by the other', async () => {
  const site = await createSite(env.one, 'Two instances');
  const { context, page } = await open(`${env.two}/`);
  await overviewTotal(page, site).filter({ hasText: '0.000000' }).waitFor({ timeout: 5000 });
  const started = Date.now();
  assert.equal((await ingest(env.one, site, '1.5')).status, 201);
  await overviewTotal(page, site).filter({ hasText: '1.500000' }).waitFor({ timeout: 1000 });
  assert.ok(Date.now() - started <= 1000, `${Date.now() - started} ms`);
  await context.close();
});

test('a reading entered offline is queued, survives a reload, and is delivered once when back online', async () => {
  const site = await createSite(env.one, 'Offline entry');
  const { context, page } = await open(`${env.one}/#/sites/${site}`);
  await context.setOffline(true);
  await page.locator('#connection[data-state="offline"]').waitFor();
  await page.fill('#field-value', '2.5');
  await page.click('#ingest-form button[type="submit"]');
  const row = page.locator('#queue-table tbody tr');
  await row.filter({ hasText: String(site) }).waitFor();
  assert.equal(await row.count(), 1);

  // The network comes back but the service still cannot be reached: every ingest request is
  // answered 503, as a load balancer without a backend would. The "online" event sends the batch
  // at once, and it fails again.
  const attempts = () => page.evaluate(() => Number(document.querySelector('#queue-table .attempts')?.textContent));
  const state = () => page.getAttribute('#queue-table tbody tr', 'data-state');
  await context.route('**/v1/ingest', (route) =>
    route.fulfill({ status: 503, contentType: 'application/json', body: UNAVAILABLE }),
  );
  const offlineAttempts = await attempts();
  await context.setOffline(false);
  await page.waitForFunction(
    (n) => Number(document.querySelector('#queue-table .attempts')?.textContent) > n
      && document.querySelector('#queue-table tbody tr')?.getAttribute('data-state') === 'retrying',
    offlineAttempts,
  );
  // A reload (between attempts) keeps the batch, and the reloaded page goes on retrying it.
  const beforeReload = await attempts();
  await page.reload();
  await row.first().waitFor();
  assert.equal(await row.count(), 1, 'still queued after the reload');
  await page.waitForFunction(
    (n) => Number(document.querySelector('#queue-table .attempts')?.textContent) > n
      && document.querySelector('#queue-table tbody tr')?.getAttribute('data-state') === 'retrying',
    beforeReload,
  );
  assert.equal(await state(), 'retrying');
  assert.equal((await metrics(env.one, site)).reading_count, 0, 'nothing stored yet');

  // Back online for real: the browser's "online" event sends the batch at once, not at its backoff.
  await context.unroute('**/v1/ingest');
  await context.setOffline(true);
  await context.setOffline(false);
  await page.locator('#queue-empty').waitFor({ state: 'visible', timeout: 1500 });
  const stored = await metrics(env.one, site);
  assert.equal(stored.reading_count, 1);
  assert.equal(stored.total_emissions_to_date, '2.500000');
  await page.locator('#site-total', { hasText: '2.500000' }).waitFor({ timeout: 5000 });
  await context.close();
});

test('a dropped response is retried under the same key and counted once', async () => {
  const site = await createSite(env.one, 'Dropped response');
  const { context, page } = await open(`${env.one}/#/sites/${site}`);
  const keys = [];
  page.on('request', (request) => {
    if (request.url().endsWith('/v1/ingest')) keys.push(request.headers()['idempotency-key']);
  });
  await page.check('#drop-responses');
  await page.fill('#field-value', '1.25');
  await page.click('#ingest-form button[type="submit"]');
  await page.locator('#queue-table tr[data-state="retrying"]').waitFor();
  await page.locator('#queue-empty').waitFor({ state: 'visible', timeout: 15_000 });
  await page.locator('[role="status"]', { hasText: 'already stored' }).waitFor();
  assert.equal(keys.length, 2, 'sent twice');
  assert.equal(keys[0], keys[1], 'under the same key');
  const stored = await metrics(env.one, site);
  assert.equal(stored.reading_count, 1);
  assert.equal(stored.total_emissions_to_date, '1.250000');
  await context.close();
});

test('a reload while a batch is on its way sends it again under the same key, counted once', async () => {
  const site = await createSite(env.one, 'Reloaded mid-send');
  // The server keeps the first request waiting inside its transaction for 3 s.
  const lock = await holdSiteLock(env, site, 3);
  const { context, page } = await open(`${env.one}/#/sites/${site}`);
  const keys = [];
  context.on('request', (request) => {
    if (request.url().endsWith('/v1/ingest')) keys.push(request.headers()['idempotency-key']);
  });
  await page.fill('#field-value', '3.5');
  await page.click('#ingest-form button[type="submit"]');
  await page.locator('#queue-table tbody tr[data-state="sending"]').waitFor();
  await page.reload();
  await page.locator('#site-readings', { hasText: '1' }).waitFor({ timeout: 15_000 });
  await page.locator('#queue-empty').waitFor({ state: 'visible' });
  assert.ok(keys.length >= 2, `sent ${keys.length} times`);
  assert.equal(new Set(keys).size, 1, 'always under the same key');
  const stored = await metrics(env.one, site);
  assert.equal(stored.reading_count, 1);
  assert.equal(stored.total_emissions_to_date, '3.500000');
  if (lock.exitCode === null) await new Promise((resolve) => lock.once('exit', resolve));
  await context.close();
});

test('a validation error is shown beside its field', async () => {
  const site = await createSite(env.one, 'Refused entry');
  const { context, page } = await open(`${env.one}/#/sites/${site}`);
  await page.fill('#field-value', 'twelve');
  await page.click('#ingest-form button[type="submit"]');
  const error = page.locator('#field-value-error');
  await error.waitFor({ state: 'visible' });
  assert.match(await error.textContent(), /number/);
  assert.equal(await page.getAttribute('#field-value', 'aria-invalid'), 'true');
  assert.equal((await metrics(env.one, site)).reading_count, 0);

  // The create-site form places its errors the same way.
  await page.goto(`${env.one}/#/new`);
  await page.fill('#field-emission_limit', '-3');
  await page.click('#site-form button[type="submit"]');
  await page.locator('#field-name-error').waitFor({ state: 'visible' });
  await page.locator('#field-emission_limit-error').waitFor({ state: 'visible' });
  await context.close();
});

test('a site created with the form opens its page, with a chart of its series', async () => {
  const { context, page } = await open(`${env.one}/#/new`);
  await page.fill('#field-name', 'Created in the browser');
  await page.fill('#field-emission_limit', '50');
  await page.click('#site-form button[type="submit"]');
  await page.waitForURL(/#\/sites\/\d+$/);
  await page.fill('#field-sensor_count', '30');
  await page.click('#sensor-form button[type="submit"]');
  await page.locator('#site-readings', { hasText: '30' }).waitFor({ timeout: 10_000 });
  await page.locator('#chart .uplot').waitFor();
  await context.close();
});

test('the queue survives a browser restart', async () => {
  const site = await createSite(env.one, 'Browser restart');
  const profile = mkdtempSync(join(tmpdir(), 'plume-browser-'));
  const launch = () =>
    chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  let browser = null;
  try {
    browser = await launch();
    let page = browser.pages()[0] ?? (await browser.newPage());
    await page.goto(`${env.one}/#/sites/${site}`);
    await page.locator('#connection[data-state="live"]').waitFor();
    await browser.setOffline(true);
    await page.fill('#field-value', '0.75');
    await page.click('#ingest-form button[type="submit"]');
    await page.locator('#queue-table tbody tr[data-state="retrying"]').waitFor();
    await browser.close();
    browser = null;
    assert.equal((await metrics(env.one, site)).reading_count, 0);

    // The same profile, started again: the queued batch is still there, and is delivered.
    browser = await launch();
    page = browser.pages()[0] ?? (await browser.newPage());
    await page.goto(`${env.one}/#/sites/${site}`);
    await page.locator('#site-readings', { hasText: '1' }).waitFor({ timeout: 15_000 });
    await page.locator('#queue-empty').waitFor({ state: 'visible' });
    const stored = await metrics(env.one, site);
    assert.equal(stored.reading_count, 1, 'delivered once, after the restart');
    assert.equal(stored.total_emissions_to_date, '0.750000');
  } finally {
    await browser?.close();
    rmSync(profile, { recursive: true, force: true });
  }
});

test('a site can be created with the keyboard alone', async () => {
  const { context, page } = await open(`${env.one}/#/new`);
  await page.locator('#field-name').focus();
  await page.keyboard.type('Typed site');
  await page.keyboard.press('Tab');
  await page.keyboard.type('75');
  await page.keyboard.press('Enter');
  await page.waitForURL(/#\/sites\/\d+$/);
  await page.locator('h1', { hasText: 'Typed site' }).waitFor();
  await context.close();
});

test('on a phone the overview fits: each site\'s status is on screen', async () => {
  const site = await createSite(env.one, 'Narrow screen site with a rather long name');
  const context = await env.browser.newContext({ viewport: { width: 390, height: 800 }, isMobile: true });
  const page = await context.newPage();
  await page.goto(`${env.one}/`);
  const badge = page.locator(`tr[data-site-id="${site}"] .badge`);
  await badge.waitFor();
  const box = await badge.boundingBox();
  assert.ok(box && box.x + box.width <= 390, `the status badge ends at ${box && box.x + box.width} px`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow} px`);
  await context.close();
});
