//! The test harness: one PostgreSQL server per run, one fresh database and server per test.
//!
//! The server is a throwaway cluster the harness starts from the newest PostgreSQL installed here
//! that has pg_partman, or, when `PLUME_TEST_ADMIN_URL` names a superuser connection, a server it
//! did not start (such as PostgreSQL 17 with pg_partman 5 in a container). Either way every test
//! gets a database of its own, copied from a template migrated once per run.

use std::sync::OnceLock;
use std::time::Duration;

use plume::auth::store::{self, NewClient};
use plume::auth::{Kind, Scope};
use plume::db::citus::Topology;
use plume::db::embedded::{ClusterOptions, EmbeddedCluster};
use plume::db::{self, migrate, PoolSettings};
use plume::state::{AppState, Settings};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::{Executor, PgPool};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A superuser URL of a server to run the tests against instead of a cluster of their own.
pub const ADMIN_URL_ENV: &str = "PLUME_TEST_ADMIN_URL";

/// A superuser URL of a Citus coordinator (its `postgres` database, with the workers registered
/// there, as `scripts/citus.sh start` leaves it): every test database is then made on the
/// coordinator and on each worker, migrated and distributed by `plume migrate --citus`'s step.
pub const CITUS_URL_ENV: &str = "PLUME_TEST_CITUS_URL";

/// The role every test's server runs as: the application role, granted by `plume::db::roles` in
/// the template (fresh databases copy its grants). The tests arrange and check as the owner.
const APP_ROLE: &str = "plume_test_app";
const APP_PASSWORD: &str = "plume-test-app";

/// The server every test's database lives on, and the migrated template they are copied from.
struct TestServer {
    /// The `postgres` database's URL, for creating databases.
    admin_url: String,
    /// The template's name: per process on a server others may share.
    template: String,
    /// Whether the server is a Citus coordinator.
    citus: bool,
}

impl TestServer {
    fn url(&self, database: &str) -> String {
        db::with_database(&self.admin_url, database)
    }
}

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        // Initialised on a thread of its own: the caller may be inside any test's runtime.
        std::thread::spawn(start_server)
            .join()
            .expect("preparing the test server")
    })
}

/// The harness's own cluster (kept for the life of the test process; it stops and is removed when
/// the process exits). Tests of the embedded cluster itself use it even when the others run
/// against `PLUME_TEST_ADMIN_URL`.
fn embedded() -> &'static EmbeddedCluster {
    static CLUSTER: OnceLock<EmbeddedCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        std::thread::spawn(start_cluster)
            .join()
            .expect("starting the test cluster")
    })
}

/// Where this test process keeps its cluster.
fn cluster_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("plume-test-{}", std::process::id()))
}

fn start_cluster() -> EmbeddedCluster {
    let data_dir = cluster_dir();
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir).expect("creating the test cluster directory");
    let options = ClusterOptions {
        ephemeral: true,
        // The concurrency tests open a connection per writer (120 at most) beside the other tests
        // of the run, all but the owner's as a role that cannot use the superuser's reserve.
        settings: vec![("max_connections".into(), "400".into())],
        ..ClusterOptions::new(&data_dir)
    };
    EmbeddedCluster::start(&options).expect("starting PostgreSQL for the tests")
}

fn start_server() -> TestServer {
    let env = |name| std::env::var(name).ok().filter(|url: &String| !url.is_empty());
    if let Some(coordinator) = env(CITUS_URL_ENV) {
        return start_citus(coordinator);
    }
    let server = match env(ADMIN_URL_ENV) {
        Some(admin_url) => TestServer {
            admin_url,
            template: format!("plume_template_{}", std::process::id()),
            citus: false,
        },
        None => TestServer {
            admin_url: embedded().url("postgres"),
            template: "plume_template".into(),
            citus: false,
        },
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = db::connect_plain(&server.admin_url)
            .await
            .expect("connecting to the test server");
        // A template left by an earlier run with this process id.
        admin
            .execute(format!("drop database if exists {}", server.template).as_str())
            .await
            .unwrap();
        admin.close().await;
        db::create_database_if_missing(&server.admin_url, &server.template)
            .await
            .unwrap();
        let url = server.url(&server.template);
        migrate::run(&url).await.expect("migrating the template database");
        let pool = db::connect_plain(&url).await.unwrap();
        partitioning::ensure_window_covered(&pool, Default::default(), chrono::Utc::now())
            .await
            .unwrap();
        // Roles are the server's: one an earlier run made is used again.
        pool.execute(create_app_role().as_str()).await.unwrap();
        db::roles::grant(&pool, APP_ROLE).await.unwrap();
        pool.close().await;
    });
    server
}

