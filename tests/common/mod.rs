//! Test harness: real servers on loopback ports chosen at run time, torn down
//! on drop. Chroma and the S3 server (moto) come from the Python venv that
//! `scripts/test` prepares; the daemon is this crate's binary.
#![allow(dead_code)]

pub mod faulty;
pub mod github;
pub mod openai;
pub mod stall;
pub mod vision;
pub mod web;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use serde_json::{Value, json};

pub fn home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
}

/// The venv with `chroma` and `moto_server`.
pub fn venv() -> PathBuf {
    std::env::var_os("CHROMA_SYNCD_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/chroma-syncd/venv"))
}

pub fn model_dir() -> PathBuf {
    std::env::var_os("CHROMA_SYNCD_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/chroma-syncd/models/all-MiniLM-L6-v2"))
}

/// A loopback port for a server a test starts (the daemon, Chroma, moto).
///
/// Why not the kernel's pick (`bind :0`)? A port found free that way is
/// released before the server binds it, and in the meantime the kernel may
/// hand the same ephemeral port to any outgoing connection or another `:0`
/// bind of the parallel tests: the server then fails with "Address already
/// in use". So ports come from just below the ephemeral range, which the
/// kernel never assigns by itself, walking from an offset that differs per
/// test process, and each is checked to be bindable before it is handed out.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let span = ephemeral_low.saturating_sub(10_000).clamp(1, 12_000);
    let base = ephemeral_low.saturating_sub(span);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let port = base + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if port > 1024
            && let Ok(port) = u16::try_from(port)
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
/// Waits (bounded) for a child that is expected to exit by itself, and
/// collects its output; kills it and fails the test past `limit`.
pub fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("polling the child").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("collecting the output")
}

