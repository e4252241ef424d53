// @ts-check
// The panel beside every view that lists the batches waiting in the delivery queue, with each one's
// state, and a way to discard a batch the server refused.

import { h } from './dom.js';

/** @typedef {import('./queue.js').Queue} Queue */

/**
 * Binds the panel (#queue-table, #queue-empty) to `queue`.
 * @param {Queue} queue @returns {() => Promise<void>} redraws the panel from the queue's contents
 */
export function queuePanel(queue) {
  /** @type {Map<string, HTMLElement>} each queued batch's row, updated in place so focus stays put */
  const rows = new Map();
  let renders = 0;

  return async function showQueue() {
    const mine = ++renders;
    const entries = await queue.all();
    // A later render is under way with later data: this one's would be stale.
    if (mine !== renders) return;
    const table = /** @type {HTMLTableElement} */ (document.getElementById('queue-table'));
    const empty = /** @type {HTMLElement} */ (document.getElementById('queue-empty'));
    table.hidden = entries.length === 0;
    empty.hidden = entries.length > 0;
    const keys = new Set(entries.map((entry) => entry.key));
    for (const [key, row] of rows) {
      if (!keys.has(key)) {
        row.remove();
        rows.delete(key);
      }
    }
    for (const entry of entries) {
      let row = rows.get(entry.key);
      if (!row) {
        const discard = h('button', { type: 'button', class: 'secondary', 'aria-label': `Discard batch ${entry.key.slice(0, 8)}`, hidden: '' }, ['Discard']);
        discard.addEventListener('click', () => queue.remove(entry.key));
        row = h('tr', { 'data-key': entry.key }, [
          h('td', {}, [h('code', { title: entry.key }, [entry.key.slice(0, 8)])]),
          h('td', {}, [String(entry.siteId)]),
          h('td', {}, [String(entry.batch.readings.length)]),
          h('td', { class: 'state' }),
          h('td', { class: 'attempts' }),
          h('td', {}, [discard]),
        ]);
        // Oldest first, and a new batch is the newest: rows are only ever appended.
        table.tBodies[0].append(row);
        rows.set(entry.key, row);
      }
      const cell = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (row.querySelector(selector));
      // Signed out, every batch waits for the same thing: a sign-in.
      const held = queue.held && entry.state !== 'rejected';
      row.dataset.state = held ? 'held' : entry.state;
      cell('.state').textContent = held ? 'waiting for you to sign in'
        : entry.state === 'retrying' ? `retrying at ${new Date(entry.nextAt).toLocaleTimeString()} (${entry.lastError})`
        : entry.state === 'rejected' ? `refused: ${entry.lastError}` : entry.state;
      cell('.attempts').textContent = String(entry.attempts);
      cell('button').hidden = entry.state !== 'rejected';
    }
  };
}
