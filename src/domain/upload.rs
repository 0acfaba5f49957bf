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
    /// `[uploads] max_pending_bytes` and `min_free_bytes`.
    max_pending_bytes: u64,
    min_free_bytes: u64,
    /// Declared sizes of the uploads this process is receiving: counted
    /// against the budget before their bytes are stored, so uploads
    /// checked at the same moment cannot all pass it.
    reserved: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Why an upload cannot be stored now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreFull {
    /// `max_pending_bytes` would be passed: uploads waiting for their jobs
    /// must drain first (retry later).
    Pending { pending: u64, limit: u64 },
    /// The state directory's filesystem would keep less than
    /// `min_free_bytes` free.
    Disk { free: u64, margin: u64 },
}

impl std::fmt::Display for StoreFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreFull::Pending { pending, limit } => write!(
                f,
                "{pending} bytes of uploads are waiting to be processed; this one would pass \
                 [uploads] max_pending_bytes ({limit}); retry later"
            ),
            StoreFull::Disk { free, margin } => write!(
                f,
                "the daemon's storage has {free} bytes free; this upload would leave less than \
                 [uploads] min_free_bytes ({margin})"
            ),
        }
    }
}

/// The budget one upload holds while it is received; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    bytes: u64,
    reserved: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::SeqCst);
    }
}

impl UploadStore {
    /// A store for `config`'s uploads, whose text files are written in
    /// segments of `segment_bytes` (what the registry gives: S3's
    /// `stream_segment_bytes`, as uploads stream as S3 objects do).
    pub fn new(config: &crate::config::Config, segment_bytes: u64) -> Self {
        UploadStore {
            kind: if config.queue.url.is_some() {
                UploadStoreKind::Queue
            } else {
                UploadStoreKind::Directory
            },
            directory: config.state_dir.join("uploads"),
            segment_bytes,
            request_timeout: config.uploads.request_timeout(),
            max_pending_bytes: config.uploads.max_pending_bytes,
            min_free_bytes: config.uploads.min_free_bytes,
            reserved: Default::default(),
        }
    }

    /// Reserves room for an upload of `declared` bytes, before any of it is
    /// stored: refused when the uploads stored and not yet processed (and
    /// those being received) plus this one would pass `max_pending_bytes`,
    /// or when the state directory's filesystem would keep less than
    /// `min_free_bytes` free (the directory store only: a queue store's
    /// disk is the database's).
    pub async fn reserve(
        &self,
        queue: &dyn Queue,
        declared: u64,
    ) -> Result<Result<Reservation, StoreFull>, String> {
        use std::sync::atomic::Ordering;
        let stored = match self.kind {
            UploadStoreKind::Queue => queue
                .upload_bytes()
                .await
                .map_err(|e| format!("measuring stored uploads: {e}"))?,
            UploadStoreKind::Directory => {
                let directory = self.directory.clone();
                tokio::task::spawn_blocking(move || directory_bytes(&directory))
                    .await
                    .map_err(|e| format!("measuring stored uploads: {e}"))?
            }
        };
        if matches!(self.kind, UploadStoreKind::Directory) {
            let probe = if self.directory.exists() {
                self.directory.clone()
            } else {
                self.directory
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            };
            if let Some(free) = free_bytes(&probe)
                && free.saturating_sub(declared) < self.min_free_bytes
            {
                return Ok(Err(StoreFull::Disk {
                    free,
                    margin: self.min_free_bytes,
                }));
            }
        }
        // Reserve first, then check: two uploads racing both count each other.
        let before = self.reserved.fetch_add(declared, Ordering::SeqCst);
        let reservation = Reservation {
            bytes: declared,
            reserved: std::sync::Arc::clone(&self.reserved),
        };
        let pending = stored.saturating_add(before);
        if pending.saturating_add(declared) > self.max_pending_bytes {
            return Ok(Err(StoreFull::Pending {
                pending,
                limit: self.max_pending_bytes,
            }));
        }
        Ok(Ok(reservation))
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
    let mut context = job.documents(&collection, SourceType::UPLOAD);
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

/// Bytes of the files in `directory` (finished uploads and `.part`s); 0 when
/// it does not exist yet.
fn directory_bytes(directory: &Path) -> u64 {
    std::fs::read_dir(directory)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Free bytes (for unprivileged users) of the filesystem holding `path`.
// The field types are u64 on 64-bit Linux and narrower elsewhere.
#[allow(clippy::useless_conversion)]
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` a buffer of the
    // right type, which statvfs fills when it returns 0.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}
