-- Idempotency for v2 bulk requests. A bulk request spans any number of sites, so its key cannot be
-- scoped to one site as v1's (`ingest_batches`) is: bulk keys form one global namespace of their own.

create table bulk_batches (
    -- Client-chosen; the primary key makes the claim unique, so two racing retries store once.
    idempotency_key text primary key check (octet_length(idempotency_key) between 1 and 128),
    -- SHA-256 of the canonical payload (readings sorted by site, source and time; UTC microseconds;
    -- milligrams), so the same readings sent as JSON, NDJSON or CSV are the same payload.
    payload_sha256 bytea not null check (octet_length(payload_sha256) = 32),
    -- The response data of the original request, returned verbatim (but for `replayed`) to retries.
    receipt jsonb not null,
    created_at timestamptz not null default now()
);
