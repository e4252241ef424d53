//! Every route and alias against every kind of credential: the status, the error code and the
//! authentication header each must get. A route the router declares that this table does not list
//! (or the reverse) fails the test; the same matrix runs against a `plume serve` process whose debug
//! logs are then searched for every secret used.

use std::collections::BTreeSet;

use plume::auth::store::{self, NewClient};
use plume::auth::token::{self, NewToken};
use plume::auth::{Kind, Scope};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{hours_ago, mint, mint_client, run_plume, spawn_app, TestApp};

/// The credentials every route is tried with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    Malformed,
    BadChecksum,
    Unknown,
    WrongSecret,
    Expired,
    Revoked,
    IngestA,
    IngestB,
    ReadA,
    ReadAll,
    ReadAllExport,
    Admin,
    Metrics,
}

const EVERYONE: [Who; 14] = [
    Who::Nobody,
    Who::Malformed,
    Who::BadChecksum,
    Who::Unknown,
    Who::WrongSecret,
    Who::Expired,
    Who::Revoked,
    Who::IngestA,
    Who::IngestB,
    Who::ReadA,
    Who::ReadAll,
    Who::ReadAllExport,
    Who::Admin,
    Who::Metrics,
];

impl Who {
    fn is_valid(self) -> bool {
        !matches!(
            self,
            Self::Nobody
                | Self::Malformed
                | Self::BadChecksum
                | Self::Unknown
                | Self::WrongSecret
                | Self::Expired
                | Self::Revoked
        )
    }
}

/// The `Authorization` header value of each credential.
pub struct Credentials {
    tokens: Vec<(Who, Option<String>)>,
}

impl Credentials {
    /// Mints every credential on `pool`, for sites `a` and `b`.
    async fn mint(pool: &PgPool, a: i64, b: i64) -> Self {
        let admin = mint(pool, "matrix-admin", Kind::Admin, Scope::all()).await;
        let revoked = mint(pool, "matrix-revoked", Kind::Admin, Scope::all()).await;
        let revoked_id = token::parse(&revoked).unwrap().id;
        store::revoke(pool, &revoked_id).await.unwrap();
        let expired = NewClient::new("matrix-expired", Kind::Admin, Scope::all());
        let past = chrono::Utc::now() - chrono::Duration::seconds(1);
        let (_, expired) = store::create_client(pool, &expired, past, false).await.unwrap();
        let admin_id = token::parse(&admin).unwrap().id;
        let wrong_secret = token::assemble(Kind::Admin, &admin_id, &"5".repeat(64));
        let mut bad_checksum = admin.clone();
        let last = bad_checksum.pop().unwrap();
        bad_checksum.push(if last == '0' { '1' } else { '0' });
        let exporter = NewClient {
            can_export: true,
            ..NewClient::new("matrix-read-all-export", Kind::Read, Scope::all())
        };
        let tokens = vec![
            (Who::Nobody, None),
            (Who::Malformed, Some("Bearer not-a-token".to_owned())),
            (Who::BadChecksum, Some(format!("Bearer {bad_checksum}"))),
            (
                Who::Unknown,
                Some(format!("Bearer {}", NewToken::generate(Kind::Admin).text)),
            ),
            (Who::WrongSecret, Some(format!("Bearer {wrong_secret}"))),
            (Who::Expired, Some(format!("Bearer {}", expired.text))),
            (Who::Revoked, Some(format!("Bearer {revoked}"))),
            (
                Who::IngestA,
                bearer(mint(pool, "matrix-ingest-a", Kind::Ingest, Scope::sites(vec![a])).await),
            ),
            (
                Who::IngestB,
                bearer(mint(pool, "matrix-ingest-b", Kind::Ingest, Scope::sites(vec![b])).await),
            ),
            (
                Who::ReadA,
                bearer(mint(pool, "matrix-read-a", Kind::Read, Scope::sites(vec![a])).await),
            ),
            (
                Who::ReadAll,
                bearer(mint(pool, "matrix-read-all", Kind::Read, Scope::all()).await),
            ),
            (Who::ReadAllExport, bearer(mint_client(pool, &exporter).await)),
            (Who::Admin, bearer(admin)),
            (
                Who::Metrics,
                bearer(mint(pool, "matrix-metrics", Kind::Metrics, Scope::sites(vec![])).await),
            ),
        ];
        Self { tokens }
    }

    fn header(&self, who: Who) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(w, _)| *w == who)
            .and_then(|(_, h)| h.as_deref())
    }

    /// Every secret in use (the part of each token after its id), to search logs for.
    pub fn secrets(&self) -> Vec<String> {
        self.tokens
            .iter()
            .filter_map(|(_, header)| header.as_deref()?.strip_prefix("Bearer "))
            .filter_map(|token| token.split('_').nth(3).map(str::to_owned))
            .filter(|secret| secret.len() == 64)
            .collect()
    }
}

