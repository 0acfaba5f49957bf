//! Path patterns of sources: globs over paths (GitHub, filesystem) and the
//! limits every pattern list (globs or regexes) is held to.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Most path patterns (globs or regexes) in one list of a source. Each is
/// matched against every path a sync sees, so the count bounds the work per
/// path as well as the work of compiling them.
pub const MAX_PATTERNS: usize = 100;
/// Longest path pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 512;
/// Largest compiled form of one path regex (the `regex` crate's own size
/// limit; its default is 10 MiB): refuses patterns like `(\w{1,100}){1,100}`
/// quickly, at creation, instead of compiling megabytes of automaton.
pub const MAX_COMPILED_PATTERN_BYTES: usize = 256 * 1024;

/// Checks a list of path patterns named `what` against [`MAX_PATTERNS`] and
/// [`MAX_PATTERN_BYTES`]; the error says which limit and which pattern.
pub fn check_pattern_list(what: &str, patterns: &[String]) -> Result<(), String> {
    if patterns.len() > MAX_PATTERNS {
        return Err(format!(
            "{what} has {} patterns; at most {MAX_PATTERNS} are accepted",
            patterns.len()
        ));
    }
    if let Some(long) = patterns.iter().find(|p| p.len() > MAX_PATTERN_BYTES) {
        let head: String = long.chars().take(40).collect();
        return Err(format!(
            "{what}: pattern `{head}…` is {} bytes long; at most {MAX_PATTERN_BYTES} are accepted",
            long.len()
        ));
    }
    Ok(())
}

/// Paths skipped when a source gives no globs of its own: vendored and
/// generated trees that only add noise to a code search.
pub const DEFAULT_EXCLUDE_GLOBS: &[&str] = &[
    ".git/**",
    "**/.git/**",
    "**/node_modules/**",
    "**/vendor/**",
    "**/dist/**",
    "**/target/**",
    "**/__pycache__/**",
    "**/Cargo.lock",
    "**/package-lock.json",
    "**/yarn.lock",
    "**/pnpm-lock.yaml",
    "**/poetry.lock",
    "**/Gemfile.lock",
    "**/composer.lock",
    "**/go.sum",
    "**/*.min.js",
    "**/*.min.css",
    "**/*.map",
];

/// Which paths of a repository or directory are indexed.
#[derive(Debug)]
pub struct PathFilter {
    include: Option<GlobSet>,
    exclude: GlobSet,
    /// The exclude globs of the form `P/**`, as `P`: a directory matching
    /// one has every path under it excluded, so walks need not enter it.
    exclude_dirs: GlobSet,
}

impl PathFilter {
    /// Globs match whole repository paths (`src/**/*.rs`); a glob without a
    /// `/` matches a file name at any depth (`*.md`), as in `.gitignore`.
    /// With no globs at all, [`DEFAULT_EXCLUDE_GLOBS`] apply.
    pub fn new(include: Option<&[String]>, exclude: Option<&[String]>) -> Result<Self, String> {
        check_pattern_list("include_globs", include.unwrap_or(&[]))?;
        check_pattern_list("exclude_globs", exclude.unwrap_or(&[]))?;
        let include = include.filter(|globs| !globs.is_empty());
        let exclude = exclude.filter(|globs| !globs.is_empty());
        let defaults: Vec<String>;
        let exclude = match (include, exclude) {
            (None, None) => {
                defaults = DEFAULT_EXCLUDE_GLOBS
                    .iter()
                    .map(|g| g.to_string())
                    .collect();
                Some(defaults.as_slice())
            }
            (_, exclude) => exclude,
        };
        let exclude = exclude.unwrap_or(&[]);
        let dirs: Vec<String> = exclude
            .iter()
            .filter_map(|glob| glob.strip_suffix("/**"))
            .filter(|dir| !dir.is_empty())
            .map(|dir| {
                // As `build_globs` anchors it: `P/**` has a `/`, so `P` is
                // matched from the root even when it has none itself.
                let dir = dir.trim_start_matches("./").trim_start_matches('/');
                if dir.contains('/') {
                    dir.to_string()
                } else {
                    format!("/{dir}")
                }
            })
            .collect();
        Ok(PathFilter {
            include: include.map(build_globs).transpose()?,
            exclude: build_globs(exclude)?,
            exclude_dirs: build_globs(&dirs)?,
        })
    }

    /// Whether every path under the directory `dir` (relative, no trailing
    /// `/`) is excluded, so a walk may skip it whole: `node_modules/` of a
    /// source with the default globs is never entered.
    pub fn excludes_directory(&self, dir: &str) -> bool {
        self.exclude_dirs.is_match(dir)
    }

    pub fn accepts(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|set| set.is_match(path)) && !self.exclude.is_match(path)
    }
}

fn build_globs(globs: &[String]) -> Result<GlobSet, String> {
    let mut set = GlobSetBuilder::new();
    for glob in globs {
        let pattern = glob.trim_start_matches("./");
        let pattern = if pattern.contains('/') {
            pattern.trim_start_matches('/').to_string()
        } else {
            format!("**/{pattern}")
        };
        let compiled = GlobBuilder::new(&pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("glob `{glob}` is not valid: {e}"))?;
        set.add(compiled);
    }
    set.build().map_err(|e| format!("globs are not valid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::PathFilter;

    #[test]
    fn only_directories_whose_every_path_is_excluded_are_pruned() {
        let defaults = PathFilter::new(None, None).unwrap();
        assert!(defaults.excludes_directory("node_modules"));
        assert!(defaults.excludes_directory("web/node_modules"));
        assert!(defaults.excludes_directory(".git"));
        assert!(!defaults.excludes_directory("src"));
        assert!(!defaults.excludes_directory("node_modules_docs"));
        // `*.min.js` excludes files, not the directories holding them.
        assert!(!defaults.excludes_directory("assets"));

        let own =
            PathFilter::new(None, Some(&["build/**".to_string(), "*.tmp".to_string()])).unwrap();
        assert!(own.excludes_directory("build"), "anchored at the root");
        assert!(!own.excludes_directory("docs/build"), "as the glob itself");
        assert!(!own.accepts("build/out.md") && own.accepts("docs/build/out.md"));
    }
}
