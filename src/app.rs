//! Wiring: builds the shared services from a [`Config`] and runs the daemon
//! in one of its modes (`serve`, `worker`, `run`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, Authenticator};
use crate::chunk::Chunker;
use crate::config::{Config, Secret};
use crate::embed::{Embedder, MiniLm};
use crate::model::{CreateJobPayload, CreateSourcePayload, GitRefIdentifier, JobStatus};
use crate::pipeline::Services;
use crate::queue::{JobFilter, PostgresQueue, Queue, QueueError, SourceFilter, SqliteQueue};
use crate::service;
use crate::sink::chroma::ChromaClient;
use crate::source::github::GitHubClients;
use crate::source::s3::{S3Clients, list_keys};
use crate::worker::{prune_loop, run_workers};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Invalid(String),
}

/// The parts every mode shares.
pub struct Daemon {
    pub config: Config,
    pub queue: Arc<dyn Queue>,
    pub chroma: ChromaClient,
    pub s3: Arc<S3Clients>,
    pub github: Arc<GitHubClients>,
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
        let s3 = Arc::new(S3Clients::new(
            config.aws_credentials.clone(),
            config.s3.clone(),
        ));
        let github = Arc::new(
            GitHubClients::new(config.github.clone())
                .map_err(|e| AppError::Setup(e.to_string()))?,
        );
        Ok(Daemon {
            config,
            queue,
            chroma,
            s3,
            github,
            wake: Arc::new(Notify::new()),
        })
    }

    /// Loads the model and builds the pipeline's services (slow: do it once).
    pub fn services(&self) -> Result<Arc<Services>, AppError> {
        let model = MiniLm::load(
            &self.config.embedding.model_dir,
            self.config.embedding.batch_size,
        )
        .map_err(|e| AppError::Setup(e.to_string()))?;
        let chunker = Chunker::new(Some(model.tokenizer()), model.max_tokens());
        Ok(Arc::new(Services {
            queue: Arc::clone(&self.queue),
            chroma: self.chroma.clone(),
            embedder: Arc::new(model),
            chunker,
            s3: Arc::clone(&self.s3),
            max_object_bytes: self.config.s3.max_object_bytes,
            github: Arc::clone(&self.github),
            web: self.config.web.clone(),
        }))
    }

    fn secrets(&self) -> Arc<Vec<Secret>> {
        let mut secrets = self.s3.secret_values();
        secrets.extend(self.github.secret_values());
        secrets.extend(self.config.chroma.api_key.clone());
        // A queue URL's password, should an error ever quote it.
        secrets.extend(
            self.config
                .queue
                .url
                .as_ref()
                .and_then(|url| url::Url::parse(url.expose()).ok())
                .and_then(|url| url.password().map(|p| Secret::new(p.to_string()))),
        );
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
        tokio::spawn(run_workers(
            services,
            self.config.queue.clone(),
            self.secrets(),
            self.config.workers,
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
        let workers = self.workers(services, shutdown.clone());
        service::spawn_watchdog(Arc::clone(&self.queue), shutdown.clone());
        service::ready(if with_api { "serving" } else { "working" });
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                service::stopping();
            }
        });
        if let Some((listener, auth)) = listener {
            let state = AppState {
                queue: Arc::clone(&self.queue),
                chroma: self.chroma.clone(),
                auth: Arc::new(auth),
                s3: Arc::clone(&self.s3),
                github: Arc::clone(&self.github),
                max_pending_jobs: self.config.queue.max_pending_jobs,
                wake: Arc::clone(&self.wake),
            };
            let stop = shutdown.clone();
            api::serve(listener, state, async move { stop.cancelled().await })
                .await
                .map_err(|e| AppError::Setup(format!("serving the API: {e}")))?;
        }
        let _ = workers.await;
        tracing::info!("stopped");
        Ok(())
    }

    /// One-shot sync of `source`: for S3 the given keys, or every key under
    /// the source's `path_prefix`; for GitHub the repository at a ref.
    pub async fn run_once(
        self,
        source: CreateSourcePayload,
        target: RunTarget,
        shutdown: CancellationToken,
    ) -> Result<RunSummary, AppError> {
        let source_type = api::sources::validate(&self.s3, &self.github, &source)
            .map_err(|e| AppError::Invalid(e.message))?;
        let record = match self.queue.create_source(source_type, &source).await {
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
        let payloads = self.run_payloads(&record, target).await?;
        tracing::info!(jobs = payloads.len(), source_id = %record.id, "one-shot sync starting");
        let mut job_ids = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let what = payload.object_key.clone().unwrap_or_default();
            let job = api::invocations::plan_job(&record, payload)
                .map_err(|e| AppError::Invalid(format!("{what}: {}", e.message)))?;
            match self.queue.enqueue(job).await {
                Ok(job) => job_ids.push(job.id),
                // Left pending by an interrupted run: it will be picked up now.
                Err(QueueError::Duplicate(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let services = self.services()?;
        let stop_workers = shutdown.child_token();
        let workers = self.workers(services, stop_workers.clone());
        let filter = JobFilter {
            source_id: Some(record.id),
            limit: 1000,
            ..JobFilter::default()
        };
        loop {
            let mut live = 0;
            for status in ["pending", "processing"] {
                let filter = JobFilter {
                    status: Some(status.to_string()),
                    ..filter.clone()
                };
                live += self.queue.list_jobs(&filter).await?.len();
            }
            if live == 0 || shutdown.is_cancelled() {
                break;
            }
            tracing::info!(remaining = live, "syncing");
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
        stop_workers.cancel();
        let _ = workers.await;
        let mut summary = RunSummary::default();
        for id in job_ids {
            let Some(job) = self.queue.get_job(id).await? else {
                continue;
            };
            let key = match &job.metadata.kind {
                crate::model::JobKind::S3(s3) => s3.object_key.clone().unwrap_or_default(),
                _ => job.metadata.collection_name.clone(),
            };
            summary.chunks += job.stats.chunks_upserted;
            summary.documents += job.stats.documents;
            match job.status {
                JobStatus::Complete { .. } => summary.complete += 1,
                JobStatus::Failed { error } => summary.failed.push((key, error)),
                _ => summary.unfinished += 1,
            }
        }
        Ok(summary)
    }
}

/// What a one-shot `run` syncs of its source.
#[derive(Debug, Default, Clone)]
pub struct RunTarget {
    /// S3: these keys; none means every key under the source's prefix.
    pub object_keys: Vec<String>,
    /// GitHub: the collection to write (required).
    pub collection: Option<String>,
    /// GitHub: the ref; none means the repository's default branch.
    pub git_ref: Option<GitRefIdentifier>,
}

impl Daemon {
    /// The invocations a one-shot run enqueues.
    async fn run_payloads(
        &self,
        record: &crate::queue::SourceRecord,
        target: RunTarget,
    ) -> Result<Vec<CreateJobPayload>, AppError> {
        if record.payload.web_scrape.is_some() {
            return Ok(vec![CreateJobPayload {
                target_collection_name: target.collection,
                ..CreateJobPayload::default()
            }]);
        }
        if record.payload.github.is_some() {
            let mut payload = CreateJobPayload {
                target_collection_name: target.collection,
                ref_identifier: target.git_ref,
                ..CreateJobPayload::default()
            };
            api::invocations::fill_default_ref(&self.github, record, &mut payload)
                .await
                .map_err(|e| AppError::Invalid(e.message))?;
            return Ok(vec![payload]);
        }
        let s3 = record
            .payload
            .s3
            .as_ref()
            .ok_or_else(|| AppError::Invalid("this source type cannot be run".into()))?;
        let keys = if target.object_keys.is_empty() {
            let client = self
                .s3
                .client(s3)
                .await
                .map_err(|e| AppError::Setup(e.to_string()))?;
            let prefix = s3.path_prefix.clone().unwrap_or_default();
            list_keys(&client, &s3.bucket_name, &prefix)
                .await
                .map_err(|e| AppError::Setup(e.to_string()))?
        } else {
            target.object_keys
        };
        Ok(keys
            .into_iter()
            .map(|key| CreateJobPayload {
                object_key: Some(key),
                target_collection_name: target.collection.clone(),
                ..CreateJobPayload::default()
            })
            .collect())
    }
}

#[derive(Debug, Default)]
pub struct RunSummary {
    /// Jobs complete.
    pub complete: usize,
    /// Documents synced by them.
    pub documents: u64,
    pub unfinished: usize,
    pub chunks: u64,
    pub failed: Vec<(String, String)>,
}
