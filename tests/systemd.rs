//! User story: an operator runs the daemon as a `Type=notify` systemd
//! service with a watchdog. A fake `NOTIFY_SOCKET` stands in for systemd and
//! receives what the daemon tells it.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

/// Datagrams received on the fake notify socket until `until` matches one, or the limit.
fn receive_until(socket: &UnixDatagram, limit: Duration, until: &str) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut messages = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..n]).to_string();
            let done = message.lines().any(|line| line == until);
            messages.push(message);
            if done {
                break;
            }
        }
    }
    messages
}

fn has(messages: &[String], line: &str) -> bool {
    messages.iter().any(|m| m.lines().any(|l| l == line))
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_alive_and_stopping() {
    let chroma = Chroma::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let path = path.to_str().unwrap().to_string();
    let mut daemon = Daemon::start_with(
        &chroma.url(),
        TEST_CONFIG,
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "1000000")],
    );

    let startup = receive_until(&socket, Duration::from_secs(60), "READY=1");
    assert!(has(&startup, "READY=1"), "{startup:?}");
    assert!(has(&startup, "STATUS=serving"), "{startup:?}");
    // A 1 s watchdog is pinged about every half second.
    let alive = receive_until(&socket, Duration::from_secs(10), "WATCHDOG=1");
    assert!(has(&alive, "WATCHDOG=1"), "{alive:?}");

    let status = daemon.terminate();
    let stopping = receive_until(&socket, Duration::from_secs(5), "STOPPING=1");
    assert!(has(&stopping, "STOPPING=1"), "{stopping:?}");
    assert!(status.success(), "SIGTERM ends in exit 0: {status:?}");
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    // The unit names the installed path; verify a copy pointing at this build.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string("systemd/chroma-syncd.service")
        .unwrap()
        .replace(
            "/usr/local/bin/chroma-syncd",
            env!("CARGO_BIN_EXE_chroma-syncd"),
        );
    let path = dir.path().join("chroma-syncd.service");
    std::fs::write(&path, unit).unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/run installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Warnings are printed but do not fail the command: allow none about our unit.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("chroma-syncd.service"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}

#[test]
fn the_environment_file_example_names_only_variables_the_daemon_reads() {
    let example = std::fs::read_to_string("systemd/chroma-syncd.env.example").unwrap();
    let unit = std::fs::read_to_string("systemd/chroma-syncd.service").unwrap();
    assert!(unit.contains("EnvironmentFile=-/etc/chroma-syncd/env"));
    // The daemon's own variables, and each source kind's (read by its
    // section of the config, `<kind>/section.rs`).
    let mut config = std::fs::read_to_string("src/config.rs").unwrap();
    for entry in std::fs::read_dir("src/sources").unwrap().flatten() {
        if let Ok(section) = std::fs::read_to_string(entry.path().join("section.rs")) {
            config.push_str(&section);
        }
    }
    let names: Vec<&str> = example
        .lines()
        .map(|line| line.trim_start_matches('#'))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        // AWS_* go to the AWS SDK's own credential chain.
        assert!(
            name.starts_with("AWS_") || config.contains(&format!("\"{name}\"")),
            "{name} is not read by the daemon"
        );
    }
}
