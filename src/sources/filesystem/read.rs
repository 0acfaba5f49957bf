//! Reading one file of a root as a [`Fetched`] item.
//!
//! Blocking IO: run it on a blocking thread. Memory is bounded by
//! `max_bytes`: a file is never read past `max_bytes + 1` bytes, even one
//! that grows while it is read.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;

use super::root::{Resolved, Root};
use super::stat::{FILE_STAT, FileStat};
use super::walk::NOT_REGULAR;
use crate::config::sha256_hex;
use crate::pipeline::{Document, Fetched, SourceError};

/// A size limit and the `[filesystem]` setting it comes from (named in
/// skip reasons); a bare number is `max_file_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct SizeLimit {
    pub bytes: u64,
    pub setting: &'static str,
}

impl From<u64> for SizeLimit {
    fn from(bytes: u64) -> Self {
        SizeLimit {
            bytes,
            setting: "max_file_bytes",
        }
    }
}

impl From<(u64, &'static str)> for SizeLimit {
    fn from((bytes, setting): (u64, &'static str)) -> Self {
        SizeLimit { bytes, setting }
    }
}

/// Reads `relative` (a path relative to the root, `/`-separated).
///
/// - A path that is refused (absolute, `..`, a link leading out of the
///   root) is [`SourceError::Permanent`] with the reason: retrying cannot
///   change the answer.
/// - A path with nothing there is [`SourceError::NotFound`]: the
///   document's chunks must go.
/// - A file over `max_bytes`, a directory or a special file is
///   [`Fetched::Skipped`] with the reason.
/// - Otherwise a [`Document`] keyed by `relative`, versioned by the SHA-256
///   of its content, so an unchanged file is recognised whatever its mtime,
///   with the file's stat ([`FILE_STAT`]) in its metadata: what a later
///   walk compares to leave the file unread.
pub fn read_document(
    root: &Root,
    relative: &str,
    limit: impl Into<SizeLimit>,
) -> Result<Fetched, SourceError> {
    let limit = limit.into();
    let max_bytes = limit.bytes;
    let skipped = |reason: String| {
        Ok(Fetched::Skipped {
            key: relative.to_string(),
            reason,
        })
    };
    let path = match root.resolve(relative) {
        Ok(Resolved::File(path)) => path,
        Ok(Resolved::Missing) => {
            return Err(SourceError::NotFound(format!(
                "{relative:?} does not exist under {root}"
            )));
        }
        Ok(Resolved::Directory(_)) => return skipped("a directory, not a file".to_string()),
        Ok(Resolved::Special(_)) => return skipped(NOT_REGULAR.to_string()),
        Err(reason) => {
            return Err(SourceError::Permanent(format!(
                "reading {relative:?} under {root}: {reason}"
            )));
        }
    };
    let io_error = |error: io::Error| classify(root, relative, error);
    let file = open_without_following(&path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    // Taken before the content is read: a write during the read changes
    // the file's stat, so the next sync reads it again.
    let stat = FileStat::of(&metadata, SystemTime::now());
    if !metadata.is_file() {
        return skipped(NOT_REGULAR.to_string());
    }
    check_still_inside(root, relative, &file)?;
    let size = metadata.len();
    if size > max_bytes {
        return skipped(too_large(size, limit));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > max_bytes {
        return skipped(format!(
            "{} while it was read",
            too_large(bytes.len() as u64, limit)
        ));
    }
    Ok(Fetched::Document(Document {
        key: relative.to_string(),
        version: sha256_hex(&bytes),
        content_type: None,
        bytes: Bytes::from(bytes),
        metadata: vec![(FILE_STAT.to_string(), stat.as_str().into())],
    }))
}

fn too_large(size: u64, limit: SizeLimit) -> String {
    format!(
        "file is {size} bytes, over the [filesystem] {} limit of {}",
        limit.setting, limit.bytes
    )
}

/// Opens the resolved path for reading. `O_NOFOLLOW`: a file swapped for a
/// symbolic link since it was resolved is refused (the retry resolves the
/// link afresh). `O_NONBLOCK`: a file swapped for a FIFO cannot hang the
/// open; it has no effect on regular files.
fn open_without_following(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Where the opened file really is: a directory of its path swapped for a
/// link between resolving and opening would otherwise lead out of the root.
/// Linux tells through `/proc/self/fd`; without `/proc` the resolution
/// before opening is the only check.
#[cfg(target_os = "linux")]
fn check_still_inside(root: &Root, relative: &str, file: &File) -> Result<(), SourceError> {
    use std::os::fd::AsRawFd;
    let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
        return Ok(());
    };
    if root.contains(&real) {
        Ok(())
    } else {
        Err(SourceError::Permanent(format!(
            "reading {relative:?} under {root}: the file opened lies outside the root (a \
             directory was replaced by a symbolic link)"
        )))
    }
}

#[cfg(not(target_os = "linux"))]
fn check_still_inside(_: &Root, _: &str, _: &File) -> Result<(), SourceError> {
    Ok(())
}

fn classify(root: &Root, relative: &str, error: io::Error) -> SourceError {
    let message = format!("reading {relative:?} under {root}: {error}");
    #[cfg(unix)]
    {
        if error.raw_os_error() == Some(libc::ELOOP) {
            return SourceError::Transient(format!(
                "{message} (it became a symbolic link after it was resolved)"
            ));
        }
    }
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => SourceError::NotFound(message),
        io::ErrorKind::PermissionDenied => SourceError::Permanent(message),
        _ => SourceError::Transient(message),
    }
}

#[cfg(test)]
mod tests {
    use super::super::root::tests::open;
    use super::*;

    fn document(fetched: Fetched) -> Document {
        match fetched {
            Fetched::Document(document) => document,
            other => panic!("expected a document, got {other:?}"),
        }
    }

    fn skip_reason(fetched: Fetched) -> String {
        match fetched {
            Fetched::Skipped { reason, .. } => reason,
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_file_keyed_by_its_path_and_versioned_by_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/a.md"), "# Title\n").unwrap();
        let root = open(dir.path());
        let doc = document(read_document(&root, "docs/a.md", 1024).unwrap());
        assert_eq!(doc.key, "docs/a.md");
        assert_eq!(&doc.bytes[..], b"# Title\n");
        assert_eq!(doc.version, sha256_hex(b"# Title\n"));
        assert_eq!(doc.content_type, None);
        // Written just now: too fresh for its stat to vouch for it.
        assert_eq!(
            doc.metadata,
            vec![(FILE_STAT.to_string(), super::super::stat::UNSETTLED.into())]
        );
    }

    #[test]
    fn a_file_over_the_limit_is_skipped_unread() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.txt"), "0123456789").unwrap();
        let root = open(dir.path());
        let reason = skip_reason(read_document(&root, "big.txt", 9).unwrap());
        assert!(reason.contains("10 bytes"), "{reason}");
        assert!(reason.contains("max_file_bytes"), "{reason}");
        let doc = document(read_document(&root, "big.txt", 10).unwrap());
        assert_eq!(doc.bytes.len(), 10, "exactly the limit is read");
    }

    #[test]
    fn a_missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = open(dir.path());
        let err = read_document(&root, "gone.md", 1024).unwrap_err();
        assert!(matches!(err, SourceError::NotFound(_)), "{err:?}");
    }

    #[cfg(unix)]
    #[test]
    fn escaping_paths_are_permanent_errors() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "secret").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("leak")).unwrap();
        let root = open(dir.path());
        let escape = format!(
            "../{}/secret",
            outside.path().file_name().unwrap().to_str().unwrap()
        );
        for path in ["leak", escape.as_str(), "/etc/passwd"] {
            let err = read_document(&root, path, 1024).unwrap_err();
            assert!(matches!(err, SourceError::Permanent(_)), "{path}: {err:?}");
            assert!(!err.to_string().contains("secret\n"), "{err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn directories_and_fifos_are_skipped_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let root = open(dir.path());
        let reason = skip_reason(read_document(&root, "sub", 1024).unwrap());
        assert!(reason.contains("directory"), "{reason}");
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|status| status.success()) {
            let reason = skip_reason(read_document(&root, "pipe", 1024).unwrap());
            assert_eq!(reason, NOT_REGULAR);
        }
    }
}
