-- SHA-256 of the request body exactly as received. A retry is most often byte for byte the original
-- request: its key and body hash match, and it is answered from the receipt before its readings are
-- parsed at all. A retry spelled differently (another order, number format or body format) still
-- falls back to the canonical payload hash. Null for batches stored before this column existed.

-- The checks are added `not valid`: enforced for every new row at once, without a scan of the
-- existing ones (all null) under an exclusive lock on a table that holds every batch ever stored.
alter table ingest_batches add column body_sha256 bytea;
alter table ingest_batches add constraint ingest_batches_body_sha256_length
    check (octet_length(body_sha256) = 32) not valid;

alter table bulk_batches add column body_sha256 bytea;
alter table bulk_batches add constraint bulk_batches_body_sha256_length
    check (octet_length(body_sha256) = 32) not valid;