/// The application role, made if missing: a server's roles outlive its databases.
fn create_app_role() -> String {
    format!(
        "do $$ begin
             if not exists (select from pg_roles where rolname = '{APP_ROLE}') then
                 create role {APP_ROLE} login password '{APP_PASSWORD}';
             end if;
         end $$"
    )
}

/// A Citus coordinator as the test server: finds its workers, and gives every node the application
/// role (the coordinator connects to the workers as the role a statement runs as).
fn start_citus(coordinator: String) -> TestServer {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = db::connect_plain(&coordinator)
            .await
            .expect("connecting to the Citus coordinator");
        let nodes: Vec<(String, i32)> = sqlx::query_as(
            "select node_name::text, node_port::int from citus_get_active_worker_nodes() order by 2",
        )
        .fetch_all(&admin)
        .await
        .expect("listing the Citus workers (are they registered in the postgres database?)");
        assert!(!nodes.is_empty(), "the Citus coordinator has no active worker");
        admin.close().await;
        let workers: Vec<String> = nodes
            .iter()
            .map(|(host, port)| on_node(&coordinator, host, *port))
            .collect();
        for url in workers.iter().chain([&coordinator]) {
            let node = db::connect_plain(url).await.unwrap();
            // Made on each node itself: not propagated from the coordinator to nodes that have it.
            let statements = format!(
                "set citus.enable_create_role_propagation = off; {}",
                create_app_role()
            );
            node.execute(statements.as_str()).await.unwrap();
            node.close().await;
        }
    });
    TestServer {
        admin_url: coordinator,
        template: String::new(),
        citus: true,
    }
}

/// `url` pointing at `host:port` instead, same user, database and options.
fn on_node(url: &str, host: &str, port: i32) -> String {
    let mut url = reqwest::Url::parse(url).expect("a URL");
    url.set_host(Some(host)).unwrap();
    url.set_port(Some(port as u16)).unwrap();
    url.to_string()
}

/// Shards a distributed table of a test database has (`citus.shard_count`).
const TEST_SHARD_COUNT: u32 = 4;

/// A fresh database on the Citus cluster: made on every worker and the coordinator with the citus
/// and pg_partman extensions, the workers registered, migrated, its partitions made and its tables
/// distributed, as `plume migrate --citus` does.
async fn citus_database(server: &TestServer, name: &str) {
    // One at a time: registering nodes in two databases at once updates the same role on a
    // worker from both, and one of them fails ("tuple concurrently updated").
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let url = db::citus::create_database(&server.admin_url, name)
        .await
        .expect("making a Citus test database");
    // Four shards a table, not Citus's 32: still two on each worker, so sites of one test land on
    // both, and the database is made in half the time (every partition of every table is made
    // once a shard). The rebalance scenario keeps 32.
    let admin = db::connect_plain(&server.admin_url).await.unwrap();
    sqlx::query(&format!(
        "alter database {} set citus.shard_count = {TEST_SHARD_COUNT}",
        partitioning::quote_ident(name)
    ))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
    let coordinator = db::connect_plain(&url).await.unwrap();
    migrate::run(&url).await.expect("migrating a Citus test database");
    partitioning::ensure_window_covered(&coordinator, Default::default(), chrono::Utc::now())
        .await
        .unwrap();
    db::citus::distribute(&coordinator)
        .await
        .expect("distributing a Citus test database");
    db::roles::grant(&coordinator, APP_ROLE).await.unwrap();
    coordinator.close().await;
}

/// The harness's own cluster's data directory and port.
pub fn test_cluster() -> (std::path::PathBuf, u16) {
    (cluster_dir(), embedded().port())
}

