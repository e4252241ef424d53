// @ts-check
// The HTTP API, typed by the declarations generated from plume's Rust types.

import { backoff } from './backoff.js';

/** @typedef {import('./api-types').SiteMetrics} SiteMetrics */
/** @typedef {import('./api-types').Site} Site */
/** @typedef {import('./api-types').SeriesBucket} SeriesBucket */
/** @typedef {import('./api-types').SourceSummary} SourceSummary */
/** @typedef {import('./api-types').BatchReceipt} BatchReceipt */
/** @typedef {import('./api-types').FieldError} FieldError */
/** @typedef {import('./api-types').ErrorEnvelope} ErrorEnvelope */
/** @typedef {import('./api-types').SessionInfo} SessionInfo */

/** An answer other than success, in the words of the error envelope. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {FieldError[]} details
   */
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    /** Seconds the server asked to wait before the next request (429), if it said. */
    this.retryAfter = 0;
  }

  /**
   * Whether sending the same request again may succeed: the server or the network failed, or the
   * request went out under a session that has since been replaced.
   */
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500
      || this.code === SESSION_REPLACED;
  }

  /** Whether this is the end of the current session (401): nothing is sent until a new sign-in. */
  get endsSession() {
    return this.status === 401 && this.code !== SESSION_REPLACED;
  }
}

/** The code of a 401 to a request sent before the latest sign-in or sign-out: news of nothing. */
const SESSION_REPLACED = 'SESSION_REPLACED';

/** Counts sign-ins and sign-outs, so that a late 401 is told from the end of the current session. */
let sessionEpoch = 0;
/** Told when an answer says the current session is over (401). */
let sessionEnded = () => {};

/** @param {() => void} listener called on each 401 to a request of the current session */
export function onSessionEnded(listener) {
  sessionEnded = listener;
}

/**
 * Sends a request and returns the envelope's body; throws ApiError for anything else (status 0 when
 * no answer arrived). The session cookie goes with it (same origin).
 * @param {string} path
 * @param {RequestInit & { timeoutMs?: number, signingIn?: boolean }} [init] `signingIn`: a 401 is
 *   this request's own answer (a refused token, no session yet), not the end of the session
 * @returns {Promise<{ status: number, body: any }>}
 */
export async function request(path, init = {}) {
  const { timeoutMs = 15000, signingIn = false, ...rest } = init;
  const epoch = sessionEpoch;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  /** @type {Response} */
  let response;
  try {
    response = await fetch(path, { ...rest, signal: abort.signal });
  } catch (error) {
    const reason = abort.signal.aborted ? 'the server did not answer in time' : 'the server cannot be reached';
    throw new ApiError(0, 'NETWORK', reason, []);
  } finally {
    clearTimeout(timer);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: described below by status.
  }
  if (!response.ok) {
    /** @type {ErrorEnvelope | null} */
    const envelope = body && body.error ? body : null;
    const error = new ApiError(
      response.status,
      envelope ? envelope.error.code : 'HTTP',
      envelope ? envelope.error.message : `the server answered ${response.status}`,
      envelope ? envelope.error.details : [],
    );
    error.retryAfter = Number(response.headers.get('retry-after')) || 0;
    if (response.status === 401 && !signingIn) {
      if (epoch !== sessionEpoch) error.code = SESSION_REPLACED;
      else sessionEnded();
    }
    throw error;
  }
  return { status: response.status, body };
}

/**
 * The sites changed since `cursor` (every site without one, a page at a time); waits up to `wait`
 * seconds. With `after`, the next page of every site, continuing the listing `cursor` began.
 * @param {string | null} cursor
 * @param {number} wait
 * @param {number | null} [after]
 * @returns {Promise<{ sites: SiteMetrics[], cursor: string, nextAfter: number | null }>}
 */
export async function changes(cursor, wait, after = null) {
  const query = new URLSearchParams({ wait: String(wait) });
  if (cursor) query.set('cursor', cursor);
  if (after !== null) query.set('after', String(after));
  /** @type {{ body: import('./api-types').Envelope<SiteMetrics[], { cursor: string, next_after?: number }> }} */
  const { body } = await request(`/v2/changes?${query}`, { timeoutMs: (wait + 15) * 1000 });
  return { sites: body.data, cursor: body.meta.cursor, nextAfter: body.meta.next_after ?? null };
}

