//! The API honours Chroma Sync's contract: every status code the seeds list
//! is reachable, every body has the seeds' shape, and `/openapi.json` agrees
//! with the seeds for the invocation endpoints.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-123";
const DOCS_ONLY: &str = "docs-only-token-456";

/// Asserts status and `{error, message}` body.
fn assert_error(response: (u16, Value), status: u16) -> Value {
    assert_eq!(response.0, status, "{}", response.1);
    assert_matches("ErrorResponse", &response.1);
    assert!(!response.1["message"].as_str().unwrap().is_empty());
    response.1
}

fn config_with_tokens() -> String {
    // Slow retries keep a job pending long enough to test 409; the DOCS_ONLY
    // token may only use database "docs".
    format!(
        r#"
workers = 1
[queue]
lease_seconds = 5
heartbeat_seconds = 1
retry_base_seconds = 60.0
retry_max_seconds = 60.0
poll_interval_ms = 100
[[api.tokens]]
sha256 = "{}"
databases = ["docs"]
"#,
        sha256_hex(DOCS_ONLY)
    )
}

#[test]
fn every_error_code_is_reachable_with_the_seed_shapes() {
    let s3 = S3::start();
    // No Chroma listening: jobs fail transiently and wait 60 s to retry (pending).
    let dead_chroma = format!("http://127.0.0.1:{}", free_port());
    let daemon = Daemon::start_with(
        &dead_chroma,
        &config_with_tokens(),
        &[("CHROMA_SYNCD_API_TOKENS", ADMIN)],
    );
    let call = |method: Method, path: &str, body: Option<Value>| {
        daemon.request_with_token(method, path, body, Some(ADMIN))
    };

    // 401: no token, wrong token.
    assert_error(
        daemon.request_with_token(Method::GET, "/api/v1/sources", None, None),
        401,
    );
    assert_error(
        daemon.request_with_token(Method::GET, "/api/v1/sources", None, Some("wrong")),
        401,
    );

    // Sources: 201, then 409 for an identical one.
    let source = s3_source(&s3, "bucket", "coll", Some("in/"));
    let (status, created) = call(Method::POST, "/api/v1/sources", Some(source.clone()));
    assert_eq!(status, 201, "{created}");
    let source_id = created["source_id"].as_str().unwrap().to_string();
    assert_error(
        call(Method::POST, "/api/v1/sources", Some(source.clone())),
        409,
    );

    // 400s for bad sources.
    let mut two_kinds = source.clone();
    two_kinds["github"] = json!({"repository": "a/b"});
    for (body, hint) in [
        (two_kinds, "exactly one"),
        (json!({"database_name": "testdb"}), "exactly one"),
        (json!({"s3": source["s3"].clone()}), "database_name"),
        (
            json!({"database_name": "x", "s3": source["s3"].clone()}),
            "database_name",
        ),
        (
            {
                let mut s = source.clone();
                s["s3"]["aws_credential_id"] = json!(7);
                s
            },
            "aws_credential_id 7",
        ),
        (
            {
                let mut s = source.clone();
                s["embedding_model"] = json!({"model": "Qwen/Qwen3-Embedding-0.6B"});
                s
            },
            "not defined",
        ),
        (
            json!({"database_name": "testdb", "web_scrape": {"starting_url": "file:///etc/passwd"}}),
            "http(s)",
        ),
        (
            json!({"database_name": "testdb", "github": {"repository": "not-a-repo"}}),
            "owner/name",
        ),
    ] {
        let error = assert_error(call(Method::POST, "/api/v1/sources", Some(body)), 400);
        assert!(error["message"].as_str().unwrap().contains(hint), "{error}");
    }
    // Not JSON at all.
    let response = http()
        .post(format!("{}/api/v1/sources", daemon.url()))
        .header("x-chroma-token", ADMIN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_matches("ErrorResponse", &response.json().unwrap());

    // Invocations: 400 for each rule of seed 002.
    let invocations = format!("/api/v1/sources/{source_id}/invocations");
    for (body, hint) in [
        (json!({}), "object_key is required"),
        (json!({"object_key": "out/a.md"}), "path_prefix"),
        (
            json!({"object_key": "in/a.md", "ref_identifier": {"branch": "main"}}),
            "ref_identifier",
        ),
        (
            json!({"object_key": "in/a.md", "custom_id": "x".repeat(121)}),
            "custom_id",
        ),
        (
            json!({"object_key": "in/a.md", "metadata": {"chroma_x": 1}}),
            "reserved",
        ),
        (
            json!({"object_key": "in/a.md", "metadata": {"nested": {"a": 1}}}),
            "string, number, boolean or a non-empty array",
        ),
        (
            json!({"object_key": "in/a.md", "target_collection_name": "a"}),
            "target_collection_name",
        ),
        (json!({"object_key": 5}), "invalid request body"),
    ] {
        let error = assert_error(call(Method::POST, &invocations, Some(body)), 400);
        assert!(
            error["message"].as_str().unwrap().contains(hint),
            "{hint}: {error}"
        );
    }

    // 201 and the seed's CreateJobResponse.
    let (status, created) = call(
        Method::POST,
        &invocations,
        Some(json!({"object_key": "in/a.md"})),
    );
    assert_eq!(status, 201, "{created}");
    assert_matches("CreateJobResponse", &created);
    let job_id = created["invocation_id"].as_str().unwrap().to_string();

    // 409: the same invocation while the first is pending or processing.
    let error = assert_error(
        call(
            Method::POST,
            &invocations,
            Some(json!({"object_key": "in/a.md"})),
        ),
        409,
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("already pending or processing")
    );
    // Duplicates are found whatever the key order of the metadata.
    let (status, _) = call(
        Method::POST,
        &invocations,
        Some(json!({"object_key": "in/m.md", "metadata": {"x": 1, "y": 2}})),
    );
    assert_eq!(status, 201);
    let reordered: Value =
        serde_json::from_str(r#"{"metadata": {"y": 2, "x": 1}, "object_key": "in/m.md"}"#).unwrap();
    assert_error(call(Method::POST, &invocations, Some(reordered)), 409);
    // A different key is not a duplicate.
    let (status, other) = call(
        Method::POST,
        &invocations,
        Some(json!({"object_key": "in/b.md"})),
    );
    assert_eq!(status, 201, "{other}");

    // GET: the seed's Job, in whichever state it is.
    let (status, job) = call(Method::GET, &format!("/api/v1/invocations/{job_id}"), None);
    assert_eq!(status, 200);
    assert_matches("Job", &job);
    assert_eq!(job["source_id"], source_id.as_str());

    // 404s.
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_error(
        call(Method::GET, &format!("/api/v1/invocations/{unknown}"), None),
        404,
    );
    assert_error(
        call(Method::PUT, &format!("/api/v1/invocations/{unknown}"), None),
        404,
    );
    assert_error(
        call(
            Method::POST,
            &format!("/api/v1/sources/{unknown}/invocations"),
            Some(json!({"object_key": "in/a"})),
        ),
        404,
    );
    assert_error(
        call(Method::GET, &format!("/api/v1/sources/{unknown}"), None),
        404,
    );
    assert_error(
        call(Method::DELETE, &format!("/api/v1/sources/{unknown}"), None),
        404,
    );
    // 400 for a malformed id and for exclusive filters.
    assert_error(
        call(Method::GET, "/api/v1/invocations/not-a-uuid", None),
        400,
    );
    assert_error(
        call(
            Method::GET,
            &format!("/api/v1/invocations?source_id={source_id}&database_name=testdb"),
            None,
        ),
        400,
    );
    assert_error(
        call(Method::GET, "/api/v1/invocations?status=weird", None),
        400,
    );

    // 403: a token limited to database "docs" cannot see or touch "testdb".
    let limited = |method: Method, path: &str, body: Option<Value>| {
        daemon.request_with_token(method, path, body, Some(DOCS_ONLY))
    };
    assert_error(
        limited(Method::GET, &format!("/api/v1/invocations/{job_id}"), None),
        403,
    );
    assert_error(
        limited(Method::PUT, &format!("/api/v1/invocations/{job_id}"), None),
        403,
    );
    assert_error(
        limited(Method::GET, &format!("/api/v1/sources/{source_id}"), None),
        403,
    );
    assert_error(
        limited(Method::POST, "/api/v1/sources", Some(source.clone())),
        403,
    );
    let mut docs_source = source.clone();
    docs_source["database_name"] = json!("docs");
    let (status, _) = limited(Method::POST, "/api/v1/sources", Some(docs_source));
    assert_eq!(status, 201, "the limited token may use its own database");
    let (status, visible) = limited(Method::GET, "/api/v1/sources", None);
    assert_eq!(status, 200);
    assert!(
        visible
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["database_name"] == "docs")
    );

    // Cancel: 202 `{}` for a pending job, then 412 because it is cancelled.
    let (status, body) = call(Method::PUT, &format!("/api/v1/invocations/{job_id}"), None);
    assert_eq!(status, 202, "{body}");
    assert_matches("CancelJobResponse", &body);
    let job = daemon.wait_finished(&job_id, std::time::Duration::from_secs(30));
    assert_eq!(job["status"], "cancelled");
    assert_matches("Job", &job);
    let error = assert_error(
        call(Method::PUT, &format!("/api/v1/invocations/{job_id}"), None),
        412,
    );
    assert!(error["message"].as_str().unwrap().contains("cancelled"));

    // With the first one cancelled, the same invocation is accepted again.
    let (status, _) = call(
        Method::POST,
        &invocations,
        Some(json!({"object_key": "in/a.md"})),
    );
    assert_eq!(status, 201);

    // Lists validate as arrays of Job.
    let (status, jobs) = call(
        Method::GET,
        &format!("/api/v1/invocations?source_id={source_id}&order_by=ASC"),
        None,
    );
    assert_eq!(status, 200);
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 4);
    assert_eq!(jobs[0]["id"], job_id.as_str(), "ASC lists oldest first");
    for job in jobs {
        assert_matches("Job", job);
    }
    let (status, cancelled) = call(Method::GET, "/api/v1/invocations?status=cancelled", None);
    assert_eq!(status, 200);
    assert_eq!(cancelled.as_array().unwrap().len(), 1);

    // Health: Chroma is unreachable, so 503 naming it.
    let (status, health) = daemon.request(Method::GET, "/health", None);
    assert_eq!(status, 503);
    assert!(
        health["chroma"]
            .as_str()
            .unwrap()
            .starts_with("unavailable")
    );
    assert_eq!(health["queue"], "ok");

    // Deleting the source: 204, then 404.
    assert_eq!(
        call(
            Method::DELETE,
            &format!("/api/v1/sources/{source_id}"),
            None
        )
        .0,
        204
    );
    assert_error(
        call(Method::GET, &format!("/api/v1/sources/{source_id}"), None),
        404,
    );
}