/// A running plume over a fresh database of its own.
pub struct TestApp {
    /// `http://127.0.0.1:port`.
    pub address: String,
    /// An HTTP client that sends an admin token on every request.
    pub client: reqwest::Client,
    /// That admin token.
    pub admin_token: String,
    /// A pool on the test's database as its owner, for arranging and checking.
    pub pool: PgPool,
    /// The app's own pool, as the application role.
    pub app_pool: PgPool,
    /// The test's database URL.
    pub database_url: String,
    /// The server's shared state (its metrics and outbox wake-up), for relays the test starts.
    pub state: AppState,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A fresh, migrated database; returns its URL.
pub async fn fresh_database() -> String {
    let server = server();
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    if server.citus {
        citus_database(server, &name).await;
        return server.url(&name);
    }
    let admin = db::connect_plain(&server.admin_url).await.unwrap();
    let mut attempts = 0;
    loop {
        let created = admin
            .execute(format!("create database {name} template {}", server.template).as_str())
            .await;
        match created {
            Ok(_) => break,
            // Two tests copying the template at the same instant: PostgreSQL refuses the second.
            Err(error) if attempts < 50 => {
                attempts += 1;
                let _ = error;
                tokio::time::sleep(Duration::from_millis(20 + 10 * attempts)).await;
            }
            Err(error) => panic!("creating {name}: {error}"),
        }
    }
    admin.close().await;
    server.url(&name)
}

/// A new database with nothing of plume's in it (not even pg_partman); returns its URL.
pub async fn empty_database() -> String {
    let server = server();
    let name = format!("empty_{}", uuid::Uuid::new_v4().simple());
    db::create_database_if_missing(&server.admin_url, &name)
        .await
        .unwrap();
    server.url(&name)
}

/// `database_url` as the application role (DML only) rather than the owner.
pub fn app_url(database_url: &str) -> String {
    let (scheme, rest) = database_url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{APP_ROLE}:{APP_PASSWORD}@{host}")
}

/// Starts plume on a fresh database with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Settings::default(), PoolSettings::default()).await
}

/// Starts plume on a fresh database with a pool of `connections`, for tests with many writers.
pub async fn spawn_app_with_connections(connections: u32) -> TestApp {
    let pool_settings = PoolSettings {
        max_connections: connections,
        ..PoolSettings::default()
    };
    spawn_app_with(Settings::default(), pool_settings).await
}

/// Starts plume on a fresh database.
pub async fn spawn_app_with(settings: Settings, pool_settings: PoolSettings) -> TestApp {
    let database_url = fresh_database().await;
    let app_pool = db::connect(&app_url(&database_url), &pool_settings)
        .await
        .unwrap();
    spawn_app_on(&database_url, app_pool, settings).await
}

/// Starts plume serving from `app_pool`; `database_url` is where the test arranges and checks.
pub async fn spawn_app_on(database_url: &str, app_pool: PgPool, settings: Settings) -> TestApp {
    let database_url = database_url.to_owned();
    let pool = db::connect_plain(&database_url).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let settings = Settings {
        topology: Topology::detect(&pool).await.unwrap(),
        ..settings
    };
    let state = AppState::new(app_pool.clone(), settings);
    tokio::spawn(plume::http::serve(listener, state.clone(), shutdown.clone()));
    // Several apps may serve one database: each mints its own admin.
    let admin = format!("harness-admin-{}", uuid::Uuid::new_v4().simple());
    let admin_token = mint(&pool, &admin, Kind::Admin, Scope::all()).await;
    TestApp {
        address,
        client: client_with_token(&admin_token),
        admin_token,
        pool,
        app_pool,
        database_url,
        state,
        shutdown,
    }
}

impl TestApp {
    /// Starts the server's graceful shutdown, as a signal would.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/ingest` with `key` as the Idempotency-Key header.
    pub async fn ingest(&self, key: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}/v1/ingest", self.address))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v2/ingest` with `key` (if any) as the Idempotency-Key header and `body` sent as
    /// `content_type`.
    pub async fn bulk(&self, key: Option<&str>, content_type: &str, body: impl Into<String>) -> Response {
        let mut request = self
            .client
            .post(format!("{}/v2/ingest", self.address))
            .header("content-type", content_type)
            .body(body.into());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }

