-- Receipts (idempotency keys and their answers) are kept for a replay window and then pruned in
-- small batches by `plume serve`'s housekeeping. BRIN indexes: rows arrive in `created_at` order,
-- so a tiny index finds the oldest pages, and it costs ingestion next to nothing to maintain.
create index ingest_batches_created_at on ingest_batches using brin (created_at);
create index bulk_batches_created_at on bulk_batches using brin (created_at);
