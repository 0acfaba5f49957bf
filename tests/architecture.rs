//! The layering ARCHITECTURE.md describes holds: modules depend on each
//! other without cycles, the domain layer never reaches up, sources never
//! talk to Chroma, and only the source registry and the spec enum tell
//! source kinds apart.
//!
//! The scan reads `src/` the way the compiler names things: every `use`
//! (grouped trees, `self`, aliases, globs, inside functions too) and every
//! inline path (`super::foo::bar(..)`, `crate::x::Y`, `plan::spec_of(..)`)
//! is resolved from its file's module — `crate::`, `self::`, `super::`, a
//! child module, or a name the module imported — and followed through the
//! imports and re-exports (`pub use`) of the modules it passes, to the file
//! that defines the item. Comments, literals and `#[cfg(test)]` items are
//! left out (tests may reach anywhere).
//!
//! Two graphs are checked for cycles: the top-level modules (a folder is one
//! node), and the files (every file one node, across the whole crate, so
//! files inside a module as well). In the file graph a parent module's file
//! depending on its own children (declaring, re-exporting and using them)
//! makes no edge: that is what a `mod.rs` is for. Their using the parent's
//! items does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// `text` with comments removed and the contents of string and character
/// literals blanked; line breaks are kept, so offsets keep their line.
fn strip_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // r"…", r#"…"#, br#"…"#: no escapes, ends at `"` + the hashes.
            while chars[i] != '"' {
                out.push(chars[i]);
                i += 1;
            }
            out.push('"');
            i += 1;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    out.push('"');
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                let skip = if chars[i] == '\\' { 2 } else { 1 };
                for k in 0..skip {
                    if let Some(&skipped) = chars.get(i + k) {
                        out.push(blank(skipped));
                    }
                }
                i += skip;
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\u{1F600}'), not a lifetime.
            out.push('\'');
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            out.push('\'');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The number of `#`s of a raw string literal starting at `at`, if one does.
fn raw_string_start(chars: &[char], at: usize) -> Option<usize> {
    let previous_is_ident = at > 0 && (chars[at - 1].is_alphanumeric() || chars[at - 1] == '_');
    if previous_is_ident {
        return None;
    }
    let mut i = at;
    if chars.get(i) == Some(&'b') {
        i += 1;
    }
    if chars.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let mut hashes = 0;
    while chars.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    (chars.get(i) == Some(&'"')).then_some(hashes)
}

/// `code` (already without comments and literals) with every item marked
/// `#[cfg(test)]` blanked: unit test modules, test-only helpers.
fn without_test_items(code: &str) -> String {
    let mut out: Vec<char> = code.chars().collect();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + marker.len() <= out.len() {
        if out[i..i + marker.len()] != marker[..] {
            i += 1;
            continue;
        }
        // The item ends at its first `;` outside braces, or at the brace
        // closing its first `{`.
        let mut end = i + marker.len();
        let mut depth = 0usize;
        while end < out.len() {
            match out[end] {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                ';' if depth == 0 => break,
                _ => {}
            }
            end += 1;
        }
        let end = end.min(out.len() - 1);
        for c in &mut out[i..=end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = end + 1;
    }
    out.into_iter().collect()
}

/// A file's code without comments, literals and its unit tests.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    without_test_items(&strip_comments_and_literals(&text))
}

/// One name a `use` brings in (or a glob): the path as written.
#[derive(Debug, Clone, PartialEq)]
struct UseLeaf {
    path: Vec<String>,
    /// The name it binds (`None` for `_` and globs).
    binding: Option<String>,
}

/// The leaves of a use tree (the text between `use` and `;`):
/// `super::{a, b::{self, C as D}, e::*}` → `super::a` (a),
/// `super::b` (b), `super::b::C` (D), `super::e::*`.
fn use_leaves(tree: &str) -> Vec<UseLeaf> {
    static TOKEN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let tokens: Vec<String> = TOKEN
        .get_or_init(|| regex::Regex::new(r"\$crate|[A-Za-z_][A-Za-z0-9_]*|::|[{},*]").unwrap())
        .find_iter(tree)
        .map(|m| m.as_str().to_string())
        .collect();
    let mut leaves = Vec::new();
    let mut at = 0;
    if tokens.first().is_some_and(|t| t == "::") {
        at = 1; // `use ::name`: an extern crate
    }
    parse_tree(&tokens, &mut at, Vec::new(), &mut leaves);
    leaves
}

