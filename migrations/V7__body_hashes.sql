-- SHA-256 of the request body exactly as received. A retry is most often byte for byte the original
-- request: its key and body hash match, and it is answered from the receipt before its readings are
-- parsed at all. A retry spelled differently (another order, number format or body format) still
-- falls back to the canonical payload hash. Null for batches stored before this column existed.

alter table ingest_batches
    add column body_sha256 bytea check (octet_length(body_sha256) = 32);

alter table bulk_batches
    add column body_sha256 bytea check (octet_length(body_sha256) = 32);
