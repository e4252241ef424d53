//! SQL access for Grafana and BI tools: a role made by `plume sql-access grant` reads the views of
//! `plume_sql` (exact kilograms, UTC times), only its sites' rows when restricted, and nothing else;
//! its time filters prune partitions; the ready queries of docs/GRAFANA.md, expanded as Grafana
//! expands its macros, return the expected numbers through `psql`.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use chrono::{DateTime, DurationRound, SecondsFormat, Utc};
use plume::db;
use plume::sql_access::{self, RoleName};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::catalog;
use crate::helpers::*;

/// A role name of this test's own: roles belong to the whole server, which tests share.
fn unique_role(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Runs `plume sql-access <args>` as the owner and returns its standard output; panics on failure.
fn plume_sql_access(app: &TestApp, args: &[&str]) -> String {
    let output = run_plume(&[&["sql-access"], args].concat(), &app.database_url);
    assert!(
        output.status.success(),
        "sql-access {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A new reader over `scope` (`--all-sites` or `--site ID`s); returns its name and the password
/// `grant` printed (its last line).
fn grant(app: &TestApp, scope: &[&str]) -> (String, String) {
    let role = unique_role("reader");
    let stdout = plume_sql_access(app, &[&["grant", "--role", &role], scope].concat());
    assert!(stdout.starts_with(&format!("created role {role}")), "{stdout}");
    let password = stdout.lines().last().unwrap().to_owned();
    (role, password)
}

/// `database_url` as `role` with `password`.
fn role_url(database_url: &str, role: &str, password: &str) -> String {
    let (scheme, rest) = database_url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}:{password}@{host}")
}

/// `commands` run by `psql` (the real client) on `url`, each in its own transaction: unaligned
/// rows, `|` between fields.
fn psql(url: &str, commands: &[&str]) -> Output {
    let bin = plume::db::installation::default_bin_dir().join("psql");
    let program = if bin.exists() { bin } else { "psql".into() };
    let commands = commands.iter().flat_map(|sql| ["-c", sql]);
    Command::new(program)
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            "|",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
        ])
        .args(commands)
        .env("PGDATESTYLE", "ISO")
        .env_remove("PGTZ")
        .env_remove("PGOPTIONS")
        .output()
        .unwrap()
}