#[test]
fn openapi_document_agrees_with_the_seeds() {
    let chroma = Chroma::start();
    let daemon = Daemon::start(&chroma.url());
    let (status, spec) = daemon.request(Method::GET, "/openapi.json", None);
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let expectations = [
        (
            "/api/v1/sources/{source_id}/invocations",
            "post",
            "create_job",
            vec!["201", "400", "401", "403", "404", "409", "500"],
        ),
        (
            "/api/v1/invocations/{invocation_id}",
            "get",
            "get_job",
            vec!["200", "400", "401", "403", "404", "500"],
        ),
        (
            "/api/v1/invocations/{invocation_id}",
            "put",
            "cancel_pending_job",
            vec!["202", "400", "401", "403", "404", "412", "500"],
        ),
    ];
    for (path, method, operation_id, codes) in expectations {
        let operation = &spec["paths"][path][method];
        assert_eq!(operation["operationId"], operation_id, "{path} {method}");
        let mut listed: Vec<&str> = operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        listed.sort();
        // Every status the seed lists; anything more is a documented extension.
        for code in &codes {
            assert!(listed.contains(code), "{path} {method} lacks {code}");
        }
        for extra in listed.iter().filter(|code| !codes.contains(code)) {
            let description = operation["responses"][*extra]["description"]
                .as_str()
                .unwrap_or_default();
            assert!(
                description.starts_with("Extension"),
                "{path} {method}: {extra} is not in the seed"
            );
        }
        assert!(operation["security"][0].get("x-chroma-token").is_some());
    }
    for path in [
        "/api/v1/sources",
        "/api/v1/sources/{source_id}",
        "/api/v1/invocations",
        "/health",
        "/api/v1/sources/{source_id}/invocations/latest-by-keys",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} documented");
    }
    let schemas = &spec["components"]["schemas"];
    for name in [
        "Job",
        "JobStatus",
        "CreateJobPayload",
        "CreateJobResponse",
        "ErrorResponse",
        "IndexJobMetadata",
    ] {
        assert!(schemas.get(name).is_some(), "schema {name}");
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["x-chroma-token"]["name"],
        "x-chroma-token"
    );

    // Healthy when Chroma and the queue answer.
    let (status, health) = daemon.request(Method::GET, "/health", None);
    assert_eq!(status, 200, "{health}");

    // Without tokens the API serves loopback clients.
    let (status, _) = daemon.request(Method::GET, "/api/v1/sources", None);
    assert_eq!(status, 200);
}