fn parse_tree(tokens: &[String], at: &mut usize, prefix: Vec<String>, out: &mut Vec<UseLeaf>) {
    let mut path = prefix;
    while let Some(token) = tokens.get(*at) {
        match token.as_str() {
            "{" => {
                *at += 1;
                while tokens.get(*at).is_some_and(|t| t != "}") {
                    parse_tree(tokens, at, path.clone(), out);
                    if tokens.get(*at).is_some_and(|t| t == ",") {
                        *at += 1;
                    }
                }
                *at += 1;
                return;
            }
            "*" => {
                *at += 1;
                out.push(UseLeaf {
                    path,
                    binding: None,
                });
                return;
            }
            "," | "}" | "::" => return,
            name => {
                path.push(name.to_string());
                *at += 1;
                if tokens.get(*at).is_some_and(|t| t == "::") {
                    *at += 1;
                    continue;
                }
                let mut binding = path.last().cloned();
                if tokens.get(*at).is_some_and(|t| t == "as") {
                    binding = tokens.get(*at + 1).cloned().filter(|alias| alias != "_");
                    *at += 2;
                }
                if path.last().is_some_and(|last| last == "self") {
                    path.pop();
                    if binding.as_deref() == Some("self") {
                        binding = path.last().cloned();
                    }
                }
                out.push(UseLeaf { path, binding });
                return;
            }
        }
    }
}

/// Where in the sources a path was written: for messages.
#[derive(Debug, Clone)]
struct Written {
    file: String,
    line: usize,
    text: String,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} `{}`", self.file, self.line, self.text)
    }
}

/// A module path below the crate root (`[]` is `lib.rs`; `["domain", "plan"]`
/// is `src/domain/plan.rs`).
type ModulePath = Vec<String>;

