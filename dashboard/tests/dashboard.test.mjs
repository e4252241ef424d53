// The dashboard in a real browser (Debian's Chromium, headless) against two real plume processes
// and their database. Every page signs in, as a user would.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { CHROMIUM, createSite, holdSiteLock, ingest, metrics, mintToken, post, revokeToken, sql, startAll } from './harness.mjs';

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

/** Signs `page` in through the sign-in form it shows. */
async function signIn(page, token = env.token) {
  await page.fill('#sign-in-token', token);
  await page.click('#sign-in-form button[type="submit"]');
  await page.locator('#account-name').waitFor();
}

/**
 * A page in a fresh browser context (its own IndexedDB and cookies), opened at `url`, signed in
 * with `token` (the admin's by default), its feed live.
 */
async function open(url, { token = env.token, contextOptions = {} } = {}) {
  const context = await env.browser.newContext({ locale: 'en-US', ...contextOptions });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error));
  await page.goto(url);
  await signIn(page, token);
  await page.locator('#connection[data-state="live"]').waitFor({ timeout: 10_000 });
  return { context, page };
}

/** The total shown for `siteId` on the overview, once it reads `text` (e.g. `4.25 kg`). */
function overviewTotal(page, siteId, text) {
  return page.locator(`tr[data-site-id="${siteId}"] td.total`, { hasText: new RegExp(`^${text.replace('.', '\\.')}$`) });
}

test('the overview updates within a second of an ingest made by another client', async () => {
  const site = await createSite(env.one, 'Overview site');
  const { context, page } = await open(`${env.one}/`);
  await assert.doesNotReject(overviewTotal(page, site, '0 kg').waitFor());
  const started = Date.now();
  const { status } = await ingest(env.one, site, '4.25');
  assert.equal(status, 201);
  await overviewTotal(page, site, '4.25 kg').waitFor({ timeout: 1000 });
  assert.ok(Date.now() - started <= 1000, `${Date.now() - started} ms`);
  await context.close();
});

