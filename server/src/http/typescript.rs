//! The TypeScript declarations of the API types the dashboard uses, generated from the very Rust
//! types that serialise them (with ts-rs). The dashboard's code is type-checked against the
//! committed file, [`DECLARATIONS_PATH`]; a test fails when that file is stale. Regenerate it with
//! `PLUME_WRITE_TYPES=1 cargo test -p plume --lib typescript`.

use ts_rs::{Config, TS};

use crate::error::{ErrorBody, FieldError};
use crate::http::session::SessionInfo;
use crate::ingest::BatchReceipt;
use crate::query::series::SeriesBucket;
use crate::query::sources::SourceSummary;
use crate::sites::{ComplianceStatus, Site, SiteMetrics};

/// Where the declarations are committed, relative to the workspace root.
pub const DECLARATIONS_PATH: &str = "dashboard/src/api-types.d.ts";

/// The envelope is generic over `data` and written once by hand; everything inside it is generated.
const HEADER: &str = "\
// Generated from plume's Rust types: do not edit. Regenerate with
// `PLUME_WRITE_TYPES=1 cargo test -p plume --lib typescript`.

/** Every success body: `data`, and `meta` with the request id and the endpoint's own members. */
export type Envelope<T, M = {}> = { data: T, meta: { request_id: string } & M, };

/** Every error body. */
export type ErrorEnvelope = { error: ErrorBody, meta: { request_id: string }, };
";

/// Each declared type's name and declaration, in the file's order. The API document has a schema
/// of the same name for each, which must agree with it (`http::openapi`'s tests check).
pub fn declared_types() -> Vec<(String, String)> {
    // JSON numbers are JavaScript numbers; every integer the API sends fits in one exactly.
    let config = Config::new().with_large_int("number");
    vec![
        (ComplianceStatus::name(&config), ComplianceStatus::decl(&config)),
        (SiteMetrics::name(&config), SiteMetrics::decl(&config)),
        (Site::name(&config), Site::decl(&config)),
        (SeriesBucket::name(&config), SeriesBucket::decl(&config)),
        (SourceSummary::name(&config), SourceSummary::decl(&config)),
        (BatchReceipt::name(&config), BatchReceipt::decl(&config)),
        (FieldError::name(&config), FieldError::decl(&config)),
        (ErrorBody::name(&config), ErrorBody::decl(&config)),
        (SessionInfo::name(&config), SessionInfo::decl(&config)),
    ]
}

/// The whole file.
pub fn declarations() -> String {
    let mut file = String::from(HEADER);
    for (_, declaration) in declared_types() {
        file.push_str("\nexport ");
        file.push_str(&declaration);
        file.push('\n');
    }
    file
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde::Serialize;

    use super::*;
    use crate::quantity::Milligrams;
    use crate::sites::SiteRow;

    /// The field names a declaration lists, sorted.
    fn declared(declaration: &str) -> Vec<String> {
        declaration
            .lines()
            .filter_map(|line| line.split_once(": ").map(|(name, _)| name))
            .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The member names serde writes for `value`, sorted (serde_json's map is ordered by key).
    fn serialised(value: &impl Serialize) -> Vec<String> {
        match serde_json::to_value(value).unwrap() {
            serde_json::Value::Object(members) => members.keys().cloned().collect(),
            other => panic!("not an object: {other}"),
        }
    }

    fn row() -> SiteRow {
        SiteRow {
            id: 7,
            name: "Pad".to_owned(),
            emission_limit_mg: 5,
            metadata: "{}".to_owned(),
            total_emissions_mg: 6,
            reading_count: 1,
            first_reading_at: None,
            last_reading_at: Some(chrono::Utc::now()),
            version: 2,
            created_at: chrono::Utc::now(),
        }
    }

    /// ts-rs reads the Rust fields, serde writes the JSON: both must name the same members.
    #[test]
    fn the_declarations_name_exactly_what_serde_writes() {
        let config = Config::new().with_large_int("number");
        let mg = Milligrams::from_mg(1);
        let receipt = BatchReceipt {
            batch_id: "k".to_owned(),
            site_id: 7,
            readings_submitted: 1,
            readings_accepted: 1,
            readings_duplicate: 0,
            accepted_emissions: mg,
            total_emissions_to_date: mg,
            compliance_status: ComplianceStatus::WithinLimit,
            replayed: false,
        };
        let bucket = SeriesBucket {
            start: chrono::Utc::now(),
            sum: mg,
            count: 1,
            min: mg,
            max: mg,
        };
        let source = SourceSummary {
            source_id: "stack-1".to_owned(),
            last_reading_at: Some(chrono::Utc::now()),
            last_value: Some(mg),
        };
        let error = ErrorBody {
            code: "VALIDATION_ERROR".to_owned(),
            message: "m".to_owned(),
            details: vec![FieldError::new("value", "is required")],
        };
        let session = SessionInfo {
            client_id: 1,
            client_name: "admin".to_owned(),
            kind: "admin".to_owned(),
            all_sites: true,
            site_ids: Vec::new(),
            can_write: true,
            can_create_sites: true,
            can_export: true,
        };
        let cases = [
            (serialised(&SiteMetrics::from(row())), SiteMetrics::decl(&config)),
            (serialised(&Site::from(row())), Site::decl(&config)),
            (serialised(&receipt), BatchReceipt::decl(&config)),
            (serialised(&bucket), SeriesBucket::decl(&config)),
            (serialised(&source), SourceSummary::decl(&config)),
            (serialised(&error), ErrorBody::decl(&config)),
            (serialised(&error.details[0]), FieldError::decl(&config)),
            (serialised(&session), SessionInfo::decl(&config)),
        ];
        for (written, declaration) in cases {
            assert_eq!(declared(&declaration), written, "{declaration}");
        }
        let statuses = ComplianceStatus::decl(&config);
        for status in [ComplianceStatus::WithinLimit, ComplianceStatus::LimitExceeded] {
            let written = serde_json::to_string(&status).unwrap();
            assert!(statuses.contains(&written), "{statuses} lacks {written}");
        }
    }

    #[test]
    fn the_committed_typescript_declarations_are_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(DECLARATIONS_PATH);
        let generated = declarations();
        if std::env::var_os("PLUME_WRITE_TYPES").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{DECLARATIONS_PATH} does not match the Rust types; regenerate it with \
             `PLUME_WRITE_TYPES=1 cargo test -p plume --lib typescript`"
        );
    }
}
