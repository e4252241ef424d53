// Starts what the browser tests need: two plume processes sharing one PostgreSQL (the first starts
// its embedded cluster, the second finds it running), and Debian's Chromium driven by
// playwright-core.

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const PLUME = process.env.PLUME_BIN ?? new URL('../../target/debug/plume', import.meta.url).pathname;
export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

/** A free loopback port. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/** Starts `plume serve` on a free port over the embedded cluster in `dataDir`; resolves when ready. */
async function startPlume(dataDir) {
  const port = await freePort();
  const child = spawn(PLUME, ['serve', '--no-demo', '--no-relay'], {
    env: { ...process.env, PLUME_DATA_DIR: dataDir, PLUME_LISTEN: `127.0.0.1:${port}`, RUST_LOG: 'warn', DATABASE_URL: '' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const address = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`plume exited with ${child.exitCode}`);
    try {
      const response = await fetch(`${address}/ready`);
      if (response.ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      // Left running, it would keep the test run from ever ending.
      child.kill('SIGKILL');
      throw new Error('plume did not become ready');
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return { address, child };
}

async function stopPlume({ child }) {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

/** Two plume processes on one database, and a browser. */
export async function startAll() {
  // Under /tmp: the embedded PostgreSQL runs as the postgres user, which must reach it.
  const dataDir = mkdtempSync(join(tmpdir(), 'plume-dashboard-'));
  const started = [];
  let browser;
  try {
    started.push(await startPlume(dataDir));
    started.push(await startPlume(dataDir));
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  } catch (error) {
    for (const service of started.reverse()) await stopPlume(service);
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  }
  const [one, two] = started;
  return {
    one: one.address,
    two: two.address,
    databasePort: clusterPort(dataDir),
    browser,
    async stop() {
      await browser.close();
      await stopPlume(two);
      await stopPlume(one);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The port of the embedded cluster under `dataDir` (the fourth line of its postmaster.pid). */
function clusterPort(dataDir) {
  const pidFile = readdirSync(dataDir, { recursive: true }).find((file) => String(file).endsWith('postmaster.pid'));
  return Number(readFileSync(join(dataDir, String(pidFile)), 'utf8').split('\n')[3]);
}

/**
 * Holds `siteId`'s row lock for `seconds` from a psql session of its own, so that ingest requests
 * for it wait inside the server; resolves once the lock is held.
 */
export async function holdSiteLock(env, siteId, seconds) {
  const sql = `begin; select 1 from sites where id = ${Number(siteId)} for update; select pg_sleep(${Number(seconds)}); commit;`;
  const psql = spawn('psql', ['-h', '127.0.0.1', '-p', String(env.databasePort), '-U', 'postgres', '-q', 'plume', '-c', sql], {
    stdio: 'ignore',
  });
  for (let i = 0; i < 100; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const probe = spawn('psql', ['-h', '127.0.0.1', '-p', String(env.databasePort), '-U', 'postgres', '-qtA', 'plume', '-c',
      `select count(*) from pg_locks l join pg_class c on c.oid = l.relation where c.relname = 'sites' and l.mode = 'RowShareLock' and l.granted and l.pid <> pg_backend_pid()`]);
    let out = '';
    probe.stdout.on('data', (chunk) => { out += chunk; });
    await new Promise((resolve) => probe.on('exit', resolve));
    if (Number(out.trim()) > 0) return psql;
  }
  throw new Error('the site lock was not taken');
}

/** `POST` JSON through the API (as another client would); returns the parsed envelope. */
export async function post(address, path, body, headers = {}) {
  const response = await fetch(`${address}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

export async function createSite(address, name, limit = '100') {
  const { status, body } = await post(address, '/v1/sites', { name, emission_limit: limit });
  if (status !== 201) throw new Error(`creating a site: ${status} ${JSON.stringify(body)}`);
  return body.data.id;
}

export async function ingest(address, siteId, value, key = randomUUID()) {
  const timestamp = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000).toISOString().replace('.000Z', 'Z');
  return post(address, '/v1/ingest', { site_id: siteId, readings: [{ source_id: 'api', timestamp, value }] }, { 'idempotency-key': key });
}

export async function metrics(address, siteId) {
  const response = await fetch(`${address}/v1/sites/${siteId}/metrics`);
  return (await response.json()).data;
}
