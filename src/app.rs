//! Wiring: builds the shared services from a [`Config`] and runs the daemon
//! in one of its modes (`serve`, `worker`, `run`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::server::ServerLimits;
use crate::api::{self, ApiLimits, AppState, Authenticator};
use crate::config::{Config, EmbeddingPrecision, Secret};
use crate::domain::schedule::{Scheduler, schedule_loop};
use crate::domain::{
    DomainError, Sources, WholeSourcePlan, authorize_source, plan_job, spec_of, validate_source,
    whole_source,
};
use crate::embed::{MiniLm, Models};
use crate::extract::isolate::Converter;
use crate::model::{CreateSourcePayload, JobStats, JobStatus, Trigger};
use crate::pipeline::Services;
use crate::pipeline::listing::Unchanged;
use crate::progress::{RunObserver, RunSnapshot, add_stats};
use crate::queue::{JobFilter, PostgresQueue, Queue, QueueError, SourceFilter, SqliteQueue};
use crate::service;
use crate::sink::chroma::ChromaClient;
use crate::worker::{JobRunner, prune_loop, run_workers};

pub use crate::domain::RunTarget;
use bert_cpu::Precision;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Invalid(String),
}

impl From<DomainError> for AppError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::Queue(error) => AppError::Queue(error),
            DomainError::Source(message) => AppError::Setup(message),
            other => AppError::Invalid(other.to_string()),
        }
    }
}

/// How long open API requests may run on after a shutdown signal.
const API_DRAIN: Duration = Duration::from_secs(5);
/// How long after `shutdown_grace_seconds` the workers may take to release
/// their jobs before `serve` returns regardless (`main` exits the process
/// at the latest a few seconds later: see `hard_exit_after`).
pub const SHUTDOWN_SLACK: Duration = Duration::from_secs(6);

/// Resolves `delay` after `shutdown` is cancelled.
async fn after_signal(shutdown: &CancellationToken, delay: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(delay).await;
}

/// The parts every mode shares.
pub struct Daemon {
    pub config: Config,
    pub queue: Arc<dyn Queue>,
    pub chroma: ChromaClient,
    /// Every source kind with its clients (the registry).
    pub sources: Arc<Sources>,
    pub wake: Arc<Notify>,
}

impl Daemon {
    pub async fn open(config: Config) -> Result<Self, AppError> {
        let max_attempts = config.queue.max_attempts;
        let queue: Arc<dyn Queue> = match &config.queue.url {
            Some(url) => Arc::new(
                PostgresQueue::open(url.expose(), max_attempts)
                    .await
                    .map_err(|e| AppError::Setup(format!("opening the PostgreSQL queue: {e}")))?,
            ),
            None => {
                let path = config.queue_path();
                Arc::new(SqliteQueue::open(&path, max_attempts).await.map_err(|e| {
                    AppError::Setup(format!("opening queue {}: {e}", path.display()))
                })?)
            }
        };
        Self::with_queue(config, queue)
    }

    pub fn with_queue(config: Config, queue: Arc<dyn Queue>) -> Result<Self, AppError> {
        let chroma =
            ChromaClient::new(&config.chroma).map_err(|e| AppError::Setup(e.to_string()))?;
        let sources = Arc::new(Sources::new(&config).map_err(AppError::Setup)?);
        Ok(Daemon {
            config,
            queue,
            chroma,
            sources,
            wake: Arc::new(Notify::new()),
        })
    }

