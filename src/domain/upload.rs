//! Files sent to `POST /api/v1/add-file`: where they wait for their job,
//! the checks their fields pass, and the job that syncs them.
//!
//! An upload is not a source: its job has no source row
//! (`source_type: upload`), and carries its settings (chunking, embedding,
//! filename, content hash) in its payload ([`UploadSpec`]). The file is
//! named after the job, which is stored only once the file is whole.
//!
//! Where the file waits ([`UploadStore`]):
//! - `directory` (SQLite queue: one machine): `<state_dir>/uploads/<job id>`,
//!   written as `<job id>.part` and renamed when complete, so a reader never
//!   sees half a file.
//! - `queue` (PostgreSQL queue: the machine that received the file may not
//!   be the one that runs its job): 1 MiB pieces in the queue's
//!   `upload_blobs` table, read back piece by piece.
//!
//! Either way memory holds one piece, and the file is removed when its job
//! completes, or by the janitor ([`UploadStore::sweep`]) once its job ended
//! otherwise or was never stored (a request that failed after the file, a
//! process killed mid-upload).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::model::{SourceType, UploadSpec, UploadStoreKind};
use crate::pipeline::segments::Segments;
use crate::pipeline::{Document, Fetched, JobError, JobRun, SegmentedDocument, SourceError};
use crate::queue::Queue;

/// Size of a piece: of a write to the queue's blob table, of a read.
const PIECE_BYTES: usize = 1024 * 1024;
/// Files of jobs that were never stored are kept this long past the upload
/// timeout before the janitor removes them (their request may still be
/// finishing).
const ORPHAN_GRACE: Duration = Duration::from_secs(60);

/// Where uploaded files wait for their jobs.
pub struct UploadStore {
    kind: UploadStoreKind,
    directory: PathBuf,
    /// Text files larger than this are synced a segment at a time.
    segment_bytes: u64,
    /// How long an upload request may take; older `.part` files are debris.
    request_timeout: Duration,
}

impl UploadStore {
    pub fn new(config: &crate::config::Config) -> Self {
        UploadStore {
            kind: if config.queue.url.is_some() {
                UploadStoreKind::Queue
            } else {
                UploadStoreKind::Directory
            },
            directory: config.state_dir.join("uploads"),
            segment_bytes: config.s3.stream_segment_bytes,
            request_timeout: config.uploads.request_timeout(),
        }
    }

    pub fn kind(&self) -> UploadStoreKind {
        self.kind
    }

    fn path(&self, id: Uuid) -> PathBuf {
        self.directory.join(id.to_string())
    }

