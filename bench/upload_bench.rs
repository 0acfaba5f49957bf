//! What an upload costs the daemon: a `BENCH_UPLOAD_MIB` MiB file (default
//! 150) is sent to `POST /api/v1/add-file` by the CLI (`chroma-syncd upload`,
//! which streams it), and stored in the state directory. Reports the upload
//! rate against a peer in the same run — copying the same file on the same
//! disk with `cp` — and the daemon's peak resident memory before and after,
//! which must not grow with the file (it is streamed to disk piece by piece).
//! The file is random bytes named `.bin`, so its job skips it as binary
//! without embedding: the number measured is the upload path alone.
//!
//! Run: `cargo test --release --test upload_bench -- --ignored --nocapture`

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::time::Instant;

use common::*;

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn an_upload_streams_to_disk_at_the_disks_pace_without_growing_memory() {
    let mib: usize = std::env::var("BENCH_UPLOAD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let chroma = Chroma::start();
    let daemon = Daemon::start_with(
        &chroma.url(),
        &format!(
            "{TEST_CONFIG}\n[uploads]\nmax_file_bytes = {}\n",
            (mib + 1) << 20
        ),
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob.bin");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for byte in block.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            out.write_all(&block).unwrap();
        }
    }
    // Peer: the same bytes copied on the same disk.
    let started = Instant::now();
    let status = std::process::Command::new("cp")
        .arg(&file)
        .arg(dir.path().join("copy.bin"))
        .status()
        .unwrap();
    assert!(status.success());
    std::process::Command::new("sync").status().unwrap();
    let copy_seconds = started.elapsed().as_secs_f64();

    let rss_before = daemon.peak_rss_kib().unwrap();
    let started = Instant::now();
    let output = binary(&chroma.url(), daemon.state.path())
        .env("CHROMA_SYNCD_API_URL", daemon.url())
        .args(["upload", file.to_str().unwrap()])
        .args(["--database", "testdb", "--collection", "blobs", "--wait"])
        .output()
        .unwrap();
    let upload_seconds = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(job["stats"]["skipped"], 1, "{job}");
    let rss_after = daemon.peak_rss_kib().unwrap();

    let rate = |seconds: f64| mib as f64 / seconds;
    println!(
        "upload of {mib} MiB (stored, job run, file removed): {upload_seconds:.2} s = {:.0} MiB/s; \
         cp of the same file + sync: {copy_seconds:.2} s = {:.0} MiB/s; ratio {:.2}",
        rate(upload_seconds),
        rate(copy_seconds),
        copy_seconds / upload_seconds
    );
    println!(
        "daemon peak RSS: {:.0} MiB before, {:.0} MiB after (+{:.0} MiB for a {mib} MiB file)",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0
    );
    assert!(
        ((rss_after.saturating_sub(rss_before)) >> 10) < (mib as u64) / 2,
        "memory grew with the file"
    );
}