fn display(module: &[String]) -> String {
    std::iter::once("crate")
        .chain(module.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("::")
}

/// One file's use of an item another file defines.
#[derive(Debug, Clone)]
struct Dependency {
    /// The module (file) whose code names the item.
    from: ModulePath,
    /// The module (file) that defines it.
    to: ModulePath,
    /// The item's path from the crate root, through the re-exports on the
    /// way (`sink::chroma::ChromaClient`).
    path: Vec<String>,
    written: Written,
}

/// The library crate as the scan sees it.
struct Crate {
    /// Every module that is a file, and its file (`src/…`).
    modules: BTreeMap<ModulePath, String>,
    /// The names each module's `use`s bind, as written there.
    bindings: HashMap<ModulePath, HashMap<String, Vec<String>>>,
    /// Each module's code (comments, literals and tests left out).
    code: BTreeMap<ModulePath, String>,
    dependencies: Vec<Dependency>,
}

fn module_path(src: &Path, file: &Path) -> Option<ModulePath> {
    let relative = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [only] if only == "main" => return None, // the binary: `chroma_syncd::` paths
        [only] if only == "lib" => return Some(Vec::new()),
        _ => {}
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

fn line_of(code: &str, offset: usize) -> usize {
    code[..offset].matches('\n').count() + 1
}

/// How deep imports of imports are followed (a guard against `use a as b;
/// use b as a;`, which the compiler refuses anyway).
const MAX_HOPS: usize = 16;

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        files.sort();
        let use_statement =
            regex::Regex::new(r"\b(?:pub(?:\s*\([^)]*\))?\s+)?use\s+([^;]*);").unwrap();
        let inline_path = regex::Regex::new(
            r"(?:\$crate|\b[A-Za-z_][A-Za-z0-9_]*)(?:\s*::\s*[A-Za-z_][A-Za-z0-9_]*)+",
        )
        .unwrap();
        let mut krate = Crate {
            modules: BTreeMap::new(),
            bindings: HashMap::new(),
            code: BTreeMap::new(),
            dependencies: Vec::new(),
        };
        let mut written_paths: Vec<(ModulePath, Vec<String>, Written)> = Vec::new();
        for file in files {
            let Some(module) = module_path(src, &file) else {
                continue;
            };
            let name = format!("src/{}", file.strip_prefix(src).unwrap().display());
            let code = code_of(&file);
            let mut bindings = HashMap::new();
            let mut in_use = Vec::new();
            for statement in use_statement.captures_iter(&code) {
                let whole = statement.get(0).unwrap();
                in_use.push(whole.range());
                let tree = &statement[1];
                for leaf in use_leaves(tree) {
                    if let Some(binding) = &leaf.binding {
                        bindings.insert(binding.clone(), leaf.path.clone());
                    }
                    let written = Written {
                        file: name.clone(),
                        line: line_of(&code, whole.start()),
                        text: format!(
                            "use {}",
                            tree.split_whitespace().collect::<Vec<_>>().join(" ")
                        ),
                    };
                    written_paths.push((module.clone(), leaf.path, written));
                }
            }
            for found in inline_path.find_iter(&code) {
                if in_use.iter().any(|range| range.contains(&found.start())) {
                    continue;
                }
                let path: Vec<String> = found
                    .as_str()
                    .split("::")
                    .map(|segment| segment.trim().to_string())
                    .collect();
                let written = Written {
                    file: name.clone(),
                    line: line_of(&code, found.start()),
                    text: path.join("::"),
                };
                written_paths.push((module.clone(), path, written));
            }
            krate.modules.insert(module.clone(), name);
            krate.bindings.insert(module.clone(), bindings);
            krate.code.insert(module, code);
        }
        for (from, path, written) in written_paths {
            let Some(path) = krate.absolute(&from, &path, 0) else {
                continue;
            };
            let (to, path) = krate.defining_module(&path, 0);
            if to != from {
                krate.dependencies.push(Dependency {
                    from,
                    to,
                    path,
                    written,
                });
            }
        }
        krate
    }

    fn is_module(&self, path: &[String]) -> bool {
        self.modules.contains_key(path)
    }

    /// `path` written in `module`, from the crate root; `None` when it
    /// leaves the crate (std, a dependency) or names an item of the
    /// module's own.
    fn absolute(&self, module: &[String], path: &[String], hops: usize) -> Option<Vec<String>> {
        let (first, rest) = path.split_first()?;
        if hops > MAX_HOPS {
            return None;
        }
        let from = |base: &[String], rest: &[String]| Some([base, rest].concat());
        match first.as_str() {
            "crate" | "$crate" => Some(rest.to_vec()),
            "self" => from(module, rest),
            "super" => {
                let mut base = module.to_vec();
                base.pop()?;
                let mut rest = rest;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                from(&base, rest)
            }
            name => {
                let child = [module, &[name.to_string()]].concat();
                if self.is_module(&child) {
                    return from(&child, rest);
                }
                let imported = self.bindings.get(module)?.get(name)?;
                let target = self.absolute(module, imported, hops + 1)?;
                from(&target, rest)
            }
        }
    }

    /// The module that defines what the absolute `path` names, and the path
    /// to it from there: modules are followed as far as they go, and a name
    /// a module imported is followed to where it comes from
    /// (`domain::Sources` → `domain::registry`, `domain::Sources`).
    fn defining_module(&self, path: &[String], hops: usize) -> (ModulePath, Vec<String>) {
        let mut module = Vec::new();
        for (at, segment) in path.iter().enumerate() {
            let child = [module.as_slice(), std::slice::from_ref(segment)].concat();
            if self.is_module(&child) {
                module = child;
                continue;
            }
            let imported = self
                .bindings
                .get(&module)
                .and_then(|names| names.get(segment));
            if let Some(imported) = imported
                && hops < MAX_HOPS
                && let Some(target) = self.absolute(&module, imported, hops + 1)
            {
                let whole = [target.as_slice(), &path[at + 1..]].concat();
                return self.defining_module(&whole, hops + 1);
            }
            break;
        }
        (module, path.to_vec())
    }

    /// Edges between top-level modules (a folder is one node), each with
    /// the first place that makes it.
    fn top_level_edges(&self) -> Edges {
        let mut edges = Edges::new();
        for dependency in &self.dependencies {
            let (Some(from), Some(to)) = (dependency.from.first(), dependency.to.first()) else {
                continue; // `lib.rs` declares the modules: it is not one of them
            };
            if from != to {
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to.clone())
                    .or_insert_with(|| dependency.written.clone());
            }
        }
        edges
    }

    /// Edges between the files under `module` (all of them for `[]`),
    /// named by their module paths; a file's dependencies on its own
    /// descendants make none (see the header).
    fn file_edges(&self, module: &[String]) -> Edges {
        let mut edges = Edges::new();
        for dependency in &self.dependencies {
            let (from, to) = (&dependency.from, &dependency.to);
            if !from.starts_with(module) || !to.starts_with(module) || to.starts_with(from) {
                continue;
            }
            edges
                .entry(display(from))
                .or_default()
                .entry(display(to))
                .or_insert_with(|| dependency.written.clone());
        }
        edges
    }
}

