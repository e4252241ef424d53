use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::*;
use crate::error::ErrorCode;
use crate::http::typescript::declared_types;
use crate::state::Settings;

fn built() -> (Value, AccessTable) {
    let (_, table) = crate::http::routes(&Settings::default()).into_parts();
    (document(&table), table)
}

/// The router's routes, as the document writes them: `(METHOD, /path/{param})`.
fn routed(table: &AccessTable) -> BTreeSet<(String, String)> {
    table
        .declared()
        .iter()
        .map(|declared| (declared.method.to_string(), declared.path.replace("{*", "{")))
        .collect()
}

#[test]
fn every_route_is_in_the_document_and_nothing_else() {
    let (mut document, table) = built();
    let documented: BTreeSet<_> = operation_keys(&mut document).into_iter().collect();
    let routed = routed(&table);
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented operations no route serves: {unrouted:?}"
    );
    assert!(routed.len() > 20, "{routed:?}");
}

#[test]
fn each_operation_is_secured_as_its_route_rule_says() {
    let (document, table) = built();
    for declared in table.declared() {
        let path = declared.path.replace("{*", "{");
        let method = declared.method.as_str().to_ascii_lowercase();
        let operation = &document["paths"][&path][&method];
        let secured = operation.get("security").is_some();
        assert_eq!(secured, declared.rule != Rule::Open, "{method} {path}");
        let responses = operation["responses"].as_object().unwrap();
        for status in ["421", "500", "503"] {
            assert!(responses.contains_key(status), "{method} {path} lacks {status}");
        }
        if declared.rule != Rule::Open {
            for status in ["401", "403", "429"] {
                assert!(responses.contains_key(status), "{method} {path} lacks {status}");
            }
        }
        for (status, response) in responses {
            assert_eq!(
                response["headers"]["X-Request-Id"]["required"],
                status != "421",
                "{method} {path} {status}"
            );
        }
    }
}

/// Every `$ref` in `value`.
fn references(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                match member {
                    Value::String(target) if key == "$ref" => {
                        found.insert(target.clone());
                    }
                    _ => references(member, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_1_with_unique_operation_ids_and_resolving_references() {
    let (mut document, _) = built();
    assert_eq!(document["openapi"], "3.1.0");
    let mut found = BTreeSet::new();
    references(&document, &mut found);
    for reference in found {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{reference} is not a schema reference"));
        assert!(
            document["components"]["schemas"].get(name).is_some(),
            "{reference} does not resolve"
        );
    }
    let ids: Vec<String> = operations(&mut document)
        .map(|(_, _, operation)| operation["operationId"].as_str().unwrap().to_owned())
        .collect();
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    // Every link names an operation that exists.
    for (path, _, operation) in operations(&mut document.clone()) {
        for response in operation["responses"].as_object().unwrap().values() {
            for (name, link) in response
                .get("links")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let target = link["operationId"].as_str().unwrap();
                assert!(
                    ids.iter().any(|id| id == target),
                    "{path}: link {name} to {target}"
                );
            }
        }
    }
}

#[test]
fn the_document_enumerates_every_error_code() {
    let (document, _) = built();
    let documented: BTreeSet<&str> = document["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();
    let codes: BTreeSet<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(documented, codes);
    for code in ErrorCode::ALL {
        assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
    }
}

/// The JSON types a schema allows (`integer` counted as `number`, as TypeScript has it).
fn json_kinds(document: &Value, schema: &Value) -> BTreeSet<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return json_kinds(document, &document["components"]["schemas"][name]);
    }
    for alternatives in ["oneOf", "anyOf", "allOf"] {
        if let Some(alternatives) = schema[alternatives].as_array() {
            return alternatives
                .iter()
                .flat_map(|s| json_kinds(document, s))
                .collect();
        }
    }
    let kinds: Vec<&str> = match &schema["type"] {
        Value::String(kind) => vec![kind.as_str()],
        Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
        _ if schema.get("enum").is_some() => vec!["string"],
        _ => vec![],
    };
    kinds
        .into_iter()
        .map(|kind| if kind == "integer" { "number" } else { kind }.to_owned())
        .collect()
}

/// The JSON types a TypeScript type allows; named types are looked up in the document.
fn typescript_kinds(document: &Value, typescript: &str) -> BTreeSet<String> {
    typescript
        .split(" | ")
        .map(str::trim)
        .flat_map(|part| match part {
            "null" | "string" | "number" | "boolean" => BTreeSet::from([part.to_owned()]),
            _ if part.starts_with('"') => BTreeSet::from(["string".to_owned()]),
            _ if part.starts_with("Array<") => BTreeSet::from(["array".to_owned()]),
            _ if part.starts_with("Record<") => BTreeSet::from(["object".to_owned()]),
            name => json_kinds(document, &document["components"]["schemas"][name]),
        })
        .collect()
}

/// A declaration's fields with their TypeScript types (ts-rs writes one `name: type,` a line).
fn typescript_fields(declaration: &str) -> BTreeMap<String, String> {
    declaration
        .lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(name, _)| !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .map(|(name, kind)| {
            let kind = kind.trim_end_matches(|c: char| matches!(c, ',' | ';' | '}') || c.is_whitespace());
            (name.to_owned(), kind.trim().to_owned())
        })
        .collect()
}

/// The dashboard's TypeScript types and the document's schemas come from the same Rust types;
/// this holds them to each other: the same members, each with the same JSON types (nullability
/// included), and the same string literals for enumerations.
#[test]
fn the_documents_schemas_agree_with_the_dashboards_typescript_types() {
    let (document, _) = built();
    let schemas = &document["components"]["schemas"];
    for (name, declaration) in declared_types() {
        let schema = schemas
            .get(&name)
            .unwrap_or_else(|| panic!("the document has no schema {name}"));
        if let Some(values) = schema.get("enum") {
            let documented: BTreeSet<String> =
                values.as_array().unwrap().iter().map(|v| v.to_string()).collect();
            let literals = declaration
                .split_once(" = ")
                .unwrap()
                .1
                .trim()
                .trim_end_matches(';');
            let declared: BTreeSet<String> = literals.split(" | ").map(str::to_owned).collect();
            assert_eq!(documented, declared, "{name}");
            continue;
        }
        let fields = typescript_fields(&declaration);
        let properties = schema["properties"].as_object().unwrap();
        let documented: BTreeSet<&String> = properties.keys().collect();
        assert_eq!(documented, fields.keys().collect(), "{name}: {declaration}");
        for (field, typescript) in &fields {
            assert_eq!(
                json_kinds(&document, &properties[field]),
                typescript_kinds(&document, typescript),
                "{name}.{field}: the document says {}, TypeScript {typescript}",
                properties[field]
            );
        }
    }
}
