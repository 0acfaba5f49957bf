//! A source's root directory, and the one place caller-supplied paths
//! become paths the process opens.
//!
//! The rule: a path is used only once it is known to stay inside the root
//! — lexically (relative, no `..`, `.` or empty components) *and* after
//! following symbolic links (its canonical path starts with the root's
//! canonical path). The root itself must lie inside one of the operator's
//! `[filesystem] allowed_roots`, compared the same way, so a symbolic link
//! inside an allowed directory cannot make `/etc` a root.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::FilesystemSettings;

/// Longest relative path accepted, in bytes (Linux's `PATH_MAX`): longer
/// ones cannot be opened anyway, and the bound keeps error messages and
/// document keys small.
pub const MAX_RELATIVE_PATH_BYTES: usize = 4096;

/// An opened root: an existing directory inside an allowed root.
#[derive(Debug, Clone)]
pub struct Root {
    /// The root as the source names it, for messages: the canonical form
    /// may reveal where symbolic links lead.
    given: String,
    /// The root with every symbolic link resolved: what every path is
    /// compared against.
    canonical: PathBuf,
}

/// What a relative path names, once it is known to stay inside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A regular file, at this canonical path (symbolic links inside the
    /// root are followed).
    File(PathBuf),
    /// A directory, at this canonical path.
    Directory(PathBuf),
    /// A FIFO, socket or device: never read (reading a FIFO can block for
    /// ever, a device can be endless).
    Special(PathBuf),
    /// Nothing is there (the file was removed, or never existed).
    Missing,
}

impl Root {
    /// Opens `root` for a source. Refused when the source type is disabled
    /// (no `allowed_roots`), when `root` is not absolute, not an existing
    /// directory, or not inside an allowed root after resolving links.
    ///
    /// A root that does not exist outside the allowed roots gets the same
    /// refusal as one that does, so API callers cannot probe which paths
    /// exist elsewhere on the machine.
    pub fn open(settings: &FilesystemSettings, root: &str) -> Result<Root, String> {
        if settings.allowed_roots.is_empty() {
            return Err(
                "the filesystem source type is disabled: the daemon has no [filesystem] \
                 allowed_roots (config file) or CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS \
                 (environment)"
                    .to_string(),
            );
        }
        if root.is_empty() {
            return Err("root is empty".to_string());
        }
        if root.contains('\0') {
            return Err(format!("root {root:?} contains a NUL byte"));
        }
        let path = Path::new(root);
        if !path.is_absolute() {
            return Err(format!("root {root:?} is not an absolute path"));
        }
        let allowed: Vec<PathBuf> = settings
            .allowed_roots
            .iter()
            .filter_map(|allowed| std::fs::canonicalize(&allowed.path).ok())
            .collect();
        let not_allowed = || {
            format!("root {root:?} is not inside any of the daemon's [filesystem] allowed_roots")
        };
        let canonical = match std::fs::canonicalize(path) {
            Ok(canonical) => canonical,
            Err(error) => {
                // Only a path whose nearest existing ancestor is allowed
                // gets the precise reason.
                let ancestor_allowed = path
                    .ancestors()
                    .skip(1)
                    .find_map(|ancestor| std::fs::canonicalize(ancestor).ok())
                    .is_some_and(|real| allowed.iter().any(|a| real.starts_with(a)));
                return Err(if ancestor_allowed {
                    format!("root {root:?}: {error}")
                } else {
                    not_allowed()
                });
            }
        };
        if !allowed.iter().any(|a| canonical.starts_with(a)) {
            return Err(not_allowed());
        }
        match std::fs::metadata(&canonical) {
            Ok(metadata) if metadata.is_dir() => Ok(Root {
                given: root.to_string(),
                canonical,
            }),
            Ok(_) => Err(format!("root {root:?} is not a directory")),
            Err(error) => Err(format!("root {root:?}: {error}")),
        }
    }

    /// Whether sources of `database` may read this root: it lies inside an
    /// allowed root bound to `database` (or to every database). Checked at
    /// creation (403) and again when a job or a watch starts, so an
    /// operator who re-binds a directory cuts off sources already made.
    pub fn serves(&self, settings: &FilesystemSettings, database: &str) -> Result<(), String> {
        let bound = settings.allowed_roots.iter().any(|allowed| {
            allowed.serves(database)
                && std::fs::canonicalize(&allowed.path)
                    .is_ok_and(|canonical| self.canonical.starts_with(canonical))
        });
        if bound {
            Ok(())
        } else {
            Err(format!(
                "root {:?} is not inside any [filesystem] allowed_roots entry bound to database \
                 `{database}`",
                self.given
            ))
        }
    }

    /// The root's canonical path (symbolic links resolved).
    pub fn path(&self) -> &Path {
        &self.canonical
    }

    /// The root as the source names it.
    pub fn given(&self) -> &str {
        &self.given
    }

    /// Whether a canonical path lies inside the root (or is the root).
    pub fn contains(&self, canonical: &Path) -> bool {
        canonical.starts_with(&self.canonical)
    }