/// `from → to → where the first such use is written`.
type Edges = BTreeMap<String, BTreeMap<String, Written>>;

fn names(edges: &Edges) -> BTreeMap<String, BTreeSet<String>> {
    edges
        .iter()
        .map(|(from, to)| (from.clone(), to.keys().cloned().collect()))
        .collect()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read_crate() -> &'static Crate {
    static CRATE: std::sync::OnceLock<Crate> = std::sync::OnceLock::new();
    CRATE.get_or_init(|| Crate::read(&src()))
}

/// Edges `from → to` between the modules under `prefix`: for `crate`, the
/// top-level modules (`api`, `domain`, …); below it, the files
/// (`crate::domain::plan`, `crate::sources::s3`, …).
fn graph(prefix: &str, _root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    names(&edges_of(prefix))
}

fn edges_of(prefix: &str) -> Edges {
    let module: Vec<String> = prefix.split("::").skip(1).map(String::from).collect();
    if module.is_empty() {
        read_crate().top_level_edges()
    } else {
        read_crate().file_edges(&module)
    }
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

/// Every cycle found in `edges` (one per edge it takes out, up to 10),
/// each said with the line behind every step; empty when there is none.
fn describe_cycles(what: &str, edges: &Edges) -> String {
    let mut remaining = names(edges);
    let mut message = String::new();
    for _ in 0..10 {
        let Some(cycle) = find_cycle(&remaining) else {
            break;
        };
        message.push_str(&format!("import cycle {what}: {}\n", cycle.join(" → ")));
        for pair in cycle.windows(2) {
            let written = &edges[&pair[0]][&pair[1]];
            message.push_str(&format!("    {} → {}: {written}\n", pair[0], pair[1]));
        }
        // Take the cycle's first edge out and look for another.
        remaining.get_mut(&cycle[0]).unwrap().remove(&cycle[1]);
    }
    if !message.is_empty() {
        message.push_str(
            "Move what both sides need to the module it belongs to, so the imports go one way.",
        );
    }
    message
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let edges = graph("crate", &src());
    assert!(
        edges.get("api").is_some_and(|to| to.contains("domain")),
        "the scan sees imports: {edges:?}"
    );
    assert_eq!(
        find_cycle(&edges),
        None,
        "\n{}",
        describe_cycles("between top-level modules", &edges_of("crate"))
    );
}

#[test]
fn the_domain_layer_has_no_import_cycle_and_never_reaches_up() {
    let edges = graph("crate::domain", &src().join("domain"));
    assert_eq!(
        find_cycle(&edges),
        None,
        "\n{}",
        describe_cycles("between files of crate::domain", &edges_of("crate::domain"))
    );
    let top = graph("crate", &src());
    for upper in ["api", "app", "schedule", "worker", "client"] {
        assert!(
            !top["domain"].contains(upper),
            "domain imports {upper}: {:?}",
            top["domain"]
        );
    }
    // The kinds (`sources`) are below the domain too: they answer in its
    // terms (`sources::DomainError`, re-exported by it) but never reach up.
    for lower in ["sources", "pipeline", "queue", "sink", "model"] {
        assert!(
            !top.get(lower).is_some_and(|to| to.contains("domain")),
            "{lower} imports the domain layer"
        );
    }
}

#[test]
fn no_import_cycle_between_files_at_any_depth() {
    let edges = read_crate().file_edges(&[]);
    // The scan sees `super::` paths and follows re-exports: the planner
    // reaches the registry through `super::{…, Sources, …}`, and the worker
    // through the domain's `pub use registry::{SourceSpec, Sources}`.
    for (from, reached) in [
        ("crate::domain::plan", "crate::domain::registry"),
        ("crate::worker", "crate::domain::registry"),
    ] {
        let to = edges.get(from);
        assert!(
            to.is_some_and(|to| to.contains_key(reached)),
            "the scan sees `super::` imports and re-exports: {from} → {reached}: {to:#?}"
        );
    }
    let cycles = describe_cycles("between files", &edges);
    assert!(cycles.is_empty(), "\n{cycles}");
}

/// Files under `sources/` that still talk to Chroma themselves,
/// each with why; the test fails when one no longer does, so the list
/// only shrinks.
const TALKS_TO_CHROMA_FOR_NOW: &[(&str, &str)] = &[];

#[test]
fn sources_never_talk_to_chroma_nor_make_chunk_ids() {
    let krate = read_crate();
    let sources = ["sources".to_string()];
    // The Chroma client held by the pipeline's services.
    let client_field = regex::Regex::new(r"\.\s*chroma\b").unwrap();
    // The chunk-ID rule and the record builders that apply it.
    let id_rule = ["chunk_id", "build_records", "build_segment_records"];
    let mut offenders: BTreeMap<String, String> = BTreeMap::new();
    for dependency in &krate.dependencies {
        if !dependency.from.starts_with(&sources) {
            continue;
        }
        let file = krate.modules[&dependency.from].clone();
        // Handles and types of `sink::chroma` may pass through; the client
        // that sends requests may not.
        if dependency
            .path
            .last()
            .is_some_and(|item| item == "ChromaClient")
        {
            offenders
                .entry(file)
                .or_insert_with(|| format!("uses the Chroma client: {}", dependency.written));
        } else if dependency
            .path
            .last()
            .is_some_and(|item| id_rule.contains(&item.as_str()))
        {
            offenders
                .entry(file)
                .or_insert_with(|| format!("makes chunk IDs: {}", dependency.written));
        }
    }
    for (module, code) in &krate.code {
        if !module.starts_with(&sources) {
            continue;
        }
        if let Some(found) = client_field.find(code) {
            offenders
                .entry(krate.modules[module].clone())
                .or_insert_with(|| {
                    format!(
                        "reaches the Chroma client: {}:{} `{}`",
                        krate.modules[module],
                        line_of(code, found.start()),
                        found.as_str()
                    )
                });
        }
    }
    let unexpected: Vec<String> = offenders
        .iter()
        .filter(|(file, _)| {
            !TALKS_TO_CHROMA_FOR_NOW
                .iter()
                .any(|(known, _)| known == *file)
        })
        .map(|(_, why)| why.clone())
        .collect();
    assert!(
        unexpected.is_empty(),
        "sources hand documents to the pipeline; only the pipeline and `sink/` write to \
         Chroma and know chunk IDs:\n{}",
        unexpected.join("\n")
    );
    let done: Vec<&str> = TALKS_TO_CHROMA_FOR_NOW
        .iter()
        .map(|(file, _)| *file)
        .filter(|file| !offenders.contains_key(*file))
        .collect();
    assert!(
        done.is_empty(),
        "{done:?} no longer talk to Chroma: take them off TALKS_TO_CHROMA_FOR_NOW"
    );
}

/// The dependencies of files under `module` that no file there may have,
/// said one per line (`why` and where).
fn forbidden(
    module: &[&str],
    except_files: &[&str],
    why: impl Fn(&Dependency) -> Option<&'static str>,
) -> Vec<String> {
    let krate = read_crate();
    let module: Vec<String> = module.iter().map(|s| s.to_string()).collect();
    krate
        .dependencies
        .iter()
        .filter(|d| d.from.starts_with(&module))
        .filter(|d| !except_files.contains(&krate.modules[&d.from].as_str()))
        .filter_map(|d| why(d).map(|why| format!("{why}: {}", d.written)))
        .collect()
}

fn starts(path: &[String], prefix: &[&str]) -> bool {
    path.len() >= prefix.len() && path.iter().zip(prefix).all(|(a, b)| a == b)
}

#[test]
fn the_api_never_runs_jobs_nor_writes_to_chroma() {
    let offenders = forbidden(&["api"], &[], |d| {
        if starts(&d.to, &["pipeline"]) || starts(&d.to, &["worker"]) {
            Some("reaches the job runners")
        } else if d.path.last().is_some_and(|item| item == "run_job") {
            Some("runs a job")
        } else {
            None
        }
    });
    assert!(offenders.is_empty(), "{offenders:#?}");
    // The Chroma client is there for `/health`'s heartbeat, a read.
    let call = regex::Regex::new(r"\.chroma\s*\.\s*([a-z_]+)").unwrap();
    let krate = read_crate();
    let mut writes = Vec::new();
    for (module, code) in &krate.code {
        if !starts(module, &["api"]) {
            continue;
        }
        for found in call.captures_iter(code) {
            if &found[1] != "heartbeat" {
                writes.push(format!("{}: `{}`", krate.modules[module], &found[0]));
            }
        }
    }
    assert!(
        writes.is_empty(),
        "the API calls Chroma beyond its heartbeat: {writes:#?}"
    );
}

#[test]
fn only_sink_knows_chunk_ids_and_field_names() {
    // `records::field::*` are the standard metadata names; `chunk_id` the
    // ID rule. The pipeline builds records through `build_records`.
    let offenders = forbidden(&[], &[], |d| {
        let inside_sink = starts(&d.from, &["sink"]);
        let field_names = starts(&d.path, &["sink", "records", "field"]);
        let id_rule = starts(&d.path, &["sink", "records", "chunk_id"]);
        (!inside_sink && (field_names || id_rule)).then_some("names the chunk-ID rule or a field")
    });
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn only_the_converter_child_calls_a_document_parser() {
    // `extract::convert` runs the format parsers; the daemon reaches it only
    // through the confined child (`isolate::child_main`).
    let offenders = forbidden(
        &[],
        &["src/extract/isolate.rs", "src/extract/mod.rs"],
        |d| {
            let parser =
                starts(&d.to, &["extract"]) && d.path.last().is_some_and(|item| item == "convert");
            parser.then_some("calls a document parser in the daemon's process")
        },
    );
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn lib_rs_names_every_module_and_only_modules_that_exist() {
    let krate = read_crate();
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let layout: String = lib
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let link = regex::Regex::new(r"\[`([a-z_:]+)`\]").unwrap();
    let named: BTreeSet<String> = link
        .captures_iter(&layout)
        .map(|found| found[1].to_string())
        .collect();
    for name in &named {
        let module: Vec<String> = name.split("::").map(String::from).collect();
        assert!(
            krate.modules.contains_key(&module),
            "lib.rs's layout links `{name}`, which is not a module"
        );
    }
    let declared = regex::Regex::new(r"(?m)^pub mod ([a-z_]+);").unwrap();
    for found in declared.captures_iter(&lib) {
        assert!(
            named.contains(&found[1]),
            "lib.rs declares `{}` but its layout does not name it",
            &found[1]
        );
    }
}

/// Every file ARCHITECTURE.md names exists, and every invariant in its
/// table names a test that does.
#[test]
fn architecture_md_names_only_files_and_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    for top in [
        "src", "tests", "bench", "crates", "scripts", "docs", "config", "fixtures",
    ] {
        if root.join(top).is_dir() {
            all_files(&root.join(top), &mut files);
        }
    }
    let known: Vec<String> = files
        .iter()
        .map(|f| format!("/{}", f.strip_prefix(root).unwrap().display()))
        .collect();
    let exists = |named: &str| {
        let named = named.trim_end_matches('/');
        root.join(named).exists()
            || known
                .iter()
                .any(|f| f.ends_with(&format!("/{named}")) || f.contains(&format!("/{named}/")))
    };
    let path = regex::Regex::new(
        r"`([A-Za-z0-9_./-]+\.(?:rs|md|py|sh|json|toml|js|html|css)|[a-z0-9_/-]+/)`",
    )
    .unwrap();
    let link = regex::Regex::new(r"\]\(([^)#]+)\)").unwrap();
    let mut missing: Vec<String> = path
        .captures_iter(&map)
        .chain(link.captures_iter(&map))
        .map(|found| found[1].to_string())
        // URL paths (`/ui/`), suffixes (`.meta.json`) and files of a model's
        // directory are not files of this repository.
        .filter(|named| !named.starts_with(['/', '.']) && named != "config.json")
        .filter(|named| !named.starts_with("http") && !exists(named))
        .collect();
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names files that do not exist: {missing:#?}"
    );

    // `| invariant | `tests/x.rs`: `a_test`, `another` … |`
    let section = map
        .split("\n## ")
        .find(|s| s.starts_with("Invariants"))
        .expect("ARCHITECTURE.md has an `## Invariants` section");
    let token = regex::Regex::new(r"`([A-Za-z0-9_./-]+)`").unwrap();
    let mut rows = 0;
    for row in section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|-"))
    {
        let Some(held_by) = row.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        if held_by.trim() == "Held by" {
            continue;
        }
        rows += 1;
        let mut file: Option<String> = None;
        let mut tests = 0;
        for found in token.captures_iter(held_by) {
            let name = &found[1];
            if name.ends_with(".rs") {
                file = Some(
                    std::fs::read_to_string(root.join(name)).unwrap_or_else(|_| {
                        panic!("the invariants name `{name}`, which does not exist")
                    }),
                );
            } else {
                let text = file
                    .as_ref()
                    .unwrap_or_else(|| panic!("`{name}` follows no file"));
                assert!(
                    text.contains(&format!("fn {name}(")) || text.contains(&format!("    {name},")),
                    "the invariants name the test `{name}`, which its file does not have"
                );
                tests += 1;
            }
        }
        assert!(tests > 0, "an invariant without a test: {row}");
    }
    assert!(rows >= 10, "the invariants table was not read: {rows} rows");
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn the_scan_reads_use_trees_and_inline_paths_as_the_compiler_does() {
    let leaves = use_leaves("super::{a, b::{self, C as D}, e::*, f as _}");
    let shown: Vec<(String, Option<&str>)> = leaves
        .iter()
        .map(|leaf| (leaf.path.join("::"), leaf.binding.as_deref()))
        .collect();
    assert_eq!(
        shown,
        [
            ("super::a".to_string(), Some("a")),
            ("super::b".to_string(), Some("b")),
            ("super::b::C".to_string(), Some("D")),
            ("super::e".to_string(), None),
            ("super::f".to_string(), None),
        ]
    );
    let code = strip_comments_and_literals(
        "let a = \"crate::api\"; // crate::app\n/* crate::worker */ let c = '\"'; \
         let r = r#\"crate::x\"#; super::plan::f(); fn g<'a>(x: &'a str) {}",
    );
    assert!(!code.contains("crate::"), "{code}");
    assert!(
        code.contains("super::plan::f()") && code.contains("&'a str"),
        "{code}"
    );
    let code =
        without_test_items("use a::b;\n#[cfg(test)]\nmod tests {\n use crate::api;\n}\nfn f() {}");
    assert!(
        !code.contains("crate::api") && code.contains("fn f()"),
        "{code}"
    );
    assert_eq!(code.lines().count(), 6, "lines are kept: {code}");
}

#[test]
fn only_the_registry_and_the_spec_enum_tell_source_kinds_apart() {
    let allowed = ["domain/registry/mod.rs", "model.rs"];
    // A kind's name is its own (`SourceType::named` in its folder); the
    // registry hands it to everyone else.
    let kind_test = regex::Regex::new(
        r#"SourceType::named\("|\.(s3|github|web_scrape|filesystem)\s*\.is_(some|none)\(\)"#,
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
        let own_folder = relative.starts_with("sources/") && relative.matches('/').count() >= 2;
        if allowed.contains(&relative.as_str()) || own_folder {
            continue;
        }
        if let Some(found) = kind_test.find(&code_of(&file)) {
            offenders.push(format!("{relative}: {}", found.as_str()));
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// The types of the kinds' wire settings and job metadata
/// (`sources/<kind>/settings.rs`) and of their sections of the
/// daemon's config (`<kind>/section.rs`): each named in its own folder
/// only. The wire model and the config carry them untyped and the
/// registry's macro reaches them through `SourceKind::Config`,
/// `JobMetadata` and `Settings`, so a kind's settings change inside its
/// folder.
#[test]
fn a_kinds_settings_type_is_named_only_in_its_folder() {
    let sources = src().join("sources");
    let type_name = regex::Regex::new(r"pub (?:struct|enum) (\w+)").unwrap();
    let mut settings = Vec::new();
    for entry in std::fs::read_dir(&sources).unwrap().flatten() {
        for name in ["settings.rs", "section.rs"] {
            let Ok(text) = std::fs::read_to_string(entry.path().join(name)) else {
                continue;
            };
            for name in type_name.captures_iter(&text) {
                let word = regex::Regex::new(&format!(r"\b{}\b", &name[1])).unwrap();
                settings.push((entry.path(), name[1].to_string(), word));
            }
        }
    }
    assert!(
        settings.len() >= 12,
        "every kind has its settings.rs: {:?}",
        settings.iter().map(|(_, name, _)| name).collect::<Vec<_>>()
    );
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut offenders = Vec::new();
    for file in &files {
        let code = code_of(file);
        for (folder, name, word) in &settings {
            if !file.starts_with(folder) && word.is_match(&code) {
                offenders.push(format!("{}: {name}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
