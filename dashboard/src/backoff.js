// @ts-check

/** The first retry waits about this long, in milliseconds. */
export const FIRST_DELAY_MS = 1000;
/** No retry waits longer than this. */
export const MAX_DELAY_MS = 60000;

/**
 * The wait before retry number `attempt` (1 for the first): 1 s doubling up to 60 s, with jitter
 * (between half and all of it), so that clients that failed together do not retry together.
 * @param {number} attempt
 * @param {() => number} [random]
 */
export function backoff(attempt, random = Math.random) {
  const ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling * (0.5 + random() / 2));
}