    /// Loads the model and builds the pipeline's services (slow: do it once).
    pub fn services(&self) -> Result<Arc<Services>, AppError> {
        let settings = &self.config.embedding;
        let kernels = crate::embed::kernels::choose(settings.precision, &self.config.state_dir)
            .map_err(AppError::Setup)?;
        let precision = match settings.precision {
            EmbeddingPrecision::Auto => Precision::best(),
            EmbeddingPrecision::F32 => Precision::F32,
            EmbeddingPrecision::Bf16 => Precision::Bf16,
        };
        let model = MiniLm::load_in(&settings.model_dir, settings.batch_size, precision)
            .map_err(|e| AppError::Setup(e.to_string()))?;
        tracing::info!(
            isa = kernels.isa.name(),
            decided = kernels.decided.as_str(),
            precision = model.precision().as_str(),
            batch_size = settings.batch_size,
            "embedding model loaded"
        );
        let models = Models::load(settings, Arc::new(model), precision).map_err(AppError::Setup)?;
        if !settings.models.is_empty() {
            tracing::info!(
                models = ?settings.models.keys().collect::<Vec<_>>(),
                "embedding models defined"
            );
        }
        // Documents are converted by this same binary, run as a child.
        let program = std::env::current_exe()
            .map_err(|e| AppError::Setup(format!("finding our own executable: {e}")))?;
        let ocr = self.check_ocr(&program);
        let converter = Converter::new(self.config.extract.isolation(program, ocr));
        if self.config.extract.sandbox {
            let support = crate::extract::sandbox::Support::probe();
            match support.warning() {
                Some(warning) => tracing::warn!("{warning}"),
                None => tracing::info!(
                    landlock_abi = support.landlock_abi,
                    "document converters run sandboxed (Landlock, seccomp)"
                ),
            }
        } else {
            tracing::warn!("[extract] sandbox = false: document converters run unconfined");
        }
        // Another process of our user must not read our memory or
        // environment (every secret) through /proc or ptrace.
        if !crate::extract::sandbox::make_undumpable() {
            tracing::warn!("could not make the daemon non-dumpable");
        }
        let vectors = settings.reuse_vectors.then(|| {
            Arc::new(crate::pipeline::reuse::VectorCache::new(
                settings.reuse_cache_vectors,
            ))
        });
        let vision = match &self.config.extract.vision {
            Some(config) => {
                let settings =
                    crate::vision::VisionSettings::from_config(config).map_err(AppError::Setup)?;
                tracing::info!(
                    endpoint = %settings.endpoint,
                    model = %settings.api_model,
                    "pictures are described by a vision model ([extract.vision])"
                );
                let client = crate::vision::VisionClient::new(settings)
                    .map_err(|e| AppError::Setup(e.to_string()))?;
                Some(Arc::new(client))
            }
            None => None,
        };
        Ok(Arc::new(Services {
            queue: Arc::clone(&self.queue),
            chroma: self.chroma.clone(),
            models,
            converter,
            vectors,
            vision,
        }))
    }

    /// Whether converters can run OCR (`[extract.ocr]`), checked once at
    /// start in a child ([`crate::extract::isolate::probe_ocr`]) and
    /// logged: the settings children get, or why OCR is off.
    fn check_ocr(&self, program: &std::path::Path) -> Result<crate::extract::OcrSettings, String> {
        let config = &self.config.extract.ocr;
        let checked = config.settings().and_then(|settings| {
            crate::extract::isolate::probe_ocr(program, &settings)
                .map(|version| (settings, version))
        });
        match checked {
            Ok((settings, version)) => {
                tracing::info!(
                    tesseract = %version,
                    languages = %settings.language_list(),
                    tessdata = %settings.tessdata.display(),
                    dpi = settings.dpi,
                    "OCR available: image files and PDF pages without a text layer are read"
                );
                Ok(settings)
            }
            Err(why) if config.enabled == Some(true) => {
                tracing::warn!(
                    reason = %why,
                    "[extract.ocr] enabled = true, but OCR is unavailable: image files are \
                     skipped and PDF pages without a text layer omitted"
                );
                Err(why)
            }
            Err(why) => {
                tracing::info!(reason = %why, "OCR unavailable");
                Err(why)
            }
        }
    }

