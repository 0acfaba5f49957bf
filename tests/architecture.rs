//! The layering ARCHITECTURE.md describes holds: modules depend on each
//! other without cycles, and only the source registry and the spec enum
//! tell source kinds apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code without comments and without its unit tests (tests may
/// reach anywhere).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module of `file` at `depth` path segments below `root` (`src/a/b.rs`
/// at depth 1 is `a`, at depth 2 `a::b`).
fn module_of(root: &Path, file: &Path, depth: usize) -> Option<String> {
    let relative = file.strip_prefix(root).ok()?;
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    (parts.len() >= depth).then(|| parts[..depth].join("::"))
}

/// Edges `from → to` between the modules at `depth` under `prefix` (`crate`
/// for the top level, `crate::domain` for its children).
fn graph(prefix: &str, root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let pattern = regex::Regex::new(&format!(r"{}::([a-z_]+)", regex::escape(prefix))).unwrap();
    for file in files {
        let Some(from) = module_of(root, &file, 1) else {
            continue;
        };
        if from == "lib" || from == "main" {
            continue;
        }
        for found in pattern.captures_iter(&code_of(&file)) {
            let to = found[1].to_string();
            if to != from {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// A cycle in `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let edges = graph("crate", &src());
    assert!(
        edges.get("api").is_some_and(|to| to.contains("domain")),
        "the scan sees imports: {edges:?}"
    );
    assert_eq!(find_cycle(&edges), None, "{edges:#?}");
}

#[test]
fn the_domain_layer_has_no_import_cycle_and_never_reaches_up() {
    let edges = graph("crate::domain", &src().join("domain"));
    assert_eq!(find_cycle(&edges), None, "{edges:#?}");
    let top = graph("crate", &src());
    for upper in ["api", "app", "schedule", "worker", "client"] {
        assert!(
            !top["domain"].contains(upper),
            "domain imports {upper}: {:?}",
            top["domain"]
        );
    }
    for lower in ["pipeline", "queue", "sink", "model"] {
        assert!(
            !top.get(lower).is_some_and(|to| to.contains("domain")),
            "{lower} imports the domain layer"
        );
    }
}

#[test]
fn only_the_registry_and_the_spec_enum_tell_source_kinds_apart() {
    let allowed = [
        "domain/sources/mod.rs",
        "domain/sources/spec.rs",
        "model.rs",
    ];
    let kind_test = regex::Regex::new(
        r"SourceType::(S3|Github|WebScrape|Filesystem)\s*=>|\.(s3|github|web_scrape|filesystem)\s*\.is_(some|none)\(\)",
    )
    .unwrap();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut offenders = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .to_string();
        if allowed.contains(&relative.as_str()) {
            continue;
        }
        if let Some(found) = kind_test.find(&code_of(&file)) {
            offenders.push(format!("{relative}: {}", found.as_str()));
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