pub fn wait_until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn answers(url: &str) -> bool {
    http()
        .get(url)
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Guard(pub Option<Child>);

impl Guard {
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap()
}

// ------------------------------------------------------------------ Chroma

pub struct Chroma {
    pub port: u16,
    pub data: tempfile::TempDir,
    process: Guard,
}

impl Chroma {
    pub fn start() -> Chroma {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut chroma = Chroma {
            port,
            data,
            process: Guard(None),
        };
        chroma.restart();
        chroma
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data directory.
    pub fn restart(&mut self) {
        self.process.kill();
        let child = Command::new(venv().join("bin/chroma"))
            .args([
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--path",
            ])
            .arg(self.data.path().join("db"))
            .env("ANONYMIZED_TELEMETRY", "False")
            .stdin(Stdio::null())
            .stdout(log_file(self.data.path(), "chroma.log"))
            .stderr(log_file(self.data.path(), "chroma.log"))
            .spawn()
            .expect("starting chroma (run scripts/test to set up the venv)");
        self.process = Guard(Some(child));
        let url = format!("{}/api/v2/heartbeat", self.url());
        wait_until("chroma to answer", Duration::from_secs(90), || {
            answers(&url).then_some(())
        });
    }

    pub fn stop(&mut self) {
        self.process.kill();
    }

    fn database_path(&self, database: &str) -> String {
        format!(
            "{}/api/v2/tenants/default_tenant/databases/{database}",
            self.url()
        )
    }

    /// The collection's JSON, or `None` when it does not exist.
    pub fn collection(&self, database: &str, name: &str) -> Option<Value> {
        let response = http()
            .get(format!(
                "{}/collections/{name}",
                self.database_path(database)
            ))
            .send()
            .unwrap();
        response
            .status()
            .is_success()
            .then(|| response.json().unwrap())
    }

    /// Deletes records behind the daemon's back (a write that never
    /// finished, a collection edited by hand).
    pub fn delete_ids(&self, database: &str, name: &str, ids: &[&str]) {
        let collection = self
            .collection(database, name)
            .unwrap_or_else(|| panic!("collection {database}/{name} exists"));
        let id = collection["id"].as_str().unwrap();
        let response = http()
            .post(format!(
                "{}/collections/{id}/delete",
                self.database_path(database)
            ))
            .json(&json!({"ids": ids}))
            .send()
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().unwrap()
        );
    }

    /// All records: `{ids, documents, metadatas, embeddings}`, sorted by id.
    pub fn records(&self, database: &str, name: &str) -> Records {
        let collection = self
            .collection(database, name)
            .unwrap_or_else(|| panic!("collection {database}/{name} exists"));
        let id = collection["id"].as_str().unwrap().to_string();
        let get = || -> Value {
            http()
                .post(format!(
                    "{}/collections/{id}/get",
                    self.database_path(database)
                ))
                .json(
                    &json!({"include": ["documents", "metadatas", "embeddings"], "limit": 100000}),
                )
                .send()
                .unwrap()
                .json()
                .unwrap()
        };
        // A get racing the daemon's writes can meet a transient error
        // answer from Chroma (its index being written); ask again a few
        // times, a bounded loop, before taking it for an answer.
        let mut value = get();
        for _ in 0..5 {
            if value["ids"].is_array()
                || value["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Nothing found on disk"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
            value = get();
        }
        // Chroma 1.5 answers a get that includes embeddings on a collection
        // nothing was written to yet with this error, not with no rows.
        if value["message"]
            .as_str()
            .is_some_and(|m| m.contains("Nothing found on disk"))
        {
            return Records {
                rows: Vec::new(),
                collection,
            };
        }
        let ids = value["ids"]
            .as_array()
            .unwrap_or_else(|| panic!("Chroma's get answered {value}"));
        let mut rows: Vec<Record> = (0..ids.len())
            .map(|i| Record {
                id: value["ids"][i].as_str().unwrap().to_string(),
                document: value["documents"][i]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                metadata: value["metadatas"][i].clone(),
                embedding: value["embeddings"][i]
                    .as_array()
                    .map(|v| v.iter().map(|x| x.as_f64().unwrap() as f32).collect())
                    .unwrap_or_default(),
            })
            .collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        Records { rows, collection }
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    pub document: String,
    pub metadata: Value,
    pub embedding: Vec<f32>,
}

pub struct Records {
    pub rows: Vec<Record>,
    pub collection: Value,
}

impl Records {
    pub fn ids(&self) -> Vec<String> {
        self.rows.iter().map(|r| r.id.clone()).collect()
    }
    pub fn of_key(&self, key: &str) -> Vec<&Record> {
        self.rows
            .iter()
            .filter(|r| r.metadata["document_key"] == key)
            .collect()
    }
    /// The distinct documents the collection holds.
    pub fn document_keys(&self) -> std::collections::BTreeSet<String> {
        self.rows
            .iter()
            .map(|r| r.metadata["document_key"].as_str().unwrap().to_string())
            .collect()
    }
}

// ------------------------------------------------------------------ S3 (moto)

/// Origins of the harness's own S3-compatible servers (moto, fault proxies
/// in front of servers): every daemon started by [`binary`] allowlists them in
/// `CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS`, as an operator does for an internal
/// MinIO. Anything else on loopback stays behind the SSRF guard.
static TEST_ENDPOINTS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub fn allow_endpoint(origin: &str) {
    TEST_ENDPOINTS
        .lock()
        .unwrap()
        .push(origin.trim_end_matches('/').to_string());
}

/// The allowlist [`binary`] gives daemons: the test servers started so far.
pub fn allowed_endpoints() -> String {
    TEST_ENDPOINTS.lock().unwrap().join(",")
}

pub struct S3 {
    pub port: u16,
    pub client: aws_sdk_s3::Client,
    dir: tempfile::TempDir,
    _process: Guard,
}

pub const S3_KEY_ID: &str = "AKIATESTKEYCHROMASYNCD";
pub const S3_SECRET: &str = "s3cr3t-value-that-must-never-leak";

impl S3 {
    /// An SQS client for the same moto server (it serves both APIs), with
    /// the harness's keys: for tests that set up S3 event notifications.
    pub fn sqs_client(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::new()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                .endpoint_url(self.endpoint())
                .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                    S3_KEY_ID, S3_SECRET, None, None, "test",
                ))
                .build(),
        )
    }

    /// Creates the SQS queue `name` and has `buckets` send their object
    /// created/removed events to it, as S3 event notifications do; its URL.
    pub fn event_queue(&self, name: &str, buckets: &[&str]) -> String {
        self.event_queue_with(name, buckets, &[])
    }

    /// [`S3::event_queue`] created with SQS `attributes` (e.g. a
    /// `RedrivePolicy`).
    pub fn event_queue_with(
        &self,
        name: &str,
        buckets: &[&str],
        attributes: &[(aws_sdk_sqs::types::QueueAttributeName, String)],
    ) -> String {
        use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
        runtime().block_on(async {
            let mut create = self.sqs_client().create_queue().queue_name(name);
            for (attribute, value) in attributes {
                create = create.attributes(attribute.clone(), value);
            }
            let created = create.send().await.unwrap();
            for bucket in buckets {
                self.client
                    .put_bucket_notification_configuration()
                    .bucket(*bucket)
                    .notification_configuration(
                        NotificationConfiguration::builder()
                            .queue_configurations(
                                QueueConfiguration::builder()
                                    .queue_arn(format!("arn:aws:sqs:us-east-1:123456789012:{name}"))
                                    .set_events(Some(vec![
                                        Event::S3ObjectCreated,
                                        Event::S3ObjectRemoved,
                                    ]))
                                    .build()
                                    .unwrap(),
                            )
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
            created.queue_url.unwrap()
        })
    }

    pub fn start() -> S3 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file(dir.path(), "moto.log"))
            .stderr(log_file(dir.path(), "moto.log"))
            .spawn()
            .expect("starting moto_server (run scripts/test to set up the venv)");
        let process = Guard(Some(child));
        allow_endpoint(&format!("http://127.0.0.1:{port}"));
        let url = format!("http://127.0.0.1:{port}/moto-api/");
        wait_until("the S3 server to answer", Duration::from_secs(60), || {
            answers(&url).then_some(())
        });
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                S3_KEY_ID, S3_SECRET, None, None, "test",
            ))
            .build();
        S3 {
            port,
            client: aws_sdk_s3::Client::from_conf(config),
            dir,
            _process: process,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, bucket: &str) {
        runtime().block_on(async {
            self.client
                .create_bucket()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
        });
    }

    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        body: impl Into<Vec<u8>>,
        content_type: Option<&str>,
    ) {
        let body: Vec<u8> = body.into();
        runtime().block_on(async {
            let mut request = self
                .client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(body));
            if let Some(content_type) = content_type {
                request = request.content_type(content_type);
            }
            request.send().await.unwrap();
        });
    }

    /// Drops every message of an SQS queue: events lost (past the queue's
    /// retention, or moved to a dead-letter queue). Received and deleted
    /// one by one (SQS allows one `PurgeQueue` a minute); stops after two
    /// empty answers in a row, or after a bounded number of rounds.
    pub fn drain(&self, queue_url: &str) -> usize {
        runtime().block_on(async {
            let sqs = self.sqs_client();
            let mut drained = 0;
            let mut empty = 0;
            for _ in 0..100 {
                let received = sqs
                    .receive_message()
                    .queue_url(queue_url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap();
                let messages = received.messages.unwrap_or_default();
                if messages.is_empty() {
                    empty += 1;
                    if empty == 2 {
                        return drained;
                    }
                    continue;
                }
                empty = 0;
                for message in messages {
                    sqs.delete_message()
                        .queue_url(queue_url)
                        .receipt_handle(message.receipt_handle.unwrap_or_default())
                        .send()
                        .await
                        .unwrap();
                    drained += 1;
                }
            }
            panic!("{queue_url} did not run dry");
        })
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        runtime().block_on(async {
            self.client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
        });
    }
}

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

