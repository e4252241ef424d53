use super::*;

fn fields(error: ApiError) -> Vec<(String, String)> {
    match error {
        ApiError::Validation(problems) => problems.into_iter().map(|p| (p.path, p.message)).collect(),
        other => panic!("not a validation error: {other:?}"),
    }
}

fn series(from: Option<&str>, to: Option<&str>, bucket: Option<&str>) -> Result<SeriesRequest, ApiError> {
    SeriesParams {
        from: from.map(str::to_owned),
        to: to.map(str::to_owned),
        bucket: bucket.map(str::to_owned),
    }
    .check()
}

#[test]
fn a_series_needs_whole_buckets_in_order_and_not_too_many() {
    let ok = series(
        Some("2026-01-01T00:00:00Z"),
        Some("2026-02-01T00:00:00Z"),
        Some("day"),
    )
    .unwrap();
    assert_eq!(ok.bucket, Bucket::Day);
    assert_eq!(
        series(Some("2026-01-01T05:00:00Z"), Some("2026-01-01T06:00:00Z"), None)
            .unwrap()
            .bucket,
        Bucket::Hour
    );

    let problems = fields(
        series(
            Some("2026-01-01T05:00:00Z"),
            Some("2026-01-02T00:00:00Z"),
            Some("day"),
        )
        .unwrap_err(),
    );
    assert_eq!(
        problems,
        vec![(
            "from".into(),
            "must be the start of a UTC day for bucket=day".into()
        )]
    );

    let problems = fields(
        series(
            Some("2026-02-01T00:00:00Z"),
            Some("2026-01-01T00:00:00Z"),
            Some("month"),
        )
        .unwrap_err(),
    );
    assert_eq!(problems, vec![("to".into(), "must be after from".into())]);

    // 10,000 hours is the most; 10,001 is refused.
    assert!(series(
        Some("2026-01-01T00:00:00Z"),
        Some("2027-02-21T16:00:00Z"),
        Some("hour")
    )
    .is_ok());
    let problems = fields(
        series(
            Some("2026-01-01T00:00:00Z"),
            Some("2027-02-21T17:00:00Z"),
            Some("hour"),
        )
        .unwrap_err(),
    );
    assert!(problems[0].1.contains("10001 buckets"), "{problems:?}");

    let problems = fields(series(None, Some("yesterday"), Some("week")).unwrap_err());
    let names: Vec<_> = problems.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["bucket", "from", "to"]);
}

#[test]
fn a_page_takes_a_limit_in_bounds_and_only_its_own_cursors() {
    let params = |limit: Option<&str>, cursor: Option<&str>| ReadingsParams {
        from: None,
        to: None,
        source_id: None,
        limit: limit.map(str::to_owned),
        cursor: cursor.map(str::to_owned),
    };
    assert_eq!(params(None, None).check().unwrap().limit, DEFAULT_PAGE);
    assert_eq!(params(Some("10000"), None).check().unwrap().limit, 10_000);
    for bad in ["0", "10001", "ten"] {
        assert_eq!(fields(params(Some(bad), None).check().unwrap_err())[0].0, "limit");
    }
    assert_eq!(
        fields(params(None, Some("c2l0ZTox")).check().unwrap_err())[0].0,
        "cursor"
    );
    let both_bad = ReadingsParams {
        from: Some("0000-01-01T00:00:00Z".into()),
        to: Some("soon".into()),
        ..params(None, None)
    };
    let names: Vec<_> = fields(both_bad.check().unwrap_err())
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["from", "to"]);
}

#[test]
fn an_export_needs_a_site_or_a_bounded_range() {
    let params =
        |site: Option<&str>, from: Option<&str>, to: Option<&str>, format: Option<&str>| ExportParams {
            site_id: site.map(str::to_owned),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            format: format.map(str::to_owned),
            raw: None,
        };
    let whole_site = params(Some("7"), None, None, None).check().unwrap();
    assert_eq!(
        (whole_site.site, whole_site.format),
        (SiteId::new(7), ExportFormat::Csv)
    );
    let raw = ExportParams {
        raw: Some("true".into()),
        ..params(Some("7"), None, None, None)
    };
    assert_eq!(raw.check().unwrap().format, ExportFormat::RawCsv);
    let raw_ndjson = ExportParams {
        raw: Some("true".into()),
        ..params(Some("7"), None, None, Some("ndjson"))
    };
    assert!(raw_ndjson.check().is_err());
    let parquet = params(Some("7"), None, None, Some("parquet")).check().unwrap();
    assert_eq!(parquet.format, ExportFormat::Parquet);
    let raw_parquet = ExportParams {
        raw: Some("true".into()),
        ..params(Some("7"), None, None, Some("parquet"))
    };
    assert_eq!(fields(raw_parquet.check().unwrap_err())[0].0, "raw");
    let month = params(
        None,
        Some("2026-01-01T00:00:00Z"),
        Some("2026-02-01T00:00:00Z"),
        Some("ndjson"),
    );
    assert_eq!(month.check().unwrap().site, None);

    let too_wide = params(
        None,
        Some("2026-01-01T00:00:00Z"),
        Some("2026-02-01T00:00:01Z"),
        None,
    );
    assert_eq!(fields(too_wide.check().unwrap_err())[0].0, "site_id");
    assert_eq!(
        fields(params(None, None, None, None).check().unwrap_err())[0].0,
        "site_id"
    );
    assert_eq!(
        fields(params(Some("0"), None, None, None).check().unwrap_err())[0].0,
        "site_id"
    );
    assert_eq!(
        fields(params(Some("7"), None, None, Some("xml")).check().unwrap_err())[0].0,
        "format"
    );
}
