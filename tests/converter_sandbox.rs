//! The document converter child is sandboxed, not only limited (issue 31):
//! code run by a parser exploit cannot read the daemon's environment or
//! state, write files, reach the network, run programs or trace the daemon.
//! The child confines itself exactly as `extract-document --sandbox` does,
//! then tries each of those; every attempt must fail.

mod common;

use serde_json::Value;

#[test]
fn a_confined_converter_can_reach_nothing() {
    let state = tempfile::tempdir().unwrap();
    let secret_file = state.path().join("queue.sqlite3");
    std::fs::write(&secret_file, "another team's upload").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chroma-syncd"))
        .args(["probe-sandbox", "--parent"])
        .arg(std::process::id().to_string())
        .arg("--readable")
        .arg(&secret_file)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let probe: Value = serde_json::from_slice(&output.stdout).unwrap();
    let support = chroma_syncd::extract::sandbox::Support::probe();
    assert_eq!(probe["confined"]["no_new_privs"], true, "{probe}");
    assert_eq!(
        probe["confined"]["landlock"],
        support.landlock_abi >= 1,
        "{probe}"
    );
    assert_eq!(probe["confined"]["seccomp"], support.seccomp, "{probe}");
    let attempts = probe["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 6, "{probe}");
    // With both parts in place, nothing an exploit tries works.
    if support.landlock_abi >= 1 && support.seccomp {
        for attempt in attempts {
            assert_eq!(attempt[1], false, "a confined child could {}", attempt[0]);
        }
    }
    // The file is readable outside the sandbox: the refusal is the sandbox's.
    assert!(std::fs::read(&secret_file).is_ok());
}
