// The overview of a fleet of 1,000 sites in a real browser: its summary, a page at a time, live, a
// view kept in the address, with the keyboard alone and at a phone's width. Prints how long the
// first render and an update take (docs/BENCHMARKS.md records them).

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { post, sql, startAll } from './harness.mjs';

const FLEET = 1000;
/** The figures the tests measure, printed once at the end. */
const figures = [];

let env;
before(async () => {
  env = await startAll();
  // The sites' figures are written directly, with no readings behind them: the overview shows the
  // figures only. Every tenth site has no reading yet, every tenth but one has been silent for two
  // days, the rest reported within the last half hour; about a third are over their limit.
  await sql(env, `insert into sites (name, emission_limit_mg, total_emissions_mg, reading_count, first_reading_at, last_reading_at)
    select format('Fleet %s %s', lpad(i::text, 4, '0'), (array['Permian', 'Bakken', 'Marcellus', 'Eagle Ford'])[1 + i % 4]),
           (100 + i % 900)::bigint * 1000000,
           case when i % 10 = 0 then 0 else (i * 7919 % 1500)::bigint * 1000000 + i end,
           case when i % 10 = 0 then 0 else 1 + i % 50 end,
           case when i % 10 = 0 then null else now() - interval '30 days' end,
           case when i % 10 = 0 then null
                when i % 10 = 1 then now() - interval '2 days'
                else now() - (i % 30) * interval '1 minute' end
      from generate_series(1, ${FLEET}) as i`);
});
after(async () => {
  if (figures.length > 0) console.log(`fleet: ${figures.join('; ')}`);
  await env?.stop();
});

/** A page signed in through the form at `url`, in a context of its own (en-US unless told). */
async function open(url, contextOptions = {}) {
  const context = await env.browser.newContext({ locale: 'en-US', ...contextOptions });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error));
  await page.goto(url);
  await page.fill('#sign-in-token', env.token);
  const started = Date.now();
  await page.click('#sign-in-form button[type="submit"]');
  await fleetShown(page);
  return { context, page, signedInMs: Date.now() - started };
}

/**
 * Waits until the overview shows the whole fleet's summary and its first rows; resolves with when
 * (ms since the page's navigation began).
 */
async function fleetShown(page) {
  const shown = await page.waitForFunction((fleet) => document.querySelector('#summary-sites')?.textContent === fleet
    && document.querySelectorAll('#sites tbody tr').length > 0 && performance.now(), FLEET.toLocaleString('en-US'), { polling: 5 });
  return Number(await shown.jsonValue());
}

/** The ids of the rows shown, in order. */
function shownIds(page) {
  return page.$$eval('#sites tbody tr', (rows) => rows.map((row) => Number(row.getAttribute('data-site-id'))));
}

/** A time `seconds` ago, in whole seconds, RFC 3339. */
function secondsAgo(seconds) {
  return new Date((Math.floor(Date.now() / 1000) - seconds) * 1000).toISOString().replace('.000Z', 'Z');
}

/** Ids from SQL, one a line. */
async function ids(statement) {
  return (await sql(env, statement)).split('\n').filter(Boolean).map(Number);
}

/** Starts counting, in the page, the changes to the rows and the long tasks. */
function watchPage(page) {
  return page.evaluate(() => {
    const watch = { mutations: [], longTasks: [] };
    new MutationObserver(() => watch.mutations.push(performance.now()))
      .observe(document.querySelector('#sites tbody'), { subtree: true, childList: true, characterData: true });
    new PerformanceObserver((list) => watch.longTasks.push(...list.getEntries().map((entry) => entry.duration)))
      .observe({ type: 'longtask' });
    Object.assign(window, { fleetWatch: watch });
  });
}

/**
 * How long the page took to apply the change feed's latest answer: from its last byte to the last
 * change of the rows, and the longest task meanwhile.
 */