/**
 * @param {number} siteId
 * @returns {Promise<SiteMetrics>}
 */
export async function metrics(siteId) {
  /** @type {{ body: import('./api-types').Envelope<SiteMetrics> }} */
  const { body } = await request(`/v1/sites/${siteId}/metrics`);
  return body.data;
}

/**
 * @param {number} siteId
 * @param {'hour' | 'day' | 'month'} bucket
 * @param {Date} from
 * @param {Date} to
 * @returns {Promise<SeriesBucket[]>}
 */
export async function series(siteId, bucket, from, to) {
  const query = new URLSearchParams({ bucket, from: from.toISOString(), to: to.toISOString() });
  /** @type {{ body: import('./api-types').Envelope<SeriesBucket[]> }} */
  const { body } = await request(`/v2/sites/${siteId}/series?${query}`);
  return body.data;
}

/**
 * A page of the site's sources, each with its last reading, and the cursor of the next page.
 * @param {number} siteId
 * @param {string | null} cursor
 * @returns {Promise<{ sources: SourceSummary[], nextCursor: string | null }>}
 */
export async function sources(siteId, cursor) {
  const query = new URLSearchParams({ limit: '100' });
  if (cursor) query.set('cursor', cursor);
  /** @type {{ body: import('./api-types').Envelope<SourceSummary[], { next_cursor: string | null }> }} */
  const { body } = await request(`/v2/sites/${siteId}/sources?${query}`);
  return { sources: body.data, nextCursor: body.meta.next_cursor };
}

/**
 * The address of an export of the site's readings from `from` to `to` (a download; the session
 * cookie goes with it). @param {number} siteId @param {Date} from @param {Date} to
 * @param {'csv' | 'parquet'} format
 */
export function exportHref(siteId, from, to, format) {
  const query = new URLSearchParams({ site_id: String(siteId), from: from.toISOString(), to: to.toISOString(), format });
  return `/v2/export?${query}`;
}

/**
 * @param {{ name: string, emission_limit: string }} site
 * @returns {Promise<Site>}
 */
export async function createSite(site) {
  /** @type {{ body: import('./api-types').Envelope<Site> }} */
  const { body } = await request('/v1/sites', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(site),
  });
  return body.data;
}

/**
 * Posts a batch under its idempotency key. 201: stored now; 200: a replay of the stored answer.
 * @param {string} key
 * @param {object} batch
 * @returns {Promise<{ status: number, receipt: BatchReceipt }>}
 */
export async function ingest(key, batch) {
  /** @type {{ status: number, body: import('./api-types').Envelope<BatchReceipt> }} */
  const { status, body } = await request('/v1/ingest', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify(batch),
  });
  return { status, receipt: body.data };
}

/**
 * Signs in with a token; the server answers with the HttpOnly session cookie, which the page never
 * sees. A refused token throws ApiError 401.
 * @param {string} token
 * @returns {Promise<SessionInfo>}
 */
export async function signIn(token) {
  /** @type {{ body: import('./api-types').Envelope<SessionInfo> }} */
  const { body } = await request('/v2/session', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token }),
    signingIn: true,
  });
  sessionEpoch += 1;
  return body.data;
}

/**
 * The session this browser already has, or null; asked again while the server cannot answer.
 * @returns {Promise<SessionInfo | null>}
 */
export async function existingSession() {
  for (let failures = 1; ; failures++) {
    try {
      /** @type {{ body: import('./api-types').Envelope<SessionInfo> }} */
      const { body } = await request('/v2/session', { signingIn: true });
      return body.data;
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return null;
      await new Promise((resolve) => setTimeout(resolve, backoff(failures)));
    }
  }
}

/** Ends the session on the server (in every process) and clears its cookie. */
export async function signOut() {
  sessionEpoch += 1;
  await request('/v2/session', { method: 'DELETE' });
}

/** Whether `session` may write readings to `siteId`. @param {SessionInfo | null} session @param {number} siteId */
export function mayWrite(session, siteId) {
  return !!session && session.can_write && (session.all_sites || session.site_ids.includes(siteId));
}
