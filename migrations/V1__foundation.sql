-- plume's foundation schema: sites, their monthly-partitioned measurements, and processed batches.
-- Quantities are stored as whole milligrams in bigint: exact, compact, and fast to sum.

-- Partition bounds and every timestamp computation run in UTC, whatever the server's default.
set local timezone = 'UTC';
do $$ begin execute format('alter database %I set timezone to %L', current_database(), 'UTC'); end $$;

-- pg_partman 4.7 lives in its own schema, as its documentation recommends.
create schema if not exists partman;
create extension if not exists pg_partman schema partman;

create table sites (
    -- Identity over serial: no separate sequence grants to manage; bigint so ids never run out.
    id bigint generated always as identity primary key,
    name text not null check (char_length(name) between 1 and 200),
    -- The limit and the running total are milligrams of methane (kg * 1e6); never floating point.
    emission_limit_mg bigint not null check (emission_limit_mg > 0),
    metadata jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object'),
    -- Moved only by the ingest transaction, by exactly what it newly stored.
    total_emissions_mg bigint not null default 0 check (total_emissions_mg >= 0),
    reading_count bigint not null default 0 check (reading_count >= 0),
    first_reading_at timestamptz,
    last_reading_at timestamptz,
    -- Increases by one on every change of the row's data; long polls wait on it.
    version bigint not null default 1,
    created_at timestamptz not null default now()
);

-- Readings. Columns are ordered widest-first so rows pack without alignment padding:
-- 8 (measured_at) + 8 (value_mg) + 8 (site_id) + source_id (1 byte header + text, "" by default).
create table measurements (
    measured_at timestamptz not null,
    value_mg bigint not null check (value_mg >= 0),
    -- No foreign key to sites: the ingest transaction locks the site row before writing, sites are
    -- never deleted, and a per-row FK trigger would be the most expensive part of every COPY.
    site_id bigint not null,
    source_id text not null default '' check (octet_length(source_id) <= 256),
    -- A reading's identity. Declared on the partitioned parent, so every partition carries it:
    -- this is what makes a retried or overlapping batch store nothing twice. It leads with site_id
    -- so it is also the index for per-site queries, and it contains the partition key as PostgreSQL
    -- requires (and site_id, as a distributed table on Citus would require).
    constraint measurements_identity unique (site_id, source_id, measured_at)
) partition by range (measured_at);

-- Monthly partitions from two years back (the default accepted window; a wider window is covered at
-- start-up by the service) with pg_partman premaking four months ahead.
select partman.create_parent(
    p_parent_table => 'public.measurements',
    p_control => 'measured_at',
    p_type => 'native',
    p_interval => 'monthly',
    p_premake => 4,
    p_start_partition => to_char(date_trunc('month', now() - interval '731 days'), 'YYYY-MM-DD HH24:MI:SS')
);

-- Keep making future partitions even when no data has arrived for a while.
update partman.part_config
   set infinite_time_partitions = true
 where parent_table = 'public.measurements';

-- Nothing valid may land silently in the default partition: any row routed there is refused, so a
-- missing partition surfaces as an error (and a failed, retryable batch) instead of hidden data.
alter table measurements_default
    add constraint measurements_default_rejects_rows check (false);

-- Processed batches, for idempotent retries: a key is claimed once per site, inside the ingest
-- transaction, together with a hash of the canonical payload and the receipt sent back.
create table ingest_batches (
    site_id bigint not null references sites (id),
    idempotency_key text not null check (octet_length(idempotency_key) between 1 and 128),
    -- SHA-256 of the canonical payload: readings sorted, timestamps in UTC microseconds, values in mg.
    payload_sha256 bytea not null check (octet_length(payload_sha256) = 32),
    -- The response data of the original request, returned verbatim to every retry.
    receipt jsonb not null,
    created_at timestamptz not null default now(),
    primary key (site_id, idempotency_key)
);
