use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    health_readiness_metrics_and_openapi_need_no_token,
    unknown_routes_are_problem_json
);

async fn health_readiness_metrics_and_openapi_need_no_token(app: TestApp) {
    app.get(None, "/healthz").await.assert_status(200);
    let r = app.get(None, "/readyz").await;
    assert_eq!(r.assert_status(200)["status"], "ready");

    let r = app.get(None, "/api/openapi.json").await;
    let doc = r.assert_status(200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/api/v1/auth/login",
        "/api/v1/events",
        "/api/v1/events/{event}/participants",
        "/api/v1/events/{event}/participants/import",
        "/api/v1/events/{event}/participants/{id}/ticket.png",
        "/api/v1/events/{event}/participants/{id}/ticket.pdf",
        "/api/v1/events/{event}/participants/{id}/ticket.pkpass",
        "/api/v1/events/{event}/participants/{id}/wallet/google",
        "/api/v1/events/{event}/tickets.pdf",
        "/api/v1/events/{event}/gates/{gate}/enrollments",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    assert!(doc["components"]["schemas"].get("Problem").is_some());

    // Request ids are set (and propagated when the client sends one).
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "test-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "test-123");
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"));

    let r = app.get(None, "/metrics").await;
    assert!(r.content_type.starts_with("text/plain"));
    let text = String::from_utf8(r.bytes).unwrap();
    assert!(
        text.contains("http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds_bucket"));
}

async fn unknown_routes_are_problem_json(app: TestApp) {
    app.get(Some(&app.admin), "/api/v1/nope")
        .await
        .assert_problem(404, None);
    // A malformed id cannot name anything: 404, not a plain-text 400.
    app.get(Some(&app.admin), "/api/v1/events/not-a-uuid")
        .await
        .assert_problem(404, None);
}