test('an ingest through one plume process wakes a dashboard served by the other', async () => {
  const site = await createSite(env.one, 'Two instances');
  const { context, page } = await open(`${env.two}/`);
  await overviewTotal(page, site, '0 kg').waitFor({ timeout: 5000 });
  const started = Date.now();
  assert.equal((await ingest(env.one, site, '1.5')).status, 201);
  await overviewTotal(page, site, '1.5 kg').waitFor({ timeout: 1000 });
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
  await page.locator('#site-total', { hasText: '2.5 kg' }).waitFor({ timeout: 5000 });
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
    await signIn(page);
    await page.locator('#connection[data-state="live"]').waitFor();
    await browser.setOffline(true);
    await page.fill('#field-value', '0.75');
    await page.click('#ingest-form button[type="submit"]');
    await page.locator('#queue-table tbody tr[data-state="retrying"]').waitFor();
    await browser.close();
    browser = null;
    assert.equal((await metrics(env.one, site)).reading_count, 0);

    // The same profile, started again: the queued batch is still there, and is delivered (the
    // session cookie outlives the browser, until the session's own end).
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

test('a site page lists its sources with their last reading, and links to exports of what its chart shows', async () => {
  const site = await createSite(env.one, 'Sources and exports');
  // One "now" for the whole test: computed at each call, a minute turning between the ingest and
  // the check would move the expected time.
  const minute = Math.floor(Date.now() / 60_000) * 60_000;
  const at = (minutesAgo) => new Date(minute - minutesAgo * 60_000).toISOString();
  const { status } = await post(env.one, '/v1/ingest', {
    site_id: site,
    readings: [
      { source_id: 'north', timestamp: at(3), value: '1.5' },
      { source_id: 'north', timestamp: at(2), value: '0.25' },
      { source_id: 'flare', timestamp: at(180), value: '1250' },
    ],
  }, { 'idempotency-key': randomUUID() });
  assert.equal(status, 201);
  const { context, page } = await open(`${env.one}/#/sites/${site}`);
  const north = page.locator('#sources tr[data-source-id="north"]');
  await north.locator('td', { hasText: '0.25 kg' }).waitFor();
  assert.equal(await north.locator('time').getAttribute('datetime'), at(2).replace('.000Z', 'Z'));
  assert.equal(await north.locator('.badge.silent').count(), 0);
  const flare = page.locator('#sources tr[data-source-id="flare"]');
  assert.equal(await flare.locator('td', { hasText: '1.25 t' }).count(), 1);
  await flare.locator('.badge.silent').waitFor();
  assert.equal(await page.textContent('#site-total'), '1.25 t');

  // The export links cover the chart's range; the CSV holds the readings the chart adds up.
  const csv = new URL(await page.getAttribute('#export-csv', 'href'), env.one);
  assert.equal(csv.searchParams.get('site_id'), String(site));
  assert.equal(csv.searchParams.get('format'), 'csv');
  const hours = (Date.parse(csv.searchParams.get('to')) - Date.parse(csv.searchParams.get('from'))) / 3600e3;
  assert.equal(hours, 48);
  const download = await context.request.get(csv.href);
  assert.equal(download.status(), 200);
  const lines = (await download.text()).trim().split('\n');
  assert.equal(lines.length, 4, 'a header and three readings');
  assert.ok(lines.some((line) => line.includes('flare') && line.endsWith('1250.000000')), lines.join('\n'));
  const parquet = new URL(await page.getAttribute('#export-parquet', 'href'), env.one);
  assert.equal(parquet.searchParams.get('format'), 'parquet');
  assert.equal(parquet.searchParams.get('from'), csv.searchParams.get('from'));
  await page.selectOption('#bucket', 'day');
  await page.waitForFunction((from) => !document.querySelector('#export-csv')?.getAttribute('href')?.includes(encodeURIComponent(from)), csv.searchParams.get('from'));

  // A new source shows once it reports.
  assert.equal((await post(env.two, '/v1/ingest', {
    site_id: site,
    readings: [{ source_id: 'south', timestamp: at(1), value: '2' }],
  }, { 'idempotency-key': randomUUID() })).status, 201);
  await page.locator('#sources tr[data-source-id="south"]').waitFor({ timeout: 2000 });
  await context.close();
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
  const { context, page } = await open(`${env.one}/`, { contextOptions: { viewport: { width: 390, height: 800 }, isMobile: true } });
  const badge = page.locator(`tr[data-site-id="${site}"] .badge`);
  await badge.waitFor();
  const box = await badge.boundingBox();
  assert.ok(box && box.x + box.width <= 390, `the status badge ends at ${box && box.x + box.width} px`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow} px`);
  await context.close();
});

// ---- Signing in and out ------------------------------------------------------------------------

/** Every /v2/changes request `page` makes, each with whether its answer has arrived, and its status. */
function watchPolls(page) {
  const polls = [];
  page.on('request', (request) => {
    if (!request.url().includes('/v2/changes')) return;
    const poll = { request, waits: request.url().includes('wait=30'), status: null };
    polls.push(poll);
    request.response().then((response) => { poll.status = response?.status() ?? 0; }, () => { poll.status = 0; });
  });
  return polls;
}

/** Waits until one of `polls` is a long poll still waiting on the server; returns it. */
async function pendingLongPoll(polls) {
  for (let i = 0; i < 100; i++) {
    const pending = polls.find((poll) => poll.waits && poll.status === null);
    if (pending) return pending;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('no long poll was waiting');
}

/** Everything the page could have kept: its storages, its script-visible cookies, its IndexedDB. */
function everythingStored(page) {
  return page.evaluate(async () => {
    const stores = [JSON.stringify({ ...localStorage }), JSON.stringify({ ...sessionStorage }), document.cookie];
    for (const { name } of await indexedDB.databases()) {
      const database = await new Promise((resolve, reject) => {
        const opening = indexedDB.open(String(name));
        opening.onsuccess = () => resolve(opening.result);
        opening.onerror = () => reject(opening.error);
      });
      for (const store of database.objectStoreNames) {
        const all = database.transaction(store).objectStore(store).getAll();
        stores.push(JSON.stringify(await new Promise((resolve) => { all.onsuccess = () => resolve(all.result); })));
      }
      database.close();
    }
    return stores.join('\n');
  });
}

test('signing in through the form opens a live overview; the session cookie is out of the page\'s reach', async () => {
  const site = await createSite(env.one, 'Signed-in overview');
  const context = await env.browser.newContext({ locale: 'en-US' });
  const page = await context.newPage();
  const logged = [];
  page.on('console', (message) => logged.push(message.text()));
  await page.goto(`${env.one}/`);
  await page.locator('#sign-in-form').waitFor();
  assert.equal(await page.getAttribute('#sign-in-token', 'type'), 'password');
  assert.equal(await page.locator('label[for="sign-in-token"]').textContent(), 'Token');
  assert.equal(await page.getAttribute('#connection', 'data-state'), 'signed-out');

  // A wrong token is refused in the error region, and nothing else happens.
  await page.fill('#sign-in-token', `${env.token.slice(0, -8)}00000000`);
  await page.click('#sign-in-form button[type="submit"]');
  await page.locator('#sign-in-error', { hasText: 'not accepted' }).waitFor();
  assert.equal(await page.getAttribute('#sign-in-token', 'aria-invalid'), 'true');
  assert.equal(await page.locator('#account').isVisible(), false);

  await signIn(page);
  assert.equal(await page.textContent('#account-name'), 'dashboard tests (admin)');
  await page.locator('#connection[data-state="live"]').waitFor();
  await overviewTotal(page, site, '0 kg').waitFor();
  const started = Date.now();
  assert.equal((await ingest(env.one, site, '2.75')).status, 201);
  await overviewTotal(page, site, '2.75 kg').waitFor({ timeout: 1000 });
  assert.ok(Date.now() - started <= 1000, `${Date.now() - started} ms`);

  const [cookie] = (await context.cookies(env.one)).filter((c) => c.name === 'plume_session');
  assert.ok(cookie, 'the session cookie is set');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  const stored = await everythingStored(page);
  assert.ok(!stored.includes('plume_session') && !stored.includes(cookie.value), 'the cookie is not visible to scripts');
  assert.ok(!stored.includes(env.token), 'the token is not kept');
  assert.ok(!logged.some((line) => line.includes(env.token)), 'the token is not logged');
  await context.close();
});

test('a POST carrying the session cookie is refused from another origin', async () => {
  const { context, page } = await open(`${env.one}/`);
  const [cookie] = (await context.cookies(env.one)).filter((c) => c.name === 'plume_session');
  const createWith = (headers) => fetch(`${env.one}/v1/sites`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', cookie: `plume_session=${cookie.value}`, ...headers },
    body: JSON.stringify({ name: 'Forged', emission_limit: '10' }),
  });
  const forged = await createWith({ origin: 'http://evil.example' });
  assert.equal(forged.status, 403);
  assert.equal((await forged.json()).error.code, 'FORBIDDEN');
  assert.equal((await createWith({})).status, 403, 'without an Origin');
  assert.equal((await createWith({ origin: env.one })).status, 201, 'from the dashboard\'s own origin');

  // The same from a page of another origin (the other process's port) in the signed-in browser: a
  // form posted across origins carries the cookie (the same site) and its own Origin, and the
  // server refuses it.
  const other = await context.newPage();
  await other.goto(`${env.two}/`);
  const answered = other.waitForResponse((response) => response.url() === `${env.one}/v1/sites`);
  await other.evaluate((target) => {
    const form = document.createElement('form');
    Object.assign(form, { method: 'POST', action: target, enctype: 'text/plain' });
    const input = Object.assign(document.createElement('input'), { name: '{"name":"Cross-origin","emission_limit":"1","x":"', value: '"}' });
    form.append(input);
    document.body.append(form);
    form.submit();
  }, `${env.one}/v1/sites`);
  const response = await answered;
  const sent = await response.request().allHeaders();
  assert.equal(sent.origin, env.two);
  assert.match(sent.cookie ?? '', /plume_session=/);
  assert.equal(response.status(), 403);
  const sites = await page.evaluate(async () => (await (await fetch('/v1/sites')).json()).data.map((site) => site.name));
  assert.ok(sites.includes('Forged') && !sites.includes('Cross-origin'), 'only the same-origin request created a site');
  await context.close();
});

test('signing out ends the open long poll, and the page stops polling', async () => {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  const polls = watchPolls(page);
  await page.goto(`${env.one}/`);
  await signIn(page);
  await page.locator('#connection[data-state="live"]').waitFor();
  const [cookie] = (await context.cookies(env.one)).filter((c) => c.name === 'plume_session');
  const pending = await pendingLongPoll(polls);

  const started = Date.now();
  await page.click('#sign-out');
  await page.locator('#sign-in-form').waitFor({ timeout: 1000 });
  assert.equal(await page.textContent('#sign-in-reason'), 'You are signed out.');
  assert.equal(await page.locator('#account').isVisible(), false);
  const response = await pending.request.response();
  assert.equal(response.status(), 401);
  assert.ok(Date.now() - started <= 2000, `the long poll ended after ${Date.now() - started} ms`);
  assert.deepEqual((await context.cookies(env.one)).filter((c) => c.name === 'plume_session'), [], 'the cookie is cleared');
  const old = await fetch(`${env.two}/v2/session`, { headers: { cookie: `plume_session=${cookie.value}` } });
  assert.equal(old.status, 401, 'the session is over in the other process too');

  const count = polls.length;
  await new Promise((resolve) => setTimeout(resolve, 2000));
  assert.equal(polls.length, count, 'no poll after signing out');
  await context.close();
});

test('revoking the signed-in client ends its session: the live overview shows the sign-in view', async () => {
  const viewer = await mintToken(env, 'read', 'revoked viewer', ['--all-sites']);
  const context = await env.browser.newContext();
  const page = await context.newPage();
  const polls = watchPolls(page);
  await page.goto(`${env.two}/`);
  await signIn(page, viewer.token);
  await page.locator('#connection[data-state="live"]').waitFor();
  const pending = await pendingLongPoll(polls);
  await revokeToken(env, 'revoked viewer');
  assert.equal((await pending.request.response()).status(), 401);
  await page.locator('#sign-in-reason', { hasText: 'session has ended' }).waitFor({ timeout: 2000 });
  assert.equal(await page.getAttribute('#connection', 'data-state'), 'signed-out');
  const count = polls.length;
  await new Promise((resolve) => setTimeout(resolve, 2000));
  assert.equal(polls.length, count, 'no poll after the 401');
  await context.close();
});

test('a batch queued when the session expires waits for the next sign-in, then is delivered once under its key', async () => {
  const site = await createSite(env.one, 'Session expiry');
  const { context, page } = await open(`${env.one}/#/sites/${site}`);
  const answers = [];
  page.on('response', (response) => {
    if (response.url().endsWith('/v1/ingest')) answers.push({ key: response.request().headers()['idempotency-key'], status: response.status() });
  });
  // The feed's polls are held up from here on, as behind a slow proxy: a new site answers the one
  // waiting on the server, and the next never reaches it. So it is the queue that first meets the
  // end of the session.
  const pollHeld = new Promise((resolve) => page.route('**/v2/changes**', resolve));
  await createSite(env.one, 'Wakes the feed');
  await pollHeld;
  await context.setOffline(true);
  await page.fill('#field-value', '6.5');
  await page.click('#ingest-form button[type="submit"]');
  const row = page.locator('#queue-table tbody tr');
  await row.and(page.locator('[data-state="retrying"]')).waitFor();
  const key = await row.getAttribute('data-key');

  // The session expires while the page is offline; back online, the queue's next attempt is told so.
  await sql(env, "update auth_sessions set expires_at = now(), idle_expires_at = now(); select pg_notify('plume_auth', '*')");
  // The notification makes the server re-check its sessions in the background: wait until it has,
  // or the queue's next attempt could still be let through.
  for (let i = 0; ; i++) {
    const probe = await context.request.get(`${env.one}/v2/session`);
    if (probe.status() === 401) break;
    assert.ok(i < 100, 'the expired session is refused within 10 s');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await context.setOffline(false);
  await page.locator('#sign-in-reason', { hasText: 'session has ended' }).waitFor({ timeout: 10000 });
  await row.and(page.locator('[data-state="held"]')).waitFor();
  assert.equal(await row.getAttribute('data-key'), key, 'held under its key');
  assert.equal((await metrics(env.one, site)).reading_count, 0, 'nothing stored yet');
  assert.deepEqual(answers, [{ key, status: 401 }]);

  await page.unroute('**/v2/changes**');
  await signIn(page);
  await page.locator('#queue-empty').waitFor({ state: 'visible', timeout: 5000 });
  await page.locator('#site-total', { hasText: '6.5 kg' }).waitFor({ timeout: 5000 });
  assert.deepEqual(new Set(answers.map((answer) => answer.key)), new Set([key]), 'always under the same key');
  assert.equal(answers.filter((answer) => answer.status === 201).length, 1, 'stored by one answer');
  const stored = await metrics(env.one, site);
  assert.equal(stored.reading_count, 1);
  assert.equal(stored.total_emissions_to_date, '6.500000');
  await context.close();
});

test('a sign-in link signs in once, and its token leaves the address at once', async () => {
  const token = env.signInLink.split('#sign-in=')[1];
  const context = await env.browser.newContext();
  const page = await context.newPage();
  const logged = [];
  page.on('console', (message) => logged.push(message.text()));
  await page.goto(env.signInLink);
  await page.locator('#account-name', { hasText: '(admin)' }).waitFor();
  await page.locator('#connection[data-state="live"]').waitFor();
  assert.equal(page.url(), `${env.one}/`);
  assert.ok(!(await everythingStored(page)).includes(token), 'the token is not kept');
  assert.ok(!logged.some((line) => line.includes(token)), 'the token is not logged');
  await page.reload();
  await page.locator('#connection[data-state="live"]').waitFor();
  await context.close();

  // The link works once: opened again, it is refused, with a word on what to do instead.
  const again = await env.browser.newContext();
  const second = await again.newPage();
  await second.goto(env.signInLink);
  await second.locator('#sign-in-error', { hasText: 'link was not accepted' }).waitFor();
  assert.equal(second.url(), `${env.one}/`);
  await again.close();
});

test('a read-only session sees no form to enter readings or create sites; an ingest session only its sites\'', async () => {
  const site = await createSite(env.one, 'Read only');
  const other = await createSite(env.one, 'Not in scope');
  const viewer = await mintToken(env, 'read', 'viewer', ['--all-sites']);
  const { context, page } = await open(`${env.one}/#/sites/${site}`, { token: viewer.token });
  assert.equal(await page.textContent('#account-name'), 'viewer (read)');
  await page.locator('#site-readings', { hasText: '0' }).waitFor();
  await page.locator('#read-only').waitFor();
  assert.equal(await page.locator('#ingest-form, #sensor-form').count(), 0);
  assert.equal(await page.locator('#nav-new').isVisible(), false);
  await page.goto(`${env.one}/#/new`);
  await page.locator('h1', { hasText: 'New site' }).waitFor();
  assert.equal(await page.locator('#site-form').count(), 0);
  await context.close();

  // A sensor's session writes to its own site only.
  const sensor = await mintToken(env, 'ingest', 'sensor', ['--site', String(site)]);
  const sensorContext = await env.browser.newContext();
  const sensorPage = await sensorContext.newPage();
  await sensorPage.goto(`${env.one}/#/sites/${site}`);
  await signIn(sensorPage, sensor.token);
  await sensorPage.locator('#ingest-form').waitFor();
  await sensorPage.goto(`${env.one}/#/sites/${other}`);
  await sensorPage.locator('#read-only').waitFor();
  assert.equal(await sensorPage.locator('#ingest-form').count(), 0);
  await sensorContext.close();
});
