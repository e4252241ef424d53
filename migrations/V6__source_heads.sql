-- The newest stored reading of each (site, source). Ingestion reads it, under the site's lock, to
-- send readings newer than it straight into `measurements` by COPY (they cannot conflict) and only
-- the rest through `on conflict`; it is moved in the same statement that moves the site's totals.
-- It may only ever be at or above the true newest (dropping old partitions leaves it so): a reading
-- that nevertheless meets a stored one fails the COPY and the batch is stored again with conflict
-- checks, so a stale head costs time, never correctness.

create table source_heads (
    site_id bigint not null,
    source_id text not null,
    newest_at timestamptz not null,
    -- Leads with site_id, which every look-up filters on (and which Citus requires of a table
    -- distributed by site).
    primary key (site_id, source_id)
) with (fillfactor = 70); -- room for HOT updates: a head moves with every batch from its source

insert into source_heads (site_id, source_id, newest_at)
select site_id, source_id, max(measured_at)
  from measurements
 group by 1, 2;
