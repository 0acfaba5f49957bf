//! Shared caps have a share per token (issue 31): one team's token cannot
//! hold every event stream or every upload slot and lock the other teams
//! out. Below the daemon-wide totals, a token holds at most
//! `[api] max_event_streams_per_token` streams and `[uploads]
//! max_in_flight_per_token` uploads at once.

mod common;

use std::time::Duration;

use common::*;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::Value;

const TEAM_A: &str = "token-team-a";
const TEAM_B: &str = "token-team-b";

fn daemon(chroma: &Chroma) -> Daemon {
    let config = format!(
        "{TEST_CONFIG}\n[api]\nmax_event_streams = 16\nmax_event_streams_per_token = 2\n\
         [uploads]\nmax_in_flight = 4\nmax_in_flight_per_token = 1\n"
    );
    Daemon::start_with(
        &chroma.url(),
        &config,
        &[("CHROMA_SYNCD_API_TOKENS", &format!("{TEAM_A},{TEAM_B}"))],
    )
}

/// Opens `GET /api/v1/events`; the open response (kept to hold the
/// stream) or the refusal's status and body.
fn open_stream(daemon: &Daemon, token: &str) -> Result<reqwest::blocking::Response, (u16, Value)> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/api/v1/events", daemon.url()))
        .header("x-chroma-token", token)
        .send()
        .unwrap();
    match response.status().as_u16() {
        200 => Ok(response),
        status => Err((status, response.json().unwrap_or(Value::Null))),
    }
}

#[test]
fn one_token_cannot_hold_every_event_stream() {
    let chroma = Chroma::start();
    let daemon = daemon(&chroma);
    let _a1 = open_stream(&daemon, TEAM_A).expect("first stream");
    let a2 = open_stream(&daemon, TEAM_A).expect("second stream");
    let (status, body) = open_stream(&daemon, TEAM_A).expect_err("capped");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_event_streams");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_event_streams_per_token"),
        "{body}"
    );
    // Another team is not affected.
    let _b1 = open_stream(&daemon, TEAM_B).expect("another token's stream");
    // A stream closed gives its token's slot back.
    drop(a2);
    wait_until("team A's slot to free", Duration::from_secs(30), || {
        open_stream(&daemon, TEAM_A).ok()
    });
}

fn upload(daemon: &Daemon, token: &str) -> (u16, Value) {
    let form = Form::new()
        .text("database_name", "testdb")
        .text("collection_name", "notes")
        .part("file", Part::bytes(b"hello".to_vec()).file_name("a.txt"));
    let response = http()
        .post(format!("{}/api/v1/add-file", daemon.url()))
        .header("x-chroma-token", token)
        .header("x-upload-content-length", "5")
        .multipart(form)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn one_token_cannot_hold_every_upload_slot() {
    let chroma = Chroma::start();
    let daemon = daemon(&chroma);
    let stalled = stalled_upload(&daemon, Some(TEAM_A));
    // Team A's one slot is taken once its stalled upload is being received.
    let (status, body) = wait_until("team A's upload to start", Duration::from_secs(30), || {
        let (status, body) = upload(&daemon, TEAM_A);
        (status == 429).then_some((status, body))
    });
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_uploads");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_in_flight_per_token"),
        "{body}"
    );
    // Team B uploads while team A's slot is held.
    let (status, body) = upload(&daemon, TEAM_B);
    assert_eq!(status, 201, "{body}");
    drop(stalled);
    wait_until("team A's slot to free", Duration::from_secs(30), || {
        let (status, _) = upload(&daemon, TEAM_A);
        (status == 201).then_some(())
    });
}
