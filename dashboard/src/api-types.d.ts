// Generated from plume's Rust types: do not edit. Regenerate with
// `PLUME_WRITE_TYPES=1 cargo test -p plume --lib typescript`.

/** Every success body: `data`, and `meta` with the request id and the endpoint's own members. */
export type Envelope<T, M = {}> = { data: T, meta: { request_id: string } & M, };

/** Every error body. */
export type ErrorEnvelope = { error: ErrorBody, meta: { request_id: string }, };

export type ComplianceStatus = "Within Limit" | "Limit Exceeded";

export type SiteMetrics = { 
/**
 * The site.
 */
site_id: number, 
/**
 * Its name.
 */
name: string, 
/**
 * The limit.
 */
emission_limit: string, 
/**
 * The running total.
 */
total_emissions_to_date: string, 
/**
 * Over the limit or not.
 */
compliance_status: ComplianceStatus, 
/**
 * total / limit in percent, 2 decimals, rounded half up.
 */
utilization_pct: string, 
/**
 * Readings stored.
 */
reading_count: number, 
/**
 * Earliest reading time, or null.
 */
first_reading_at: string | null, 
/**
 * Latest reading time, or null.
 */
last_reading_at: string | null, 
/**
 * Increases on every change.
 */
version: number, };

export type Site = { 
/**
 * The id.
 */
id: number, 
/**
 * The name.
 */
name: string, 
/**
 * The limit, kg with 6 decimals.
 */
emission_limit: string, 
/**
 * Free-form metadata, written out as stored.
 */
metadata: Record<string, unknown>, 
/**
 * The running total, kg with 6 decimals.
 */
total_emissions_to_date: string, 
/**
 * Over the limit or not.
 */
compliance_status: ComplianceStatus, 
/**
 * When it was created.
 */
created_at: string, };

export type SeriesBucket = { 
/**
 * The bucket's first instant (UTC).
 */
start: string, 
/**
 * Sum of its readings, kg with six decimals.
 */
sum: string, 
/**
 * How many readings.
 */
count: number, 
/**
 * Smallest reading.
 */
min: string, 
/**
 * Largest reading.
 */
max: string, };

export type SourceSummary = { 
/**
 * The source's id, as its readings carry it (`""` for readings sent without one).
 */
source_id: string, 
/**
 * Its newest stored reading's time, or null when retention has removed all its readings.
 */
last_reading_at: string | null, 
/**
 * That reading's value, kg with six decimals, or null with it.
 */
last_value: string | null, };

export type BatchReceipt = { 
/**
 * The idempotency key.
 */
batch_id: string, 
/**
 * The site.
 */
site_id: number, 
/**
 * Readings in the request, repeats included.
 */
readings_submitted: number, 
/**
 * Readings newly stored by this batch.
 */
readings_accepted: number, 
/**
 * `readings_submitted - readings_accepted`: repeats within the batch and readings stored before.
 */
readings_duplicate: number, 
/**
 * The sum of the newly stored readings.
 */
accepted_emissions: string, 
/**
 * The site's total right after this batch.
 */
total_emissions_to_date: string, 
/**
 * The site's status right after this batch.
 */
compliance_status: ComplianceStatus, 
/**
 * `true` when this answer is a replay of the stored one.
 */
replayed: boolean, };

export type FieldError = { 
/**
 * Where the problem is, e.g. `readings[3].timestamp`.
 */
path: string, 
/**
 * What is wrong with it, in plain words.
 */
message: string, };

export type ErrorBody = { 
/**
 * A stable machine code, e.g. `VALIDATION_ERROR`.
 */
code: string, 
/**
 * What went wrong, in plain words.
 */
message: string, 
/**
 * One entry per bad field (validation errors only).
 */
details: Array<FieldError>, };

export type SessionInfo = { 
/**
 * The client's id.
 */
client_id: number, 
/**
 * The client's name.
 */
client_name: string, 
/**
 * `ingest`, `read`, `admin` or `metrics`.
 */
kind: string, 
/**
 * Whether every site is in scope.
 */
all_sites: boolean, 
/**
 * The sites in scope, when not all.
 */
site_ids: Array<number>, 
/**
 * Whether the client may write readings (to the sites in scope).
 */
can_write: boolean, 
/**
 * Whether the client may create sites.
 */
can_create_sites: boolean, 
/**
 * Whether the client may export.
 */
can_export: boolean, };
