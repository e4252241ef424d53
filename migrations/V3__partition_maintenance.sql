-- Partition maintenance: a record of every run, and what retention took out of the measurements.

-- One row per maintenance run (the job inside `plume serve` and `plume partitions maintain`), so
-- operators can see when it last ran and what it did, whichever instance ran it.
create table partition_maintenance_runs (
    id bigint generated always as identity primary key,
    started_at timestamptz not null,
    finished_at timestamptz not null default now(),
    succeeded boolean not null,
    -- The MaintenanceReport as JSON, or the error.
    report jsonb not null
);

create index partition_maintenance_runs_recent on partition_maintenance_runs (finished_at desc);

-- What each dropped (expired) partition held, per site. Site totals are lifetime figures and never
-- shrink when old readings are archived and dropped; `plume verify` reconciles them against the
-- stored rows plus these aggregates, and the archive files hold the readings themselves.
create table retired_partitions (
    partition_name text not null,
    -- The partition's range.
    range_from timestamptz not null,
    range_to timestamptz not null,
    site_id bigint not null,
    readings bigint not null check (readings > 0),
    sum_mg bigint not null check (sum_mg >= 0),
    first_reading_at timestamptz not null,
    last_reading_at timestamptz not null,
    -- The compressed CSV the rows were written to before the drop, if any.
    archive_path text,
    retired_at timestamptz not null default now(),
    primary key (partition_name, site_id)
);

-- What every part of plume must respect about the measurements table's history, in one row.
create table measurements_settings (
    singleton boolean primary key default true check (singleton),
    -- Months before this instant were retired: their partitions are never created again, so a
    -- retried old reading can never be stored (and counted) a second time.
    retired_before timestamptz,
    -- The widest accepted window (days) any plume process has run with: retention may not cut
    -- into it, whatever the window of the process applying retention.
    widest_window_days integer not null default 0 check (widest_window_days >= 0)
);

insert into measurements_settings default values;