    /// The value of a counter or gauge on `/metrics` (the first line starting with `series`).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} is not on /metrics"))
            .parse()
            .unwrap()
    }

    /// Creates a site and returns its id.
    pub async fn create_site(&self, name: &str, limit: &str) -> i64 {
        let response = self
            .post_json("/v1/sites", &json!({"name": name, "emission_limit": limit}))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["data"]["id"].as_i64().unwrap()
    }

    /// The site's metrics `data`.
    pub async fn metrics(&self, site_id: i64) -> Value {
        let response = self.get(&format!("/v1/sites/{site_id}/metrics")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.unwrap()["data"].take()
    }

    /// How many batches have claimed an idempotency key.
    pub async fn claimed_batches(&self) -> i64 {
        sqlx::query_scalar("select count(*) from ingest_batches")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Opens a transaction that holds the site's row lock, so that ingest batches for it wait inside
    /// their transactions; roll it back to let them go.
    pub async fn hold_site_lock(&self, site_id: i64) -> sqlx::PgConnection {
        use sqlx::Connection;
        let mut connection = sqlx::PgConnection::connect(&self.database_url).await.unwrap();
        connection.execute("begin").await.unwrap();
        sqlx::query("select 1 from sites where id = $1 for update")
            .bind(site_id)
            .execute(&mut connection)
            .await
            .unwrap();
        connection
    }

    /// Asserts that the site's stored total, count, first/last times and hourly rollups equal what
    /// its rows add up to, and returns `(total_mg, count)`.
    pub async fn assert_totals_match_rows(&self, site_id: i64) -> (i64, i64) {
        let (total, count, first, last): (i64, i64, Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>) =
            sqlx::query_as("select total_emissions_mg, reading_count, first_reading_at, last_reading_at from sites where id = $1")
                .bind(site_id)
                .fetch_one(&self.pool)
                .await
                .unwrap();
        let (sum, rows, min, max): (
            i64,
            i64,
            Option<chrono::DateTime<chrono::Utc>>,
            Option<chrono::DateTime<chrono::Utc>>,
        ) = sqlx::query_as(
            "select coalesce(sum(value_mg), 0)::bigint, count(*), min(measured_at), max(measured_at)
                   from measurements where site_id = $1",
        )
        .bind(site_id)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(
            (total, count),
            (sum, rows),
            "site {site_id}: stored total/count vs rows"
        );
        assert_eq!(
            (first, last),
            (min, max),
            "site {site_id}: first/last reading vs rows"
        );
        let rollup_drift: i64 = sqlx::query_scalar(
            "with raw as (
                 select date_trunc('hour', measured_at, 'UTC') as hour, sum(value_mg)::bigint as sum_mg,
                        count(*) as readings, min(value_mg) as min_mg, max(value_mg) as max_mg
                   from measurements where site_id = $1 group by 1
             ), rollups as (select * from hourly_rollups where site_id = $1)
             select count(*) from raw full join rollups r on r.hour = raw.hour
              where (raw.sum_mg, raw.readings, raw.min_mg, raw.max_mg)
                    is distinct from (r.sum_mg, r.readings, r.min_mg, r.max_mg)",
        )
        .bind(site_id)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(rollup_drift, 0, "site {site_id}: hourly rollups vs rows");
        (total, count)
    }
}

/// A client of `kind` named `name` over `scope`, with a token of the default lifetime; returns the token.
pub async fn mint(pool: &PgPool, name: &str, kind: Kind, scope: Scope) -> String {
    mint_client(pool, &NewClient::new(name, kind, scope)).await
}

/// `client` with a token of its kind's default lifetime; returns the token.
pub async fn mint_client(pool: &PgPool, client: &NewClient) -> String {
    let expires = chrono::Utc::now() + client.kind.default_lifetime();
    let (_, token) = store::create_client(pool, client, expires, false).await.unwrap();
    token.text
}

/// An HTTP client that sends `token` as a bearer token on every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Runs the `plume` binary with `args` against `database_url` and waits for it (blocking).
pub fn run_plume(args: &[&str], database_url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_plume"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// A batch body for `site_id` with `(source, RFC 3339 time, value)` readings.
pub fn batch(site_id: i64, readings: &[(&str, &str, &str)]) -> Value {
    let readings: Vec<Value> = readings
        .iter()
        .map(|(source, at, value)| json!({"source_id": source, "timestamp": at, "value": value}))
        .collect();
    json!({"site_id": site_id, "readings": readings})
}

/// `n` readings of `value` kg from `source`, one a minute from `start` (RFC 3339, UTC).
pub fn readings(source: &str, start: &str, n: usize, value: &str) -> Vec<Value> {
    let start: chrono::DateTime<chrono::Utc> = start.parse().unwrap();
    (0..n)
        .map(|i| {
            let at = start + chrono::Duration::minutes(i as i64);
            json!({"source_id": source, "timestamp": at.to_rfc3339(), "value": value})
        })
        .collect()
}

/// A time `hours` before now, RFC 3339, truncated to the minute.
pub fn hours_ago(hours: i64) -> String {
    let at = chrono::Utc::now() - chrono::Duration::hours(hours);
    at.format("%Y-%m-%dT%H:%M:00Z").to_string()
}

/// The response's status and JSON body.
pub async fn status_and_body(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}