    /// What `relative` (a path relative to the root, `/`-separated) names.
    /// Refused, with the reason, when it is not a plain relative path or
    /// leads outside the root through a symbolic link — also when it does
    /// not exist but its nearest existing ancestor lies outside.
    pub fn resolve(&self, relative: &str) -> Result<Resolved, String> {
        check_relative(relative)?;
        let joined = self.canonical.join(relative);
        match std::fs::canonicalize(&joined) {
            Ok(real) => {
                if !self.contains(&real) {
                    return Err(format!(
                        "path {relative:?} leads outside the root through a symbolic link"
                    ));
                }
                let metadata =
                    std::fs::metadata(&real).map_err(|e| format!("path {relative:?}: {e}"))?;
                let file_type = metadata.file_type();
                Ok(if file_type.is_file() {
                    Resolved::File(real)
                } else if file_type.is_dir() {
                    Resolved::Directory(real)
                } else {
                    Resolved::Special(real)
                })
            }
            Err(error) if is_absent(&error) => {
                self.check_nearest_ancestor(&joined, relative)?;
                Ok(Resolved::Missing)
            }
            Err(error) => Err(format!("path {relative:?}: {error}")),
        }
    }

    /// The relative, `/`-separated form of a path under the root as the
    /// watcher reports it (the root's canonical path joined with names);
    /// `None` for the root itself, paths elsewhere, and names a document
    /// key cannot carry (not UTF-8, or [`resolve`](Self::resolve) would
    /// refuse them).
    pub fn relative(&self, absolute: &Path) -> Option<String> {
        let rest = absolute.strip_prefix(&self.canonical).ok()?;
        let mut parts = Vec::new();
        for component in rest.components() {
            match component {
                Component::Normal(name) => parts.push(name.to_str()?),
                _ => return None,
            }
        }
        if parts.is_empty() {
            return None;
        }
        let relative = parts.join("/");
        check_relative(&relative).ok()?;
        Some(relative)
    }

    /// A missing path is only `Missing` if where it would be is inside the
    /// root: `link/new.txt`, with `link` pointing outside, is refused.
    fn check_nearest_ancestor(&self, joined: &Path, relative: &str) -> Result<(), String> {
        for ancestor in joined.ancestors().skip(1) {
            if !ancestor.starts_with(&self.canonical) {
                break;
            }
            match std::fs::canonicalize(ancestor) {
                Ok(real) if self.contains(&real) => return Ok(()),
                Ok(_) => {
                    return Err(format!(
                        "path {relative:?} leads outside the root through a symbolic link"
                    ));
                }
                Err(error) if is_absent(&error) => continue,
                Err(error) => return Err(format!("path {relative:?}: {error}")),
            }
        }
        // Not "missing": an unmounted or deleted root must not read as
        // every file having been removed.
        Err(format!("the root {:?} no longer exists", self.given))
    }
}

impl std::fmt::Display for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.given)
    }
}

