//! The OpenAPI document the server serves at `/api/openapi.json`, fetched over loopback HTTP from
//! a server on SQLite. These tests check what the generator does not: operationIds are unique,
//! every response has a description. They also write the document to
//! `CARGO_TARGET_TMPDIR/openapi.json`, which `.ci/run` then validates against the OpenAPI 3.1
//! schema with openapi-spec-validator.

// A test's fixture and assertions may panic: a failing expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use server::Settings;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Where the served document is written for the schema validator.
fn document_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("openapi.json")
}

/// Starts a server on SQLite, fetches its document, stops it, and writes the document (as
/// served) to [`document_path`].
async fn served_document() -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = server::build(Settings::for_test(dir.path().to_path_buf(), None))
        .await
        .expect("server::build");
    let url = format!("http://127.0.0.1:{}/api/openapi.json", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let resp = reqwest::get(&url).await.expect("GET /api/openapi.json");
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let bytes = resp.bytes().await.expect("body");
    let _ = stop.send(());
    running.await.expect("server task").expect("server stops");

    // Both tests write the same bytes; a rename makes each write whole.
    let path = document_path();
    let partial = path.with_extension(format!("json.{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&partial, &bytes).expect("write the document");
    std::fs::rename(&partial, &path).expect("rename the document into place");

    let doc: Value = serde_json::from_slice(&bytes).expect("the document is JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "openapi: {}",
        doc["openapi"]
    );
    doc
}

/// Every operation of the document: (`METHOD /path`, the operation object).
fn operations(doc: &Value) -> Vec<(String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths").iter() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((format!("{} {path}", method.to_uppercase()), op));
            }
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_has_a_unique_operation_id() {
    let doc = served_document().await;
    let mut by_id: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut missing = Vec::new();
    for (op_name, op) in operations(&doc) {
        match op["operationId"].as_str() {
            Some(id) if !id.is_empty() => by_id.entry(id).or_default().push(op_name),
            _ => missing.push(op_name),
        }
    }
    let duplicated: Vec<String> = by_id
        .iter()
        .filter(|(_, ops)| ops.len() > 1)
        .map(|(id, ops)| format!("{id}: {}", ops.join(", ")))
        .collect();
    // Fails until the route annotations are fixed: handlers in different modules share a name
    // (list, create, get, update, enroll), and the name is the default operationId.
    assert!(
        missing.is_empty() && duplicated.is_empty(),
        "operations without an operationId: {missing:#?}\noperationIds used more than once: \
         {duplicated:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_has_a_description() {
    let doc = served_document().await;
    let mut problems = Vec::new();
    let described = |response: &Value| {
        // A `$ref` is described where it points (checked below, with the components).
        response.get("$ref").is_some()
            || response["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty())
    };
    for (op_name, op) in operations(&doc) {
        match op["responses"].as_object() {
            Some(responses) if !responses.is_empty() => {
                for (status, response) in responses {
                    if !described(response) {
                        problems.push(format!("{op_name} -> {status}"));
                    }
                }
            }
            _ => problems.push(format!("{op_name}: no responses")),
        }
    }
    if let Some(responses) = doc["components"]["responses"].as_object() {
        for (name, response) in responses {
            if !described(response) {
                problems.push(format!("#/components/responses/{name}"));
            }
        }
    }
    // Fails until the route annotations are fixed: `(status = 200, body = T)` without
    // `description = "…"` yields a Response Object without the description OpenAPI requires.
    assert!(
        problems.is_empty(),
        "responses without a description: {problems:#?}"
    );
}