    /// Starts storing the file of job `id`. Dropped before
    /// [`UploadWriter::finish`], it removes what it wrote.
    pub async fn writer(
        &self,
        queue: std::sync::Arc<dyn Queue>,
        id: Uuid,
    ) -> Result<UploadWriter, String> {
        let target = match self.kind {
            UploadStoreKind::Directory => {
                tokio::fs::create_dir_all(&self.directory)
                    .await
                    .map_err(|e| format!("creating {}: {e}", self.directory.display()))?;
                let part = self.directory.join(format!("{id}.part"));
                let file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&part)
                    .await
                    .map_err(|e| format!("creating {}: {e}", part.display()))?;
                Target::Directory {
                    file,
                    part,
                    done: self.path(id),
                }
            }
            UploadStoreKind::Queue => Target::Queue {
                queue,
                buffer: BytesMut::with_capacity(PIECE_BYTES),
                next_piece: 0,
            },
        };
        Ok(UploadWriter {
            id,
            target: Some(target),
            size: 0,
            hash: Sha256::new(),
        })
    }

    /// Removes the file of job `id` (done with it, or never to be used).
    pub async fn remove(&self, queue: &dyn Queue, id: Uuid) -> Result<(), String> {
        match self.kind {
            UploadStoreKind::Directory => match tokio::fs::remove_file(self.path(id)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("removing upload {id}: {e}")),
            },
            UploadStoreKind::Queue => queue
                .delete_upload(id)
                .await
                .map_err(|e| format!("removing upload {id}: {e}")),
        }
    }

    /// The janitor: removes files whose job has finished, and files whose
    /// job was never stored once no request can still be writing them.
    /// Returns how many were removed.
    pub async fn sweep(&self, queue: &dyn Queue) -> Result<usize, String> {
        let orphaned_before = SystemTime::now() - (self.request_timeout + ORPHAN_GRACE);
        match self.kind {
            UploadStoreKind::Queue => {
                let before = Utc::now()
                    - chrono::Duration::from_std(self.request_timeout + ORPHAN_GRACE)
                        .unwrap_or_default();
                let stale = queue
                    .stale_uploads(before)
                    .await
                    .map_err(|e| e.to_string())?;
                for id in &stale {
                    queue.delete_upload(*id).await.map_err(|e| e.to_string())?;
                }
                Ok(stale.len())
            }
            UploadStoreKind::Directory => {
                let mut entries = match tokio::fs::read_dir(&self.directory).await {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                    Err(e) => return Err(format!("{}: {e}", self.directory.display())),
                };
                let mut removed = 0;
                while let Ok(Some(entry)) = entries.next_entry().await {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let (stem, partial) = match name.strip_suffix(".part") {
                        Some(stem) => (stem.to_string(), true),
                        None => (name.clone(), false),
                    };
                    let Ok(id) = Uuid::parse_str(&stem) else {
                        continue;
                    };
                    let old = entry
                        .metadata()
                        .await
                        .and_then(|m| m.modified())
                        .is_ok_and(|modified| modified < orphaned_before);
                    let stale = if partial {
                        old
                    } else {
                        match queue.get_job(id).await.map_err(|e| e.to_string())? {
                            Some(job) => job.status.is_finished(),
                            None => old,
                        }
                    };
                    if stale && remove_quietly(&entry.path()).await {
                        removed += 1;
                    }
                }
                Ok(removed)
            }
        }
    }

    /// Reads the stored file of job `id` piece by piece.
    async fn reader(&self, queue: &dyn Queue, id: Uuid) -> Result<Reader, SourceError> {
        match self.kind {
            UploadStoreKind::Directory => {
                let path = self.path(id);
                match tokio::fs::File::open(&path).await {
                    Ok(file) => Ok(Reader::File(file)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(gone(id)),
                    Err(e) => Err(SourceError::Transient(format!("opening upload {id}: {e}"))),
                }
            }
            UploadStoreKind::Queue => {
                // Piece 0 exists for every stored file, even an empty one.
                match queue.upload_piece(id, 0).await {
                    Ok(Some(first)) => Ok(Reader::Queue {
                        next: Some(Bytes::from(first)),
                        next_piece: 1,
                    }),
                    Ok(None) => Err(gone(id)),
                    Err(e) => Err(SourceError::Transient(format!("reading upload {id}: {e}"))),
                }
            }
        }
    }
}

fn gone(id: Uuid) -> SourceError {
    SourceError::Permanent(format!(
        "the uploaded file of invocation {id} is no longer stored (it is removed once its \
         invocation has finished); upload it again"
    ))
}

async fn remove_quietly(path: &Path) -> bool {
    match tokio::fs::remove_file(path).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "removing a stale upload failed");
            false
        }
    }
}

enum Target {
    Directory {
        file: tokio::fs::File,
        part: PathBuf,
        done: PathBuf,
    },
    Queue {
        queue: std::sync::Arc<dyn Queue>,
        buffer: BytesMut,
        next_piece: u32,
    },
}

/// Stores one uploaded file as it arrives; hashes and counts it.
pub struct UploadWriter {
    id: Uuid,
    /// `None` once finished.
    target: Option<Target>,
    size: u64,
    hash: Sha256,
}

