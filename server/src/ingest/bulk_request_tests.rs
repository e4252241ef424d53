use super::*;

fn now() -> DateTime<Utc> {
    "2026-11-26T12:00:00Z".parse().unwrap()
}

fn parse(format: BulkFormat, body: &str) -> Result<BulkBatch, ApiError> {
    let key = HeaderValue::from_static("bulk-1");
    parse_bulk(
        body.as_bytes(),
        format,
        Some(&key),
        &AcceptedWindow::default(),
        now(),
        &crate::auth::Principal::unrestricted().client,
    )
}

fn paths(format: BulkFormat, body: &str) -> Vec<String> {
    match parse(format, body) {
        Err(ApiError::Validation(details) | ApiError::TooManyProblems(details, _)) => {
            details.into_iter().map(|d| d.path).collect()
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn media_types_name_the_formats() {
    assert_eq!(
        BulkFormat::from_content_type("application/json; charset=utf-8"),
        Some(BulkFormat::Json)
    );
    assert_eq!(
        BulkFormat::from_content_type("application/x-ndjson"),
        Some(BulkFormat::Ndjson)
    );
    assert_eq!(BulkFormat::from_content_type("Text/CSV"), Some(BulkFormat::Csv));
    assert_eq!(BulkFormat::from_content_type("text/plain"), None);
}

#[test]
fn one_payload_in_three_formats_hashes_alike_and_groups_by_site() {
    let json = parse(
        BulkFormat::Json,
        r#"{"readings":[
            {"site_id":2,"source_id":"a","timestamp":"2026-11-26T10:00:00Z","value":"1.5"},
            {"site_id":1,"timestamp":"2026-11-26T11:00:00+01:00","value":2000,"unit":"g"},
            {"site_id":2,"source_id":"a","timestamp":"2026-11-26T10:00:00Z","value":1.5}]}"#,
    )
    .unwrap();
    let ndjson = parse(
        BulkFormat::Ndjson,
        "{\"site_id\":1,\"timestamp\":\"2026-11-26T10:00:00Z\",\"value\":2}\r\n\
         \r\n\
         {\"site_id\":2,\"source_id\":\"a\",\"timestamp\":\"2026-11-26T10:00:00Z\",\"value\":1.5}\n\
         {\"site_id\":2,\"source_id\":\"a\",\"timestamp\":\"2026-11-26T10:00:00Z\",\"value\":1.50}",
    )
    .unwrap();
    let csv = parse(
        BulkFormat::Csv,
        "\u{feff}value,timestamp,site_id,source_id,unit\n\
         1500,2026-11-26T10:00:00Z,2,a,g\n\
         2,2026-11-26T10:00:00Z,1,,\n\
         1.5,2026-11-26T10:00:00Z,2,\"a\",kg\n",
    )
    .unwrap();
    assert_eq!(json.payload_sha256, ndjson.payload_sha256);
    assert_eq!(json.payload_sha256, csv.payload_sha256);
    assert_eq!(json.submitted, 3);
    assert_eq!(json.site_ids(), [1, 2]);
    assert_eq!(json.distinct_readings(), 2);
    assert_eq!(json.sites[1].submitted, 2);
    assert_eq!(json.site_origins, [Origin::Index(1), Origin::Index(0)]);
    assert_eq!(csv.site_origins, [Origin::Line(3), Origin::Line(2)]);
}

#[test]
fn the_same_reading_at_two_sites_is_not_a_repeat_but_a_different_value_at_one_is() {
    let body = "site_id,source_id,timestamp,value\n\
                1,a,2026-11-26T10:00:00Z,1\n\
                2,a,2026-11-26T10:00:00Z,2\n\
                1,a,2026-11-26T10:00:00Z,3\n";
    assert_eq!(paths(BulkFormat::Csv, body), ["line 4"]);
}

#[test]
fn csv_headers_must_name_known_columns_once() {
    assert_eq!(
        paths(BulkFormat::Csv, "site_id,site_id,timestamp,value,extra\n"),
        ["line 1", "line 1"]
    );
    assert_eq!(paths(BulkFormat::Csv, ""), ["line 1"]);
}

#[test]
fn large_bodies_checked_in_parallel_keep_request_order() {
    let mut body = String::from("site_id,timestamp,value\n");
    for n in 0..(PARALLEL_CHUNK * 3) {
        let minute = n % 60;
        let hour = n / 60 % 24;
        let day = n / 1440 + 1;
        let value = if n % 1000 == 999 {
            "-1".to_string()
        } else {
            n.to_string()
        };
        body.push_str(&format!("1,2026-11-{day:02}T{hour:02}:{minute:02}:00Z,{value}\n"));
    }
    let expected: Vec<String> = (0..(PARALLEL_CHUNK * 3))
        .filter(|n| n % 1000 == 999)
        .map(|n| format!("line {}.value", n + 2))
        .collect();
    assert_eq!(paths(BulkFormat::Csv, &body), expected);
    let fixed = body.replace(",-1\n", ",1\n");
    assert_eq!(
        parse(BulkFormat::Csv, &fixed).unwrap().submitted,
        PARALLEL_CHUNK * 3
    );
}

#[test]
fn problems_beyond_the_hundredth_are_counted_not_listed() {
    let body: String = (0..250)
        .map(|n| format!("{{\"site_id\":{n},\"timestamp\":\"x\",\"value\":1}}\n"))
        .collect();
    match parse(BulkFormat::Ndjson, &body) {
        Err(ApiError::TooManyProblems(details, found)) => {
            assert_eq!(details.len(), MAX_LISTED_PROBLEMS);
            // Line 1 has site 0 (refused) and a bad time; every later line a bad time.
            assert_eq!(found, 251);
            assert_eq!(details[0].path, "line 1.site_id");
        }
        other => panic!("expected too many problems, got {other:?}"),
    }
}

#[test]
fn csv_lines_are_counted_across_crlf_blank_lines_and_lone_carriage_returns() {
    let crlf = "site_id,timestamp,value\r\n1,2026-11-26T10:00:00Z,1\r\n\r\n\r\n1,2026-11-26T11:00:00Z,x\r\n";
    assert_eq!(paths(BulkFormat::Csv, crlf), ["line 5.value"]);
    let lf = "site_id,timestamp,value\n\n\n1,2026-11-26T10:00:00Z,x\n";
    assert_eq!(paths(BulkFormat::Csv, lf), ["line 4.value"]);
    let cr = "site_id,timestamp,value\r1,2026-11-26T10:00:00Z,1\r1,2026-11-26T11:00:00Z,x\r";
    assert_eq!(paths(BulkFormat::Csv, cr), ["line 3.value"]);
    let quoted = "site_id,source_id,timestamp,value\n1,\"two\nlines\",2026-11-26T10:00:00Z,1\n1,a,2026-11-26T11:00:00Z,x\n";
    // A quoted field spanning two lines (refused: a source id has no control characters).
    assert_eq!(
        paths(BulkFormat::Csv, quoted),
        ["line 2.source_id", "line 4.value"]
    );
}

#[test]
fn a_csv_source_id_is_taken_as_written_like_json() {
    let csv = parse(
        BulkFormat::Csv,
        "site_id,source_id,timestamp,value\n1, pump ,2026-11-26T10:00:00Z, 1 \n",
    )
    .unwrap();
    let json = parse(
        BulkFormat::Json,
        r#"{"readings":[{"site_id":1,"source_id":" pump ","timestamp":"2026-11-26T10:00:00Z","value":1}]}"#,
    )
    .unwrap();
    assert_eq!(csv.sites[0].readings[0].source_id, " pump ");
    assert_eq!(csv.payload_sha256, json.payload_sha256);
}

#[test]
fn a_site_is_named_where_it_first_appears_and_a_bom_is_ignored_in_every_format() {
    let body =
        "\u{feff}{\"site_id\":3,\"source_id\":\"z\",\"timestamp\":\"2026-11-26T10:00:00Z\",\"value\":1}\n\
                {\"site_id\":3,\"source_id\":\"a\",\"timestamp\":\"2026-11-26T10:00:00Z\",\"value\":1}\n";
    let batch = parse(BulkFormat::Ndjson, body).unwrap();
    assert_eq!(batch.site_origins, [Origin::Line(1)]);
}

#[test]
fn a_huge_count_of_tiny_items_is_counted_without_keeping_them() {
    let items = vec!["1"; MAX_READINGS_PER_BULK + 5].join(",");
    match parse(BulkFormat::Json, &format!("{{\"readings\":[{items}]}}")) {
        Err(ApiError::Validation(details)) => {
            assert_eq!(details[0].message, "must contain 1 to 50000 readings, not 50005")
        }
        other => panic!("expected a count problem, got {other:?}"),
    }
    let lines = "{}\n".repeat(MAX_READINGS_PER_BULK + 2);
    assert_eq!(paths(BulkFormat::Ndjson, &lines), ["readings"]);
    let rows = format!(
        "site_id,timestamp,value\n{}",
        "1,x,1\n".repeat(MAX_READINGS_PER_BULK + 1)
    );
    assert_eq!(paths(BulkFormat::Csv, &rows), ["readings"]);
}

#[test]
fn a_csv_header_of_millions_of_columns_is_refused_before_it_is_split() {
    let header = ",".repeat(4_000_000);
    let body = format!("{header}\n1,a,2026-11-26T10:00:00Z,1\n");
    assert_eq!(paths(BulkFormat::Csv, &body), ["line 1"]);
    let within = "site_id,source_id,timestamp,value,unit,x,y,z,a,b,c,d,e,f,g,h\n";
    assert!(paths(BulkFormat::Csv, within).iter().all(|path| path == "line 1"));
}
