use super::*;

fn now() -> DateTime<Utc> {
    "2026-11-26T12:00:00Z".parse().unwrap()
}

fn key() -> HeaderValue {
    HeaderValue::from_static("batch-1")
}

fn parse(body: &str) -> Result<IngestBatch, ApiError> {
    parse_batch(body.as_bytes(), Some(&key()), &AcceptedWindow::default(), now())
}

fn paths(body: &str) -> Vec<String> {
    match parse(body) {
        Err(ApiError::Validation(details)) => details.into_iter().map(|d| d.path).collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn order_spelling_and_offsets_do_not_change_the_hash() {
    let a = parse(
        r#"{"site_id":1,"readings":[
        {"timestamp":"2026-11-26T10:00:00Z","value":1.5},
        {"timestamp":"2026-11-26T11:00:00Z","value":"2","source_id":"s"}]}"#,
    )
    .unwrap();
    let b = parse(
        r#"{"site_id":1,"readings":[
        {"timestamp":"2026-11-26T12:00:00+01:00","value":"2.000","source_id":"s"},
        {"timestamp":"2026-11-26T10:00:00.000Z","value":1500,"unit":"g"}]}"#,
    )
    .unwrap();
    assert_eq!(a.payload_sha256, b.payload_sha256);
    let c = parse(r#"{"site_id":1,"readings":[{"timestamp":"2026-11-26T10:00:00Z","value":1.5}]}"#).unwrap();
    assert_ne!(a.payload_sha256, c.payload_sha256);
}

#[test]
fn identical_repeats_count_once_and_conflicting_ones_are_refused() {
    let batch = parse(
        r#"{"site_id":1,"readings":[
        {"timestamp":"2026-11-26T10:00:00Z","value":1},
        {"timestamp":"2026-11-26T10:00:00Z","value":"1.0"}]}"#,
    )
    .unwrap();
    assert_eq!((batch.site.submitted, batch.site.readings.len()), (2, 1));
    let found = paths(
        r#"{"site_id":1,"readings":[
        {"timestamp":"2026-11-26T10:00:00Z","value":1},
        {"timestamp":"2026-11-26T10:00:00Z","value":2}]}"#,
    );
    assert_eq!(found, ["readings[1]"]);
}

#[test]
fn every_bad_field_is_named() {
    let found = paths(
        r#"{"site_id":"x","readings":[
        {"timestamp":"yesterday","value":-1,"unit":"lb","source_id":""},
        7,
        {"timestamp":"2026-11-26T10:00:00.0000001Z","value":0.0000001}]}"#,
    );
    assert_eq!(
        found,
        [
            "site_id",
            "readings[0].timestamp",
            "readings[0].unit",
            "readings[0].value",
            "readings[0].source_id",
            "readings[1]",
            "readings[2].timestamp",
            "readings[2].value"
        ]
    );
}

#[test]
fn the_key_comes_from_the_header_or_the_body() {
    let body =
        r#"{"site_id":1,"batch_id":"b-9","readings":[{"timestamp":"2026-11-26T10:00:00Z","value":1}]}"#;
    let batch = parse_batch(body.as_bytes(), None, &AcceptedWindow::default(), now()).unwrap();
    assert_eq!(batch.key.as_str(), "b-9");
    let refused = parse_batch(body.as_bytes(), Some(&key()), &AcceptedWindow::default(), now());
    assert!(matches!(refused, Err(ApiError::Validation(d)) if d[0].path == "batch_id"));
    let no_key = r#"{"site_id":1,"readings":[{"timestamp":"2026-11-26T10:00:00Z","value":1}]}"#;
    let refused = parse_batch(no_key.as_bytes(), None, &AcceptedWindow::default(), now());
    assert!(matches!(refused, Err(ApiError::Validation(d)) if d[0].path == "Idempotency-Key"));
}

#[test]
fn leap_seconds_are_refused_rather_than_folded_into_the_next_second() {
    let found = paths(
        r#"{"site_id":1,"readings":[
        {"timestamp":"2026-11-26T08:30:60Z","value":3},
        {"timestamp":"2026-11-26T08:31:00Z","value":4}]}"#,
    );
    assert_eq!(found, ["readings[0].timestamp"]);
}

#[test]
fn readings_outside_the_window_are_held_for_the_replay_check() {
    let batch =
        parse(r#"{"site_id":1,"readings":[{"timestamp":"2020-01-01T00:00:00Z","value":1}]}"#).unwrap();
    assert_eq!(batch.outside_window.len(), 1);
    assert_eq!(batch.outside_window[0].path, "readings[0].timestamp");
    // With any other problem the batch is refused at once, window problems included.
    let found = paths(r#"{"site_id":0,"readings":[{"timestamp":"2020-01-01T00:00:00Z","value":1}]}"#);
    assert_eq!(found, ["site_id", "readings[0].timestamp"]);
}

#[test]
fn a_source_id_that_could_pass_for_another_is_refused() {
    for source in ["north\\u202e1", "north\\u200b1", "\\ufeffnorth"] {
        let body = format!(
            r#"{{"site_id":1,"readings":[{{"timestamp":"2026-11-26T10:00:00Z","value":1,"source_id":"{source}"}}]}}"#
        );
        assert_eq!(paths(&body), ["readings[0].source_id"], "{source}");
    }
}
