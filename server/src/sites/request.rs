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
    /// A JSON object (`{}` when none was sent).
    pub metadata: serde_json::Value,
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
            } else if length > 200 {
                Err("must be at most 200 characters long")
            } else {
                Ok(name)
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
        None => Ok(serde_json::Value::Object(Default::default())),
        Some(raw) => match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(value @ serde_json::Value::Object(_)) => Ok(value),
            _ => Err("must be a JSON object"),
        },
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
        assert_eq!(site.metadata["basin"], "Permian");
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
    fn json_that_is_not_an_object_is_invalid_and_garbage_is_malformed() {
        assert!(matches!(parse_new_site(b"[1,2]"), Err(ApiError::Validation(_))));
        assert!(matches!(
            parse_new_site(b"{\"name\":"),
            Err(ApiError::Malformed(_))
        ));
    }
}
