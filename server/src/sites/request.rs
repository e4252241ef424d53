//! Turning a `POST /v1/sites` body into a [`NewSite`], checking every field.

use serde::Deserialize;

use crate::error::{ApiError, FieldError};
use crate::http::json::{self, Field};
use crate::quantity::{MassUnit, Milligrams};

/// A site to create, validated.
#[derive(Debug, Clone)]
pub struct NewSite {
    /// 1 to 200 characters, not blank.
    pub name: String,
    /// > 0.
    pub emission_limit: Milligrams,
    /// The JSON text of an object (`{}` when none was sent), kept as sent so that no number in it
    /// passes through floating point; PostgreSQL's `jsonb` stores numbers exactly.
    pub metadata: String,
}

#[derive(Deserialize)]
struct RawNewSite<'a> {
    #[serde(borrow)]
    name: Field<'a>,
    #[serde(borrow)]
    emission_limit: Field<'a>,
    #[serde(borrow)]
    metadata: Field<'a>,
}

/// Parses and validates the body; every bad field is reported.
pub fn parse_new_site(body: &[u8]) -> Result<NewSite, ApiError> {
    let raw: RawNewSite<'_> = json::parse(body)?;
    let mut errors = Vec::new();

    let name = match json::present(raw.name) {
        None => Err("is required"),
        Some(raw) => json::string(raw).and_then(|name| {
            let length = name.chars().count();
            if name.trim().is_empty() {
                Err("must not be blank")
            } else if name.chars().any(char::is_control) {
                Err("must not contain control characters")
            } else if crate::text::has_format_characters(&name) {
                Err("must not contain invisible format characters (bidirectional controls, zero-width characters)")
            } else if length > 200 {
                Err("must be at most 200 characters long")
            } else {
                Ok(crate::text::nfc(&name))
            }
        }),
    }
    .map_err(|message| errors.push(FieldError::new("name", message)))
    .ok();

    let emission_limit = match json::present(raw.emission_limit) {
        None => Err("is required".to_string()),
        Some(raw) => Milligrams::parse_json(raw.get(), MassUnit::Kilograms, Milligrams::from_mg(i64::MAX))
            .map_err(|e| e.to_string())
            .and_then(|limit| {
                if limit == Milligrams::ZERO {
                    Err("must be greater than 0".to_string())
                } else {
                    Ok(limit)
                }
            }),
    }
    .map_err(|message| errors.push(FieldError::new("emission_limit", message)))
    .ok();

    let metadata = match json::present(raw.metadata) {
        None => Ok("{}".to_string()),
        Some(raw) if !raw.get().starts_with('{') => Err("must be a JSON object"),
        Some(raw) if raw.get().len() > MAX_METADATA_BYTES => Err("must be at most 16384 bytes of JSON"),
        Some(raw) if depth(raw.get()) > MAX_METADATA_DEPTH => {
            Err("must nest at most 16 objects or arrays deep")
        }
        Some(raw) if has_nul_escape(raw.get()) => Err("must not contain the NUL character (\\u0000)"),
        Some(raw) => Ok(raw.get().to_string()),
    }
    .map_err(|message| errors.push(FieldError::new("metadata", message)))
    .ok();

    match (name, emission_limit, metadata) {
        (Some(name), Some(emission_limit), Some(metadata)) if errors.is_empty() => Ok(NewSite {
            name,
            emission_limit,
            metadata,
        }),
        _ => Err(ApiError::Validation(errors)),
    }
}

/// The most bytes of JSON a site's metadata may take: it is returned with the site in every list,
/// so its size multiplies by the page size.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// How deep a site's metadata may nest objects and arrays.
pub const MAX_METADATA_DEPTH: usize = 16;

/// How deep valid JSON text nests objects and arrays (brackets inside strings do not count).
fn depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Whether valid JSON text holds a `\u0000` escape in a string (PostgreSQL's text and jsonb cannot).
fn has_nul_escape(json: &str) -> bool {
    let mut bytes = json.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'\\' {
            match bytes.next() {
                Some(b'u') => {
                    let code: Vec<u8> = bytes.by_ref().take(4).collect();
                    if code == b"0000" {
                        return true;
                    }
                }
                _ => continue,
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(body: &str) -> Vec<(String, String)> {
        match parse_new_site(body.as_bytes()) {
            Err(ApiError::Validation(details)) => details.into_iter().map(|d| (d.path, d.message)).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_complete_site() {
        let site =
            parse_new_site(br#"{"name":"Well 7","emission_limit":"5000.5","metadata":{"basin":"Permian"}}"#)
                .unwrap();
        assert_eq!(site.name, "Well 7");
        assert_eq!(site.emission_limit.to_string(), "5000.500000");
        assert_eq!(site.metadata, r#"{"basin":"Permian"}"#);
    }

    #[test]
    fn reports_every_bad_field() {
        let found = details(r#"{"name":"","emission_limit":0,"metadata":[1]}"#);
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["name", "emission_limit", "metadata"]);
        assert_eq!(details(r#"{}"#).len(), 2);
        assert_eq!(
            details(&format!(r#"{{"name":"{}","emission_limit":1}}"#, "x".repeat(201)))[0].0,
            "name"
        );
        assert_eq!(
            details(r#"{"name":"a","emission_limit":-1}"#)[0].1,
            "must not be negative"
        );
    }

    #[test]
    fn nul_characters_are_refused_and_escaped_backslashes_are_not_nul() {
        assert_eq!(details(r#"{"name":"a\u0000b","emission_limit":1}"#)[0].0, "name");
        assert_eq!(
            details(r#"{"name":"pad\u202e7","emission_limit":1}"#)[0].0,
            "name"
        );
        let decomposed = parse_new_site(br#"{"name":"Mu\u0308ller","emission_limit":1}"#).unwrap();
        assert_eq!(decomposed.name, "M\u{fc}ller");
        assert_eq!(
            details(r#"{"name":"a","emission_limit":1,"metadata":{"k\u0000":1}}"#)[0].0,
            "metadata"
        );
        let site = parse_new_site(br#"{"name":"a","emission_limit":1,"metadata":{"path":"C:\\u0000"}}"#);
        assert!(site.is_ok());
    }

    #[test]
    fn metadata_is_bounded_in_size_and_depth() {
        let nested = |levels: usize| {
            format!(
                "{}{}",
                "{\"a\":".repeat(levels),
                "1".to_owned() + &"}".repeat(levels)
            )
        };
        let body = |metadata: &str| format!(r#"{{"name":"a","emission_limit":1,"metadata":{metadata}}}"#);
        assert!(parse_new_site(body(&nested(16)).as_bytes()).is_ok());
        assert_eq!(details(&body(&nested(17)))[0].0, "metadata");
        assert_eq!(depth(r#"{"a":"{{{[[[","b":[{}]}"#), 3);
        let large = format!(r#"{{"k":"{}"}}"#, "x".repeat(MAX_METADATA_BYTES));
        assert_eq!(details(&body(&large))[0].0, "metadata");
    }

    #[test]
    fn metadata_numbers_are_kept_as_written() {
        let site =
            parse_new_site(br#"{"name":"a","emission_limit":1,"metadata":{"k":12345678901234567890123}}"#);
        assert_eq!(site.unwrap().metadata, r#"{"k":12345678901234567890123}"#);
    }

    #[test]
    fn json_that_is_not_an_object_is_invalid_and_garbage_is_malformed() {
        assert!(matches!(parse_new_site(b"[1,2]"), Err(ApiError::Validation(_))));
        assert!(matches!(
            parse_new_site(b"{\"name\":"),
            Err(ApiError::Malformed(_))
        ));
    }
}