function applied(page) {
  return page.evaluate(() => {
    const watch = /** @type {any} */ (window).fleetWatch;
    const polls = performance.getEntriesByType('resource').filter((entry) => entry.name.includes('/v2/changes'));
    const last = watch.mutations.at(-1);
    const answer = polls.filter((entry) => entry.responseEnd <= last).at(-1);
    return { applyMs: last - answer.responseEnd, longestTaskMs: Math.max(0, ...watch.longTasks) };
  });
}

test('1,000 sites: the summary counts them, a page of 50 shows, and an ingest shows within a second', async () => {
  const { context, page, signedInMs } = await open(`${env.one}/`);
  const [over, silent, none] = (await sql(env, `select count(*) filter (where total_emissions_mg > emission_limit_mg),
      count(*) filter (where last_reading_at < now() - interval '1 hour'), count(*) filter (where last_reading_at is null)
    from sites`)).split('|').map(Number);
  assert.equal(await page.textContent('#summary-over'), over.toLocaleString('en-US'));
  assert.equal(await page.textContent('#summary-silent'), silent.toLocaleString('en-US'));
  assert.equal(await page.textContent('#summary-none'), none.toLocaleString('en-US'));
  assert.equal(await page.textContent('#results'), 'Sites 1–50 of 1,000');
  assert.deepEqual(await shownIds(page), await ids('select id from sites order by id limit 50'));

  // A reload, the session kept: from the navigation to the first page of the fleet.
  await page.reload();
  const shownAt = await fleetShown(page);
  const listed = await page.evaluate(() => performance.getEntriesByType('resource')
    .find((entry) => entry.name.includes('/v2/changes'))?.responseEnd ?? NaN);
  figures.push(`first render ${Math.round(shownAt)} ms after a reload began, ${Math.round(shownAt - listed)} ms of it after the`
    + ` listing of 1,000 sites arrived (${signedInMs} ms from signing in)`);

  // One silent site's ingest, through the other plume process: its total changes and it is silent
  // no more.
  await watchPage(page);
  const [site] = await ids('select id from sites order by id offset 10 limit 1');
  const row = page.locator(`tr[data-site-id="${site}"]`);
  await row.locator('.badge.silent').waitFor();
  const before = await row.locator('td.total').getAttribute('title');
  const started = Date.now();
  const { status } = await post(env.two, '/v1/ingest', {
    site_id: site,
    readings: [{ source_id: 'fleet', timestamp: secondsAgo(1), value: '2500' }],
  }, { 'idempotency-key': randomUUID() });
  assert.equal(status, 201);
  await page.waitForFunction(([selector, old]) => document.querySelector(selector)?.getAttribute('title') !== old,
    [`tr[data-site-id="${site}"] td.total`, before], { timeout: 1000, polling: 10 });
  const shownMs = Date.now() - started;
  assert.ok(shownMs <= 1000, `shown after ${shownMs} ms`);
  assert.equal(await row.locator('.badge.silent').count(), 0, 'silent no more');
  const one = await applied(page);
  figures.push(`update shown ${shownMs} ms after the ingest request, applied ${one.applyMs.toFixed(1)} ms after its answer`);

  // 200 sites at once, the 50 shown among them, in one bulk request.
  const burst = await ids('select id from sites where reading_count > 0 order by id limit 200');
  const at = secondsAgo(1);
  const csv = `site_id,source_id,timestamp,value\n${burst.map((id) => `${id},burst,${at},1.5`).join('\n')}\n`;
  // Each site's total as it will be: 1.5 kg (1,500,000 mg) more.
  const totals = Object.fromEntries((await sql(env, `select id, ((total_emissions_mg + 1500000) / 1000000)::text || '.'
        || lpad(((total_emissions_mg + 1500000) % 1000000)::text, 6, '0')
      from sites where id = any('{${burst.join(',')}}')`)).split('\n').map((line) => line.split('|')));
  const burstStarted = Date.now();
  const response = await fetch(`${env.one}/v2/ingest`, {
    method: 'POST',
    headers: { authorization: `Bearer ${env.token}`, 'content-type': 'text/csv', 'idempotency-key': randomUUID() },
    body: csv,
  });
  assert.equal(response.status, 201);
  await page.waitForFunction((expected) => [...document.querySelectorAll('#sites tbody tr')].every((tr) => {
    const total = expected[/** @type {string} */ (tr.getAttribute('data-site-id'))];
    return total === undefined || tr.querySelector('td.total')?.getAttribute('title') === `${total} kg`;
  }), totals, { timeout: 1000, polling: 10 });
  const burstShownMs = Date.now() - burstStarted;
  assert.ok(burstShownMs <= 1000, `shown after ${burstShownMs} ms`);
  const many = await applied(page);
  const longest = many.longestTaskMs > 0 ? `longest task ${Math.round(many.longestTaskMs)} ms` : 'no task over 50 ms';
  figures.push(`200 sites changed at once shown ${burstShownMs} ms after the request, applied ${many.applyMs.toFixed(1)} ms after its answer, ${longest}`);
  assert.notEqual(await page.textContent('#summary-rate'), '0 readings/s');
  await context.close();
});

