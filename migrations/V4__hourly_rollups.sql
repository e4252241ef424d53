-- Exact hourly rollups per site, maintained by the ingest transaction from the readings it newly
-- stored, so that series queries never scan raw readings and retries or duplicates never inflate them.

create table hourly_rollups (
    site_id bigint not null,
    -- The UTC hour: date_trunc('hour', measured_at, 'UTC').
    hour timestamptz not null,
    -- Exact, in milligrams, like every stored quantity.
    sum_mg bigint not null check (sum_mg >= 0),
    readings bigint not null check (readings > 0),
    min_mg bigint not null,
    max_mg bigint not null,
    -- One row per site and hour; leads with site_id, which every query filters on (and which a table
    -- distributed by site on Citus requires of its key).
    primary key (site_id, hour)
) with (fillfactor = 90);

-- Readings stored before this migration.
insert into hourly_rollups (site_id, hour, sum_mg, readings, min_mg, max_mg)
select site_id, date_trunc('hour', measured_at, 'UTC'), sum(value_mg)::bigint, count(*), min(value_mg), max(value_mg)
  from measurements
 group by 1, 2;