/// The rows `psql` prints for `sql`; panics when it fails.
fn psql_rows(url: &str, sql: &str) -> Vec<String> {
    let output = psql(url, &[sql]);
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Two sites with readings in two hours starting at `hour`: "Quarry" (limit 10 kg) within its
/// limit, "Landfill" (limit 1 kg) over it. Returns their ids.
async fn arrange(app: &TestApp, hour: DateTime<Utc>) -> (i64, i64) {
    let at =
        |minutes: i64| (hour + chrono::Duration::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let quarry = app
        .create_site(&format!("Quarry {}", uuid::Uuid::new_v4()), "10")
        .await;
    let landfill = app
        .create_site(&format!("Landfill {}", uuid::Uuid::new_v4()), "1")
        .await;
    let quarry_batch = batch(
        quarry,
        &[
            ("north", &at(0), "1.25"),
            ("north", &at(10), "2.000001"),
            ("south", &at(70), "0.5"),
        ],
    );
    assert_eq!(app.ingest("quarry", &quarry_batch).await.status(), 201);
    let landfill_batch = batch(landfill, &[("cell-1", &at(5), "1.5")]);
    assert_eq!(app.ingest("landfill", &landfill_batch).await.status(), 201);
    (quarry, landfill)
}

/// The start of the hour three hours ago.
fn three_hours_ago() -> DateTime<Utc> {
    (Utc::now() - chrono::Duration::hours(3))
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap()
}

/// psql's rendering of a UTC time.
fn shown(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S+00").to_string()
}

/// Drops the readers a test made (roles outlive a test's database).
async fn drop_readers(app: &TestApp, roles: &[&str]) {
    for role in roles {
        sql_access::revoke(&app.pool, &RoleName::parse(role).unwrap())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_reader_reads_exact_kilograms_and_utc_times_from_the_views() {
    let app = spawn_app().await;
    let hour = three_hours_ago();
    let (quarry, landfill) = arrange(&app, hour).await;
    let (role, password) = grant(&app, &["--all-sites"]);
    let url = role_url(&app.database_url, &role, &password);

    // Bare names: the role's search_path is plume_sql.
    let sites = psql_rows(
        &url,
        "select id, emission_limit_kg, total_emissions_kg, reading_count, first_reading_at,
                last_reading_at, compliance_status from sites order by id",
    );
    let at = |minutes: i64| shown(hour + chrono::Duration::minutes(minutes));
    assert_eq!(
        sites,
        [
            format!("{quarry}|10.000000|3.750001|3|{}|{}|Within Limit", at(0), at(70)),
            format!(
                "{landfill}|1.000000|1.500000|1|{}|{}|Limit Exceeded",
                at(5),
                at(5)
            ),
        ]
    );
    let readings = psql_rows(
        &url,
        &format!("select source_id, measured_at, value_kg from readings where site_id = {quarry} order by measured_at"),
    );
    assert_eq!(
        readings,
        [
            format!("north|{}|1.250000", at(0)),
            format!("north|{}|2.000001", at(10)),
            format!("south|{}|0.500000", at(70)),
        ]
    );
    let hourly = psql_rows(
        &url,
        &format!("select hour, sum_kg, readings, min_kg, max_kg from hourly where site_id = {quarry} order by hour"),
    );
    assert_eq!(
        hourly,
        [
            format!("{}|3.250001|2|1.250000|2.000001", at(0)),
            format!("{}|0.500000|1|0.500000|0.500000", at(60)),
        ]
    );
    // The types a BI tool sees: exact numerics and absolute times.
    let types = psql_rows(
        &url,
        "select pg_typeof(value_kg)::text, pg_typeof(measured_at)::text from readings limit 1",
    );
    assert_eq!(types, ["numeric|timestamp with time zone"]);
    drop_readers(&app, &[&role]).await;
}

#[tokio::test]
async fn a_reader_of_some_sites_sees_only_their_rows_even_through_its_own_functions() {
    let app = spawn_app().await;
    let (quarry, landfill) = arrange(&app, three_hours_ago()).await;
    let (role, password) = grant(&app, &["--site", &quarry.to_string()]);
    let url = role_url(&app.database_url, &role, &password);
    let counts = "select (select string_agg(id::text, ',') from sites),
                         (select string_agg(distinct site_id::text, ',') from readings),
                         (select string_agg(distinct site_id::text, ',') from hourly)";

    assert_eq!(psql_rows(&url, counts), [format!("{quarry}|{quarry}|{quarry}")]);
    let other = format!("select count(*) from readings where site_id = {landfill}");
    assert_eq!(psql_rows(&url, &other), ["0"]);

    // A cheap function of the reader's, which would be run before the views' filter were they
    // not security barriers, sees only the rows the reader may see.
    let output = psql(
        &url,
        &[
            "set default_transaction_read_only = off",
            "create function pg_temp.peek(site bigint, kg numeric) returns boolean language plpgsql cost 0.0001
                 as $$ begin raise notice 'peeked at site % (% kg)', site, kg; return true; end $$",
            "select count(*) from readings where pg_temp.peek(site_id, value_kg)",
            "select count(*) from sites where pg_temp.peek(id, total_emissions_kg)",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let notices = String::from_utf8_lossy(&output.stderr);
    assert!(
        notices.contains(&format!("peeked at site {quarry} ")),
        "{notices}"
    );
    assert!(
        !notices.contains(&format!("peeked at site {landfill} ")),
        "{notices}"
    );

    // Granted again with the other site: the list is replaced, the password kept.
    let stdout = plume_sql_access(&app, &["grant", "--role", &role, "--site", &landfill.to_string()]);
    assert!(stdout.contains("password is unchanged"), "{stdout}");
    assert_eq!(
        psql_rows(&url, counts),
        [format!("{landfill}|{landfill}|{landfill}")]
    );
    drop_readers(&app, &[&role]).await;
}

/// The SQLSTATE of `statement` run on `connection`, or `None` when it succeeds.
async fn refusal(connection: &mut PgConnection, statement: &str) -> Option<String> {
    match connection.execute(statement).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(error)) => error.code().map(|c| c.into_owned()),
        Err(other) => panic!("{statement}: {other}"),
    }
}

#[tokio::test]
async fn a_reader_reads_nothing_else_and_writes_nothing() {
    let app = spawn_app().await;
    let (quarry, _) = arrange(&app, three_hours_ago()).await;
    let (role, password) = grant(&app, &["--all-sites"]);
    let mut reader = PgConnection::connect(&role_url(&app.database_url, &role, &password))
        .await
        .unwrap();
    // Its sessions start read-only, even for a scratch table of its own; it may lift that for
    // itself, and the grants still hold.
    assert_eq!(
        refusal(&mut reader, "create temporary table scratch (x int)").await,
        Some("25006".into())
    );
    reader
        .execute("set default_transaction_read_only = off")
        .await
        .unwrap();

    // Every table, partition, sequence and view outside plume_sql, plume's and pg_partman's.
    let relations: Vec<String> = sqlx::query_scalar(
        "select format('%I.%I', n.nspname, c.relname)
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where n.nspname in ('public', 'plume_sql_acl', 'partman') and c.relkind in ('r', 'p', 'v', 'm', 'S')
          order by 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for expected in [
        "public.measurements",
        "public.sites",
        "public.ingest_batches",
        "public.hourly_rollups",
        "public.auth_tokens",
        "public.auth_clients",
        "public.auth_sessions",
        "public.outbox_events",
        "public.refinery_schema_history",
        "plume_sql_acl.readers",
        "partman.part_config",
    ] {
        assert!(relations.iter().any(|r| r == expected), "{expected} is listed");
    }
    let partition = catalog::partition_holding(&app.pool, "measurements", Utc::now())
        .await
        .unwrap();
    assert!(relations.contains(&format!("public.{partition}")));
    let denied = Some("42501".to_string());
    for relation in &relations {
        let select = format!("select 1 from {relation} limit 1");
        assert_eq!(refusal(&mut reader, &select).await, denied, "{select}");
    }
    for statement in [
        format!("insert into readings (site_id, source_id, measured_at) values ({quarry}, 'x', now())"),
        "update sites set name = 'renamed'".to_string(),
        "delete from hourly".to_string(),
        "truncate public.measurements".to_string(),
        "create table plume_sql.intruder (id int)".to_string(),
        "create table public.intruder (id int)".to_string(),
        "create schema intruder".to_string(),
        "create view plume_sql.everything as select 1".to_string(),
        "select partman.show_partitions('public.measurements')".to_string(),
        "delete from plume_sql_acl.readers".to_string(),
    ] {
        assert_eq!(refusal(&mut reader, &statement).await, denied, "{statement}");
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from measurements")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 4, "nothing was written");

    // What the catalog says it holds: select on the three views, nothing else on any relation;
    // usage of plume_sql and (as every role) public, creation nowhere; no function that runs with
    // its owner's rights.
    let privileges: Vec<(String, String)> = sqlx::query_as(
        "select format('%I.%I', n.nspname, c.relname), p.privilege
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
          cross join unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) as p (privilege)
          where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_to%'
            and n.nspname not like 'pg\\_temp%' and has_table_privilege($1::name, c.oid, p.privilege)
          order by 1, 2",
    )
    .bind(&role)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let select = |view: &str| (format!("plume_sql.{view}"), "SELECT".to_string());
    assert_eq!(
        privileges,
        [select("hourly"), select("readings"), select("sites")]
    );
    let schemas: Vec<(String, bool)> = sqlx::query_as(
        "select nspname::text, has_schema_privilege($1::name, oid, 'CREATE') from pg_namespace
          where has_schema_privilege($1::name, oid, 'USAGE') and nspname not in ('pg_catalog', 'information_schema')
            and nspname not like 'pg\\_to%' and nspname not like 'pg\\_temp%'
          order by 1",
    )
    .bind(&role)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(schemas, [("plume_sql".into(), false), ("public".into(), false)]);
    let definers: Vec<String> = sqlx::query_scalar(
        "select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
          where p.prosecdef and has_schema_privilege($1::name, n.oid, 'USAGE')
            and has_function_privilege($1::name, p.oid, 'EXECUTE')",
    )
    .bind(&role)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(definers, Vec::<String>::new());
    reader.close().await.unwrap();
    drop_readers(&app, &[&role]).await;
}

/// Every relation a JSON plan reads.
fn relations(plan: &Value, found: &mut BTreeSet<String>) {
    if let Some(name) = plan.get("Relation Name").and_then(Value::as_str) {
        found.insert(name.to_owned());
    }
    for child in plan.get("Plans").and_then(Value::as_array).into_iter().flatten() {
        relations(child, found);
    }
}

/// The relations `sql` reads when run on `connection` with `binds`, planned as `mode`.
async fn relations_read(
    connection: &mut PgConnection,
    mode: &str,
    sql: &str,
    binds: &[DateTime<Utc>],
) -> BTreeSet<String> {
    connection
        .execute(format!("set plan_cache_mode = {mode}").as_str())
        .await
        .unwrap();
    let text = format!("explain (analyze, format json) {sql}");
    let mut query = sqlx::query_scalar::<_, Value>(&text);
    for at in binds {
        query = query.bind(*at);
    }
    let plan = query.fetch_one(&mut *connection).await.unwrap();
    let mut found = BTreeSet::new();
    relations(&plan[0]["Plan"], &mut found);
    found
}

/// `$__timeFilter(column)` as Grafana expands it: `column BETWEEN '<from>' AND '<to>'`, RFC 3339 in UTC.
fn time_filter(column: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let rfc3339 = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    format!("{column} BETWEEN '{}' AND '{}'", rfc3339(from), rfc3339(to))
}

#[tokio::test]
async fn a_readers_time_filters_read_only_the_months_they_need() {
    let app = spawn_app().await;
    let (role, password) = grant(&app, &["--all-sites"]);
    let mut reader = PgConnection::connect(&role_url(&app.database_url, &role, &password))
        .await
        .unwrap();
    let this_month = partitioning::month_start(Utc::now());
    let last = partitioning::month_start(this_month - chrono::Duration::days(1));
    let before = partitioning::month_start(last - chrono::Duration::days(1));
    let month = |at| catalog::partition_holding(&app.pool, "measurements", at);
    let readers = "readers".to_string();
    let cases = [
        (
            last + chrono::Duration::days(3),
            last + chrono::Duration::days(10),
            BTreeSet::from([month(last).await.unwrap(), readers.clone()]),
        ),
        (
            before + chrono::Duration::days(3),
            this_month + chrono::Duration::hours(5),
            BTreeSet::from([
                month(before).await.unwrap(),
                month(last).await.unwrap(),
                month(this_month).await.unwrap(),
                readers.clone(),
            ]),
        ),
    ];

    for (from, to, expected) in cases {
        let grafana = format!(
            "select measured_at as time, value_kg from readings where site_id = 1 and {} order by 1",
            time_filter("measured_at", from, to)
        );
        assert_eq!(
            relations_read(&mut reader, "auto", &grafana, &[]).await,
            expected,
            "{grafana}"
        );
        let prepared = "select * from plume_sql.readings where measured_at >= $1 and measured_at < $2";
        for mode in ["auto", "force_generic_plan"] {
            let read = relations_read(&mut reader, mode, prepared, &[from, to]).await;
            assert_eq!(read, expected, "prepared, {mode}");
        }
        let hourly = format!(
            "select * from hourly where site_id = 1 and {}",
            time_filter("hour", from, to)
        );
        assert_eq!(
            relations_read(&mut reader, "auto", &hourly, &[]).await,
            BTreeSet::from(["hourly_rollups".to_string(), readers.clone()]),
            "{hourly}"
        );
    }
    reader.close().await.unwrap();
    drop_readers(&app, &[&role]).await;
}

/// The SQL block of docs/GRAFANA.md whose first line is `-- <title>`.
fn documented_query(title: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/GRAFANA.md");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find(&format!("```sql\n-- {title}\n"))
        .unwrap_or_else(|| panic!("docs/GRAFANA.md has a query titled {title:?}"));
    let body = &text[start + "```sql\n".len()..];
    body[..body.find("```").unwrap()].to_owned()
}

/// `query` as Grafana sends it: `$__timeFilter(...)` expanded over `from`..`to`, `$site` replaced.
fn expand(query: &str, from: DateTime<Utc>, to: DateTime<Utc>, site: i64) -> String {
    let mut expanded = query.replace("$site", &site.to_string());
    while let Some(start) = expanded.find("$__timeFilter(") {
        let end = start + expanded[start..].find(')').unwrap();
        let column = expanded[start + "$__timeFilter(".len()..end].trim().to_owned();
        expanded.replace_range(start..=end, &time_filter(&column, from, to));
    }
    assert!(!expanded.contains('$'), "every macro expanded: {expanded}");
    expanded
}

#[tokio::test]
async fn the_documented_grafana_queries_return_the_expected_numbers_through_psql() {
    let app = spawn_app().await;
    let hour = three_hours_ago();
    let (quarry, landfill) = arrange(&app, hour).await;
    let (role, password) = grant(&app, &["--all-sites"]);
    let url = role_url(&app.database_url, &role, &password);
    // The dashboard's range: from the first hour's second minute to now (Grafana sends
    // milliseconds when there are some).
    let (from, to) = (hour + chrono::Duration::milliseconds(60_250), Utc::now());

    let series = expand(
        &documented_query("Hourly emissions of one site"),
        from,
        to,
        quarry,
    );
    assert_eq!(
        psql_rows(&url, &series),
        [format!("{}|0.500000", shown(hour + chrono::Duration::hours(1)))],
        "the first hour starts before the range: {series}"
    );
    let series = expand(
        &documented_query("Hourly emissions of one site"),
        hour,
        to,
        quarry,
    );
    assert_eq!(
        psql_rows(&url, &series),
        [
            format!("{}|3.250001", shown(hour)),
            format!("{}|0.500000", shown(hour + chrono::Duration::hours(1))),
        ]
    );

    // Over its limit whatever the range; what it emitted in the range counts the hours that start
    // in it.
    let landfill_name: String = sqlx::query_scalar("select name from sites where id = $1")
        .bind(landfill)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let last_reading = shown(hour + chrono::Duration::minutes(5));
    for (from, in_range) in [
        (hour, "1.500000"),
        (hour + chrono::Duration::hours(1), "0.000000"),
    ] {
        let over = expand(&documented_query("Sites over their limit"), from, to, quarry);
        assert_eq!(
            psql_rows(&url, &over),
            [format!(
                "{landfill_name}|1.500000|1.000000|0.500000|{in_range}|{last_reading}"
            )],
            "{over}"
        );
    }

    let readings = expand(&documented_query("Readings of one site"), from, to, quarry);
    assert_eq!(
        psql_rows(&url, &readings),
        [
            format!("{}|north|2.000001", shown(hour + chrono::Duration::minutes(10))),
            format!("{}|south|0.500000", shown(hour + chrono::Duration::minutes(70))),
        ]
    );
    drop_readers(&app, &[&role]).await;
}

#[tokio::test]
async fn grant_list_and_revoke_manage_only_plumes_readers() {
    let app = spawn_app().await;
    let (quarry, _) = arrange(&app, three_hours_ago()).await;
    let (all, all_password) = grant(&app, &["--all-sites"]);
    let some = unique_role("reader");
    let password_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password_file.path(), "from-a-file-0123456789\n").unwrap();
    let file = password_file.path().to_str().unwrap();
    let stdout = plume_sql_access(
        &app,
        &[
            "grant",
            "--role",
            &some,
            "--site",
            &quarry.to_string(),
            "--password-file",
            file,
            "--connection-limit",
            "3",
        ],
    );
    assert!(
        stdout.contains("password is the one in --password-file"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("from-a-file"),
        "the password is never printed back"
    );
    let some_url = role_url(&app.database_url, &some, "from-a-file-0123456789");
    assert_eq!(psql_rows(&some_url, "select count(*) from sites"), ["1"]);

    let listed: Value = serde_json::from_str(&plume_sql_access(&app, &["list", "--json"])).unwrap();
    let entry = |role: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|reader| reader["role"] == role)
            .cloned()
            .unwrap_or_else(|| panic!("{role} is listed: {listed}"))
    };
    assert_eq!(entry(&all)["site_ids"], Value::Null);
    assert_eq!(entry(&some)["site_ids"], serde_json::json!([quarry]));
    assert_eq!(entry(&some)["connection_limit"], 3);
    let table = plume_sql_access(&app, &["list"]);
    assert!(
        table
            .lines()
            .any(|line| line.starts_with(&some) && line.contains(&quarry.to_string())),
        "{table}"
    );

    // A role plume did not make is never changed; an unknown site is refused before anything.
    for (role, scope, why) in [
        ("plume_test_app", "--all-sites", "is not a reader"),
        ("postgres", "--all-sites", "is not a reader"),
        (all.as_str(), "--site=999999", "no site has the id [999999]"),
    ] {
        let output = run_plume(&["sql-access", "grant", "--role", role, scope], &app.database_url);
        assert!(!output.status.success(), "{role}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(why), "{role}: {stderr}");
    }
    let unknown = run_plume(
        &["sql-access", "revoke", "--role", "no_such_reader"],
        &app.database_url,
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no reader is named no_such_reader"));
    assert_eq!(refusal_of_login(&app, &all, &all_password).await, None);

    // Revoked: the role is gone, its password opens nothing, the list forgets it.
    let stdout = plume_sql_access(&app, &["revoke", "--role", &all]);
    assert!(stdout.starts_with(&format!("role {all} dropped")), "{stdout}");
    assert!(refusal_of_login(&app, &all, &all_password).await.is_some());
    let exists: bool = sqlx::query_scalar("select exists (select from pg_roles where rolname = $1)")
        .bind(&all)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!exists);
    assert!(!plume_sql_access(&app, &["list"]).contains(&all));
    drop_readers(&app, &[&some]).await;
}

/// Why `role` cannot sign in with `password`, or `None` when it can.
async fn refusal_of_login(app: &TestApp, role: &str, password: &str) -> Option<String> {
    let url = role_url(&app.database_url, role, password);
    match PgPool::connect(&url).await {
        Ok(pool) => {
            pool.close().await;
            None
        }
        Err(error) => Some(error.to_string()),
    }
}

#[tokio::test]
async fn the_application_role_reaches_neither_the_views_nor_the_readers_list() {
    let app = spawn_app().await;
    let (role, _) = grant(&app, &["--all-sites"]);
    // `plume migrate --grant-app-role` grants the application role `public`, now and later, and
    // nothing of plume_sql's: it can neither read the views nor widen a reader's sites.
    db::roles::grant(&app.pool, "plume_test_app").await.unwrap();
    let mut service = app.app_pool.acquire().await.unwrap();
    for statement in [
        "select 1 from plume_sql.sites",
        "select 1 from plume_sql.readings",
        "select 1 from plume_sql.hourly",
        "select 1 from plume_sql_acl.readers",
        "update plume_sql_acl.readers set site_ids = null",
    ] {
        assert_eq!(
            refusal(&mut service, statement).await,
            Some("42501".into()),
            "{statement}"
        );
    }
    drop(service);
    drop_readers(&app, &[&role]).await;
}
