// @ts-check
// The delivery queue: every batch entered here is first written to IndexedDB under a fresh
// idempotency key, then sent; it is retried under the same key until the server stores it (201) or
// answers a retry from the stored result (200), and only then removed. It survives reloads.
// Nothing is sent without a session: a 401 holds the batch (same key) and the whole queue until
// resume() is called after the next sign-in.

import { ApiError, ingest } from './api.js';
import { backoff } from './backoff.js';

/** @typedef {import('./api-types').BatchReceipt} BatchReceipt */
/**
 * @typedef {object} QueuedBatch
 * @property {string} key the idempotency key, fixed for every attempt
 * @property {number} siteId
 * @property {{ site_id: number, readings: object[] }} batch the request body
 * @property {'form' | 'sensor'} origin
 * @property {'queued' | 'sending' | 'retrying' | 'rejected'} state
 * @property {number} attempts
 * @property {number} nextAt when the next attempt is due (ms since the epoch)
 * @property {string | null} lastError
 * @property {number} createdAt
 */

const DATABASE = 'plume-dashboard';
const STORE = 'batches';

/** @returns {Promise<IDBDatabase>} */
function openDatabase() {
  return new Promise((resolve, reject) => {
    const opening = indexedDB.open(DATABASE, 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore(STORE, { keyPath: 'key' });
    opening.onsuccess = () => resolve(opening.result);
    opening.onerror = () => reject(opening.error);
  });
}

/**
 * Runs one request on the store and resolves with its result once the transaction is durable.
 * @template T
 * @param {IDBDatabase} database
 * @param {IDBTransactionMode} mode
 * @param {(store: IDBObjectStore) => IDBRequest<T>} operation
 * @returns {Promise<T>}
 */
function inStore(database, mode, operation) {
  return new Promise((resolve, reject) => {
    const transaction = database.transaction(STORE, mode, { durability: 'strict' });
    const request = operation(transaction.objectStore(STORE));
    transaction.oncomplete = () => resolve(request.result);
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error);
  });
}

export class Queue {
  constructor() {
    /** @type {Promise<IDBDatabase>} */
    this.database = openDatabase();
    /** Discard the first answer to each batch, as if the network had lost it. */
    this.dropFirstResponse = false;
    /** @type {Set<() => void>} */
    this.changeListeners = new Set();
    /** @type {Set<(batch: QueuedBatch, status: number, receipt: BatchReceipt) => void>} */
    this.deliveredListeners = new Set();
    /** @type {Set<(batch: QueuedBatch, error: ApiError) => void>} */
    this.rejectedListeners = new Set();
    this.running = false;
    this.again = false;
    /** Whether the next pass sends every waiting batch, due or not (back online). */
    this.retryAll = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    /** Whether sending waits for a sign-in (until resume()). */
    this.held = true;
  }

  start() {
    window.addEventListener('online', () => {
      this.retryAll = true;
      this.kick();
    });
    // Ask the browser not to evict the queue under storage pressure (it may still refuse).
    navigator.storage?.persist?.().catch(() => {});
  }

  /** Stops sending (the session is over); a request under way finishes. */
  hold() {
    this.held = true;
    clearTimeout(this.timer);
    this.changed();
  }

  /** Sends every waiting batch now: signed in, again or for the first time. */
  resume() {
    this.held = false;
    this.retryAll = true;
    this.changed();
    this.kick();
  }

  /**
   * Queues a batch under a fresh key and starts sending it.
   * @param {number} siteId
   * @param {object[]} readings
   * @param {'form' | 'sensor'} origin
   * @returns {Promise<string>} the key
   */
  async add(siteId, readings, origin) {
    /** @type {QueuedBatch} */
    const entry = {
      key: crypto.randomUUID(),
      siteId,
      batch: { site_id: siteId, readings },
      origin,
      state: 'queued',
      attempts: 0,
      nextAt: 0,
      lastError: null,
      createdAt: Date.now(),
    };
    await this.put(entry);
    this.kick();
    return entry.key;
  }

  /** @returns {Promise<QueuedBatch[]>} oldest first */
  async all() {
    const database = await this.database;
    /** @type {QueuedBatch[]} */
    const entries = await inStore(database, 'readonly', (store) => store.getAll());
    return entries.sort((a, b) => a.createdAt - b.createdAt);
  }

  /**
   * Removes a batch: once the server has stored it (a 2xx), or when the user discards one it
   * refused (nothing of which was stored). @param {string} key
   */
  async remove(key) {
    const database = await this.database;
    await inStore(database, 'readwrite', (store) => store.delete(key));
    this.changed();
  }

  /** @param {QueuedBatch} entry */
  async put(entry) {
    const database = await this.database;
    await inStore(database, 'readwrite', (store) => store.put(entry));
    this.changed();
  }

  changed() {
    for (const listener of this.changeListeners) listener();
  }

  /**
   * Sends every due batch, one at a time, then sleeps until the next is due. One pass runs at a
   * time in this page, and, through a Web Lock, in all of this origin's tabs.
   */
  async kick() {
    if (this.held) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    clearTimeout(this.timer);
    /** @type {number | null} */
    let nextDue = null;
    try {
      const pass = () => this.pass();
      nextDue = navigator.locks ? await navigator.locks.request('plume-delivery-queue', pass) : await pass();
    } catch (error) {
      // IndexedDB failed: try again shortly rather than stall.
      console.error('the delivery queue failed; retrying', error);
      nextDue = Date.now() + 5000;
    } finally {
      this.running = false;
    }
    if (this.again) {
      this.kick();
    } else if (nextDue !== null) {
      this.timer = setTimeout(() => this.kick(), Math.max(0, nextDue - Date.now()));
    }
  }

  /** @returns {Promise<number | null>} when the next waiting batch is due */
  async pass() {
    do {
      this.again = false;
      const all = this.retryAll;
      this.retryAll = false;
      for (const entry of await this.all()) {
        if (this.held) return null;
        if (entry.state !== 'rejected' && (all || entry.nextAt <= Date.now())) await this.send(entry);
      }
    } while (this.again && !this.held);
    if (this.held) return null;
    const due = (await this.all()).filter((entry) => entry.state === 'retrying').map((entry) => entry.nextAt);
    return due.length > 0 ? Math.min(...due) : null;
  }

  /** @param {QueuedBatch} entry */
  async send(entry) {
    const attempt = { ...entry, state: /** @type {const} */ ('sending'), attempts: entry.attempts + 1 };
    await this.put(attempt);
    try {
      const { status, receipt } = await ingest(attempt.key, attempt.batch);
      if (this.dropFirstResponse && attempt.attempts === 1) {
        throw new ApiError(0, 'DROPPED', 'the answer was lost on the way (simulated)', []);
      }
      await this.remove(attempt.key);
      for (const listener of this.deliveredListeners) listener(attempt, status, receipt);
    } catch (caught) {
      const error = caught instanceof ApiError ? caught : new ApiError(0, 'NETWORK', String(caught), []);
      if (error.endsSession) {
        // Not the batch's fault: it waits, under its key, for the user to sign in again.
        this.hold();
        await this.put({ ...attempt, state: 'queued', nextAt: 0, lastError: error.message });
      } else if (error.retryable) {
        await this.put({
          ...attempt,
          state: 'retrying',
          nextAt: Date.now() + Math.max(backoff(attempt.attempts), error.retryAfter * 1000),
          lastError: error.message,
        });
      } else {
        await this.put({ ...attempt, state: 'rejected', lastError: error.message });
        for (const listener of this.rejectedListeners) listener(attempt, error);
      }
    }
  }
}
