//! Integration tests of the whole service against a real PostgreSQL with pg_partman.
//!
//! One throwaway cluster serves the whole run; every test gets its own database, copied from a
//! migrated template, and its own server on a free port.

#![allow(unreachable_pub)] // a test binary: `pub` marks what the test modules share

mod auth;
mod auth_matrix;
mod bulk;
mod bulk_concurrency;
mod catalog;
mod changes;
mod citus;
mod compression;
mod concurrency;
mod contract;
mod group_commit;
mod helpers;
mod in_order;
mod ingest;
mod maintenance;
mod migrations;
mod openapi;
mod outbox;
mod outbox_admin;
mod parquet_export;
mod partitions;
mod partman_upgrade;
mod plans;
mod query;
mod receiver;
mod relay;
mod resilience;
mod roles;
mod seed;
mod slow_clients;
mod sources;
mod sql_access;
mod supervision;
mod tls;
mod validation;
