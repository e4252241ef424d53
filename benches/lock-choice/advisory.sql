\set site random(1, :nsites)
BEGIN;
select pg_advisory_xact_lock(:site);
select emission_limit_mg, total_emissions_mg from sites where id = :site;
with stored as (insert into measurements (site_id, source_id, measured_at, value_mg) select :site, 's' || (g % 4), now() - random() * interval '30 days', 1000 from generate_series(1,100) g on conflict do nothing returning value_mg) update sites set total_emissions_mg = total_emissions_mg + (select coalesce(sum(value_mg),0) from stored), reading_count = reading_count + (select count(*) from stored), version = version + 1 where id = :site;
insert into ingest_batches values (:site, md5(random()::text), '\x00', '{}'::jsonb, now());
COMMIT;
