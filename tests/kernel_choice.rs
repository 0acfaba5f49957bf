//! The embedding kernels a daemon runs are the fastest by measurement on
//! the machine it runs on (issue 29): measured once per CPU, remembered in
//! the state directory, and still forced by `BERT_CPU_ISA` or `[embedding]
//! precision`. A path made slow on purpose (`BERT_CPU_TUNE_SLOW`) loses, so
//! the choice follows the measurement, not the widest-first order.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;

/// `chroma-syncd kernels [extra]` with `env`, no forced path inherited.
fn kernels(state: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Value, Output) {
    let mut command = binary("http://127.0.0.1:9", state);
    command
        .env_remove("BERT_CPU_ISA")
        .arg("kernels")
        .args(extra);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (answer, output)
}

fn field<'a>(answer: &'a Value, name: &str) -> &'a str {
    answer[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {answer}"))
}

/// The paths named in a measurement's figures (`avx2/f32 4.1 ms …, …`).
fn measured_paths(figures: &str) -> Vec<String> {
    figures
        .split(", ")
        .filter_map(|part| part.split('/').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_default_is_measured_once_per_cpu_remembered_and_follows_the_measurement() {
    let state = tempfile::tempdir().unwrap();
    let (first, _) = kernels(state.path(), &[], &[]);
    assert_eq!(field(&first, "decided"), "measured", "{first}");
    let chosen = field(&first, "isa").to_string();
    let paths = measured_paths(field(&first, "figures"));
    assert!(paths.contains(&chosen), "{first}");
    assert!(paths.contains(&"portable".to_string()), "{first}");
    assert!(!field(&first, "cpu").is_empty());
    let remembered = std::fs::read_to_string(state.path().join("kernels.json")).unwrap();
    assert!(remembered.contains(&chosen), "{remembered}");

    // The next start on this CPU reads the choice instead of measuring.
    let (second, output) = kernels(state.path(), &[], &[]);
    assert_eq!(
        field(&second, "decided"),
        "remembered from an earlier measurement"
    );
    assert_eq!(field(&second, "isa"), chosen);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("embedding kernels measured"));

    // The winner made slow on purpose loses: the choice is the measurement's.
    let slowed_state = tempfile::tempdir().unwrap();
    let (slowed, _) = kernels(
        slowed_state.path(),
        &[],
        &[("BERT_CPU_TUNE_SLOW", chosen.as_str())],
    );
    assert_eq!(field(&slowed, "decided"), "measured");
    assert_ne!(field(&slowed, "isa"), chosen, "{slowed}");

    // `--measure` forgets and measures again, here with the slowed path.
    let (again, _) = kernels(
        state.path(),
        &["--measure"],
        &[("BERT_CPU_TUNE_SLOW", chosen.as_str())],
    );
    assert_eq!(field(&again, "decided"), "measured");
    assert_ne!(field(&again, "isa"), chosen, "{again}");
}

#[test]
fn a_forced_path_or_precision_is_not_measured() {
    let state = tempfile::tempdir().unwrap();
    let (forced, _) = kernels(state.path(), &[], &[("BERT_CPU_ISA", "portable")]);
    assert_eq!(field(&forced, "isa"), "portable");
    assert_eq!(field(&forced, "precision"), "f32");
    assert!(field(&forced, "decided").starts_with("forced by BERT_CPU_ISA"));
    assert!(!state.path().join("kernels.json").exists());

    // f32 forced: the bf16 path is not in the race, whatever the CPU has.
    let (f32_only, _) = kernels(
        state.path(),
        &[],
        &[("CHROMA_SYNCD_EMBEDDING_PRECISION", "f32")],
    );
    assert_eq!(field(&f32_only, "precision"), "f32");
    assert_ne!(field(&f32_only, "isa"), "avx512bf16");
    assert!(!field(&f32_only, "figures").contains("bf16"));
}

#[test]
fn the_daemon_logs_its_measured_choice() {
    if std::env::var("BERT_CPU_ISA").is_ok() {
        return; // a forced path is not measured (the test above)
    }
    let daemon = Daemon::start_with("http://127.0.0.1:9", TEST_CONFIG, &[]);
    let log = daemon.log();
    assert!(log.contains("embedding kernels measured"), "{log}");
    assert!(log.contains(r#""decided":"measured""#), "{log}");
    assert!(daemon.state.path().join("kernels.json").exists());
}