    fn secrets(&self) -> Arc<Vec<Secret>> {
        let mut secrets = self.sources.secret_values();
        secrets.extend(self.config.chroma.api_key.clone());
        // Embedding endpoints' API keys (a model whose variable is unset
        // fails at start, with its own message).
        for (name, model) in &self.config.embedding.models {
            if let crate::config::ModelConfig::Openai(endpoint) = model
                && let Ok(Some(key)) = endpoint.resolve_key(name)
            {
                secrets.push(key);
            }
        }
        if let Some(Ok(Some(key))) = self.config.extract.vision.as_ref().map(|v| v.resolve_key()) {
            secrets.push(key);
        }
        // A queue URL's password, should an error ever quote it.
        secrets.extend(
            self.config
                .queue
                .url
                .as_ref()
                .and_then(|url| url::Url::parse(url.expose()).ok())
                .and_then(|url| url.password().map(|p| Secret::new(p.to_string()))),
        );
        // …or given as a query parameter (`?password=…`).
        if let Some(url) = self.config.queue.url.as_ref()
            && let Ok(url) = url::Url::parse(url.expose())
        {
            secrets.extend(
                url.query_pairs()
                    .filter(|(key, _)| key.contains("password"))
                    .map(|(_, value)| Secret::new(value.into_owned())),
            );
        }
        crate::secrets::register(&secrets);
        Arc::new(secrets)
    }

    fn workers(
        &self,
        services: Arc<Services>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(prune_loop(
            Arc::clone(&self.queue),
            self.config.queue.retention_days,
            shutdown.clone(),
        ));
        tokio::spawn(upload_janitor(
            Arc::clone(&self.queue),
            Arc::clone(&self.sources),
            shutdown.clone(),
        ));
        tokio::spawn(run_workers(
            JobRunner {
                services,
                sources: Arc::clone(&self.sources),
            },
            self.config.queue.clone(),
            self.secrets(),
            self.config.workers,
            self.config.shutdown_grace(),
            Arc::clone(&self.wake),
            shutdown,
        ))
    }

