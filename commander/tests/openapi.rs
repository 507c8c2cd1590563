//! The checked-in OpenAPI document (`commander/openapi.json`) is what
//! integrators generate clients from: it must be a structurally valid
//! OpenAPI 3 document and list exactly the routes the commander serves
//! (the table the router is built from). A user would notice drift as a
//! generated client calling a route that does not exist, or not knowing
//! one that does. `tests/commander.rs` checks the same list against
//! the running server over HTTP.

use meridian_commander::routes::{OPENAPI_JSON, ROUTES};
use serde_json::Value;
use std::collections::BTreeSet;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("commander/openapi.json is JSON")
}

#[test]
fn the_document_lists_exactly_the_served_routes() {
    let doc = doc();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        for method in item.as_object().expect("a path item is an object").keys() {
            if METHODS.contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(served.len(), ROUTES.len(), "a route is listed twice");
    assert_eq!(
        documented, served,
        "commander/openapi.json and routes::ROUTES differ: update the document with the router"
    );
}

/// Follows a local `$ref` (`#/components/schemas/X`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

fn check_refs(doc: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref") {
                match reference.as_str() {
                    Some(r) if resolve(doc, r).is_some() => {}
                    _ => problems.push(format!("{at}: $ref {reference} does not resolve")),
                }
            }
            for (k, v) in map {
                check_refs(doc, v, &format!("{at}/{k}"), problems);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_refs(doc, v, &format!("{at}/{i}"), problems);
            }
        }
        _ => {}
    }
}

#[test]
fn the_document_is_structurally_valid_openapi_3() {
    let doc = doc();
    let mut problems = Vec::new();
    let version = doc["openapi"].as_str().unwrap_or("");
    if !version.starts_with("3.") {
        problems.push(format!("openapi: expected a 3.x version, got {version:?}"));
    }
    if doc["info"]["title"].as_str().is_none_or(str::is_empty) {
        problems.push("info.title: missing".into());
    }
    if doc["info"]["version"].as_str() != Some(env!("CARGO_PKG_VERSION")) {
        problems.push(format!(
            "info.version: expected the crate's {}, got {}",
            env!("CARGO_PKG_VERSION"),
            doc["info"]["version"]
        ));
    }
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (name, scheme) in &schemes {
        let kind = scheme["type"].as_str().unwrap_or("");
        if !["apiKey", "http", "oauth2", "openIdConnect"].contains(&kind) {
            problems.push(format!("securitySchemes.{name}.type: {kind:?}"));
        }
    }
    let mut operation_ids = BTreeSet::new();
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    if paths.is_empty() {
        problems.push("paths: empty".into());
    }
    for (path, item) in &paths {
        if !path.starts_with('/') {
            problems.push(format!("paths.{path}: must start with /"));
        }
        for (method, op) in item.as_object().into_iter().flatten() {
            let at = format!("{method} {path}");
            if !METHODS.contains(&method.as_str()) {
                problems.push(format!("{at}: not an HTTP method"));
                continue;
            }
            match op["operationId"].as_str() {
                Some(id) if operation_ids.insert(id.to_string()) => {}
                other => problems.push(format!("{at}: operationId {other:?} missing or repeated")),
            }
            let responses = op["responses"].as_object().cloned().unwrap_or_default();
            if responses.is_empty() {
                problems.push(format!("{at}: no responses"));
            }
            for (code, response) in &responses {
                let code_ok = code == "default"
                    || (code.len() == 3
                        && code.bytes().all(|b| b.is_ascii_digit())
                        && (b'1'..=b'5').contains(&code.as_bytes()[0]));
                if !code_ok {
                    problems.push(format!("{at}: response code {code:?}"));
                }
                if response["description"].as_str().is_none() {
                    problems.push(format!("{at} {code}: a response needs a description"));
                }
            }
            for requirement in op["security"].as_array().into_iter().flatten() {
                for name in requirement.as_object().into_iter().flatten().map(|(k, _)| k) {
                    if !schemes.contains_key(name) {
                        problems.push(format!("{at}: security scheme {name} is not defined"));
                    }
                }
            }
            for parameter in op["parameters"].as_array().into_iter().flatten() {
                let place = parameter["in"].as_str().unwrap_or("");
                if parameter["name"].as_str().is_none()
                    || !["query", "header", "path", "cookie"].contains(&place)
                    || parameter.get("schema").is_none()
                {
                    problems.push(format!("{at}: parameter {parameter} needs name, in and schema"));
                }
            }
        }
    }
    check_refs(&doc, &doc, "#", &mut problems);
    assert!(
        problems.is_empty(),
        "commander/openapi.json:\n{}",
        problems.join("\n")
    );
}