// ------------------------------------------------------------------ the daemon

pub struct Daemon {
    pub port: u16,
    pub state: tempfile::TempDir,
    pub config_path: PathBuf,
    pub chroma_url: String,
    pub extra_env: Vec<(String, String)>,
    /// Sent by [`Daemon::request`]: the first of `CHROMA_SYNCD_API_TOKENS`, if given.
    pub token: Option<String>,
    process: Guard,
}

/// Config for tests: fast heartbeats, short leases, quick retries.
pub const TEST_CONFIG: &str = r#"
workers = 2
[queue]
lease_seconds = 4
heartbeat_seconds = 1
max_attempts = 3
retry_base_seconds = 0.5
retry_max_seconds = 2.0
poll_interval_ms = 100
[chroma]
max_batch_size = 20
timeout_seconds = 10
[aws_credentials.1]
access_key_id_env = "TEST_S3_KEY_ID"
secret_access_key_env = "TEST_S3_SECRET"
"#;

impl Daemon {
    pub fn start(chroma_url: &str) -> Daemon {
        Self::start_with(chroma_url, TEST_CONFIG, &[])
    }

    pub fn start_with(chroma_url: &str, config: &str, env: &[(&str, &str)]) -> Daemon {
        let state = tempfile::tempdir().unwrap();
        let config_path = state.path().join("chroma-syncd.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut daemon = Daemon {
            port: free_port(),
            state,
            config_path,
            chroma_url: chroma_url.to_string(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            token: env
                .iter()
                .find(|(k, _)| *k == "CHROMA_SYNCD_API_TOKENS")
                .map(|(_, v)| v.split(',').next().unwrap().to_string()),
            process: Guard(None),
        };
        daemon.restart();
        daemon
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The daemon's process id, while it runs: a test that feeds it hostile
    /// input checks that the same process is still serving afterwards.
    pub fn pid(&self) -> Option<u32> {
        self.process.0.as_ref().map(|child| child.id())
    }

    /// Whether the daemon process is still running (not exited or killed).
    pub fn is_running(&mut self) -> bool {
        self.process
            .0
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    /// Peak resident memory of the daemon process so far, in KiB (Linux).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.process.0.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("daemon.log")).unwrap_or_default()
    }

    /// (Re)starts the binary on the same port, state and config.
    pub fn restart(&mut self) {
        self.process.kill();
        let mut command = binary(&self.chroma_url, self.state.path());
        command
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("CHROMA_SYNCD_LISTEN", format!("127.0.0.1:{}", self.port))
            .stdout(log_file(self.state.path(), "daemon.log"))
            .stderr(log_file(self.state.path(), "daemon.log"));
        for (key, value) in &self.extra_env {
            command.env(key, value);
        }
        self.process = Guard(Some(command.spawn().expect("starting chroma-syncd")));
        let url = format!("{}/healthz", self.url());
        let process = &mut self.process;
        let log = self.state.path().join("daemon.log");
        wait_until("the daemon to answer", Duration::from_secs(60), || {
            if let Some(child) = process.0.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "daemon exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            answers(&url).then_some(())
        });
    }

    /// SIGTERM, then waits (bounded) for the process to exit; its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.terminate_within(Duration::from_secs(60))
    }

    /// SIGTERM, then wait up to `limit` for the exit (a drain can take a while).
    pub fn terminate_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.process.0.as_mut().expect("the daemon runs");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = wait_until("the daemon to exit", limit, || child.try_wait().unwrap());
        self.process.0 = None;
        exited
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.request_with_token(method, path, body, self.token.as_deref())
    }

