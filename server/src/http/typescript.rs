//! The TypeScript declarations of the API types the dashboard uses, generated from the very Rust
//! types that serialise them (with ts-rs). The dashboard's code is type-checked against the
//! committed file, [`DECLARATIONS_PATH`]; a test fails when that file is stale. Regenerate it with
//! `PLUME_WRITE_TYPES=1 cargo test -p plume --lib typescript`.

use ts_rs::{Config, TS};

use crate::error::{ErrorBody, FieldError};
use crate::ingest::BatchReceipt;
use crate::query::series::SeriesBucket;
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

/// The whole file.
pub fn declarations() -> String {
    // JSON numbers are JavaScript numbers; every integer the API sends fits in one exactly.
    let config = Config::new().with_large_int("number");
    let declarations = [
        ComplianceStatus::decl(&config),
        SiteMetrics::decl(&config),
        Site::decl(&config),
        SeriesBucket::decl(&config),
        BatchReceipt::decl(&config),
        FieldError::decl(&config),
        ErrorBody::decl(&config),
    ];
    let mut file = String::from(HEADER);
    for declaration in declarations {
        file.push_str("\nexport ");
        file.push_str(&declaration);
        file.push('\n');
    }
    file
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

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
