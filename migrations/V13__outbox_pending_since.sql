-- A lower bound on when the stream's undelivered events were written, so the relay reads a stream
-- from the log's recent daily partitions only, not from every day the log keeps.
--
-- Invariant: null when every event is delivered (delivered_seq = head_seq), otherwise at most the
-- `created_at` of every undelivered event. An append lowers it to its own `created_at` (least());
-- a write-back clears it only when it finds the stream fully delivered (under the row lock, so no
-- append is missed); otherwise it stays, still a bound, if an older one than it needs to be.
alter table outbox_streams add column pending_since timestamptz;

-- Streams behind today get the loosest bound; it is cleared the first time they are caught up.
update outbox_streams set pending_since = '-infinity' where head_seq > delivered_seq;