test('search, status, order and page are kept in the address: a reload or a shared link shows the same view', async () => {
  const { context, page } = await open(`${env.one}/`);
  await page.selectOption('#status-filter', 'over');
  await page.selectOption('#sort-order', 'total-desc');
  await page.click('#page-next');
  const expected = await ids(`select id from sites where total_emissions_mg > emission_limit_mg
    order by total_emissions_mg desc, id offset 50 limit 50`);
  const over = Number(await sql(env, 'select count(*) from sites where total_emissions_mg > emission_limit_mg'));
  await page.locator('#results', { hasText: `Sites 51–100 of ${over.toLocaleString('en-US')}` }).waitFor();
  assert.deepEqual(await shownIds(page), expected);
  assert.match(page.url(), /#\/\?status=over&sort=total-desc&page=2$/);
  assert.equal(await page.getAttribute('#sites th[aria-sort]', 'aria-sort'), 'descending');

  await page.reload();
  await page.locator('#results', { hasText: 'Sites 51–100' }).waitFor();
  assert.equal(await page.inputValue('#status-filter'), 'over');
  assert.equal(await page.inputValue('#sort-order'), 'total-desc');
  assert.deepEqual(await shownIds(page), expected);

  // A search starts again from its first page, and is kept too; a link to the view opens it in
  // another browser, once signed in.
  await page.fill('#site-search', 'bakken');
  await page.locator('#results', { hasText: 'Sites 1–' }).waitFor();
  const bakken = await ids(`select id from sites where total_emissions_mg > emission_limit_mg and name like '%Bakken'
    order by total_emissions_mg desc, id limit 50`);
  assert.deepEqual(await shownIds(page), bakken);
  const link = page.url();
  assert.match(link, /q=bakken/);
  const other = await open(link);
  await other.page.locator('#results', { hasText: 'Sites 1–' }).waitFor();
  assert.equal(await other.page.inputValue('#site-search'), 'bakken');
  assert.deepEqual(await shownIds(other.page), bakken);
  await other.context.close();
  await context.close();
});

test('silent sites are counted, filtered and marked; times are local with UTC on hover', async () => {
  const { context, page } = await open(`${env.one}/#/?status=silent&silent=1440`, { timezoneId: 'Asia/Kolkata' });
  const silent = await ids(`select id from sites where last_reading_at < now() - interval '24 hours' order by id limit 50`);
  await page.locator('#results', { hasText: 'Sites 1–' }).waitFor();
  assert.deepEqual(await shownIds(page), silent);
  assert.equal(await page.locator('#sites tbody tr .badge.silent').count(), silent.length);
  assert.equal(await page.inputValue('#silence'), '1440');

  const [id, at] = (await sql(env, `select id, to_char(last_reading_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') from sites
    where id = ${silent[0]}`)).split('|');
  const time = page.locator(`tr[data-site-id="${id}"] td.last time`);
  assert.equal(await time.getAttribute('title'), `${at} UTC`);
  const local = new Intl.DateTimeFormat('en-US', { timeZone: 'Asia/Kolkata', hour: 'numeric', minute: '2-digit' })
    .format(new Date(`${at.replace(' ', 'T')}Z`)).replace(/\s?[AP]M$/, '');
  assert.ok((await time.textContent()).includes(local), `${await time.textContent()} shows ${local} (India)`);

  // A shorter silence counts more sites as silent.
  const before = Number((await page.textContent('#summary-silent')).replace(/,/g, ''));
  await page.selectOption('#silence', '15');
  const after = Number(await sql(env, `select count(*) from sites where last_reading_at < now() - interval '15 minutes'`));
  await page.locator('#summary-silent', { hasText: after.toLocaleString('en-US') }).waitFor();
  assert.ok(after > before, `${after} > ${before}`);
  await context.close();
});

test('the overview works with the keyboard alone', async () => {
  const { context, page } = await open(`${env.one}/`);
  const target = await sql(env, "select id from sites where name like 'Fleet 0420 %'");
  // "/" goes to the search from anywhere on the page.
  await page.locator('#view').focus();
  await page.keyboard.press('/');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'site-search');
  await page.keyboard.type('fleet 0420');
  await page.locator('#results', { hasText: 'Sites 1–1 of 1' }).waitFor();
  // Tab on to the one site's link, and open it.
  const focusedRow = () => page.evaluate(() => document.activeElement?.closest('tr')?.getAttribute('data-site-id') ?? null);
  for (let i = 0; i < 10 && (await focusedRow()) !== target; i++) await page.keyboard.press('Tab');
  assert.equal(await focusedRow(), target);
  await page.keyboard.press('Enter');
  await page.waitForURL(new RegExp(`#/sites/${target}$`));
  // The way back returns to the same view.
  await page.locator('#all-sites').focus();
  await page.keyboard.press('Enter');
  await page.locator('#results', { hasText: 'Sites 1–1 of 1' }).waitFor();
  assert.equal(await page.inputValue('#site-search'), 'fleet 0420');

  // The status filter and the pages, by keys.
  await page.keyboard.press('/');
  await page.keyboard.press('Backspace');
  await page.locator('#results', { hasText: 'Sites 1–50 of 1,000' }).waitFor();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'status-filter');
  await page.keyboard.press('ArrowDown');
  await page.locator('#results', { hasText: /of \d/ }).waitFor();
  assert.equal(await page.inputValue('#status-filter'), 'over');
  const focused = () => page.evaluate(() => document.activeElement?.id);
  for (let i = 0; i < 200 && (await focused()) !== 'page-next'; i++) await page.keyboard.press('Tab');
  assert.equal(await focused(), 'page-next');
  await page.keyboard.press('Enter');
  await page.locator('#page-position', { hasText: 'Page 2 of' }).waitFor();
  await page.keyboard.press('Enter');
  await page.locator('#page-position', { hasText: 'Page 3 of' }).waitFor();
  assert.equal(await focused(), 'page-next', 'the focus stays on the button');
  await context.close();
});

test('at a phone\'s width the summary, the controls, each site\'s status and the pages fit', async () => {
  const width = 390;
  const { context, page } = await open(`${env.one}/`, { viewport: { width, height: 800 }, isMobile: true, hasTouch: true });
  for (const selector of ['#summary-rate', '#site-search', '#status-filter', '#sort-order', '#silence', '#page-next', '#sites tbody tr .badge']) {
    const box = await page.locator(selector).first().boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= width, `${selector} spans ${box?.x} to ${box && box.x + box.width} px`);
  }
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow} px`);
  await page.tap('#page-next');
  await page.locator('#page-position', { hasText: 'Page 2 of 20' }).waitFor();
  await context.close();
});