impl UploadWriter {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn write(&mut self, piece: &[u8]) -> Result<(), String> {
        self.size += piece.len() as u64;
        self.hash.update(piece);
        let id = self.id;
        match self.target.as_mut() {
            Some(Target::Directory { file, part, .. }) => file
                .write_all(piece)
                .await
                .map_err(|e| format!("writing {}: {e}", part.display())),
            Some(Target::Queue {
                queue,
                buffer,
                next_piece,
            }) => {
                buffer.extend_from_slice(piece);
                while buffer.len() >= PIECE_BYTES {
                    let full = buffer.split_to(PIECE_BYTES);
                    queue
                        .put_upload_piece(id, *next_piece, &full)
                        .await
                        .map_err(|e| format!("storing upload {id}: {e}"))?;
                    *next_piece += 1;
                }
                Ok(())
            }
            None => Err("the upload was already finished".into()),
        }
    }

    /// Makes the file whole and visible to its job; returns its size and
    /// SHA-256.
    pub async fn finish(mut self) -> Result<(u64, String), String> {
        let id = self.id;
        match self.target.take() {
            Some(Target::Directory {
                mut file,
                part,
                done,
            }) => {
                let result = async {
                    file.flush().await?;
                    file.sync_all().await?;
                    drop(file);
                    tokio::fs::rename(&part, &done).await
                }
                .await;
                if let Err(e) = result {
                    let _ = tokio::fs::remove_file(&part).await;
                    return Err(format!("storing upload {id}: {e}"));
                }
            }
            Some(Target::Queue {
                queue,
                buffer,
                next_piece,
            }) => {
                // The last piece, or piece 0 of an empty file: a reader
                // tells "empty" from "gone" by piece 0.
                if (!buffer.is_empty() || next_piece == 0)
                    && let Err(e) = queue.put_upload_piece(id, next_piece, &buffer).await
                {
                    let _ = queue.delete_upload(id).await;
                    return Err(format!("storing upload {id}: {e}"));
                }
            }
            None => return Err("the upload was already finished".into()),
        }
        let hash = std::mem::take(&mut self.hash);
        Ok((self.size, hex::encode(hash.finalize())))
    }
}

impl Drop for UploadWriter {
    /// An upload abandoned midway (the client went away, a field was bad)
    /// leaves nothing behind.
    fn drop(&mut self) {
        match self.target.take() {
            Some(Target::Directory { part, .. }) => {
                let _ = std::fs::remove_file(part);
            }
            Some(Target::Queue { queue, .. }) => {
                let id = self.id;
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Err(error) = queue.delete_upload(id).await {
                            tracing::warn!(%error, upload = %id, "removing an abandoned upload failed; the janitor will");
                        }
                    });
                }
            }
            None => {}
        }
    }
}

enum Reader {
    File(tokio::fs::File),
    Queue {
        next: Option<Bytes>,
        next_piece: u32,
    },
}

impl Reader {
    /// The next piece of the file; `None` at its end.
    async fn next(&mut self, queue: &dyn Queue, id: Uuid) -> Result<Option<Bytes>, SourceError> {
        match self {
            Reader::File(file) => {
                let mut piece = BytesMut::zeroed(PIECE_BYTES);
                let read = file
                    .read(&mut piece)
                    .await
                    .map_err(|e| SourceError::Transient(format!("reading upload {id}: {e}")))?;
                piece.truncate(read);
                Ok((read > 0).then(|| piece.freeze()))
            }
            Reader::Queue { next, next_piece } => {
                let Some(piece) = next.take() else {
                    return Ok(None);
                };
                if piece.len() == PIECE_BYTES {
                    *next = queue
                        .upload_piece(id, *next_piece)
                        .await
                        .map_err(|e| SourceError::Transient(format!("reading upload {id}: {e}")))?
                        .map(Bytes::from);
                    *next_piece += 1;
                }
                Ok((!piece.is_empty()).then_some(piece))
            }
        }
    }
}

