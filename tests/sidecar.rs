//! User story: an operator runs chroma-syncd as a container beside Chroma
//! with `deploy/compose.yaml`. No container runtime here, so the test runs
//! the binary the way the compose file configures it — its `environment`,
//! the image's config file, its health probe — with the service name
//! `chroma` replaced by the test's Chroma server.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

/// `KEY: "value"` pairs of the `chroma-syncd` service's `environment` block.
fn compose_environment() -> Vec<(String, String)> {
    let compose = std::fs::read_to_string("deploy/compose.yaml").unwrap();
    let service = compose
        .split("\n  chroma-syncd:\n")
        .nth(1)
        .expect("a chroma-syncd service");
    let block = service
        .split("\n    environment:\n")
        .nth(1)
        .expect("an environment block");
    block
        .lines()
        .take_while(|line| line.starts_with("      "))
        .map(|line| {
            let (key, value) = line.trim().split_once(':').unwrap();
            (key.to_string(), value.trim().trim_matches('"').to_string())
        })
        .collect()
}

fn probe(port: u16) -> bool {
    std::process::Command::new(env!("CARGO_BIN_EXE_chroma-syncd"))
        .args(["probe", "--url", &format!("http://127.0.0.1:{port}/readyz")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn the_compose_sidecar_serves_reports_readiness_and_stops_cleanly() {
    let mut chroma = Chroma::start();
    let environment = compose_environment();
    assert!(environment.iter().any(|(k, _)| k == "CHROMA_URL"));
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = binary(&chroma.url(), state.path());
    for (key, value) in &environment {
        let value = value
            .replace("http://chroma:8000", &chroma.url())
            .replace("0.0.0.0:8420", &format!("0.0.0.0:{port}"));
        command.env(key, value);
    }
    let mut daemon = Guard(Some(
        command
            .args(["serve", "--config", "config/chroma-syncd.toml"])
            .stdout(log_file(state.path(), "daemon.log"))
            .stderr(log_file(state.path(), "daemon.log"))
            .spawn()
            .unwrap(),
    ));
    wait_until("the sidecar to be ready", Duration::from_secs(60), || {
        probe(port).then_some(())
    });

    // Readiness follows Chroma: the orchestrator stops routing to it.
    chroma.stop();
    wait_until(
        "readiness to drop with Chroma",
        Duration::from_secs(60),
        || (!probe(port)).then_some(()),
    );
    chroma.restart();
    wait_until("readiness to come back", Duration::from_secs(60), || {
        probe(port).then_some(())
    });

    // `docker stop` sends SIGTERM: exit 0 within the grace period.
    let child = daemon.0.as_mut().unwrap();
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_until("the sidecar to exit", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    daemon.0 = None;
    assert!(
        status.success(),
        "{status:?}: {}",
        std::fs::read_to_string(state.path().join("daemon.log")).unwrap_or_default()
    );
}
