// Starts what the browser tests need: two plume processes sharing one PostgreSQL (the first starts
// its embedded cluster, the second finds it running), an admin token for the API calls the tests
// make as another client would, and Debian's Chromium driven by playwright-core.

import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
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

/** The environment of a plume command over the embedded cluster in `dataDir`. */
function plumeEnv(dataDir, more = {}) {
  return { ...process.env, PLUME_DATA_DIR: dataDir, RUST_LOG: 'warn', DATABASE_URL: '', ...more };
}

/**
 * Starts `plume serve` on a free port over the embedded cluster in `dataDir`; resolves when ready,
 * with the one-time sign-in link it printed (kept out of the test output: it holds a token).
 */
async function startPlume(dataDir) {
  const port = await freePort();
  const child = spawn(PLUME, ['serve', '--no-demo', '--no-relay'], {
    env: plumeEnv(dataDir, { PLUME_LISTEN: `127.0.0.1:${port}` }),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let printed = '';
  child.stdout.on('data', (chunk) => {
    printed += chunk;
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
  // Printed before serving starts, the link may still reach this end of the pipe a moment later.
  for (let i = 0; i < 50 && !/#sign-in=\S+\n/.test(printed); i++) await new Promise((resolve) => setTimeout(resolve, 100));
  const signInLink = printed.match(/http:\/\/\S+#sign-in=\S+/)?.[0] ?? null;
  return { address, child, signInLink };
}

/**
 * Mints a token with `plume tokens create` (e.g. `mintToken(env, 'read', 'viewer', ['--all-sites'])`);
 * resolves with its JSON line: `client_id`, `token_id`, `token`.
 */
export async function mintToken(env, kind, name, args = []) {
  const { stdout } = await promisify(execFile)(
    PLUME,
    ['tokens', 'create', '--kind', kind, '--name', name, '--json', ...args],
    { env: plumeEnv(env.dataDir) },
  );
  return JSON.parse(stdout);
}

/** Revokes a token, or a client and all its tokens, by id or name (`plume tokens revoke`). */
export async function revokeToken(env, which) {
  await promisify(execFile)(PLUME, ['tokens', 'revoke', which], { env: plumeEnv(env.dataDir) });
}

/** psql's environment: the embedded cluster's superuser password, from its data directory. */
function psqlEnv(env) {
  return { ...process.env, PGPASSWORD: readFileSync(join(env.dataDir, 'password'), 'utf8').trim() };
}

/** Runs SQL on the `plume` database as the superuser; resolves with psql's unaligned output. */
export async function sql(env, statement) {
  const { stdout } = await promisify(execFile)('psql', [
    '-h', '127.0.0.1', '-p', String(env.databasePort), '-U', 'postgres', '-qtAX', 'plume', '-c', statement,
  ], { env: psqlEnv(env) });
  return stdout.trim();
}

/** The admin token the helpers below send, as another client of the API would. */
let apiToken = null;

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
  let admin;
  try {
    started.push(await startPlume(dataDir));
    admin = await mintToken({ dataDir }, 'admin', 'dashboard tests');
    apiToken = admin.token;
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
    dataDir,
    databasePort: clusterPort(dataDir),
    /** An admin token, for the tests' own API calls and for signing the dashboard in. */
    token: admin.token,
    /** The one-time sign-in link the first process printed. */
    signInLink: one.signInLink,
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
  const hold = `begin; select 1 from sites where id = ${Number(siteId)} for update; select pg_sleep(${Number(seconds)}); commit;`;
  const psql = spawn('psql', ['-h', '127.0.0.1', '-p', String(env.databasePort), '-U', 'postgres', '-q', 'plume', '-c', hold], {
    stdio: 'ignore',
    env: psqlEnv(env),
  });
  for (let i = 0; i < 100; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const held = await sql(env, `select count(*) from pg_locks l join pg_class c on c.oid = l.relation
      where c.relname = 'sites' and l.mode = 'RowShareLock' and l.granted and l.pid <> pg_backend_pid()`);
    if (Number(held) > 0) return psql;
  }
  throw new Error('the site lock was not taken');
}

/** `POST` JSON through the API (as another client would); returns the parsed envelope. */
export async function post(address, path, body, headers = {}) {
  const response = await fetch(`${address}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiToken}`, ...headers },
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
  const response = await fetch(`${address}/v1/sites/${siteId}/metrics`, { headers: { authorization: `Bearer ${apiToken}` } });
  return (await response.json()).data;
}