    /// API and workers until `shutdown`. `with_api = false` is `worker` mode.
    pub async fn serve(self, with_api: bool, shutdown: CancellationToken) -> Result<(), AppError> {
        let services = self.services()?;
        let listener = if with_api {
            let auth = Authenticator::new(self.config.api.tokens.clone());
            if auth.is_open() {
                tracing::warn!(
                    "no API tokens configured (CHROMA_SYNCD_API_TOKENS): the API accepts \
                     unauthenticated requests from loopback clients only"
                );
            }
            let listener = tokio::net::TcpListener::bind(self.config.listen)
                .await
                .map_err(|e| {
                    AppError::Setup(format!("listening on {}: {e}", self.config.listen))
                })?;
            let address = listener
                .local_addr()
                .map_err(|e| AppError::Setup(e.to_string()))?;
            tracing::info!(%address, "API listening");
            Some((listener, auth))
        } else {
            None
        };
        tracing::info!(
            workers = self.config.workers,
            state_dir = %self.config.state_dir.display(),
            chroma = %self.config.chroma.url,
            "workers starting"
        );
        let workers = self.workers(Arc::clone(&services), shutdown.clone());
        // Triggers that enqueue on their own: schedules, S3 events and
        // directory watches (each reconciling with its source first).
        let reconciler = Arc::new(crate::domain::Reconciler {
            sources: Arc::clone(&self.sources),
            services: Arc::clone(&services),
            queue: Arc::clone(&self.queue),
            wake: Arc::clone(&self.wake),
        });
        self.sources
            .start_auto_sync(&self.queue, &self.wake, &shutdown, reconciler);
        tokio::spawn(schedule_loop(
            Scheduler {
                queue: Arc::clone(&self.queue),
                sources: Arc::clone(&self.sources),
                services,
                wake: Arc::clone(&self.wake),
            },
            shutdown.clone(),
        ));
        tokio::spawn(crate::domain::webhook::webhook_loop(
            Arc::clone(&self.queue),
            Arc::clone(&self.sources),
            self.config.webhooks.clone(),
            shutdown.clone(),
        ));
        service::spawn_watchdog(Arc::clone(&self.queue), shutdown.clone());
        service::ready(if with_api { "serving" } else { "working" });
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                service::stopping();
            }
        });
        let api = async {
            let Some((listener, auth)) = listener else {
                return Ok(());
            };
            let state = AppState {
                queue: Arc::clone(&self.queue),
                chroma: self.chroma.clone(),
                auth: Arc::new(auth),
                sources: Arc::clone(&self.sources),
                max_pending_jobs: self.config.queue.max_pending_jobs,
                wake: Arc::clone(&self.wake),
                limits: ApiLimits::from_config(&self.config),
                uploads_in_flight: Arc::new(tokio::sync::Semaphore::new(
                    self.config.uploads.max_in_flight,
                )),
                uploads_per_token: api::quota::PerToken::new(
                    self.config.uploads.max_in_flight_per_token,
                ),
                events: api::events::EventStreams::from_settings(&self.config.api),
            };
            // Requests in flight when stopping get API_DRAIN, then their
            // connections are dropped: stopping never waits on a client.
            let limits = ServerLimits::from_settings(&self.config.api, API_DRAIN);
            api::serve(listener, state, limits, shutdown.clone())
                .await
                .map_err(|e| AppError::Setup(format!("serving the API: {e}")))
        };
        let stopped = async {
            let (api, _) = tokio::join!(api, workers);
            api
        };
        // Workers stop within the grace, then release their jobs with
        // bounded writes; this bounds whatever is left.
        let grace = self.config.shutdown_grace();
        tokio::select! {
            stopped = stopped => stopped?,
            _ = after_signal(&shutdown, grace + SHUTDOWN_SLACK) => tracing::warn!(
                slack = ?SHUTDOWN_SLACK,
                "workers still busy after the grace period and slack; stopping anyway"
            ),
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// One-shot sync of `source`: for S3 the given keys, or every key under
    /// the source's `path_prefix`; for GitHub the repository at a ref; for a
    /// site, one crawl. Jobs an interrupted run left pending are taken over;
    /// documents an earlier run finished are found unchanged and not
    /// re-embedded. Without `keep_going` the first failed job cancels the rest.
    pub async fn run_once(
        self,
        source: CreateSourcePayload,
        target: RunTarget,
        options: RunOptions,
        mut observer: Box<dyn RunObserver>,
        shutdown: CancellationToken,
    ) -> Result<RunSummary, AppError> {
        let limits = ApiLimits::from_config(&self.config).sources();
        let spec = validate_source(&self.sources, &limits, &source)?;
        authorize_source(&self.sources, &source, &spec).await?;
        let record = match self.queue.create_source(spec.source_type(), &source).await {
            Ok(record) => record,
            Err(QueueError::Duplicate(_)) => self
                .queue
                .list_sources(&SourceFilter {
                    database_name: Some(source.database_name.clone()),
                    limit: 1000,
                    ..SourceFilter::default()
                })
                .await?
                .into_iter()
                .find(|r| r.payload == source)
                .ok_or_else(|| AppError::Setup("source exists but cannot be found".into()))?,
            Err(e) => return Err(e.into()),
        };
        let services = self.services()?;
        let WholeSourcePlan {
            payloads,
            mut unchanged,
            ..
        } = whole_source(&self.sources, &services, &record, target).await?;
        tracing::info!(
            jobs = payloads.len(),
            unchanged = unchanged.documents.len(),
            source_id = %record.id,
            "one-shot sync starting"
        );
        let mut jobs: Vec<(String, Uuid)> = Vec::with_capacity(payloads.len());
        let mut left_pending = Vec::new();
        for payload in payloads {
            let what = payload.object_key.clone().unwrap_or_default();
            let job = plan_job(&self.sources, &record, payload, Trigger::Manual)
                .await
                .map_err(|e| match e {
                    DomainError::Queue(e) => AppError::Queue(e),
                    other => AppError::Invalid(format!("{what}: {other}")),
                })?;
            match self.queue.enqueue(job).await {
                Ok(job) => jobs.push((what, job.id)),
                // Left pending by an interrupted run: it is taken over below.
                Err(QueueError::Duplicate(_)) => left_pending.push(what),
                Err(e) => return Err(e.into()),
            }
        }
        jobs.extend(self.taken_over(&record, left_pending).await?);
        // An interrupted run may have stored a document and stopped before
        // its job ended: that job is taken over too (and counts itself).
        let stored_keys = unchanged.documents.keys().cloned().collect();
        for (key, job) in self.taken_over(&record, stored_keys).await? {
            unchanged.documents.remove(&key);
            jobs.push((key, job));
        }
        let stop_workers = shutdown.child_token();
        let workers = self.workers(services, stop_workers.clone());
        let started = std::time::Instant::now();
        let mut tracker = RunTracker::new(jobs, &unchanged);
        loop {
            tracker.refresh(self.queue.as_ref()).await?;
            let snapshot = tracker.snapshot(started.elapsed());
            observer.update(&snapshot);
            if snapshot.jobs_failed > 0 && !options.keep_going {
                tracing::warn!("a job failed: cancelling the rest (--keep-going runs them all)");
                tracker.cancel_open(self.queue.as_ref()).await?;
                break;
            }
            if tracker.open.is_empty() || shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        stop_workers.cancel();
        let bound = self.config.shutdown_grace() + SHUTDOWN_SLACK;
        if tokio::time::timeout(bound, workers).await.is_err() {
            tracing::warn!("workers still busy after the grace period and slack; stopping anyway");
        }
        // What the workers did while draining counts too.
        tracker.refresh(self.queue.as_ref()).await?;
        let snapshot = tracker.snapshot(started.elapsed());
        observer.finish(&snapshot);
        Ok(tracker.summary(snapshot))
    }

    /// The jobs an interrupted run left pending or processing for these keys
    /// (or, for a repository or site, for the source).
    async fn taken_over(
        &self,
        record: &crate::queue::SourceRecord,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Uuid)>, AppError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let live = |job: &crate::model::Job| {
            matches!(job.status, JobStatus::Pending | JobStatus::Processing)
        };
        let per_document = spec_of(record)
            .map(|spec| self.sources.one_job_per_document(&spec))
            .unwrap_or(false);
        if per_document {
            let mut taken = Vec::new();
            for batch in keys.chunks(500) {
                for (key, job) in self.queue.latest_by_keys(record.id, batch).await? {
                    if live(&job) {
                        taken.push((key, job.id));
                    }
                }
            }
            return Ok(taken);
        }
        let jobs = self
            .queue
            .list_jobs(&JobFilter {
                source_id: Some(record.id),
                limit: 100,
                ..JobFilter::default()
            })
            .await?;
        Ok(jobs
            .into_iter()
            .filter(live)
            .map(|job| (job.metadata.collection_name.clone(), job.id))
            .collect())
    }
}

