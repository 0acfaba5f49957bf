//! Listing a root: every regular file the globs accept, for a full sync.
//!
//! Blocking IO: run it on a blocking thread. The listing is complete or an
//! error, never partial: a sync removes the documents a walk did not find,
//! so an unreadable directory must fail the walk rather than make its files
//! look removed.

use walkdir::WalkDir;

use super::root::{Resolved, Root};
use super::stat::FileStat;
use crate::sources::globs::PathFilter;

/// A file to sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedFile {
    /// Relative to the root, `/`-separated: the document key.
    pub path: String,
    /// Bytes, as listed (a file can change before it is read).
    pub size: u64,
    /// Its stat, as listed: when the stored document's is the same, the
    /// file is not read.
    pub stat: FileStat,
}

/// An entry the globs accept but that is not synced, and why (recorded in
/// the job's stats so users see why a file is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// Relative to the root; lossy for names that are not UTF-8.
    pub path: String,
    pub reason: String,
}

/// What a walk found, each list sorted by path (byte order), so runs over
/// the same tree give the same order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    pub files: Vec<WalkedFile>,
    pub skipped: Vec<SkippedEntry>,
}

/// Every file under the root that `filter` accepts. Directory links are not
/// followed (no loops, no second copies of a tree); file links are followed
/// when their target is inside the root. More than `max_files` entries
/// (files plus skipped entries) fail the walk.
pub fn walk(root: &Root, filter: &PathFilter, max_files: usize) -> Result<Walk, String> {
    walk_from(root, root.path(), filter, max_files)
}

/// Like [`walk`], for the directory `relative` of the root only (an
/// invocation naming a directory). The directory must be reached without
/// symbolic links, as a full walk would reach it: its files keep the keys a
/// full walk gives them.
pub fn walk_under(
    root: &Root,
    relative: &str,
    filter: &PathFilter,
    max_files: usize,
) -> Result<Walk, String> {
    match root.resolve(relative)? {
        Resolved::Directory(real) if real == root.path().join(relative) => {
            walk_from(root, &real, filter, max_files)
        }
        Resolved::Directory(_) => Err(format!(
            "path {relative:?} is reached through a symbolic link; directory links are not followed"
        )),
        Resolved::Missing => Err(format!("path {relative:?} does not exist")),
        Resolved::File(_) | Resolved::Special(_) => {
            Err(format!("path {relative:?} is not a directory"))
        }
    }
}

fn walk_from(
    root: &Root,
    start: &std::path::Path,
    filter: &PathFilter,
    max_files: usize,
) -> Result<Walk, String> {
    let mut walk = Walk::default();
    let entries = WalkDir::new(start)
        .follow_links(false)
        .follow_root_links(false)
        .min_depth(1)
        .into_iter()
        // Directories whose every path the globs exclude (`node_modules/`,
        // `.git/`) are not entered: a walk costs what the source keeps.
        .filter_entry(|entry| {
            !entry.file_type().is_dir()
                || root
                    .relative(entry.path())
                    .is_none_or(|relative| !filter.excludes_directory(&relative))
        });
    for entry in entries {
        let entry = entry.map_err(|error| format!("walking the root {root}: {error}"))?;
        let file_type = entry.file_type();
        if file_type.is_dir() {
            continue;
        }
        let Some(relative) = root.relative(entry.path()) else {
            let lossy = entry
                .path()
                .strip_prefix(root.path())
                .unwrap_or(entry.path())
                .to_string_lossy()
                .into_owned();
            if filter.accepts(&lossy) {
                walk.skipped.push(SkippedEntry {
                    path: lossy,
                    reason: "the name is not UTF-8 or contains a backslash".to_string(),
                });
            }
            check_bound(&walk, root, max_files)?;
            continue;
        };
        if !filter.accepts(&relative) {
            continue;
        }
        let listed = if file_type.is_file() {
            let metadata = entry
                .metadata()
                .map_err(|error| format!("reading {relative:?} under {root}: {error}"))?;
            Ok(listed(&metadata))
        } else if file_type.is_symlink() {
            follow_file_link(root, entry.path())
        } else {
            Err(NOT_REGULAR.to_string())
        };
        match listed {
            Ok((size, stat)) => walk.files.push(WalkedFile {
                path: relative,
                size,
                stat,
            }),
            Err(reason) => walk.skipped.push(SkippedEntry {
                path: relative,
                reason,
            }),
        }
        check_bound(&walk, root, max_files)?;
    }
    walk.files.sort_by(|a, b| a.path.cmp(&b.path));
    walk.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(walk)
}

pub(crate) const NOT_REGULAR: &str = "not a regular file (FIFO, socket or device)";

fn check_bound(walk: &Walk, root: &Root, max_files: usize) -> Result<(), String> {
    if walk.files.len() + walk.skipped.len() > max_files {
        return Err(format!(
            "the root {root} has more than {max_files} files the globs accept; raise \
             [filesystem] max_files or narrow include_globs / exclude_globs"
        ));
    }
    Ok(())
}

/// What a walk lists of a regular file: its size and its stat now.
fn listed(metadata: &std::fs::Metadata) -> (u64, FileStat) {
    (
        metadata.len(),
        FileStat::of(metadata, std::time::SystemTime::now()),
    )
}

