//! GitHub sync of a real-sized repository: a full sync, the same commit
//! synced again (unchanged re-sync), then a one-file change synced
//! incrementally, against the harness's GitHub emulator and a
//! real Chroma server. Reports wall time per sync, chunks embedded in each,
//! their ratio, and the daemon's peak RSS.
//!
//! Run: `cargo test --release --test github_bench -- --ignored --nocapture`
//! Repository: `BENCH_REPO_DIR` (any directory, committed as is), else the
//! octocrab crate from `~/.cargo/registry/src` (≈800 files).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::github::{GitHubEmulator, GitRepo};
use common::*;
use serde_json::json;

fn bench_source_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BENCH_REPO_DIR") {
        return PathBuf::from(dir);
    }
    let registry = home().join(".cargo/registry/src");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&registry)
        .expect("~/.cargo/registry/src exists")
        .flatten()
        .flat_map(|index| {
            std::fs::read_dir(index.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("octocrab-"))
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .expect("an octocrab crate in the cargo registry")
}

fn file_count(dir: &std::path::Path) -> usize {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn github_full_then_incremental_sync() {
    let repo = GitRepo::new();
    let source_dir = bench_source_dir();
    let status = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", source_dir.display()))
        .arg(repo.path())
        .status()
        .unwrap();
    assert!(status.success());
    repo.commit("import");
    let files = file_count(repo.path());

    let chroma = Chroma::start();
    let github = GitHubEmulator::start();
    github.add_repo("bench/repo", &repo);
    let daemon = Daemon::start_with(
        &chroma.url(),
        "workers = 1\n",
        &[("CHROMA_SYNCD_GITHUB_API_URL", &github.url)],
    );
    let source = daemon.create_source(json!({
        "database_name": "bench",
        "github": {"repository": "bench/repo"}
    }));
    let sync = |what: &str| {
        let started = Instant::now();
        let id = daemon.invoke(
            &source,
            json!({"target_collection_name": "bench-repo", "ref_identifier": {"branch": "main"}}),
        );
        let job = daemon.wait_finished(&id, Duration::from_secs(4 * 3600));
        assert!(job["status"]["complete"].is_object(), "{what}: {job}");
        (started.elapsed(), job)
    };

    let (full_time, full) = sync("full sync");
    let stats = &full["stats"];
    println!(
        "full sync: {files} files in the repository, {} documents, {} skipped, {} chunks \
         embedded, {:.1} s wall, {:.1} chunks/s",
        stats["documents"],
        stats["skipped"],
        stats["chunks_upserted"],
        full_time.as_secs_f64(),
        stats["chunks_upserted"].as_f64().unwrap() / full_time.as_secs_f64()
    );

    // Nothing changed since the full sync: the same commit again.
    let (same_time, same) = sync("unchanged re-sync");
    let stats = &same["stats"];
    assert_eq!(
        stats["chunks_upserted"], 0,
        "an unchanged re-sync embeds nothing: {same}"
    );
    println!(
        "unchanged re-sync: sync_mode {}, {} documents, {} chunks embedded, {:.2} s wall, \
         {:.4} of the full sync's time",
        stats["sync_mode"],
        stats["documents"],
        stats["chunks_upserted"],
        same_time.as_secs_f64(),
        same_time.as_secs_f64() / full_time.as_secs_f64()
    );

    let lib = repo.path().join("src/lib.rs");
    let mut text = std::fs::read_to_string(&lib).unwrap();
    text.push_str("\n/// Added by the benchmark.\npub fn bench_marker() -> u32 {\n    42\n}\n");
    std::fs::write(&lib, text).unwrap();
    repo.commit("one-file change");
    let (inc_time, inc) = sync("incremental sync");
    let stats = &inc["stats"];
    assert_eq!(stats["sync_mode"], "incremental");
    println!(
        "incremental sync: {} documents, {} chunks embedded, {} chunks re-stamped, {:.1} s wall",
        stats["documents"],
        stats["chunks_upserted"],
        stats["chunks_restamped"],
        inc_time.as_secs_f64()
    );
    println!(
        "ratio: incremental takes {:.4} of the full sync's time ({:.0}x faster)",
        inc_time.as_secs_f64() / full_time.as_secs_f64(),
        full_time.as_secs_f64() / inc_time.as_secs_f64()
    );
    println!(
        "daemon peak RSS: {} MiB",
        daemon.peak_rss_kib().unwrap_or(0) / 1024
    );
}