/// How a one-shot run behaves on failure.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Run every job even after one failed (the exit code still says so).
    pub keep_going: bool,
}

/// Follows a run's jobs. Finished jobs are read once and dropped from the
/// open list; of the open ones only the first few pending are read each
/// round (the queue takes them roughly in order), so a run of a million
/// objects costs a bounded number of reads per round.
struct RunTracker {
    total: usize,
    /// (what, job id) not yet finished, in enqueue order.
    open: Vec<(String, Uuid)>,
    finished: JobStats,
    /// Stats of the jobs running at the last refresh.
    running: JobStats,
    complete: usize,
    failed: Vec<(String, String)>,
    cancelled: usize,
}

/// Pending jobs read per refresh before the rest are assumed still pending.
const PENDING_READS_PER_REFRESH: usize = 64;

impl RunTracker {
    /// `unchanged`: documents the listing found stored as they are, which
    /// got no job but count as synced.
    fn new(jobs: Vec<(String, Uuid)>, unchanged: &Unchanged) -> Self {
        let documents = unchanged.documents.len() as u64;
        RunTracker {
            total: jobs.len(),
            open: jobs,
            finished: JobStats {
                unchanged: documents,
                chunks_unchanged: unchanged.chunks(),
                ..JobStats::default()
            },
            running: JobStats::default(),
            complete: 0,
            failed: Vec::new(),
            cancelled: 0,
        }
    }

