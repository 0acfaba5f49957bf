//! `GET /api/v1/source-types`: the daemon describes every source kind it
//! has — the JSON Schema of its settings, the invocation fields it takes —
//! so the dashboard (`src/api/ui/app.js`) can build its forms and filters
//! from the answer and name no kind itself.

mod common;

use std::collections::BTreeSet;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const TOKEN: &str = "source-types-token";
const ALLOWED_ROOTS: &str = "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS";

/// A daemon whose Chroma is not there: nothing here writes to it.
fn daemon(allowed_root: &std::path::Path) -> Daemon {
    let dead_chroma = format!("http://127.0.0.1:{}", free_port());
    Daemon::start_with(
        &dead_chroma,
        TEST_CONFIG,
        &[
            ("CHROMA_SYNCD_API_TOKENS", TOKEN),
            (ALLOWED_ROOTS, allowed_root.to_str().unwrap()),
        ],
    )
}

fn source_types(daemon: &Daemon) -> Vec<Value> {
    let (status, body) = daemon.request(Method::GET, "/api/v1/source-types", None);
    assert_eq!(status, 200, "{body}");
    body["source_types"].as_array().unwrap().clone()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|item| item.as_str().unwrap().to_string())
        .collect()
}

/// Every kind is listed with its settings' schema (no references left to
/// resolve, optional settings with their defaults), the create payload's
/// field for them, and the invocation fields it takes.
#[test]
fn every_kind_is_listed_with_its_schema_and_invocation_fields() {
    let root = tempfile::tempdir().unwrap();
    let daemon = daemon(root.path());
    let (status, _) =
        daemon.request_with_token(Method::GET, "/api/v1/source-types", None, Some("wrong"));
    assert_eq!(status, 401, "authenticated like the rest of the API");

    let types = source_types(&daemon);
    let listed: BTreeSet<String> = types
        .iter()
        .map(|kind| kind["type"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = ["s3", "github", "web_scrape", "filesystem"]
        .map(String::from)
        .into();
    assert_eq!(listed, expected);

    let (_, openapi) = daemon.request(Method::GET, "/openapi.json", None);
    let create_payload = &openapi["components"]["schemas"]["CreateSourcePayload"]["properties"];
    assert!(openapi["paths"]["/api/v1/source-types"]["get"].is_object());
    let mut accepted_by_some = BTreeSet::new();
    for kind in &types {
        let name = kind["type"].as_str().unwrap();
        assert!(!kind["title"].as_str().unwrap().is_empty(), "{kind}");
        assert!(!kind["description"].as_str().unwrap().is_empty(), "{kind}");
        let field = kind["config_field"].as_str().unwrap();
        assert!(create_payload.get(field).is_some(), "{name}: {field}");

        let schema = &kind["schema"];
        assert_eq!(schema["type"], "object", "{name}: {schema}");
        assert!(!schema.to_string().contains("$ref"), "{name}: {schema}");
        let properties = schema["properties"].as_object().unwrap();
        for required in strings(&schema["required"]) {
            let property = &properties[&required];
            assert!(property.is_object(), "{name}: {required}");
        }

        let fields = strings(&kind["invocation_fields"]);
        assert!(fields.contains(&"target_collection_name".to_string()));
        let invocation = kind["invocation_schema"]["properties"].as_object().unwrap();
        assert_eq!(
            invocation.keys().cloned().collect::<BTreeSet<_>>(),
            fields.iter().cloned().collect(),
            "{name}"
        );
        for field in strings(&kind["invocation_schema"]["required"]) {
            assert!(fields.contains(&field), "{name}: {field}");
        }
        for field in kind["job_metadata_fields"].as_object().unwrap().keys() {
            assert!(fields.contains(field), "{name}: {field}");
        }
        accepted_by_some.extend(fields);
    }
    // What each kind's own fields are, as the seeds and extensions define them.
    let by_type = |name: &str| {
        types
            .iter()
            .find(|kind| kind["type"] == name)
            .unwrap()
            .clone()
    };
    let s3 = by_type("s3");
    assert!(strings(&s3["invocation_fields"]).contains(&"object_key".to_string()));
    assert_eq!(s3["invocation_schema"]["required"], json!(["object_key"]));
    assert_eq!(s3["schema"]["properties"]["path_prefix"]["default"], "");
    assert!(
        s3["schema"]["properties"]["auto_sync"]
            .to_string()
            .contains("metadata"),
        "enums are resolved: {}",
        s3["schema"]
    );
    assert_eq!(s3["job_metadata_fields"]["metadata"], "additional_metadata");
    let github = by_type("github");
    assert!(strings(&github["invocation_fields"]).contains(&"ref_identifier".to_string()));
    assert_eq!(
        github["job_metadata_fields"]["ref_identifier"],
        "git_ref_identifier"
    );
    assert!(strings(&by_type("filesystem")["invocation_fields"]).contains(&"path".to_string()));
    let web = by_type("web_scrape");
    assert!(web["schema"]["properties"]["max_depth"]["default"].is_u64());
    // Every field of an invocation body is some kind's.
    let payload = openapi["components"]["schemas"]["CreateJobPayload"]["properties"]
        .as_object()
        .unwrap();
    assert_eq!(
        payload.keys().cloned().collect::<BTreeSet<_>>(),
        accepted_by_some
    );
}

/// A kind's declared invocation fields are the ones it accepts: every other
/// field of an invocation body is refused (400, naming it) for a source of
/// that kind.
#[test]
fn undeclared_invocation_fields_are_refused() {
    let s3 = S3::start();
    let root = tempfile::tempdir().unwrap();
    let daemon = daemon(root.path());
    let samples = json!({
        "object_key": "docs/a.md",
        "custom_id": "doc-1",
        "metadata": {"team": "docs"},
        "ref_identifier": {"branch": "main"},
        "path": "a.md",
        "target_collection_name": "elsewhere",
    });
    let sources = [
        ("s3", s3_source(&s3, "bucket", "docs", None)),
        (
            "github",
            json!({"database_name": "testdb", "github": {"repository": "owner/name"}}),
        ),
        (
            "web_scrape",
            json!({"database_name": "testdb", "web_scrape": {"starting_url": "https://example.com/"}}),
        ),
        (
            "filesystem",
            json!({"database_name": "testdb", "filesystem": {
                "root": root.path().to_str().unwrap(), "collection_name": "docs"}}),
        ),
    ];
    let types = source_types(&daemon);
    for (name, body) in sources {
        let kind = types.iter().find(|kind| kind["type"] == name).unwrap();
        let declared = strings(&kind["invocation_fields"]);
        let source = daemon.create_source(body);
        // Every declared field given (GitHub's ref, so planning asks GitHub
        // nothing), plus one undeclared.
        let mut base = json!({});
        for field in &declared {
            base[field] = samples[field].clone();
        }
        for (field, value) in samples.as_object().unwrap() {
            if declared.contains(field) {
                continue;
            }
            let mut body = base.clone();
            body[field] = value.clone();
            let (status, answer) = daemon.request(
                Method::POST,
                &format!("/api/v1/sources/{source}/invocations"),
                Some(body),
            );
            assert_eq!(status, 400, "{name} took {field}: {answer}");
            assert!(
                answer["message"].as_str().unwrap().contains(field.as_str()),
                "{name}, {field}: {answer}"
            );
        }
    }
}

/// The dashboard learns kinds from the daemon: its script names none of
/// them, and none of the settings only one kind has (no per-kind forms).
#[test]
fn the_dashboard_names_no_source_kind() {
    let root = tempfile::tempdir().unwrap();
    let daemon = daemon(root.path());
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/ui/app.js"),
    )
    .unwrap();
    let words: BTreeSet<&str> = script
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| !word.is_empty())
        .collect();
    let types = source_types(&daemon);
    let mut owners: std::collections::BTreeMap<String, usize> = Default::default();
    for kind in &types {
        for setting in kind["schema"]["properties"].as_object().unwrap().keys() {
            *owners.entry(setting.clone()).or_default() += 1;
        }
    }
    for kind in &types {
        for name in [&kind["type"], &kind["config_field"]] {
            let name = name.as_str().unwrap();
            assert!(!words.contains(name), "app.js names the kind `{name}`");
        }
        for setting in kind["schema"]["properties"].as_object().unwrap().keys() {
            if owners[setting] == 1 {
                assert!(
                    !words.contains(setting.as_str()),
                    "app.js names `{setting}`, a setting of {} sources only",
                    kind["type"]
                );
            }
        }
    }
}
