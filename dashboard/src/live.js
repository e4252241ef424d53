// @ts-check
// Follows /v2/changes with a long poll: every site at first, then each change the moment it commits.

import { ApiError, changes } from './api.js';
import { backoff } from './backoff.js';

/** @typedef {import('./api-types').SiteMetrics} SiteMetrics */
/** @typedef {'live' | 'reconnecting' | 'offline'} ConnectionState */

/** How long one poll waits on the server, in seconds. */
const WAIT_SECONDS = 30;

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
    this.failures = 0;
    /** @type {(() => void) | null} ends the current pause early */
    this.wake = null;
  }

  /** @param {(changed: SiteMetrics[]) => void} listener @returns {() => void} unsubscribes */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
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

  start() {
    window.addEventListener('offline', () => this.setState('offline'));
    window.addEventListener('online', () => {
      this.setState('reconnecting');
      this.wake?.();
    });
    this.run();
  }

  async run() {
    for (;;) {
      try {
        const { sites, cursor } = await changes(this.cursor, this.cursor ? WAIT_SECONDS : 0);
        this.cursor = cursor;
        this.failures = 0;
        if (this.state !== 'live') this.setState('live');
        if (sites.length > 0) {
          for (const site of sites) this.sites.set(site.site_id, site);
          for (const listener of this.listeners) listener(sites);
        }
      } catch (error) {
        // A refused cursor (another database's, or an older format) will never be accepted: start
        // again from every site.
        if (error instanceof ApiError && !error.retryable) this.cursor = null;
        this.failures += 1;
        this.setState(navigator.onLine ? 'reconnecting' : 'offline');
        await this.pause(backoff(this.failures));
      }
    }
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
