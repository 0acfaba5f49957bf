//! Does the daemon keep an embedding endpoint busy? An OpenAI-compatible
//! test endpoint serves all-MiniLM-L6-v2 vectors (computed in this
//! process). First a tight client loop (our `OpenAiEmbedder`, the same batch
//! size and concurrency as the daemon's model config) embeds every chunk of
//! a corpus: the endpoint's throughput alone. Then the daemon syncs the same
//! corpus (a filesystem source into a real Chroma) through the endpoint:
//! the endpoint's throughput while it does, from its first request to its
//! last. Reports both, in inputs per second, and their ratio.
//!
//! With the real model, the endpoint computes on CPU 0 and Chroma and the
//! daemon run on the other CPUs (the endpoint stands for another machine).
//!
//! Run: `cargo test --release --test endpoint_bench -- --ignored --nocapture`
//! Corpus: `BENCH_DOCS` markdown files (default 300) of a few chunks each,
//! synced by each kind `BENCH_SOURCES` names (default
//! `filesystem,github,web`): a directory, a repository of the GitHub
//! emulator, and pages of the fixture site linked from its start page.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chroma_syncd::embed::MiniLm;
use chroma_syncd::embed::openai::{OpenAiEmbedder, OpenAiSettings};
use common::openai::{EmbeddingServer, Vectors};
use common::*;
use serde_json::json;

const KEY: &str = "bench-key";
const MAX_BATCH: usize = 32;
const MAX_CONCURRENCY: usize = 4;

fn document(i: usize) -> String {
    let mut text = format!("# Service note {i}\n\n");
    for section in 0..4 {
        text.push_str(&format!("## Part {section}\n\n"));
        for sentence in 0..12 {
            text.push_str(&format!(
                "Component {i}-{section} handles request class {sentence} and reports latency \
                 figures to the on-call dashboard when queue depth exceeds {} items. ",
                (i * 7 + section * 3 + sentence) % 500
            ));
        }
        text.push_str("\n\n");
    }
    text
}

/// Requests, inputs, and inputs per second the endpoint served from the
/// arrival of request `from` to its last answer: how busy the run kept it.
fn served_rate(server: &EmbeddingServer, from: usize) -> (usize, usize, f64) {
    let seen = server.seen();
    let requests = &seen[from..];
    let inputs: usize = requests.iter().map(|s| s.inputs.len()).sum();
    let first = requests.first().expect("requests").arrived;
    let last = *server.answered.lock().unwrap().last().expect("answers");
    let window = last.duration_since(first).as_secs_f64();
    (requests.len(), inputs, inputs as f64 / window)
}

/// Restricts the calling thread (and the threads and processes it starts
/// afterwards) to `cpus`.
fn pin_this_thread(cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
    // within it for indices below CPU_SETSIZE; sched_setaffinity(0, …)
    // reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        let result = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(result, 0, "sched_setaffinity");
    }
}

