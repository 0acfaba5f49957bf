//! Credentials in the daemon's config can be bound to databases: a team's
//! token cannot create sources that use another team's AWS keys, GitHub App
//! or GitHub token (403), and a job re-checks the binding when it runs.

mod common;

use std::time::Duration;

use common::{Chroma, Daemon, S3, s3_source, sha256_hex};
use reqwest::Method;
use serde_json::{Value, json};

const TEAM_A: &str = "team-a-token";
const TEAM_B: &str = "team-b-token";

/// Two teams, each with a token for its own database; AWS keys 1, a GitHub
/// App and the GitHub token are team A's; AWS keys 2 are anyone's.
fn config(aws_1_databases: &str) -> String {
    format!(
        r#"{}
databases = {aws_1_databases}

[aws_credentials.2]
access_key_id_env = "TEST_S3_KEY_ID"
secret_access_key_env = "TEST_S3_SECRET"

[github]
token_databases = ["team-a"]

[github.apps.7]
private_key_env = "TEST_GITHUB_APP_KEY"
databases = ["team-a"]

[[api.tokens]]
sha256 = "{}"
databases = ["team-a"]

[[api.tokens]]
sha256 = "{}"
databases = ["team-b"]
"#,
        common::TEST_CONFIG,
        sha256_hex(TEAM_A),
        sha256_hex(TEAM_B)
    )
}

fn create(daemon: &Daemon, token: &str, source: Value) -> (u16, Value) {
    daemon.request_with_token(Method::POST, "/api/v1/sources", Some(source), Some(token))
}

fn assert_forbidden(response: (u16, Value), credential: &str, database: &str) {
    let (status, body) = response;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(credential), "{message}");
    assert!(message.contains(database), "{message}");
}

fn s3_for(s3: &S3, database: &str, credential: i64, collection: &str) -> Value {
    let mut source = s3_source(s3, "team-docs", collection, None);
    source["database_name"] = json!(database);
    source["s3"]["aws_credential_id"] = json!(credential);
    source
}

fn github_for(database: &str, app_id: Option<&str>) -> Value {
    let mut source = json!({
        "database_name": database,
        "github": {"repository": "acme/handbook"},
    });
    if let Some(app_id) = app_id {
        source["github"]["app_id"] = json!(app_id);
    }
    source
}

