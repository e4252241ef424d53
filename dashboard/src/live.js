// @ts-check
// Follows /v2/changes with a long poll: every site at first, then each change the moment it commits.
// It follows for one session: a 401 (signed out, the session expired or was revoked) stops it, and
// so does a 403 (a session that may not read sites), until start() is called again. The readings
// the reported sites gained give the ingest rate the overview shows.

import { ApiError, changes } from './api.js';
import { backoff } from './backoff.js';

/** @typedef {import('./api-types').SiteMetrics} SiteMetrics */
/** @typedef {'live' | 'reconnecting' | 'offline' | 'signed-out' | 'refused'} ConnectionState */

/** How long one poll waits on the server, in seconds. */
const WAIT_SECONDS = 30;
/** The window the ingest rate is measured over. */
const RATE_WINDOW_MS = 60_000;

export class Feed {
  constructor() {
    /** @type {Map<number, SiteMetrics>} every site, as last reported */
    this.sites = new Map();
    /** @type {ConnectionState} */
    this.state = navigator.onLine ? 'reconnecting' : 'offline';
    /** @type {Set<(changed: SiteMetrics[]) => void>} */
    this.listeners = new Set();
    /** @type {Set<(state: ConnectionState) => void>} */
    this.stateListeners = new Set();
    /** @type {string | null} */
    this.cursor = null;
    /** @type {number | null} where the listing of every site goes on, while it does */
    this.after = null;
    this.failures = 0;
    /** @type {(() => void) | null} ends the current pause early */
    this.wake = null;
    /** @type {{ at: number, readings: number }[]} readings newly counted by each answer, oldest first */
    this.arrivals = [];
    /** @type {number | null} when the listing of every site ended and changes began to arrive */
    this.changesSince = null;
    /** Counts start() and stop(): a loop whose number is not the latest has been stopped. */
    this.generation = 0;
    this.following = false;
    window.addEventListener('offline', () => {
      if (this.following) this.setState('offline');
    });
    window.addEventListener('online', () => {
      if (!this.following) return;
      this.setState('reconnecting');
      this.wake?.();
    });
  }

  /** @param {(changed: SiteMetrics[]) => void} listener @returns {() => void} unsubscribes */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Readings stored per second, all sites together, as the changes reported over the last minute
   * (or since the listing, if shorter) count them; null before the first change can be counted.
   * @param {number} now ms since the epoch
   */
  ingestRate(now) {
    if (this.changesSince === null) return null;
    while (this.arrivals.length > 0 && this.arrivals[0].at <= now - RATE_WINDOW_MS) this.arrivals.shift();
    // At least a second, so that the first reading after the listing is not a burst.
    const seconds = Math.max(1000, Math.min(RATE_WINDOW_MS, now - this.changesSince)) / 1000;
    const readings = this.arrivals.reduce((sum, arrival) => sum + arrival.readings, 0);
    return readings / seconds;
  }

  /** @param {(state: ConnectionState) => void} listener */
  onState(listener) {
    this.stateListeners.add(listener);
    listener(this.state);
  }

  /** @param {ConnectionState} state */
  setState(state) {
    this.state = state;
    for (const listener of this.stateListeners) listener(state);
  }

  /** Follows every site from scratch: a new session may see other sites than the last. */
  start() {
    this.stop();
    this.following = true;
    this.sites.clear();
    this.cursor = null;
    this.after = null;
    this.failures = 0;
    this.arrivals = [];
    this.changesSince = null;
    this.setState(navigator.onLine ? 'reconnecting' : 'offline');
    this.run(this.generation);
  }

  /**
   * Stops following. A poll under way is not aborted: the server ends it when the session ends,
   * and its answer is ignored.
   */
  stop() {
    this.generation += 1;
    this.following = false;
    this.wake?.();
    this.setState('signed-out');
  }

  /** @param {number} generation this loop's; it ends once another start() or stop() is called */
  async run(generation) {
    while (generation === this.generation) {
      try {
        // Every site first, a page at a time (no waiting), then the changes since the first page.
        const listing = this.cursor === null || this.after !== null;
        const wait = listing ? 0 : WAIT_SECONDS;
        const { sites, cursor, nextAfter } = await changes(this.cursor, wait, listing ? this.after : null);
        if (generation !== this.generation) return;
        this.cursor = cursor;
        this.after = nextAfter;
        this.failures = 0;
        if (this.state !== 'live') this.setState('live');
        if (!listing) this.countReadings(sites);
        // The listing's end is news even without sites: the list is complete, and changes count.
        const listed = listing && nextAfter === null;
        if (listed) this.changesSince ??= Date.now();
        if (sites.length > 0 || listed) {
          for (const site of sites) this.sites.set(site.site_id, site);
          for (const listener of this.listeners) listener(sites);
        }
      } catch (error) {
        if (generation !== this.generation) return;
        // Asking again would get the same answer until the user signs in (again, or as another).
        if (error instanceof ApiError && (error.endsSession || error.status === 403)) {
          this.following = false;
          this.setState(error.status === 403 ? 'refused' : 'signed-out');
          return;
        }
        // A refused cursor (another database's, or an older format) will never be accepted: start
        // again from every site.
        if (error instanceof ApiError && !error.retryable) {
          this.cursor = null;
          this.after = null;
        }
        this.failures += 1;
        this.setState(navigator.onLine ? 'reconnecting' : 'offline');
        const asked = error instanceof ApiError ? error.retryAfter * 1000 : 0;
        await this.pause(Math.max(asked, backoff(this.failures)));
      }
    }
  }

  /** Adds the readings `changed` sites gained since last reported to the ingest rate. @param {SiteMetrics[]} changed */
  countReadings(changed) {
    let readings = 0;
    for (const site of changed) {
      const before = this.sites.get(site.site_id);
      readings += Math.max(0, site.reading_count - (before?.reading_count ?? 0));
    }
    if (readings > 0) this.arrivals.push({ at: Date.now(), readings });
  }

  /** Waits `ms`, or until the browser is back online. @param {number} ms */
  pause(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve(undefined);
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }
}
