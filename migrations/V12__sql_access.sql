-- SQL access for Grafana, Metabase and notebooks: a schema of documented, read-only views over
-- sites, readings and hourly rollups, and the list of login roles allowed to read them (with the
-- sites each may see). `plume sql-access grant` makes such a role; it is granted usage on
-- `plume_sql` and select on its views, and nothing else. docs/GRAFANA.md explains the design.

-- The surface: views only, owned by the schema's owner. Read through a view, the base tables are
-- checked against the view's owner, so a reader needs no privilege on `public` at all. The views are
-- not in `public`, so the application role's grants and default privileges there never reach them.
create schema plume_sql;
comment on schema plume_sql is
    'plume''s read-only SQL surface for dashboards and BI tools: sites, readings, hourly. Granted with `plume sql-access grant`; see docs/GRAFANA.md.';

-- Who may read the views, and which sites. A schema of its own that nobody else may use: neither
-- the readers (it is not part of their surface) nor the application role (whose grants cover
-- `public`) can see or change it; only the owner, through `plume sql-access`.
create schema plume_sql_acl;

create table plume_sql_acl.readers (
    -- The login role, by name: `current_user` is what the views compare it with. A role dropped
    -- outside plume leaves a row that grants nothing: reading also needs select on the views, which
    -- only `plume sql-access grant` gives.
    role_name name primary key,
    -- The sites the role may see; null means every site, including sites created later. An empty
    -- array means none.
    site_ids bigint[],
    granted_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- Each view filters its rows to the reader's sites with two uncorrelated subqueries on the
-- readers table, which PostgreSQL evaluates once per query (InitPlans), never per row:
--   exists (... site_ids is null)                  -- the reader sees every site, or
--   site_id = any ((select site_ids ...)::bigint[])  -- the site is one of the reader's.
-- A role with no row sees nothing (the owner included: it reads the tables themselves).
--
-- security_barrier: the reader's own conditions run after that filter unless they are leakproof
-- (comparisons of built-in types are), so no function of the reader's can see a row of another
-- site. The comparisons on site_id and on the time columns are leakproof, so they still reach the
-- indexes and prune partitions.

-- Every site with its exact totals and its compliance status, as the API reports them.
create view plume_sql.sites with (security_barrier) as
select s.id,
       s.name,
       -- Kilograms, exactly: milligrams times 10^-6 has scale 6 and is never rounded (a division
       -- could be). numeric(20, 6) holds any bigint count of milligrams.
       (s.emission_limit_mg * 0.000001)::numeric(20, 6) as emission_limit_kg,
       (s.total_emissions_mg * 0.000001)::numeric(20, 6) as total_emissions_kg,
       s.reading_count,
       s.first_reading_at,
       s.last_reading_at,
       -- The API's rule: exactly at the limit is still within it.
       case when s.total_emissions_mg > s.emission_limit_mg then 'Limit Exceeded' else 'Within Limit' end
           as compliance_status,
       s.created_at
  from public.sites s
 where exists (select from plume_sql_acl.readers r where r.role_name = current_user and r.site_ids is null)
    or s.id = any ((select r.site_ids from plume_sql_acl.readers r where r.role_name = current_user)::bigint[]);

-- Every stored reading. measured_at is the partition key, passed through untransformed, so a
-- filter on it prunes the monthly partitions (Grafana's $__timeFilter(measured_at) does).
create view plume_sql.readings with (security_barrier) as
select m.site_id,
       m.source_id,
       m.measured_at,
       (m.value_mg * 0.000001)::numeric(20, 6) as value_kg
  from public.measurements m
 where exists (select from plume_sql_acl.readers r where r.role_name = current_user and r.site_ids is null)
    or m.site_id = any ((select r.site_ids from plume_sql_acl.readers r where r.role_name = current_user)::bigint[]);

-- The exact hourly rollups (UTC hours), kept by the ingest transaction: series over months without
-- reading the raw readings. hour is passed through, so (site_id, hour) filters use the primary key.
create view plume_sql.hourly with (security_barrier) as
select h.site_id,
       h.hour,
       (h.sum_mg * 0.000001)::numeric(20, 6) as sum_kg,
       h.readings,
       (h.min_mg * 0.000001)::numeric(20, 6) as min_kg,
       (h.max_mg * 0.000001)::numeric(20, 6) as max_kg
  from public.hourly_rollups h
 where exists (select from plume_sql_acl.readers r where r.role_name = current_user and r.site_ids is null)
    or h.site_id = any ((select r.site_ids from plume_sql_acl.readers r where r.role_name = current_user)::bigint[]);

comment on view plume_sql.sites is
    'Every site you may see: limit and total in kg (exact, 6 decimals), reading count, first and last reading (UTC), compliance status (''Within Limit'' or ''Limit Exceeded''; exactly at the limit is within it).';
comment on view plume_sql.readings is
    'Every stored reading of your sites: site, source, time (timestamptz; filter on measured_at to read only the months you need), value in kg (exact, 6 decimals).';
comment on view plume_sql.hourly is
    'Hourly totals of your sites: the UTC hour, the sum, count, smallest and largest reading in kg (exact). Cheaper than readings for series.';