fn bearer(token: String) -> Option<String> {
    Some(format!("Bearer {token}"))
}

/// One route of the table: how to call it, and what each valid credential gets.
struct Case {
    method: Method,
    /// The route as declared.
    route: &'static str,
    /// The request sent.
    path: String,
    body: Option<(&'static str, String)>,
    /// The status for each valid credential (invalid ones get 401 unless the route is open).
    expect: fn(Who) -> StatusCode,
    open: bool,
}

fn ok_for(allowed: &[Who], who: Who, ok: StatusCode) -> StatusCode {
    if allowed.contains(&who) {
        ok
    } else {
        StatusCode::FORBIDDEN
    }
}

const READERS: [Who; 4] = [Who::ReadA, Who::ReadAll, Who::ReadAllExport, Who::Admin];
const WRITERS_OF_A: [Who; 2] = [Who::IngestA, Who::Admin];

fn reader_of_a(who: Who) -> StatusCode {
    ok_for(&READERS, who, StatusCode::OK)
}

/// The change feed: metrics of the sites in scope, for every client that may read metrics.
fn follower(who: Who) -> StatusCode {
    ok_for(
        &[
            Who::IngestA,
            Who::IngestB,
            Who::ReadA,
            Who::ReadAll,
            Who::ReadAllExport,
            Who::Admin,
        ],
        who,
        StatusCode::OK,
    )
}

fn metrics_of_a(who: Who) -> StatusCode {
    match who {
        Who::Metrics => StatusCode::FORBIDDEN,
        Who::IngestB => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

fn writer_of_a(who: Who) -> StatusCode {
    match who {
        // Allowed to ingest, not into site A.
        Who::IngestB => StatusCode::FORBIDDEN,
        _ => ok_for(&WRITERS_OF_A, who, StatusCode::CREATED),
    }
}

/// Every route of the app, with a request for it.
fn cases(a: i64) -> Vec<Case> {
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let range = format!("from={day}T00:00:00Z&to={tomorrow}T00:00:00Z");
    let v1_batch =
        json!({"site_id": a, "readings": [{"source_id": "s", "timestamp": hours_ago(1), "value": "1"}]})
            .to_string();
    let csv = format!("site_id,source_id,timestamp,value\n{a},s,{},1\n", hours_ago(2));
    let new_site = json!({"name": "made by the matrix", "emission_limit": "10"}).to_string();
    let mut cases = vec![
        case(
            Method::GET,
            "/health",
            "/health".into(),
            None,
            |_| StatusCode::OK,
            true,
        ),
        case(
            Method::GET,
            "/ready",
            "/ready".into(),
            None,
            |_| StatusCode::OK,
            true,
        ),
        case(Method::GET, "/", "/".into(), None, |_| StatusCode::OK, true),
        case(
            Method::GET,
            "/openapi.json",
            "/openapi.json".into(),
            None,
            |_| StatusCode::OK,
            true,
        ),
        case(
            Method::GET,
            "/api/docs",
            "/api/docs".into(),
            None,
            |_| StatusCode::OK,
            true,
        ),
        case(
            Method::GET,
            "/assets/{*path}",
            "/assets/src/main.js".into(),
            None,
            |_| StatusCode::OK,
            true,
        ),
        case(
            Method::GET,
            "/metrics",
            "/metrics".into(),
            None,
            |who| ok_for(&[Who::Metrics, Who::Admin], who, StatusCode::OK),
            false,
        ),
        case(
            Method::POST,
            "/v2/ingest",
            "/v2/ingest".into(),
            Some(("text/csv", csv)),
            writer_of_a,
            false,
        ),
        case(
            Method::GET,
            "/v2/sites/{id}/series",
            format!("/v2/sites/{a}/series?{range}&bucket=day"),
            None,
            reader_of_a,
            false,
        ),
        case(
            Method::GET,
            "/v2/sites/{id}/readings",
            format!("/v2/sites/{a}/readings"),
            None,
            reader_of_a,
            false,
        ),
        case(
            Method::GET,
            "/v2/sites/{id}/sources",
            format!("/v2/sites/{a}/sources"),
            None,
            reader_of_a,
            false,
        ),
        case(
            Method::GET,
            "/v2/export",
            format!("/v2/export?site_id={a}&format=csv"),
            None,
            |who| ok_for(&[Who::ReadAllExport, Who::Admin], who, StatusCode::OK),
            false,
        ),
        case(
            Method::GET,
            "/v2/changes",
            "/v2/changes".into(),
            None,
            follower,
            false,
        ),
        case(
            Method::GET,
            "/v2/sites/{id}/metrics",
            format!("/v2/sites/{a}/metrics"),
            None,
            metrics_of_a,
            false,
        ),
        // Open, and refused for its missing body whoever calls it.
        case(
            Method::POST,
            "/v2/session",
            "/v2/session".into(),
            None,
            |_| StatusCode::BAD_REQUEST,
            true,
        ),
        case(
            Method::GET,
            "/v2/session",
            "/v2/session".into(),
            None,
            |_| StatusCode::OK,
            false,
        ),
        case(
            Method::DELETE,
            "/v2/session",
            "/v2/session".into(),
            None,
            |_| StatusCode::NO_CONTENT,
            false,
        ),
    ];
    for prefix in ["/v1", ""] {
        let route = |path: &str| -> &'static str { Box::leak(format!("{prefix}{path}").into_boxed_str()) };
        cases.extend([
            case(
                Method::GET,
                route("/sites"),
                format!("{prefix}/sites"),
                None,
                |who| ok_for(&READERS, who, StatusCode::OK),
                false,
            ),
            case(
                Method::POST,
                route("/sites"),
                format!("{prefix}/sites"),
                Some(("application/json", new_site.clone())),
                |who| ok_for(&[Who::Admin], who, StatusCode::CREATED),
                false,
            ),
            case(
                Method::GET,
                route("/sites/{id}"),
                format!("{prefix}/sites/{a}"),
                None,
                reader_of_a,
                false,
            ),
            case(
                Method::GET,
                route("/sites/{id}/metrics"),
                format!("{prefix}/sites/{a}/metrics"),
                None,
                metrics_of_a,
                false,
            ),
            case(
                Method::POST,
                route("/ingest"),
                format!("{prefix}/ingest"),
                Some(("application/json", v1_batch.clone())),
                writer_of_a,
                false,
            ),
        ]);
    }
    cases
}

fn case(
    method: Method,
    route: &'static str,
    path: String,
    body: Option<(&'static str, String)>,
    expect: fn(Who) -> StatusCode,
    open: bool,
) -> Case {
    Case {
        method,
        route,
        path,
        body,
        expect,
        open,
    }
}

/// Runs the matrix against the service at `address`; returns the number of requests made.
pub async fn run_matrix(address: &str, credentials: &Credentials, a: i64) -> usize {
    let client = reqwest::Client::new();
    let mut requests = 0;
    for case in cases(a) {
        for who in EVERYONE {
            let mut request = client.request(case.method.clone(), format!("{address}{}", case.path));
            if let Some(header) = credentials.header(who) {
                request = request.header("authorization", header);
            }
            if let Some((content_type, body)) = &case.body {
                let key = format!("matrix-{}", uuid::Uuid::new_v4().simple());
                request = request
                    .header("content-type", *content_type)
                    .header("idempotency-key", key)
                    .body(body.clone());
            }
            let response = request.send().await.unwrap();
            requests += 1;
            let status = response.status();
            let challenge = response.headers().get("www-authenticate").cloned();
            let text = response.text().await.unwrap();
            let expected = if case.open || who.is_valid() {
                (case.expect)(who)
            } else {
                StatusCode::UNAUTHORIZED
            };
            let what = format!("{} {} as {who:?}: {text}", case.method, case.path);
            assert_eq!(status, expected, "{what}");
            let code = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|body| body["error"]["code"].as_str().map(str::to_owned));
            match status {
                StatusCode::UNAUTHORIZED => {
                    assert_eq!(code.as_deref(), Some("UNAUTHENTICATED"), "{what}");
                    assert_eq!(
                        challenge.as_ref().and_then(|v| v.to_str().ok()),
                        Some("Bearer realm=\"plume\""),
                        "{what}"
                    );
                }
                StatusCode::FORBIDDEN => assert_eq!(code.as_deref(), Some("FORBIDDEN"), "{what}"),
                StatusCode::NOT_FOUND => assert_eq!(code.as_deref(), Some("SITE_NOT_FOUND"), "{what}"),
                _ => assert!(challenge.is_none(), "{what}"),
            }
        }
    }
    requests
}

/// Two sites, A and B, and every credential.
pub async fn arrange(app_pool: &PgPool, app: &TestApp) -> (i64, i64, Credentials) {
    let a = app.create_site("Matrix A", "100").await;
    let b = app.create_site("Matrix B", "100").await;
    (a, b, Credentials::mint(app_pool, a, b).await)
}

#[tokio::test]
async fn every_route_answers_every_credential_as_its_rule_says() {
    let app = spawn_app().await;
    let (a, _, credentials) = arrange(&app.pool, &app).await;

    let table = plume::http::routes(&app.state.settings).into_parts().1;
    let declared: BTreeSet<(String, String)> = table
        .declared()
        .iter()
        .map(|d| (d.method.to_string(), d.path.clone()))
        .collect();
    let tested: BTreeSet<(String, String)> = cases(a)
        .iter()
        .map(|c| (c.method.to_string(), c.route.to_owned()))
        .collect();
    assert_eq!(
        tested, declared,
        "the matrix must list exactly the routes the router declares"
    );

    let requests = run_matrix(&app.address, &credentials, a).await;
    assert_eq!(requests, declared.len() * EVERYONE.len());
}

#[tokio::test]
async fn unknown_paths_and_methods_tell_strangers_nothing() {
    let app = spawn_app().await;
    let stranger = reqwest::Client::new();
    for (method, path) in [(Method::GET, "/v1/nothing-here"), (Method::PUT, "/v1/sites")] {
        let response = stranger
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let (status, _) = crate::helpers::status_and_body(app.get("/v1/nothing-here").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = app
        .client
        .put(format!("{}/v1/sites", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn no_secret_reaches_the_logs_of_the_whole_matrix() {
    // The matrix against a real `plume serve`, logging at debug level, then its logs searched.
    let app = spawn_app().await;
    let (a, _, credentials) = arrange(&app.pool, &app).await;
    let port = crate::receiver::free_port().await;
    let ops_port = crate::receiver::free_port().await;
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_plume"))
        .args(["serve", "--no-relay", "--no-maintenance", "--log-format", "json"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
        .env("DATABASE_URL", &app.database_url)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read as they come, or a full pipe would stall the server.
    let collect = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        tokio::spawn(async move {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut text)
                    .await
                    .unwrap();
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stderr = collect(server.stderr.take().map(|p| Box::new(p) as _));
    let stdout = collect(server.stdout.take().map(|p| Box::new(p) as _));
    let address = format!("http://127.0.0.1:{port}");
    crate::receiver::wait_for("plume serve to be ready", || async {
        reqwest::get(format!("{address}/ready"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    run_matrix(&address, &credentials, a).await;
    // The private listener serves /metrics without a token; the public one does not.
    let open = reqwest::get(format!("http://127.0.0.1:{ops_port}/metrics"))
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    assert!(open.text().await.unwrap().contains("plume_auth_denied_total"));
    let closed = reqwest::get(format!("{address}/metrics")).await.unwrap();
    assert_eq!(closed.status(), StatusCode::UNAUTHORIZED);
    // A session too: its cookie is a secret as well.
    let admin = credentials
        .header(Who::Admin)
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    let signed_in = reqwest::Client::new()
        .post(format!("{address}/v2/session"))
        .json(&json!({ "token": admin }))
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();
    reqwest::Client::new()
        .get(format!("{address}/v2/session"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();

    let pid = server.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    server.wait().await.unwrap();
    let logs = stderr.await.unwrap() + &stdout.await.unwrap();
    assert!(logs.contains("request done"), "the logs were captured");
    let mut secrets = credentials.secrets();
    secrets.push(session.trim_start_matches("plume_session=").to_owned());
    assert!(secrets.len() >= 8);
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
    }
    // Nor in the audit trail, nor in any table but as a hash.
    let dump: String =
        sqlx::query_scalar("select string_agg(t::text, ' ') from (select * from auth_audit) t")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    for secret in &secrets {
        assert!(!dump.contains(secret.as_str()), "a secret is in the audit trail");
    }
    // Nor in any help text.
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["tokens", "create", "--help"],
    ] {
        let help = run_plume(&args, &app.database_url);
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(!text.contains("plume_admin_"), "{args:?}");
    }
}

#[test]
fn help_shows_no_secret_from_the_environment() {
    for args in [
        vec!["serve", "--help"],
        vec!["tokens", "list", "--help"],
        vec!["relay", "--help"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_plume"))
            .args(&args)
            .env("DATABASE_URL", "postgres://plume:hunter2@db.example/plume")
            .env(
                "PLUME_ALERT_WEBHOOK_URL",
                "https://u:whsecret@alerts.example/hook",
            )
            .env("PLUME_ALERT_WEBHOOK_SECRET", "a-webhook-signing-secret")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("DATABASE_URL"), "{args:?}");
        for secret in ["hunter2", "whsecret", "a-webhook-signing-secret"] {
            assert!(!help.contains(secret), "{secret} in {args:?} --help");
        }
    }
}