    pub fn request_with_token(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut request = http().request(method, format!("{}{path}", self.url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = token {
            request = request.header("x-chroma-token", token);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn create_source(&self, body: Value) -> String {
        let (status, value) = self.request(reqwest::Method::POST, "/api/v1/sources", Some(body));
        assert_eq!(status, 201, "{value}");
        value["source_id"].as_str().unwrap().to_string()
    }

    pub fn invoke(&self, source_id: &str, body: Value) -> String {
        let (status, value) = self.request(
            reqwest::Method::POST,
            &format!("/api/v1/sources/{source_id}/invocations"),
            Some(body),
        );
        assert_eq!(status, 201, "{value}");
        value["invocation_id"].as_str().unwrap().to_string()
    }

    pub fn job(&self, id: &str) -> Value {
        let (status, job) = self.request(
            reqwest::Method::GET,
            &format!("/api/v1/invocations/{id}"),
            None,
        );
        assert_eq!(status, 200, "{job}");
        job
    }

    /// Polls until the job is complete, failed or cancelled.
    pub fn wait_finished(&self, id: &str, limit: Duration) -> Value {
        wait_until(&format!("job {id} to finish"), limit, || {
            let job = self.job(id);
            let finished = job["status"].is_object() || job["status"] == "cancelled";
            finished.then_some(job)
        })
    }

    /// Waits for the job to end `failed`; returns the job and its error.
    pub fn wait_failed(&self, id: &str, limit: Duration) -> (Value, String) {
        let job = self.wait_finished(id, limit);
        let error = job["status"]["failed"]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("job did not fail: {job}"))
            .to_string();
        (job, error)
    }

    pub fn wait_complete(&self, id: &str) -> Value {
        let job = self.wait_finished(id, Duration::from_secs(300));
        assert!(
            job["status"]["complete"].is_object(),
            "job did not complete: {job}\n--- daemon log ---\n{}",
            self.log()
        );
        job
    }
}

/// The daemon binary with a clean environment: Chroma, state and model
/// locations, S3 keys both for credential id 0 (the AWS chain) and for
/// id 1 (named in [`TEST_CONFIG`]), and the test S3 servers allowlisted.
pub fn binary(chroma_url: &str, state_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chroma-syncd"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home())
        .env("RUST_LOG", "info")
        .env("CHROMA_URL", chroma_url)
        .env("CHROMA_SYNCD_STATE_DIR", state_dir)
        .env("CHROMA_SYNCD_MODEL_DIR", model_dir())
        .env("AWS_ACCESS_KEY_ID", S3_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TEST_S3_KEY_ID", S3_KEY_ID)
        .env("TEST_S3_SECRET", S3_SECRET)
        .env("CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS", allowed_endpoints())
        .stdin(Stdio::null());
    // CI runs the embedding tests once per forced kernel path: the daemons
    // they start run that path too.
    if let Ok(isa) = std::env::var("BERT_CPU_ISA") {
        command.env("BERT_CPU_ISA", isa);
    }
    command
}

/// An S3 source body for the harness's moto server.
pub fn s3_source(s3: &S3, bucket: &str, collection: &str, prefix: Option<&str>) -> Value {
    let mut source = json!({
        "database_name": "testdb",
        "s3": {
            "bucket_name": bucket,
            "region": "us-east-1",
            "collection_name": collection,
            "aws_credential_id": 0,
            "endpoint_url": s3.endpoint(),
            "force_path_style": true,
        }
    });
    if let Some(prefix) = prefix {
        source["s3"]["path_prefix"] = json!(prefix);
    }
    source
}

pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// A validator for one schema of the seed documents (`tests/fixtures/seed-schemas.json`).
pub fn seed_validator(name: &str) -> jsonschema::Validator {
    let mut schema: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/seed-schemas.json").unwrap())
            .unwrap();
    schema["$ref"] = json!(format!("#/$defs/{name}"));
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

pub fn assert_matches(name: &str, value: &Value) {
    let validator = seed_validator(name);
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{value} is not a valid {name}: {errors:?}"
    );
}

// ------------------------------------------------------------------ PostgreSQL

/// A database of its own on the machine's PostgreSQL (dropped at the end).
pub struct PgDatabase {
    pub url: String,
    name: String,
    admin: String,
}

/// The server the tests use: `CHROMA_SYNCD_TEST_PG_URL`, else the local one.
pub fn pg_admin_url() -> String {
    std::env::var("CHROMA_SYNCD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        use sqlx::Connection;
        let admin = pg_admin_url();
        let name = format!("chroma_syncd_{}", uuid::Uuid::new_v4().simple());
        runtime().block_on(async {
            let mut connection = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL at CHROMA_SYNCD_TEST_PG_URL (default 127.0.0.1:5432)");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut connection)
                .await
                .unwrap();
        });
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        PgDatabase {
            url: url.to_string(),
            name,
            admin,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        use sqlx::Connection;
        let (admin, name) = (self.admin.clone(), self.name.clone());
        runtime().block_on(async move {
            if let Ok(mut connection) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut connection)
                .await;
            }
        });
    }
}

/// Starts an upload by hand (with `token`, if given) and stops sending
/// halfway: it stays in flight until the returned stream is dropped.
pub fn stalled_upload(daemon: &Daemon, token: Option<&str>) -> std::net::TcpStream {
    use std::io::Write;
    let boundary = "XBOUNDARYX";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"database_name\"\r\n\r\ntestdb\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"collection_name\"\r\n\r\nslow\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n"
    );
    let file_length = 500_000;
    let body_length = head.len() + file_length + format!("\r\n--{boundary}--\r\n").len();
    let token = token
        .map(|token| format!("x-chroma-token: {token}\r\n"))
        .unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    write!(
        stream,
        "POST /api/v1/add-file HTTP/1.1\r\nHost: 127.0.0.1\r\n{token}Content-Type: \
         multipart/form-data; boundary={boundary}\r\nContent-Length: {body_length}\r\n\
         x-upload-content-length: {file_length}\r\n\r\n{head}"
    )
    .unwrap();
    stream.write_all(&vec![b'z'; 200_000]).unwrap();
    stream.flush().unwrap();
    stream
}

/// What the fixture generator `script` (a Python file of the repository,
/// run by the venv's Python with the directory as its argument) writes,
/// in a fresh directory.
pub fn generated(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(venv().join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(script))
        .arg(dir.path())
        .status()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(status.success(), "{script} failed");
    dir
}

/// A daemon allowed to read `root` (and nothing else), with text files
/// over `max_file_bytes` skipped (`None`: the default limit), syncs the
/// whole directory into `collection` of `testdb`: the daemon and the
/// finished job (complete).
pub fn sync_directory(
    chroma: &Chroma,
    root: &Path,
    max_file_bytes: Option<u64>,
    collection: &str,
    limit: Duration,
) -> (Daemon, Value) {
    let root = root.canonicalize().unwrap();
    let config = match max_file_bytes {
        Some(bytes) => format!("{TEST_CONFIG}\n[filesystem]\nmax_file_bytes = {bytes}\n"),
        None => TEST_CONFIG.to_string(),
    };
    let daemon = Daemon::start_with(
        &chroma.url(),
        &config,
        &[(
            "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS",
            root.to_str().unwrap(),
        )],
    );
    let source = daemon.create_source(json!({
        "database_name": "testdb",
        "filesystem": {"root": root, "collection_name": collection},
    }));
    let job = daemon.wait_finished(&daemon.invoke(&source, json!({})), limit);
    assert!(job["status"]["complete"].is_object(), "{job}");
    (daemon, job)
}
