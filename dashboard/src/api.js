// @ts-check
// The HTTP API, typed by the declarations generated from plume's Rust types.

/** @typedef {import('./api-types').SiteMetrics} SiteMetrics */
/** @typedef {import('./api-types').Site} Site */
/** @typedef {import('./api-types').SeriesBucket} SeriesBucket */
/** @typedef {import('./api-types').BatchReceipt} BatchReceipt */
/** @typedef {import('./api-types').FieldError} FieldError */
/** @typedef {import('./api-types').ErrorEnvelope} ErrorEnvelope */

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
  }

  /** Whether sending the same request again may succeed (the server or the network failed). */
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/**
 * Sends a request and returns the envelope's body; throws ApiError for anything else (status 0 when
 * no answer arrived).
 * @param {string} path
 * @param {RequestInit & { timeoutMs?: number }} [init]
 * @returns {Promise<{ status: number, body: any }>}
 */
export async function request(path, init = {}) {
  const { timeoutMs = 15000, ...rest } = init;
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
    throw new ApiError(
      response.status,
      envelope ? envelope.error.code : 'HTTP',
      envelope ? envelope.error.message : `the server answered ${response.status}`,
      envelope ? envelope.error.details : [],
    );
  }
  return { status: response.status, body };
}

/**
 * The sites changed since `cursor` (every site without one); waits up to `wait` seconds.
 * @param {string | null} cursor
 * @param {number} wait
 * @returns {Promise<{ sites: SiteMetrics[], cursor: string }>}
 */
export async function changes(cursor, wait) {
  const query = new URLSearchParams({ wait: String(wait) });
  if (cursor) query.set('cursor', cursor);
  /** @type {{ body: import('./api-types').Envelope<SiteMetrics[], { cursor: string }> }} */
  const { body } = await request(`/v2/changes?${query}`, { timeoutMs: (wait + 15) * 1000 });
  return { sites: body.data, cursor: body.meta.cursor };
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
