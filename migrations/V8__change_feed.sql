-- The change feed (`GET /v2/changes`, long-polled metrics): every site row carries the id of the
-- transaction that last changed it. A client's cursor is a snapshot; the sites changed since it are
-- those whose transaction the snapshot did not see. That is commit order, so a transaction that
-- started first and committed last is never skipped, which a sequence number cannot promise.

-- Rows from before the feed count as seen by every snapshot (0). The constant default adds the
-- column without rewriting the table; new rows then take their creating transaction's id.
alter table sites add column change_xid xid8 not null default '0';
alter table sites alter column change_xid set default pg_current_xact_id();

-- Stamped by a trigger on every insert and update, whatever the statement supplies, so that every
-- writer is seen by the feed, plume or not (a restored dump's ids from another cluster included).
create function sites_stamp_change() returns trigger language plpgsql as $$
begin
    new.change_xid := pg_current_xact_id();
    return new;
end
$$;

create trigger sites_stamp_change before insert or update on sites
    for each row execute function sites_stamp_change();
