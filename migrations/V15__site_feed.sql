-- On a Citus coordinator, the change feed reads each site's metrics from this table rather than
-- from `sites`, whose rows live on the workers. plume writes a site's row here in the very
-- transaction that changes the site (a trigger cannot: Citus refuses triggers on distributed
-- tables), and the table stays on the coordinator, so its `change_xid` is a coordinator transaction
-- id and the feed's cursors (snapshots of the coordinator) keep the meaning they have on one node.
-- On one node the feed reads `sites` itself, and this table stays empty.
create table site_feed (
    id bigint primary key,
    name text not null,
    emission_limit_mg bigint not null,
    total_emissions_mg bigint not null,
    reading_count bigint not null,
    first_reading_at timestamptz,
    last_reading_at timestamptz,
    version bigint not null,
    created_at timestamptz not null,
    change_xid xid8 not null default pg_current_xact_id()
);

create index site_feed_change on site_feed (change_xid);
