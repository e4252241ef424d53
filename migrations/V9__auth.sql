-- Who may do what: clients (a sensor, a gateway, a dashboard viewer, an operator, a Prometheus
-- server), their tokens, the dashboard's sessions, and the audit trail of who changed trust.
-- Secrets are never stored: a token or session is kept only as the SHA-256 of its 256 random bits,
-- which is enough (a brute force of 2^256 is not a threat, so no slow password hash is needed).

create table auth_clients (
    id bigint generated always as identity primary key,
    -- Unique, so `plume tokens revoke NAME` names exactly one client.
    name text not null unique check (char_length(name) between 1 and 100),
    kind text not null check (kind in ('ingest', 'read', 'admin', 'metrics')),
    -- The sites the client may touch: every site, or the listed ones (sites created later are not
    -- in a list). No foreign key: a scope may name a site before it exists or after it is gone.
    all_sites boolean not null default false,
    site_ids bigint[] not null default '{}' check (cardinality(site_ids) <= 10000),
    -- An ingest client may write only source ids starting with this (null: any source).
    source_prefix text check (char_length(source_prefix) between 1 and 200),
    -- A read client may use /v2/export.
    can_export boolean not null default false,
    -- Requests per second the client may make (null: the default for its kind).
    requests_per_second integer check (requests_per_second > 0),
    -- Readings per second an ingest client may send (null: the default).
    readings_per_second integer check (readings_per_second > 0),
    created_at timestamptz not null default now(),
    -- A revoked client's tokens and sessions stop working; the row stays for the audit trail.
    revoked_at timestamptz
);

create table auth_tokens (
    -- The token's public id (in the token itself, in logs and in the audit trail).
    id text primary key check (id ~ '^[0-9a-f]{16}$'),
    client_id bigint not null references auth_clients (id),
    -- SHA-256 of the secret part; compared in constant time.
    secret_sha256 bytea not null check (octet_length(secret_sha256) = 32),
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    revoked_at timestamptz,
    -- A sign-in link's token: good for one dashboard sign-in (then `used_at` is set; the session
    -- it started lives on), never as a bearer token.
    single_use boolean not null default false,
    used_at timestamptz,
    -- Written when a process loads the token into its cache (at most every few seconds per token
    -- and process), not on every request.
    last_used_at timestamptz
);
create index auth_tokens_client on auth_tokens (client_id);

create table auth_sessions (
    -- SHA-256 of the session cookie's 256 random bits.
    id_sha256 bytea primary key check (octet_length(id_sha256) = 32),
    -- The token signed in with: revoking it (or its client) ends the session.
    token_id text not null references auth_tokens (id),
    created_at timestamptz not null default now(),
    -- Sliding: moved forward while the session is used, at most once a minute.
    idle_expires_at timestamptz not null,
    -- Absolute: a session never outlives this, however busy.
    expires_at timestamptz not null,
    ended_at timestamptz
);
create index auth_sessions_token on auth_sessions (token_id);

-- The audit trail: token creation, rotation and revocation, site creation, dashboard sign-ins and
-- sign-outs, and a sample of denials. Bounded: rows older than the retention plume serve is given
-- (90 days by default) are deleted by its housekeeping, and denials are sampled (at most a few a
-- second per process).
create table auth_audit (
    id bigint generated always as identity primary key,
    at timestamptz not null default now(),
    action text not null check (char_length(action) <= 64),
    outcome text not null check (outcome in ('ok', 'denied')),
    client_id bigint,
    token_id text,
    request_id text check (char_length(request_id) <= 128),
    remote_addr text check (char_length(remote_addr) <= 64),
    detail jsonb not null default '{}'::jsonb
);
create index auth_audit_at on auth_audit (at);

-- Bulk idempotency keys become per client: two clients can never collide on, or squat, each
-- other's keys. Requests stored before authentication (or with it off) belong to client 0.
alter table bulk_batches add column client_id bigint not null default 0;
alter table bulk_batches drop constraint bulk_batches_pkey;
alter table bulk_batches add constraint bulk_batches_pkey primary key (client_id, idempotency_key);