/// A large uploaded text file, handed to the pipeline a segment at a time.
struct UploadedText<'a> {
    queue: &'a dyn Queue,
    id: Uuid,
    spec: &'a UploadSpec,
    reader: Reader,
    segments: Segments,
    finished: bool,
}

impl SegmentedDocument for UploadedText<'_> {
    fn key(&self) -> &str {
        &self.spec.filename
    }
    fn version(&self) -> &str {
        &self.spec.sha256
    }
    fn content_type(&self) -> Option<String> {
        self.spec.content_type.clone()
    }
    fn size(&self) -> u64 {
        self.spec.size
    }
    fn source_fields(&self) -> Vec<(String, serde_json::Value)> {
        Vec::new()
    }
    async fn next_segment(&mut self) -> Result<Option<Bytes>, SourceError> {
        while !self.finished && self.segments.wants_more() {
            match self.reader.next(self.queue, self.id).await? {
                Some(piece) => self.segments.push(&piece),
                None => self.finished = true,
            }
        }
        Ok(self.segments.cut())
    }
}

/// Syncs an uploaded file into the job's collection, then removes it.
pub async fn run(store: &UploadStore, job: &JobRun<'_>, spec: &UploadSpec) -> Result<(), JobError> {
    let queue = job.services.queue.as_ref();
    let id = job.claimed.job.id;
    let collection = job.open_collection().await?;
    let mut context = job.documents(&collection, SourceType::Upload);
    context.custom_id = job.claimed.payload.custom_id.as_deref();
    context.user_metadata = job.claimed.payload.metadata.as_ref();
    job.state.set_progress(
        1,
        3,
        format!("reading {} ({} bytes)", spec.filename, spec.size),
    );
    if let Some(reason) =
        crate::extract::skipped_by_name(&spec.filename, spec.content_type.as_deref())
    {
        // Binary by its name or type: skipped without reading it.
        context.skip(&spec.filename, reason).await?;
    } else {
        sync_file(store, &context, job, spec).await?;
    }
    job.finish(&collection).await?;
    if let Err(error) = store.remove(queue, id).await {
        tracing::warn!(%error, "the janitor will remove the upload");
    }
    Ok(())
}

/// Reads the stored file and hands it to the pipeline: text over a segment
/// a segment at a time, anything else whole.
async fn sync_file(
    store: &UploadStore,
    context: &crate::pipeline::DocumentContext<'_>,
    job: &JobRun<'_>,
    spec: &UploadSpec,
) -> Result<(), JobError> {
    let queue = job.services.queue.as_ref();
    let id = job.claimed.job.id;
    let mut reader = store.reader(queue, id).await?;
    if spec.size > store.segment_bytes.max(4096)
        && crate::extract::streamable(&spec.filename, spec.content_type.as_deref())
    {
        context
            .process_streamed(UploadedText {
                queue,
                id,
                spec,
                reader,
                segments: Segments::new(store.segment_bytes),
                finished: false,
            })
            .await?;
    } else {
        let mut bytes = BytesMut::with_capacity(spec.size.min(64 << 20) as usize);
        while let Some(piece) = reader.next(queue, id).await? {
            if job.cancel.is_cancelled() {
                return Err(JobError::Cancelled);
            }
            bytes.extend_from_slice(&piece);
            if bytes.len() as u64 > spec.size {
                return Err(JobError::Permanent(format!(
                    "upload {id} holds more than the {} bytes it was stored with",
                    spec.size
                )));
            }
        }
        context
            .process(Fetched::Document(Document {
                key: spec.filename.clone(),
                version: spec.sha256.clone(),
                content_type: spec.content_type.clone(),
                bytes: bytes.freeze(),
                metadata: Vec::new(),
            }))
            .await?;
    }
    Ok(())
}