#[test]
fn a_database_cannot_use_credentials_bound_to_another() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("team-docs");
    s3.put(
        "team-docs",
        "onboarding.md",
        "# Onboarding\n\nTeam A's private onboarding notes.\n",
        None,
    );
    let mut daemon = Daemon::start_with(
        &chroma.url(),
        &config(r#"["team-a"]"#),
        &[
            ("CHROMA_SYNCD_GITHUB_TOKEN", "ghp_team_a_token_never_shown"),
            ("TEST_GITHUB_APP_KEY", "not a real key"),
        ],
    );

    // Team B names team A's AWS keys, app and token: refused, nothing stored.
    assert_forbidden(
        create(&daemon, TEAM_B, s3_for(&s3, "team-b", 1, "b-docs")),
        "aws_credential_id 1",
        "team-b",
    );
    assert_forbidden(
        create(&daemon, TEAM_B, github_for("team-b", Some("7"))),
        "GitHub App 7",
        "team-b",
    );
    assert_forbidden(
        create(&daemon, TEAM_B, github_for("team-b", None)),
        "GitHub token",
        "team-b",
    );
    let (status, list) =
        daemon.request_with_token(Method::GET, "/api/v1/sources", None, Some(TEAM_B));
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");

    // Unbound keys are anyone's; team A uses its own.
    let (status, body) = create(&daemon, TEAM_B, s3_for(&s3, "team-b", 2, "b-docs"));
    assert_eq!(status, 201, "{body}");
    let (status, body) = create(&daemon, TEAM_A, s3_for(&s3, "team-a", 1, "a-docs"));
    assert_eq!(status, 201, "{body}");
    let source = body["source_id"].as_str().unwrap().to_string();
    let (status, body) = create(&daemon, TEAM_A, github_for("team-a", Some("7")));
    assert_eq!(status, 201, "{body}");

    daemon.token = Some(TEAM_A.to_string());
    let job = daemon.invoke(&source, json!({"object_key": "onboarding.md"}));
    daemon.wait_complete(&job);
    assert!(
        !chroma
            .records("team-a", "a-docs")
            .of_key("onboarding.md")
            .is_empty()
    );

    // The operator moves keys 1 to team B: team A's existing source can no
    // longer use them, and its next job fails saying why.
    std::fs::write(&daemon.config_path, config(r#"["team-b"]"#)).unwrap();
    daemon.terminate();
    daemon.restart();
    let job = daemon.invoke(&source, json!({"object_key": "onboarding.md"}));
    let (_, error) = daemon.wait_failed(&job, Duration::from_secs(60));
    assert!(error.contains("aws_credential_id 1"), "{error}");
    assert!(error.contains("team-a"), "{error}");
    assert!(!daemon.log().contains("ghp_team_a_token_never_shown"));
}

/// Issue 31: filesystem roots are bound to databases like credentials. A
/// source rooted under a directory bound to another team's database is a
/// 403 at creation, and a job re-checks the binding when it runs.
#[test]
fn filesystem_roots_are_bound_to_databases() {
    let chroma = Chroma::start();
    let team_a_dir = tempfile::tempdir().unwrap();
    let shared_dir = tempfile::tempdir().unwrap();
    std::fs::write(team_a_dir.path().join("salaries.md"), "# Pay\n\nBands.\n").unwrap();
    std::fs::write(shared_dir.path().join("faq.md"), "# FAQ\n\nAnswers.\n").unwrap();
    let tokens = format!(
        "[[api.tokens]]\nsha256 = \"{}\"\ndatabases = [\"team-a\"]\n\n\
         [[api.tokens]]\nsha256 = \"{}\"\ndatabases = [\"team-b\"]\n",
        sha256_hex(TEAM_A),
        sha256_hex(TEAM_B)
    );
    let roots = |team_a_databases: &str| {
        format!(
            "{}\n[filesystem]\nallowed_roots = [\n  {{ path = \"{}\", databases = {team_a_databases} }},\n  \"{}\",\n]\n{tokens}",
            common::TEST_CONFIG,
            team_a_dir.path().display(),
            shared_dir.path().display(),
        )
    };
    let mut daemon = Daemon::start_with(&chroma.url(), &roots(r#"["team-a"]"#), &[]);
    let folder = |database: &str, root: &std::path::Path| {
        json!({"database_name": database,
               "filesystem": {"root": root.to_str().unwrap(), "collection_name": "docs"}})
    };
    // Team B cannot root a source in team A's directory…
    let (status, body) = daemon.request_with_token(
        Method::POST,
        "/api/v1/sources",
        Some(folder("team-b", team_a_dir.path())),
        Some(TEAM_B),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("team-b"),
        "{body}"
    );
    // …but may use the directory every database may, and team A its own.
    let (status, body) = daemon.request_with_token(
        Method::POST,
        "/api/v1/sources",
        Some(folder("team-b", shared_dir.path())),
        Some(TEAM_B),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = daemon.request_with_token(
        Method::POST,
        "/api/v1/sources",
        Some(folder("team-a", team_a_dir.path())),
        Some(TEAM_A),
    );
    assert_eq!(status, 201, "{body}");
    let team_a_source = body["source_id"].as_str().unwrap().to_string();

    // The operator re-binds the directory to another database: team A's
    // existing source is re-checked when its job runs, and fails.
    std::fs::write(&daemon.config_path, roots(r#"["team-c"]"#)).unwrap();
    daemon.terminate();
    daemon.restart();
    let (status, job) = daemon.request_with_token(
        Method::POST,
        &format!("/api/v1/sources/{team_a_source}/invocations"),
        Some(json!({})),
        Some(TEAM_A),
    );
    assert_eq!(status, 201, "{job}");
    daemon.token = Some(TEAM_A.to_string());
    let (_, error) = daemon.wait_failed(
        job["invocation_id"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert!(error.contains("allowed_roots"), "{error}");
    assert!(
        chroma.collection("team-a", "docs").is_none(),
        "nothing was read"
    );
}
