-- The transactional outbox: events written in the ingest transaction, delivered by the relay.
--
-- Each site has one ordered stream of events. `outbox_streams` holds, per site, the last sequence
-- number written (moved by the ingest transaction, under the site lock, so sequence order is commit
-- order) and the last one delivered (moved by the relay), plus the relay's lease and retry state.
-- The events themselves are an insert-only log partitioned by day: delivered events are never
-- updated or deleted one by one, whole days are dropped once every event in them is delivered and
-- the retention period has passed. Nothing in the log bloats; only the small stream table is
-- updated, in place (HOT: none of its updated columns is indexed).

create table outbox_streams (
    site_id bigint primary key references sites (id),
    -- Sequence number of the last event written for the site; events are numbered from 1.
    head_seq bigint not null check (head_seq >= 0),
    -- Every event up to this one has been delivered (or dead-lettered).
    delivered_seq bigint not null default 0 check (delivered_seq >= 0 and delivered_seq <= head_seq),
    -- The relay holding the stream, until when, and the last event it took (in flight).
    lease_owner uuid,
    lease_until timestamptz,
    claimed_seq bigint not null default 0,
    -- Failed attempts at the event after delivered_seq. next_attempt_at is when the stream may be
    -- claimed again: its last release, or a retry time ahead. Claims take the oldest first, so
    -- every site gets its turn however busy the others are.
    attempts integer not null default 0 check (attempts >= 0),
    next_attempt_at timestamptz not null default '-infinity',
    last_error text
) with (fillfactor = 50);

create table outbox_events (
    -- When the event was written (the ingest transaction's start); the partition key.
    created_at timestamptz not null default now(),
    site_id bigint not null,
    seq bigint not null,
    event_id uuid not null,
    event_type text not null,
    -- When the batch was stored: taken in the ingest transaction, just before its commit.
    occurred_at timestamptz not null,
    -- The type-specific fields of the event body.
    data jsonb not null
) partition by range (created_at);

-- The relay reads a site's stream in order from its cursor. Not unique: a unique index on a
-- partitioned table must contain the partition key, and (site_id, seq) is unique by construction
-- (numbers come from outbox_streams.head_seq, taken under its row lock).
create index outbox_events_stream on outbox_events (site_id, seq);

select partman.create_parent(
    p_parent_table => 'public.outbox_events',
    p_control => 'created_at',
    p_type => 'native',
    p_interval => 'daily',
    p_premake => 7
);

-- Retention is applied by the relay's housekeeping, never by age alone: a day is dropped only when
-- no undelivered event is in it (see partman.drop_partition_time's reference timestamp there).
update partman.part_config
   set infinite_time_partitions = true,
       retention = null
 where parent_table = 'public.outbox_events';

-- Events that exhausted their attempts or their age: kept with their body, visible to operators and
-- re-queueable (which writes them again at the end of their site's stream, same event id).
create table outbox_dead (
    event_id uuid primary key,
    site_id bigint not null,
    seq bigint not null,
    event_type text not null,
    occurred_at timestamptz not null,
    created_at timestamptz not null,
    data jsonb not null,
    attempts integer not null,
    last_error text,
    dead_at timestamptz not null default now()
);