/// The size and stat of the file a link leads to, or why it is skipped.
fn follow_file_link(root: &Root, link: &std::path::Path) -> Result<(u64, FileStat), String> {
    let target = match std::fs::canonicalize(link) {
        Ok(target) => target,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err("symbolic link to nothing (dangling)".to_string());
        }
        Err(error) => return Err(format!("symbolic link not followed: {error}")),
    };
    if !root.contains(&target) {
        return Err("symbolic link to outside the root (not followed)".to_string());
    }
    let metadata = std::fs::metadata(&target)
        .map_err(|error| format!("symbolic link not followed: {error}"))?;
    if metadata.is_dir() {
        Err("symbolic link to a directory (not followed)".to_string())
    } else if metadata.is_file() {
        Ok(listed(&metadata))
    } else {
        Err(NOT_REGULAR.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::root::tests::open;
    use super::*;

    fn write(dir: &std::path::Path, path: &str, content: &str) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn paths(walk: &Walk) -> Vec<&str> {
        walk.files.iter().map(|f| f.path.as_str()).collect()
    }

    fn globs(globs: &[&str]) -> Vec<String> {
        globs.iter().map(|g| g.to_string()).collect()
    }

    #[cfg(unix)]
    #[test]
    fn walks_files_the_globs_accept_and_skips_links_out_and_directory_links() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.md", "secret");
        let d = dir.path();
        write(d, "a.md", "aaaa");
        write(d, "b.rs", "fn main() {}");
        write(d, "docs/c.md", "c");
        write(d, "docs-2/d.md", "d");
        write(d, "node_modules/x/y.md", "vendored");
        symlink("a.md", d.join("in-link.md")).unwrap();
        symlink(outside.path().join("secret.md"), d.join("out-link.md")).unwrap();
        symlink("docs", d.join("dir-link")).unwrap();
        symlink(".", d.join("docs/loop")).unwrap();
        symlink("nothing-here.md", d.join("dangling.md")).unwrap();
        let root = open(d);

        let walk = walk(&root, &PathFilter::new(None, None).unwrap(), 100).unwrap();
        assert_eq!(
            paths(&walk),
            ["a.md", "b.rs", "docs-2/d.md", "docs/c.md", "in-link.md"],
            "sorted by path; node_modules excluded by default"
        );
        assert_eq!(walk.files[0].size, 4);
        assert_eq!(walk.files[4].size, 4, "a file link has its target's size");
        let skipped: Vec<(&str, &str)> = walk
            .skipped
            .iter()
            .map(|s| (s.path.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [
                ("dangling.md", "symbolic link to nothing (dangling)"),
                ("dir-link", "symbolic link to a directory (not followed)"),
                ("docs/loop", "symbolic link to a directory (not followed)"),
                (
                    "out-link.md",
                    "symbolic link to outside the root (not followed)"
                ),
            ]
        );

        let markdown = PathFilter::new(Some(&globs(&["*.md"])), None).unwrap();
        let walk = super::walk(&root, &markdown, 100).unwrap();
        assert_eq!(
            paths(&walk),
            [
                "a.md",
                "docs-2/d.md",
                "docs/c.md",
                "in-link.md",
                "node_modules/x/y.md"
            ]
        );
        assert_eq!(
            walk.skipped.len(),
            2,
            "only skipped entries the globs accept"
        );

        let docs_only = PathFilter::new(Some(&globs(&["docs/**"])), None).unwrap();
        let walk = super::walk(&root, &docs_only, 100).unwrap();
        assert_eq!(paths(&walk), ["docs/c.md"]);
    }

    #[cfg(unix)]
    #[test]
    fn walks_one_directory_reached_without_links() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "docs/c.md", "c");
        write(dir.path(), "docs/sub/e.md", "e");
        write(dir.path(), "top.md", "t");
        std::os::unix::fs::symlink("docs", dir.path().join("dir-link")).unwrap();
        let root = open(dir.path());
        let all = PathFilter::new(None, None).unwrap();
        let walk = walk_under(&root, "docs", &all, 100).unwrap();
        assert_eq!(paths(&walk), ["docs/c.md", "docs/sub/e.md"]);
        let err = walk_under(&root, "dir-link", &all, 100).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(walk_under(&root, "top.md", &all, 100).is_err());
        assert!(walk_under(&root, "gone", &all, 100).is_err());
        assert!(walk_under(&root, "../x", &all, 100).is_err());
    }

    #[test]
    fn a_walk_past_max_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            write(dir.path(), &format!("f{i}.txt"), "x");
        }
        let root = open(dir.path());
        let all = PathFilter::new(None, None).unwrap();
        assert_eq!(walk(&root, &all, 5).unwrap().files.len(), 5);
        let err = walk(&root, &all, 4).unwrap_err();
        assert!(err.contains("more than 4 files"), "{err}");
        assert!(err.contains("max_files"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|status| status.success()) {
            eprintln!("mkfifo unavailable; skipping");
            return;
        }
        let root = open(dir.path());
        let walk = walk(&root, &PathFilter::new(None, None).unwrap(), 10).unwrap();
        assert!(walk.files.is_empty());
        assert_eq!(walk.skipped[0].path, "pipe");
        assert_eq!(walk.skipped[0].reason, NOT_REGULAR);
    }
}
