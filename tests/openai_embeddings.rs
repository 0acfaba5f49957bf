//! User story: an operator points the daemon at an OpenAI-compatible
//! embedding server (vLLM, TEI, Ollama). The vectors stored are the
//! server's, in order however the inputs were batched; the API key reaches
//! the server and no error; a busy server (429 + Retry-After, 5xx) is
//! waited for; a refusal (401) fails at once, saying what the server said.

mod common;

use std::time::Duration;

use chroma_syncd::config::Secret;
use chroma_syncd::embed::openai::{OpenAiEmbedder, OpenAiSettings, RemoteError};
use common::openai::{EmbeddingServer, Fault, Vectors, hashed};
use common::*;

const KEY: &str = "sk-test-key-that-must-not-leak-42";

fn embedder(url: &str, key: &str) -> OpenAiEmbedder {
    let mut settings = OpenAiSettings::new("Qwen/Qwen3-Embedding-0.6B", url);
    settings.api_key = Some(Secret::new(key));
    settings.max_batch = 7;
    settings.max_concurrency = 3;
    settings.max_retries = 3;
    settings.backoff = Duration::from_millis(10);
    OpenAiEmbedder::new(settings).unwrap()
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("chunk number {i} of the corpus"))
        .collect()
}

#[test]
fn vectors_are_the_servers_in_order_and_the_key_is_sent() {
    let server = EmbeddingServer::start(KEY, Vectors::Hashed);
    let url = server.url.clone();
    let texts = texts(30);
    let vectors = runtime()
        .block_on(embedder(&url, KEY).embed(&texts))
        .unwrap();
    let expected: Vec<Vec<f32>> = texts.iter().map(|t| hashed(t)).collect();
    assert_eq!(vectors, expected);
    let seen = server.seen();
    assert_eq!(seen.len(), 5, "30 inputs in batches of 7");
    assert!(
        seen.iter()
            .all(|s| s.authorization == format!("Bearer {KEY}") && s.inputs.len() <= 7)
    );
}

#[test]
fn a_busy_or_broken_server_is_waited_for() {
    let server = EmbeddingServer::start(KEY, Vectors::Hashed);
    let url = server.url.clone();
    server.fail_next(&[Fault::Busy, Fault::Broken]);
    let texts = texts(5);
    let vectors = runtime()
        .block_on(embedder(&url, KEY).embed(&texts))
        .unwrap();
    assert_eq!(vectors.len(), 5);
    assert_eq!(server.seen().len(), 3, "two retries, then vectors");

    // A server that stays broken: the error is transient, after the retries.
    server.fail_next(&[Fault::Broken; 10]);
    let error = runtime()
        .block_on(embedder(&url, KEY).embed(&texts))
        .unwrap_err();
    assert!(
        matches!(error, RemoteError::Transient { attempts: 4, .. }),
        "{error:?}"
    );
}

/// Issue 31: `Retry-After: 1e300` panicked in `Duration::from_secs_f64` and
/// left the model's dispatcher dead until a restart. A server's wait is
/// capped at `max_retry_after`, whatever number it sends, and the same
/// embedder keeps working afterwards.
#[test]
fn a_hostile_retry_after_is_capped_and_the_embedder_lives_on() {
    let server = EmbeddingServer::start(KEY, Vectors::Hashed);
    let mut settings = OpenAiSettings::new("Qwen/Qwen3-Embedding-0.6B", &server.url);
    settings.api_key = Some(Secret::new(KEY));
    settings.max_retries = 5;
    settings.backoff = Duration::from_millis(10);
    settings.max_retry_after = Duration::from_millis(200);
    let embedder = OpenAiEmbedder::new(settings).unwrap();
    server.fail_next(&[
        Fault::BusyFor("1e300"),
        Fault::BusyFor("18446744073709551616"),
        Fault::BusyFor("-1"),
        Fault::BusyFor("NaN"),
    ]);
    let texts = texts(3);
    // Bounded, so an uncapped wait fails the test instead of hanging it.
    let vectors = runtime()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(120), embedder.embed(&texts)).await
        })
        .expect("the waits are capped")
        .unwrap();
    assert_eq!(vectors, texts.iter().map(|t| hashed(t)).collect::<Vec<_>>());
    assert_eq!(server.seen().len(), 5, "four refusals, then vectors");
    // The dispatcher still serves this embedder.
    let again = runtime().block_on(embedder.embed(&texts)).unwrap();
    assert_eq!(again, vectors);
}

#[test]
fn a_refused_key_fails_at_once_with_the_servers_words_and_not_the_key() {
    let server = EmbeddingServer::start(KEY, Vectors::Hashed);
    let url = server.url.clone();
    let wrong = "sk-wrong-key-also-secret-7";
    let error = runtime()
        .block_on(embedder(&url, wrong).embed(&texts(3)))
        .unwrap_err();
    assert_eq!(
        error,
        RemoteError::Permanent {
            model: "Qwen/Qwen3-Embedding-0.6B".into(),
            status: 401,
            message: "invalid API key".into(),
        }
    );
    assert_eq!(server.seen().len(), 1, "not retried");
    let said = format!("{error} {error:?}");
    assert!(!said.contains(wrong) && !said.contains(KEY), "{said}");
}

#[test]
fn a_token_budget_per_request_is_kept() {
    let server = EmbeddingServer::start(KEY, Vectors::Hashed);
    let mut settings = OpenAiSettings::new("Qwen/Qwen3-Embedding-0.6B", &server.url);
    settings.api_key = Some(Secret::new(KEY));
    settings.max_batch = 7;
    settings.max_batch_tokens = Some(64);
    let client = OpenAiEmbedder::new(settings).unwrap();
    // ~29 bytes each: two fit in 64, three do not.
    let texts = texts(9);
    let vectors = runtime().block_on(client.embed(&texts)).unwrap();
    let expected: Vec<Vec<f32>> = texts.iter().map(|t| hashed(t)).collect();
    assert_eq!(vectors, expected);
    let seen = server.seen();
    assert!(
        seen.iter()
            .all(|s| s.inputs.iter().map(String::len).sum::<usize>() <= 64),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 5, "nine inputs, two per request: {seen:?}");
}
