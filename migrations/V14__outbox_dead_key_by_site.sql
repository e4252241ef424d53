-- A dead-lettered event is keyed by its site and its id, so that on a cluster distributed by site
-- (Citus requires the distribution column in every unique key) the table can live beside the
-- site's other rows. Event ids stay unique on their own: each is a fresh UUID.
alter table outbox_dead drop constraint outbox_dead_pkey;
alter table outbox_dead add primary key (site_id, event_id);

-- `plume outbox retry-dead --event ID` finds an event by its id alone.
create index outbox_dead_event_id on outbox_dead (event_id);
