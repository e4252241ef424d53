// Starts what the browser tests need: two plume processes sharing one PostgreSQL (the first starts
// its embedded cluster, the second finds it running), an admin token for the API calls the tests
// make as another client would, and Debian's Chromium driven by playwright-core.

import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
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
  // A process killed by a signal has no exit code, only that signal's name.
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  // A process a test paused (SIGSTOP) takes the SIGTERM once it runs again.
  child.kill('SIGCONT');
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
    /**
     * Sends `signal` to the process at `address` (`one` or `two`); with SIGKILL, resolves once it
     * is gone, and stop() then leaves it be. The first owns the embedded cluster: killing it stops
     * the database too, so a test that needs the database afterwards kills the second.
     * @param {string} address
     * @param {NodeJS.Signals} signal
     */
    async signal(address, signal) {
      const { child } = started.find((service) => service.address === address);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = signal === 'SIGKILL' && new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      await exited;
    },
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

/** How long the proxy waits for an upstream to accept a connection before giving up on it. */
const UPSTREAM_CONNECT_MS = 1000;

/**
 * A TCP proxy on a free loopback port in front of `upstreams` (addresses such as
 * `http://127.0.0.1:8080`), as a load balancer that fails over would be: each new connection goes to
 * the first upstream that accepts it (one that refuses, or does not answer within a second, is
 * passed over). A connection stays with its upstream and ends when that upstream's does: a
 * browser's keep-alive connection to a process that dies is cut, not moved. Pages load through
 * `address`: plume answers any loopback host, whatever its port.
 *
 * With `healthCheckMs`, it is instead a balancer that learns of a dead upstream only from its health
 * checks (a TCP connection every `healthCheckMs`): each new connection goes to the first upstream
 * that passed its last check, and if that upstream refuses it, it is reset, not passed on.
 * @param {string[]} upstreams
 * @param {{ healthCheckMs?: number }} [options]
 */
export async function startFailoverProxy(upstreams, { healthCheckMs = 0 } = {}) {
  const targets = upstreams.map((address) => {
    const url = new URL(address);
    return { host: url.hostname, port: Number(url.port) };
  });
  /** How many connections went to each upstream. */
  const routed = targets.map(() => 0);
  /** Whether each upstream passed its last health check. */
  const healthy = targets.map(() => true);
  /** Every socket still open, both ends, so that close() can end them all. */
  const sockets = new Set();
  const track = (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const checks = healthCheckMs > 0 && setInterval(() => {
    targets.forEach((target, index) => {
      const probe = connect(target);
      track(probe);
      const failed = () => {
        healthy[index] = false;
        probe.destroy();
      };
      probe.setTimeout(healthCheckMs, failed);
      probe.once('error', failed);
      probe.once('connect', () => {
        healthy[index] = true;
        probe.destroy();
      });
    });
  }, healthCheckMs);
  const server = createServer((client) => {
    track(client);
    /** @type {import('node:net').Socket | null} */
    let upstream = null;
    client.on('error', () => upstream?.destroy());
    client.once('close', () => upstream?.destroy());
    const attempt = (index) => {
      if (client.destroyed) return;
      if (index === targets.length) {
        client.destroy();
        return;
      }
      const socket = connect(targets[index]);
      upstream = socket;
      track(socket);
      const next = () => {
        socket.destroy();
        if (checks) client.destroy();
        else attempt(index + 1);
      };
      socket.setTimeout(UPSTREAM_CONNECT_MS, next);
      socket.once('error', next);
      socket.once('connect', () => {
        routed[index] += 1;
        socket.setTimeout(0);
        socket.removeListener('timeout', next);
        socket.removeListener('error', next);
        // A reset (the upstream died) is passed on as one; an orderly end, by the pipe, as an end.
        socket.on('error', () => client.destroy());
        // The client's bytes wait, unread, until the upstream is chosen.
        client.pipe(socket);
        socket.pipe(client);
      });
    };
    if (!checks) attempt(0);
    else if (healthy.includes(true)) attempt(healthy.indexOf(true));
    else client.destroy();
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    address: `http://127.0.0.1:${server.address().port}`,
    routed,
    /** Stops listening and ends every connection. */
    async close() {
      if (checks) clearInterval(checks);
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