    async fn refresh(&mut self, queue: &dyn Queue) -> Result<(), AppError> {
        let mut still_open = Vec::with_capacity(self.open.len());
        let mut running = JobStats::default();
        let mut pending_read = 0;
        let mut open = std::mem::take(&mut self.open).into_iter();
        for (what, id) in open.by_ref() {
            let Some(job) = queue.get_job(id).await? else {
                self.failed
                    .push((what, "the job disappeared from the queue".into()));
                continue;
            };
            match job.status {
                JobStatus::Complete { .. } => {
                    self.complete += 1;
                    add_stats(&mut self.finished, &job.stats);
                }
                JobStatus::Failed { error } => {
                    add_stats(&mut self.finished, &job.stats);
                    self.failed.push((what, error));
                }
                JobStatus::Cancelled => {
                    add_stats(&mut self.finished, &job.stats);
                    self.cancelled += 1;
                }
                JobStatus::Processing => {
                    add_stats(&mut running, &job.stats);
                    still_open.push((what, id));
                }
                JobStatus::Pending => {
                    still_open.push((what, id));
                    pending_read += 1;
                    if pending_read >= PENDING_READS_PER_REFRESH {
                        break;
                    }
                }
            }
        }
        still_open.extend(open);
        self.open = still_open;
        self.running = running;
        Ok(())
    }

    /// Cancels every job still open (pending ones at once, running ones at
    /// their next heartbeat).
    async fn cancel_open(&mut self, queue: &dyn Queue) -> Result<(), AppError> {
        for (_, id) in &self.open {
            queue.cancel(*id, None).await?;
        }
        Ok(())
    }

    fn snapshot(&self, elapsed: Duration) -> RunSnapshot {
        let mut stats = self.finished.clone();
        add_stats(&mut stats, &self.running);
        RunSnapshot {
            jobs_total: self.total,
            jobs_finished: self.total - self.open.len(),
            jobs_failed: self.failed.len(),
            stats,
            elapsed,
        }
    }

    fn summary(self, snapshot: RunSnapshot) -> RunSummary {
        RunSummary {
            complete: self.complete,
            // Read and synced, or found unchanged (by a job, or by the
            // listing before any job).
            documents: snapshot.stats.documents + snapshot.stats.unchanged,
            chunks: snapshot.stats.chunks_upserted,
            chunks_unchanged: snapshot.stats.chunks_unchanged,
            bytes: snapshot.stats.bytes,
            unfinished: self.open.len(),
            cancelled: self.cancelled,
            failed: self.failed,
            elapsed: snapshot.elapsed,
            stats: snapshot.stats,
        }
    }
}

/// How a one-shot run ended.
#[derive(Debug, Default)]
pub struct RunSummary {
    /// Jobs complete.
    pub complete: usize,
    /// Documents synced: read by the run's jobs, or found unchanged (by
    /// their jobs, or by the source's listing before any job).
    pub documents: u64,
    /// Jobs neither finished nor cancelled (the run was interrupted).
    pub unfinished: usize,
    /// Jobs cancelled after another failed (no `--keep-going`).
    pub cancelled: usize,
    /// Chunks embedded and upserted.
    pub chunks: u64,
    /// Chunks already stored as they are: not re-embedded.
    pub chunks_unchanged: u64,
    pub bytes: u64,
    /// (object key or collection, error) of each failed job.
    pub failed: Vec<(String, String)>,
    pub elapsed: Duration,
    /// Every counter, summed over the run's jobs (stage times included).
    pub stats: JobStats,
}

impl RunSummary {
    /// Every job completed.
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.unfinished == 0 && self.cancelled == 0
    }
}

/// How often stored uploads whose job has ended are looked for.
const UPLOAD_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Removes uploaded files whose job ended without removing them (failed,
/// cancelled) or was never stored; see `domain::upload`.
async fn upload_janitor(queue: Arc<dyn Queue>, sources: Arc<Sources>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(UPLOAD_SWEEP_INTERVAL) => {}
        }
        match sources.uploads.sweep(queue.as_ref()).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed uploads whose invocation ended"),
            Err(error) => tracing::warn!(%error, "sweeping uploads failed"),
        }
    }
}
