-- An ingest client's own bound on how far ahead of the server's clock its readings may be, in
-- seconds; null: the server's --max-future-skew.
alter table auth_clients
    add column max_future_skew_seconds integer
        check (max_future_skew_seconds between 0 and 86400);