/// Nothing exists at the path (`a.txt/b` when `a.txt` is a file included).
fn is_absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Checks that `relative` is a plain relative path in the one spelling a
/// document key has: `a//b`, `./a` and `a/` name the same file as `a/b` and
/// `a`, and accepting them would give one file two keys.
pub fn check_relative(relative: &str) -> Result<(), String> {
    if relative.is_empty() {
        return Err("the path is empty".to_string());
    }
    if relative.len() > MAX_RELATIVE_PATH_BYTES {
        return Err(format!(
            "the path is {} bytes long; at most {MAX_RELATIVE_PATH_BYTES} are accepted",
            relative.len()
        ));
    }
    if relative.contains('\0') {
        return Err(format!("path {relative:?} contains a NUL byte"));
    }
    // A separator on Windows and a legal name character on Unix: the same
    // key would name different files on different platforms.
    if relative.contains('\\') {
        return Err(format!(
            "path {relative:?} contains a backslash; paths are separated by `/`"
        ));
    }
    if relative.starts_with('/') {
        return Err(format!(
            "path {relative:?} is absolute; paths are relative to the root"
        ));
    }
    for component in relative.split('/') {
        match component {
            "" => {
                return Err(format!(
                    "path {relative:?} has an empty component (`//` or a trailing `/`)"
                ));
            }
            "." | ".." => {
                return Err(format!(
                    "path {relative:?} has a `{component}` component; name the file directly"
                ));
            }
            _ => {}
        }
    }
    // Belt and braces for platforms whose paths have prefixes (`C:`).
    if !Path::new(relative)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!("path {relative:?} is not a plain relative path"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Settings allowing exactly `dirs`.
    pub(crate) fn settings(dirs: &[&Path]) -> FilesystemSettings {
        FilesystemSettings {
            allowed_roots: dirs
                .iter()
                .map(|d| crate::sources::filesystem::AllowedRoot::from(d.to_path_buf()))
                .collect(),
            ..FilesystemSettings::default()
        }
    }

    pub(crate) fn open(dir: &Path) -> Root {
        Root::open(&settings(&[dir]), dir.to_str().unwrap()).unwrap()
    }

    #[test]
    fn no_allowed_roots_means_the_source_type_is_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let err = Root::open(&settings(&[]), dir.path().to_str().unwrap()).unwrap_err();
        assert!(err.contains("disabled"), "{err}");
        assert!(err.contains("allowed_roots"), "{err}");
        assert!(
            err.contains("CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn roots_must_lie_inside_an_allowed_root_after_resolving_links() {
        let allowed = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let docs = allowed.path().join("docs");
        std::fs::create_dir(&docs).unwrap();
        std::fs::write(allowed.path().join("file.txt"), "x").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), allowed.path().join("out")).unwrap();
        let settings = settings(&[allowed.path()]);
        let open = |root: &Path| Root::open(&settings, root.to_str().unwrap());

        let root = open(&docs).unwrap();
        assert_eq!(root.path(), std::fs::canonicalize(&docs).unwrap());
        assert_eq!(root.given(), docs.to_str().unwrap());
        open(allowed.path()).expect("the allowed root itself");

        let refusals = [
            elsewhere.path().to_path_buf(),
            allowed.path().join("out"),
            allowed.path().join("out/sub"),
            docs.join("../../")
                .join(elsewhere.path().file_name().unwrap()),
            elsewhere.path().join("does-not-exist"),
        ];
        for root in refusals {
            let err = open(&root).unwrap_err();
            assert!(err.contains("allowed_roots"), "{}: {err}", root.display());
        }
        let err = open(&allowed.path().join("missing")).unwrap_err();
        assert!(
            err.contains("No such file"),
            "inside, a precise reason: {err}"
        );
        let err = open(&allowed.path().join("file.txt")).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
        let err = Root::open(&settings, "docs").unwrap_err();
        assert!(err.contains("absolute"), "{err}");
        assert!(Root::open(&settings, "").is_err());
        // An allowed root must match whole components: `/x/docs2` is not in `/x/docs`.
        let sibling = allowed.path().join("docs2");
        std::fs::create_dir(&sibling).unwrap();
        let docs_only = super::tests::settings(&[&docs]);
        let err = Root::open(&docs_only, sibling.to_str().unwrap()).unwrap_err();
        assert!(err.contains("allowed_roots"), "{err}");
    }

    #[test]
    fn paths_that_are_not_plain_relative_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "x").unwrap();
        let root = open(dir.path());
        let absolute = dir.path().join("a");
        let long = "a/".repeat(MAX_RELATIVE_PATH_BYTES);
        for path in [
            "",
            "/etc/passwd",
            absolute.to_str().unwrap(),
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "./a",
            "a/.",
            "a//b",
            "a/",
            "a\\b",
            "..\\x",
            "a\0b",
            long.as_str(),
        ] {
            let err = root.resolve(path).unwrap_err();
            assert!(!err.is_empty(), "{path:?}");
        }
        assert!(matches!(root.resolve("a"), Ok(Resolved::File(_))));
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_may_not_lead_out_of_the_root() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/a.md"), "a").unwrap();
        let root = open(dir.path());
        symlink(
            outside.path().join("secret.txt"),
            dir.path().join("leak.txt"),
        )
        .unwrap();
        symlink(outside.path(), dir.path().join("outdir")).unwrap();
        symlink("docs/a.md", dir.path().join("inside.md")).unwrap();
        symlink("docs", dir.path().join("docs-link")).unwrap();

        for path in [
            "leak.txt",
            "outdir",
            "outdir/secret.txt",
            "outdir/not-there.txt",
            "outdir/not/there.txt",
        ] {
            let err = root.resolve(path).unwrap_err();
            assert!(err.contains("outside the root"), "{path}: {err}");
        }
        let target = std::fs::canonicalize(dir.path().join("docs/a.md")).unwrap();
        assert_eq!(
            root.resolve("inside.md"),
            Ok(Resolved::File(target.clone()))
        );
        assert_eq!(root.resolve("docs-link/a.md"), Ok(Resolved::File(target)));
        assert!(matches!(root.resolve("docs"), Ok(Resolved::Directory(_))));
    }

    #[test]
    fn a_path_that_does_not_exist_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file.txt"), "x").unwrap();
        let root = open(dir.path());
        assert_eq!(root.resolve("gone.txt"), Ok(Resolved::Missing));
        assert_eq!(root.resolve("no/such/dir.txt"), Ok(Resolved::Missing));
        assert_eq!(root.resolve("file.txt/child"), Ok(Resolved::Missing));
    }

    #[test]
    fn a_removed_root_is_an_error_not_a_missing_file() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("root");
        std::fs::create_dir(&dir).unwrap();
        let root = open(&dir);
        std::fs::remove_dir(&dir).unwrap();
        let err = root.resolve("a.txt").unwrap_err();
        assert!(err.contains("no longer exists"), "{err}");
    }

    #[test]
    fn watcher_paths_become_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = open(dir.path());
        assert_eq!(
            root.relative(&root.path().join("a/b.md")),
            Some("a/b.md".to_string())
        );
        assert_eq!(root.relative(root.path()), None, "the root itself");
        assert_eq!(root.relative(Path::new("/etc/passwd")), None);
        assert_eq!(root.relative(&root.path().join("a\\b")), None);
    }
}