#[test]
#[ignore]
fn endpoint_stays_busy_while_the_daemon_syncs() {
    let docs: usize = std::env::var("BENCH_DOCS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    // The endpoint stands for another machine: with the real model it
    // computes on CPU 0 only, and Chroma and the daemon (started below,
    // after the switch) run on the other CPUs, so neither side's throughput
    // is the other's CPU time.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gpu = std::env::var("BENCH_ENDPOINT").is_ok_and(|e| e == "gpu");
    let partition = !gpu && cpus >= 2;
    if partition {
        pin_this_thread(&[0]);
    }
    // `BENCH_ENDPOINT=gpu`: a remote-GPU-like endpoint (each request takes
    // BENCH_LATENCY_MS, 4 at once, hashed vectors), whose throughput does
    // not depend on the CPUs the daemon and Chroma use. Default: the real
    // model computed in this process, on the same CPUs.
    let server = if gpu {
        let latency: u64 = std::env::var("BENCH_LATENCY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(200);
        EmbeddingServer::start_with(
            KEY,
            Vectors::Hashed,
            Some((Duration::from_millis(latency), MAX_CONCURRENCY)),
        )
    } else {
        let model = MiniLm::load(&model_dir(), MAX_BATCH).expect("model installed");
        EmbeddingServer::start(KEY, Vectors::Model(Box::new(model)))
    };
    if partition {
        // Threads started from here on (Chroma, the daemon) inherit this.
        pin_this_thread(&(1..cpus).collect::<Vec<_>>());
    }
    let kinds: Vec<String> = std::env::var("BENCH_SOURCES")
        .unwrap_or_else(|_| "filesystem,github,web".to_string())
        .split(',')
        .map(str::to_string)
        .collect();
    for kind in kinds {
        sync_and_compare(&server, &kind, docs);
    }
}

/// The corpus written where `kind` reads it, a daemon syncing it through
/// the endpoint, then the tight loop over the same chunks; prints both
/// rates and their ratio.
fn sync_and_compare(server: &EmbeddingServer, kind: &str, docs: usize) {
    let chroma = Chroma::start();
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("corpus");
    std::fs::create_dir_all(&root).unwrap();
    let github = common::github::GitHubEmulator::start();
    let repo = common::github::GitRepo::new();
    let site_dir = tempfile::tempdir().unwrap();
    let mut index = String::from("<html><head><title>Notes</title></head><body><main><ul>");
    for i in 0..docs {
        match kind {
            "filesystem" => {
                std::fs::write(root.join(format!("note-{i:04}.md")), document(i)).unwrap()
            }
            "github" => repo.write(&format!("notes/note-{i:04}.md"), document(i)),
            "web" => {
                let body = document(i)
                    .split("\n\n")
                    .map(|block| match block.strip_prefix("## ") {
                        Some(heading) => format!("<h2>{heading}</h2>"),
                        None => match block.strip_prefix("# ") {
                            Some(title) => format!("<h1>{title}</h1>"),
                            None => format!("<p>{block}</p>"),
                        },
                    })
                    .collect::<String>();
                std::fs::write(
                    site_dir.path().join(format!("note-{i:04}.html")),
                    format!(
                        "<html><head><title>Note {i}</title></head><body><main>{body}</main>\
                         </body></html>"
                    ),
                )
                .unwrap();
                index.push_str(&format!("<li><a href=\"/note-{i:04}.html\">{i}</a></li>"));
            }
            other => panic!("BENCH_SOURCES: unknown kind {other}"),
        }
    }
    index.push_str("</ul></main></body></html>");
    std::fs::write(site_dir.path().join("index.html"), index).unwrap();
    let site = common::web::FixtureSite::serve(site_dir.path());
    if kind == "github" {
        repo.commit("notes");
        github.add_repo("acme/notes", &repo);
    }
    // Chroma writes of the daemon's default size (the test config's 20
    // would cap each embedding call at one request).
    let config = format!(
        "{}\n[embedding.models.\"bench/endpoint\"]\nkind = \"openai\"\n\
         url = \"{}\"\napi_key_env = \"BENCH_KEY\"\nmax_batch = {MAX_BATCH}\n\
         max_concurrency = {MAX_CONCURRENCY}\nmax_input_tokens = 256\n\
         [github]\nmax_blob_fetches = 100000\n\
         [web]\nrequests_per_second = 1000.0\nmax_concurrency_per_host = 4\n",
        TEST_CONFIG.replace("max_batch_size = 20", "max_batch_size = 300"),
        server.url
    );
    let daemon = Daemon::start_with(
        &chroma.url(),
        &config,
        &[
            (
                "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS",
                allowed.path().to_str().unwrap(),
            ),
            ("CHROMA_SYNCD_GITHUB_API_URL", &github.url),
            ("CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS", "true"),
            ("BENCH_KEY", KEY),
        ],
    );
    let model = json!({"model": "bench/endpoint"});
    let (source, invocation) = match kind {
        "filesystem" => (
            json!({"database_name": "bench", "embedding_model": model,
                   "filesystem": {"root": root.to_str().unwrap(), "collection_name": "corpus"}}),
            json!({}),
        ),
        "github" => (
            json!({"database_name": "bench", "embedding_model": model,
                   "github": {"repository": "acme/notes"}}),
            json!({"target_collection_name": "corpus"}),
        ),
        _ => (
            json!({"database_name": "bench", "embedding_model": model,
                   "web_scrape": {"starting_url": site.url("/"), "max_depth": 1,
                                  "page_limit": docs + 1}}),
            json!({"target_collection_name": "corpus"}),
        ),
    };
    let source = daemon.create_source(source);
    let before = server.seen().len();
    let started = Instant::now();
    let job = daemon.wait_finished(
        &daemon.invoke(&source, invocation),
        Duration::from_secs(3600),
    );
    let sync_wall = started.elapsed();
    assert!(job["status"]["complete"].is_object(), "{job}");
    let chunks = chroma.records("bench", "corpus").rows;
    let texts: Vec<String> = chunks.iter().map(|r| r.document.clone()).collect();
    // The daemon's requests after its one dimension probe.
    let (daemon_requests, daemon_inputs, daemon_rate) = served_rate(server, before + 1);
    let seen = server.seen().len();

    // The tight loop over the same chunks.
    let mut settings = OpenAiSettings::new("bench/endpoint", &server.url);
    settings.api_key = Some(chroma_syncd::config::Secret::new(KEY));
    settings.max_batch = MAX_BATCH;
    settings.max_concurrency = MAX_CONCURRENCY;
    let client = OpenAiEmbedder::new(settings).unwrap();
    let started = Instant::now();
    runtime().block_on(client.embed(&texts)).unwrap();
    let loop_wall = started.elapsed();
    let (loop_requests, loop_inputs, loop_rate) = served_rate(server, seen);
    println!(
        "endpoint alone (tight client loop): {loop_inputs} inputs in {loop_requests} requests, \
         {loop_rate:.1}/s ({:.2}s)",
        loop_wall.as_secs_f64()
    );
    println!("== {kind} source");
    println!(
        "endpoint while the daemon syncs {docs} documents ({} chunks): {daemon_inputs} inputs \
         in {daemon_requests} requests, {daemon_rate:.1}/s (whole sync {:.2}s, the first \
         request to the last answer counted)",
        chunks.len(),
        sync_wall.as_secs_f64()
    );
    println!("ratio: {:.2}", daemon_rate / loop_rate);
}
