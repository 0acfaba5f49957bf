//! What a file's inode says of its content, so an unchanged file is known
//! without reading it.
//!
//! A re-sync of an unchanged root used to read and hash every file to find
//! that nothing changed: a gigabyte read for nothing. Each document now
//! carries the stat of the file it was read from (`file_stat` on every
//! chunk: size, modification and change times in nanoseconds, inode), and a
//! walk that finds the same stat keeps the document unread — as `git`
//! trusts its index.
//!
//! Why these fields: any write changes the change time (`ctime`), which no
//! user call can set back, so a file rewritten with its size and
//! modification time kept (`cp -p`, `rsync -t`, `touch -d`) still differs;
//! a file replaced by another (a rename over it) differs by inode. The
//! device number is left out: it can change when a volume is mounted again,
//! and the file would be read again for nothing.
//!
//! **Invariant (racy writes):** a stat is recorded only when the file's
//! last change is [`SETTLE`] older than the moment it was taken. A file
//! changed again within the same clock tick as the change the stat shows
//! would otherwise keep a stat that vouches for content it no longer holds;
//! once the change is older than the margin, any later write moves `ctime`
//! past it. A file that is too fresh is recorded as [`UNSETTLED`], which
//! vouches for nothing, so the next sync reads it.

use std::fs::Metadata;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The chunk metadata field holding the stat of the file a document was
/// read from.
pub const FILE_STAT: &str = "file_stat";

/// What a file too fresh to vouch for is recorded as.
pub const UNSETTLED: &str = "unsettled";

/// How old a file's last change must be for its stat to vouch for its
/// content. Clock ticks of file times are milliseconds at most.
pub const SETTLE: Duration = Duration::from_secs(2);

/// A file's stat as stored in [`FILE_STAT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat(String);

impl FileStat {
    /// The stat of a file whose metadata was read at `now`.
    pub fn of(metadata: &Metadata, now: SystemTime) -> FileStat {
        FileStat(describe(metadata, now).unwrap_or_else(|| UNSETTLED.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a file with this stat holds what was stored under `stored`
    /// (the [`FILE_STAT`] of its document's first chunk).
    pub fn vouches_for(&self, stored: Option<&str>) -> bool {
        self.0 != UNSETTLED && stored == Some(self.0.as_str())
    }
}

#[cfg(unix)]
fn describe(metadata: &Metadata, now: SystemTime) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let nanos = |seconds: i64, nanos: i64| i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    let modified = nanos(metadata.mtime(), metadata.mtime_nsec());
    let changed = nanos(metadata.ctime(), metadata.ctime_nsec());
    let now = i128::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()?;
    let settle = i128::try_from(SETTLE.as_nanos()).ok()?;
    if now - modified.max(changed) < settle {
        return None;
    }
    Some(format!(
        "{}:{modified}:{changed}:{}",
        metadata.len(),
        metadata.ino()
    ))
}

/// Without `ctime` and inode numbers a stat vouches for nothing: every
/// file is read.
#[cfg(not(unix))]
fn describe(_: &Metadata, _: SystemTime) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_file_vouches_for_the_stat_stored_of_it_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.md");
        std::fs::write(&path, "hello").unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        let later = SystemTime::now() + SETTLE;
        let stat = FileStat::of(&metadata, later);
        assert!(stat.as_str().starts_with("5:"), "{stat:?}");
        assert!(stat.vouches_for(Some(stat.as_str())));
        assert!(!stat.vouches_for(None));
        assert!(!stat.vouches_for(Some(UNSETTLED)));

        // Rewritten with the same size and modification time: the change
        // time and so the stat differ.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "world").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(metadata.modified().unwrap()).unwrap();
        let rewritten = FileStat::of(&std::fs::metadata(&path).unwrap(), later + SETTLE);
        assert_ne!(rewritten, stat);
        assert!(!rewritten.vouches_for(Some(stat.as_str())));
    }

    #[test]
    fn a_file_changed_within_the_margin_vouches_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.md");
        std::fs::write(&path, "hello").unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        let fresh = FileStat::of(&metadata, SystemTime::now());
        assert_eq!(fresh.as_str(), UNSETTLED);
        assert!(!fresh.vouches_for(Some(UNSETTLED)));
    }
}
