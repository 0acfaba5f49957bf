//! Chunk records: IDs and metadata, the contract tools read.
//!
//! Architecture invariant: this is the only place that knows the chunk-ID
//! rule (`custom_id-<n>` or `sha256hex(document_key)-<n>`) and the standard
//! metadata field names ([`field`]): chunks are built here, the Chroma
//! `where` filters that find them are built here ([`Filter`]), and what a
//! stored chunk says is read here ([`Stored`]). `sink::chroma` speaks
//! Chroma's REST API and knows none of these names. Pure functions, no IO.

use serde_json::{Map, Value, json};

use crate::chunk::Chunked;
use crate::config::sha256_hex;

/// Chroma Cloud's limit, which we respect everywhere.
pub const MAX_METADATA_KEYS: usize = 32;
/// Keys we set on a chunk, at most: the twelve always there, `custom_id`,
/// a source field or two, and either `language` (code) or the converted
/// documents' `page_start`, `page_end` (or `sheet`), `document_title`,
/// `content_type` and `ocr`. A source's sparse vector key takes one more,
/// counted against the invocation's own metadata ([`max_user_metadata_keys`]).
pub const STANDARD_METADATA_KEYS: usize = 19;
/// What is left for an invocation's own `metadata`.
pub const MAX_USER_METADATA_KEYS: usize = MAX_METADATA_KEYS - STANDARD_METADATA_KEYS;
/// Largest invocation `metadata`, serialized as JSON: the hosted Chroma
/// Sync's limit. It is copied onto every chunk, so without a bound one
/// request could multiply into gigabytes of Chroma metadata.
pub const MAX_USER_METADATA_BYTES: usize = 16 * 1024;

/// The standard chunk metadata fields (interface contract: tools filter on
/// them, so they are never renamed). Source-specific fields (`bucket`,
/// `repository`, `url`, …) are named by their sources.
pub mod field {
    pub const DOCUMENT_KEY: &str = "document_key";
    pub const DOCUMENT_KEY_SHA256: &str = "document_key_sha256";
    pub const VERSION_KEY: &str = "version_key";
    pub const VERSION_KEY_SHA256: &str = "version_key_sha256";
    pub const CHUNK_STRATEGY: &str = "chunk_strategy";
    pub const START_LINE: &str = "start_line";
    pub const END_LINE: &str = "end_line";
    pub const SOURCE_ID: &str = "source_id";
    pub const SOURCE_TYPE: &str = "source_type";
    pub const CHUNK_INDEX: &str = "chunk_index";
    pub const CONTENT_SHA256: &str = "content_sha256";
    pub const LANGUAGE: &str = "language";
    pub const CUSTOM_ID: &str = "custom_id";
    /// Converted documents (PDF, office files, spreadsheets, …).
    pub const PAGE_START: &str = "page_start";
    pub const PAGE_END: &str = "page_end";
    pub const SHEET: &str = "sheet";
    pub const DOCUMENT_TITLE: &str = "document_title";
    pub const CONTENT_TYPE: &str = "content_type";
    /// `true` on chunks whose text OCR read (scanned pages, image files).
    pub const OCR: &str = "ocr";
    /// The dense model the chunk's embedding came from (as sources name it).
    pub const EMBEDDING_MODEL: &str = "embedding_model";
}

/// Whether `name` is one of the chunk metadata fields we write (a source's
/// own fields aside).
pub fn is_standard_field(name: &str) -> bool {
    use field::*;
    [
        DOCUMENT_KEY,
        DOCUMENT_KEY_SHA256,
        VERSION_KEY,
        VERSION_KEY_SHA256,
        CHUNK_STRATEGY,
        START_LINE,
        END_LINE,
        SOURCE_ID,
        SOURCE_TYPE,
        CHUNK_INDEX,
        CONTENT_SHA256,
        LANGUAGE,
        CUSTOM_ID,
        PAGE_START,
        PAGE_END,
        SHEET,
        DOCUMENT_TITLE,
        CONTENT_TYPE,
        OCR,
        EMBEDDING_MODEL,
    ]
    .contains(&name)
}

/// How a source's chunks are embedded: what their records say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedWith<'a> {
    /// The dense model, as sources name it.
    pub model: &'a str,
    /// Prepended to each chunk before embedding (not stored in the document).
    pub document_prompt: Option<&'a str>,
    /// The metadata key that holds the chunk's sparse vector, if any.
    pub sparse_key: Option<&'a str>,
}

impl EmbeddedWith<'static> {
    /// The built-in model, no prompt, no sparse vector: how every chunk was
    /// embedded before models could be chosen.
    pub const BUILTIN: EmbeddedWith<'static> = EmbeddedWith {
        model: crate::model::DEFAULT_EMBEDDING_MODEL,
        document_prompt: None,
        sparse_key: None,
    };
}

impl EmbeddedWith<'_> {
    /// What the chunk's embedding is computed from: the document prompt,
    /// then the chunk's text.
    pub fn input(&self, text: &str) -> String {
        match self.document_prompt {
            Some(prompt) => format!("{prompt}{text}"),
            None => text.to_string(),
        }
    }
}

/// Room for an invocation's own metadata keys beside ours, for a source
/// that writes sparse vectors (under one more key) or not.
pub fn max_user_metadata_keys(sparse: bool) -> usize {
    MAX_USER_METADATA_KEYS - usize::from(sparse)
}

/// A query over chunk metadata, built only from the constructors below so
/// that every query the daemon makes is spelled here.
///
/// It comes in two parts. Chroma is asked (`to_where`) only for conditions
/// that single out few records: a document's key, a custom ID, a version,
/// a content hash. Conditions that most of a collection meets — the
/// writing source's ID, the model — are checked on each returned record
/// instead ([`Filter::admits`]). Chroma's local (SQLite) metadata segment
/// evaluates each condition of an `$and` over every record that meets it,
/// so `{"$and": [{"source_id": …}, {"document_key": …}]}` costs time in
/// proportion to the whole source: measured on the real server, 508 ms
/// per lookup at 60,000 chunks against 32 ms for the key alone, and a
/// first sync that slowed as its collection grew (issue 33). Every reader
/// in `sink::chroma` pages past records a check refuses, so a check never
/// hides a record that matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    ask: Value,
    checks: Vec<Check>,
}

/// A condition checked on a returned record's metadata.
#[derive(Debug, Clone, PartialEq)]
enum Check {
    /// The field holds exactly this value (a record without it fails).
    Equals(&'static str, Value),
    /// The field holds an integer of at least this.
    AtLeast(&'static str, u64),
}

impl Check {
    fn admits(&self, metadata: &Map<String, Value>) -> bool {
        match self {
            Check::Equals(name, value) => metadata.get(*name) == Some(value),
            Check::AtLeast(name, least) => metadata
                .get(*name)
                .and_then(Value::as_u64)
                .is_some_and(|n| n >= *least),
        }
    }
}

impl Filter {
    /// Chroma evaluates all of `ask`; nothing is checked after.
    fn exact(ask: Value) -> Self {
        Filter {
            ask,
            checks: Vec::new(),
        }
    }

    fn of_source(source_id: &str, ask: Value) -> Self {
        Filter {
            ask,
            checks: vec![Check::Equals(field::SOURCE_ID, json!(source_id))],
        }
    }

    /// What a document's key or custom ID asks Chroma: few records.
    fn document_ask(key: &str, custom_id: Option<&str>) -> Value {
        match custom_id {
            Some(custom_id) => json!({"$or": [
                {field::DOCUMENT_KEY: key},
                {field::CUSTOM_ID: custom_id},
            ]}),
            None => json!({field::DOCUMENT_KEY: key}),
        }
    }

    /// The chunks one source wrote of one document: its `document_key`, or
    /// its invocation's `custom_id` (whose IDs belong to one document).
    ///
    /// **Invariant:** every filter that replaces or removes a document's
    /// chunks is scoped to the writing source's `source_id` (uploads: the
    /// empty one all uploads write), so a document can never delete another
    /// source's document of the same name in a shared collection — a binary
    /// upload named `README.md` is skipped without touching a GitHub
    /// source's `README.md` (`tests/uploads.rs`). The scope is a check
    /// ([`Filter::admits`]), applied by every reader before a record is
    /// returned or deleted.
    pub fn document(source_id: &str, key: &str, custom_id: Option<&str>) -> Self {
        Self::of_source(source_id, Self::document_ask(key, custom_id))
    }

    /// The chunks a source wrote under one `custom_id`, whatever their
    /// document key: what a removed S3 `.meta.json` file leaves to delete.
    /// Only this source's, so a collection shared with another source that
    /// happens to use the same custom ID keeps that source's chunks.
    pub fn custom_document(source_id: &str, custom_id: &str) -> Self {
        Self::of_source(source_id, json!({field::CUSTOM_ID: custom_id}))
    }

    /// A document's chunks numbered `from` and up. (`chunk_index >= from`
    /// meets most of a collection: a check, like the source.)
    pub fn document_from(source_id: &str, key: &str, custom_id: Option<&str>, from: usize) -> Self {
        let mut filter = Self::document(source_id, key, custom_id);
        filter
            .checks
            .push(Check::AtLeast(field::CHUNK_INDEX, from as u64));
        filter
    }

    /// Chunks embedded by `model` from one of these inputs
    /// (`content_sha256`), from any source: whose vectors a chunk of the
    /// same input may reuse.
    pub fn same_input(model: &str, content_sha256: &[String]) -> Self {
        Filter {
            ask: json!({field::CONTENT_SHA256: {"$in": content_sha256}}),
            checks: vec![Check::Equals(field::EMBEDDING_MODEL, json!(model))],
        }
    }

    /// Every chunk one source wrote of these documents (by key): what a
    /// listing's page of keys reads, at a cost in proportion to the chunks
    /// it returns rather than to the whole source.
    pub fn documents(source_id: &str, keys: &[&str]) -> Self {
        Self::of_source(source_id, json!({field::DOCUMENT_KEY: {"$in": keys}}))
    }

    /// Every chunk of one source.
    pub fn source(source_id: &str) -> Self {
        Self::exact(json!({field::SOURCE_ID: source_id}))
    }

    /// The first chunk of each of a source's documents (one per document).
    pub fn first_chunks(source_id: &str) -> Self {
        Self::exact(json!({"$and": [
            {field::SOURCE_ID: source_id},
            {field::CHUNK_INDEX: 0},
        ]}))
    }

    /// A document's chunks stored at `version`.
    pub fn document_at(source_id: &str, key: &str, custom_id: Option<&str>, version: &str) -> Self {
        Self::of_source(
            source_id,
            json!({"$and": [
                Self::document_ask(key, custom_id),
                {field::VERSION_KEY: version},
            ]}),
        )
    }

    /// A source's chunks of one version (a commit).
    pub fn source_version(source_id: &str, version: &str) -> Self {
        Self::of_source(source_id, json!({field::VERSION_KEY: version}))
    }

    /// A source's chunks whose version is not `version`, or whose
    /// `labels` (source fields) differ from these values: what re-stamping
    /// a new version onto unchanged chunks must still touch.
    pub fn source_not_at(source_id: &str, version: &str, labels: &[(String, Value)]) -> Self {
        let mut differs = vec![json!({field::VERSION_KEY: {"$ne": version}})];
        differs.extend(
            labels
                .iter()
                .map(|(name, value)| json!({name.as_str(): {"$ne": value}})),
        );
        Self::exact(json!({"$and": [
            {field::SOURCE_ID: source_id},
            {"$or": differs},
        ]}))
    }

    /// What Chroma is asked, as its `where` JSON.
    pub fn to_where(&self) -> &Value {
        &self.ask
    }

    /// Whether Chroma's answer needs no check: every record it returns
    /// matches, so a `limit` can be left to Chroma.
    pub fn is_exact(&self) -> bool {
        self.checks.is_empty()
    }

    /// Whether a record Chroma returned for [`Filter::to_where`] matches the
    /// whole filter.
    pub fn admits(&self, metadata: &Map<String, Value>) -> bool {
        self.checks.iter().all(|check| check.admits(metadata))
    }
}

/// What a stored chunk's metadata says, read by field.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a>(pub &'a Map<String, Value>);

impl<'a> Stored<'a> {
    pub fn document_key(&self) -> Option<&'a str> {
        self.text(field::DOCUMENT_KEY)
    }
    pub fn version_key(&self) -> Option<&'a str> {
        self.text(field::VERSION_KEY)
    }
    pub fn content_sha256(&self) -> Option<&'a str> {
        self.text(field::CONTENT_SHA256)
    }
    /// The ID an invocation (or an S3 `.meta.json` file) gave the document.
    pub fn custom_id(&self) -> Option<&'a str> {
        self.text(field::CUSTOM_ID)
    }
    /// The chunk's place in its document, from 0.
    pub fn chunk_index(&self) -> Option<u64> {
        self.0.get(field::CHUNK_INDEX).and_then(Value::as_u64)
    }
    /// The model that embedded the chunk; chunks written before models
    /// could be chosen say none, and the built-in made them.
    pub fn embedding_model(&self) -> &'a str {
        self.text(field::EMBEDDING_MODEL)
            .unwrap_or(crate::model::DEFAULT_EMBEDDING_MODEL)
    }
    /// A string field, standard or source-specific.
    pub fn text(&self, name: &str) -> Option<&'a str> {
        self.0.get(name).and_then(Value::as_str)
    }
}

/// The metadata that moves a chunk to `version` (re-stamping: the text,
/// and so the embedding, stays).
pub fn version_fields(version: &str) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert(field::VERSION_KEY.into(), Value::from(version));
    fields.insert(
        field::VERSION_KEY_SHA256.into(),
        Value::from(sha256_hex(version.as_bytes())),
    );
    fields
}

/// A chunk ready to embed and upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub document: String,
    pub metadata: Map<String, Value>,
}

/// Everything about a document that goes into its chunks' metadata.
#[derive(Debug, Clone)]
pub struct DocumentIdentity<'a> {
    pub source_id: &'a str,
    pub source_type: &'a str,
    pub key: &'a str,
    pub version: &'a str,
    pub custom_id: Option<&'a str>,
    /// Source-specific fields (`bucket`, `repository`, …).
    pub source_fields: &'a [(String, Value)],
    /// The invocation's `metadata`, merged in; our own keys win on a clash.
    pub user_metadata: Option<&'a Map<String, Value>>,
    pub embedding: EmbeddedWith<'a>,
}

/// `<custom_id or sha256hex(key)>-<n>`.
pub fn chunk_id(key: &str, custom_id: Option<&str>, index: usize) -> String {
    match custom_id {
        Some(custom) => format!("{custom}-{index}"),
        None => format!("{}-{index}", sha256_hex(key.as_bytes())),
    }
}

/// One record per chunk, in document order.
pub fn build_records(identity: &DocumentIdentity<'_>, chunked: &Chunked) -> Vec<Record> {
    build_segment_records(identity, chunked, 0, 0)
}

/// Records for one segment of a document read a piece at a time: its chunks
/// are numbered from `first_index`, and its lines follow the `lines_before`
/// lines of the segments before it.
pub fn build_segment_records(
    identity: &DocumentIdentity<'_>,
    chunked: &Chunked,
    first_index: usize,
    lines_before: u32,
) -> Vec<Record> {
    let key_sha = sha256_hex(identity.key.as_bytes());
    let version_sha = sha256_hex(identity.version.as_bytes());
    chunked
        .chunks
        .iter()
        .enumerate()
        .map(|(index, chunk)| {
            let index = first_index + index;
            let mut metadata = identity.user_metadata.cloned().unwrap_or_default();
            for (name, value) in identity.source_fields {
                metadata.insert(name.clone(), value.clone());
            }
            let mut put = |name: &str, value: Value| {
                metadata.insert(name.to_string(), value);
            };
            put(field::DOCUMENT_KEY, identity.key.into());
            put(field::DOCUMENT_KEY_SHA256, key_sha.clone().into());
            put(field::VERSION_KEY, identity.version.into());
            put(field::VERSION_KEY_SHA256, version_sha.clone().into());
            put(field::CHUNK_STRATEGY, chunked.strategy.as_str().into());
            put(field::START_LINE, (lines_before + chunk.start_line).into());
            put(field::END_LINE, (lines_before + chunk.end_line).into());
            put(field::SOURCE_ID, identity.source_id.into());
            put(field::SOURCE_TYPE, identity.source_type.into());
            put(field::CHUNK_INDEX, (index as u64).into());
            // The hash of what the embedding is computed from: a new
            // document prompt re-embeds, like new text does.
            put(
                field::CONTENT_SHA256,
                sha256_hex(identity.embedding.input(&chunk.text).as_bytes()).into(),
            );
            put(field::EMBEDDING_MODEL, identity.embedding.model.into());
            if let Some(language) = chunked.language {
                put(field::LANGUAGE, language.name().into());
            }
            if let Some(custom_id) = identity.custom_id {
                put(field::CUSTOM_ID, custom_id.into());
            }
            if let Some((start, end)) = chunk.pages {
                put(field::PAGE_START, start.into());
                put(field::PAGE_END, end.into());
            }
            if let Some(sheet) = &chunk.sheet {
                put(field::SHEET, sheet.clone().into());
            }
            if chunk.ocr {
                put(field::OCR, true.into());
            }
            if let Some(document) = &chunked.document {
                put(field::CONTENT_TYPE, document.content_type.clone().into());
                if let Some(title) = &document.title {
                    put(field::DOCUMENT_TITLE, title.clone().into());
                }
            }
            Record {
                id: chunk_id(identity.key, identity.custom_id, index),
                document: chunk.text.clone(),
                metadata,
            }
        })
        .collect()
}

/// Fields whose values the document's content decides (the rest its
/// identity: key, version, source, invocation metadata).
const CONTENT_FIELDS: &[&str] = &[
    field::CHUNK_STRATEGY,
    field::START_LINE,
    field::END_LINE,
    field::CHUNK_INDEX,
    field::CONTENT_SHA256,
    field::LANGUAGE,
    field::PAGE_START,
    field::PAGE_END,
    field::SHEET,
    field::DOCUMENT_TITLE,
    field::CONTENT_TYPE,
    field::OCR,
];

/// Whether a stored chunk's metadata holds exactly what `identity` would
/// write, apart from what the content decides. With the same version, the
/// document is stored as this invocation would store it: converting it
/// again (seconds for a long PDF) could only give the same records.
pub fn same_identity(identity: &DocumentIdentity<'_>, stored: &Map<String, Value>) -> bool {
    let probe = Chunked {
        strategy: crate::chunk::Strategy::Text,
        language: None,
        chunks: vec![crate::chunk::Chunk::default()],
        document: None,
    };
    let wanted = build_records(identity, &probe).remove(0).metadata;
    let sparse_key = identity.embedding.sparse_key;
    if sparse_key.is_some_and(|key| stored.get(key).is_none_or(Value::is_null)) {
        // The source writes sparse vectors now; this document has none yet.
        return false;
    }
    let identity_only = |metadata: &Map<String, Value>| -> Map<String, Value> {
        metadata
            .iter()
            .filter(|(name, value)| {
                !CONTENT_FIELDS.contains(&name.as_str())
                    && Some(name.as_str()) != sparse_key
                    && !value.is_null()
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    };
    let mut stored = identity_only(stored);
    // Chunks written before models could be chosen carry no model: the
    // built-in made them.
    stored
        .entry(field::EMBEDDING_MODEL)
        .or_insert_with(|| crate::model::DEFAULT_EMBEDDING_MODEL.into());
    identity_only(&wanted) == stored
}

/// Whether a stored chunk's embedding was computed from the same input
/// (`content_sha256`) by the same model: then it need not be embedded again.
pub fn same_embedding_input(stored: &Map<String, Value>, new: &Map<String, Value>) -> bool {
    let (stored, new) = (Stored(stored), Stored(new));
    stored.content_sha256().is_some()
        && stored.content_sha256() == new.content_sha256()
        && stored.embedding_model() == new.embedding_model()
}

/// Why an invocation's `metadata` cannot be stored on chunks, if it cannot.
pub fn validate_user_metadata(metadata: &Map<String, Value>, sparse: bool) -> Result<(), String> {
    let most = max_user_metadata_keys(sparse);
    if metadata.len() > most {
        return Err(format!(
            "metadata has {} keys; at most {most} fit beside the standard chunk metadata{}",
            metadata.len(),
            if sparse {
                " and the source's sparse vector"
            } else {
                ""
            }
        ));
    }
    let size = serde_json::to_vec(metadata).map_or(usize::MAX, |json| json.len());
    if size > MAX_USER_METADATA_BYTES {
        return Err(format!(
            "metadata is {size} bytes as JSON; at most {MAX_USER_METADATA_BYTES} bytes (16 KiB) \
             are accepted, since it is copied onto every chunk"
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() {
            return Err("metadata keys must not be empty".to_string());
        }
        if key.starts_with("chroma_") || key.starts_with('#') || key.starts_with('$') {
            return Err(format!("metadata key `{key}` uses a reserved prefix"));
        }
        match value {
            Value::String(_) | Value::Bool(_) | Value::Number(_) => {}
            Value::Array(items) => check_array(key, items)?,
            _ => {
                return Err(format!(
                    "metadata value of `{key}` must be a string, number, boolean or a \
                     non-empty array of one of those"
                ));
            }
        }
    }
    Ok(())
}

/// The kind of a scalar metadata value, as Chroma types array elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    String,
    Bool,
    Int,
    Float,
}

fn scalar(value: &Value) -> Option<Scalar> {
    match value {
        Value::String(_) => Some(Scalar::String),
        Value::Bool(_) => Some(Scalar::Bool),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(Scalar::Int),
        Value::Number(_) => Some(Scalar::Float),
        _ => None,
    }
}

/// Array values are homogeneous arrays of scalars (strings, booleans,
/// integers or floats), as Chroma 1.5 stores them and the hosted Chroma
/// Sync accepts them; empty, mixed and nested arrays are refused.
fn check_array(key: &str, items: &[Value]) -> Result<(), String> {
    let Some(first) = items.first() else {
        return Err(format!("metadata value of `{key}` is an empty array"));
    };
    let Some(kind) = scalar(first) else {
        return Err(format!(
            "metadata value of `{key}` must be an array of strings, numbers or booleans"
        ));
    };
    if items.iter().any(|item| scalar(item) != Some(kind)) {
        return Err(format!(
            "metadata value of `{key}` mixes element types; arrays hold one type (all \
             strings, all integers, all floats or all booleans)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{Chunk, Strategy};
    use crate::extract::CodeLanguage;

    fn chunked(n: usize) -> Chunked {
        Chunked {
            strategy: Strategy::TreeSitter,
            language: Some(CodeLanguage::Rust),
            chunks: (0..n)
                .map(|i| Chunk {
                    text: format!("chunk {i}"),
                    start_line: i as u32 * 3 + 1,
                    end_line: i as u32 * 3 + 3,
                    ..Chunk::default()
                })
                .collect(),
            document: None,
        }
    }

    #[test]
    fn ids_follow_the_contract() {
        // printf %s docs/a.md | sha256sum
        let sha = "5231f8a11b65145a1b0727cb8d209819e95360a5f1e17e4f757b61dbda1af3cc";
        assert_eq!(chunk_id("docs/a.md", None, 0), format!("{sha}-0"));
        assert_eq!(chunk_id("docs/a.md", None, 12), format!("{sha}-12"));
        assert_eq!(chunk_id("docs/a.md", Some("doc-42"), 7), "doc-42-7");
    }

    #[test]
    fn metadata_has_standard_fields_and_user_fields() {
        let mut user = Map::new();
        user.insert("team".into(), "search".into());
        user.insert("document_key".into(), "spoofed".into());
        let fields = vec![("bucket".to_string(), Value::from("b1"))];
        let identity = DocumentIdentity {
            source_id: "s-1",
            source_type: "s3",
            key: "src/lib.rs",
            version: "etag-1",
            custom_id: Some("lib"),
            source_fields: &fields,
            user_metadata: Some(&user),
            embedding: EmbeddedWith::BUILTIN,
        };
        let records = build_records(&identity, &chunked(2));
        assert_eq!(records.len(), 2);
        let meta = &records[1].metadata;
        assert_eq!(records[1].id, "lib-1");
        assert_eq!(meta["document_key"], "src/lib.rs");
        assert_eq!(meta["document_key_sha256"], sha256_hex(b"src/lib.rs"));
        assert_eq!(meta["version_key_sha256"], sha256_hex(b"etag-1"));
        assert_eq!(meta["chunk_index"], 1);
        assert_eq!(meta["start_line"], 4);
        assert_eq!(meta["end_line"], 6);
        assert_eq!(meta["language"], "rust");
        assert_eq!(meta["chunk_strategy"], "tree_sitter");
        assert_eq!(meta["custom_id"], "lib");
        assert_eq!(meta["bucket"], "b1");
        assert_eq!(meta["team"], "search");
        assert_eq!(meta["content_sha256"], sha256_hex(b"chunk 1"));
        assert!(meta.len() <= STANDARD_METADATA_KEYS + 1);
    }

    #[test]
    fn same_identity_ignores_content_but_not_metadata() {
        let mut user = Map::new();
        user.insert("team".into(), "search".into());
        let fields = vec![("bucket".to_string(), Value::from("b1"))];
        let identity = DocumentIdentity {
            source_id: "s-1",
            source_type: "s3",
            key: "a.pdf",
            version: "etag-1",
            custom_id: None,
            source_fields: &fields,
            user_metadata: Some(&user),
            embedding: EmbeddedWith::BUILTIN,
        };
        let mut stored = build_records(&identity, &chunked(1)).remove(0).metadata;
        stored.insert(field::PAGE_START.into(), 3.into());
        assert!(same_identity(&identity, &stored));
        let mut changed = user.clone();
        changed.insert("team".into(), "ads".into());
        let identity = DocumentIdentity {
            user_metadata: Some(&changed),
            ..identity
        };
        assert!(!same_identity(&identity, &stored), "new metadata: rewrite");
        let identity = DocumentIdentity {
            user_metadata: None,
            ..identity
        };
        assert!(
            !same_identity(&identity, &stored),
            "dropped metadata: rewrite"
        );
    }

    #[test]
    fn filters_name_the_standard_fields() {
        // Chroma is asked for what singles out few records; the source and
        // the chunk range are checked on what it returns.
        let document = Filter::document("s", "a.md", None);
        assert_eq!(document.to_where(), &json!({"document_key": "a.md"}));
        assert!(!document.is_exact());
        let from = Filter::document_from("s", "a.md", Some("c"), 3);
        assert_eq!(
            from.to_where(),
            &json!({"$or": [{"document_key": "a.md"}, {"custom_id": "c"}]})
        );
        assert_eq!(
            Filter::custom_document("s", "report-7").to_where(),
            &json!({"custom_id": "report-7"})
        );
        assert_eq!(
            Filter::document_at("s", "a.md", None, "v1").to_where(),
            &json!({"$and": [{"document_key": "a.md"}, {"version_key": "v1"}]})
        );
        assert_eq!(
            Filter::same_input("m", &["h".to_string()]).to_where(),
            &json!({"content_sha256": {"$in": ["h"]}})
        );
        assert!(Filter::source("s").is_exact());
        let listed = Filter::documents("s", &["a.md", "b.md"]);
        assert_eq!(
            listed.to_where(),
            &json!({"document_key": {"$in": ["a.md", "b.md"]}})
        );
        assert!(!listed.is_exact(), "the source is checked on the answer");
        assert!(!listed.admits(&json!({"source_id": "t"}).as_object().unwrap().clone()));
        let labels = vec![("ref".to_string(), Value::from("main"))];
        assert_eq!(
            Filter::source_not_at("s", "abc", &labels).to_where(),
            &json!({"$and": [
                {"source_id": "s"},
                {"$or": [{"version_key": {"$ne": "abc"}}, {"ref": {"$ne": "main"}}]},
            ]})
        );
        let records = build_records(
            &DocumentIdentity {
                source_id: "s",
                source_type: "s3",
                key: "k",
                version: "v",
                custom_id: None,
                source_fields: &[],
                user_metadata: None,
                embedding: EmbeddedWith::BUILTIN,
            },
            &chunked(1),
        );
        let stored = Stored(&records[0].metadata);
        assert_eq!(stored.document_key(), Some("k"));
        assert_eq!(stored.version_key(), Some("v"));
        assert_eq!(
            stored.content_sha256(),
            Some(sha256_hex(b"chunk 0").as_str())
        );
        assert_eq!(version_fields("v")["version_key_sha256"], sha256_hex(b"v"));
    }

    #[test]
    fn user_metadata_rules() {
        let ok: Map<String, Value> =
            serde_json::from_str(r#"{"a": 1, "b": "x", "c": true, "d": 1.5}"#).unwrap();
        assert!(validate_user_metadata(&ok, false).is_ok());
        let arrays: Map<String, Value> = serde_json::from_str(
            r#"{"tags": ["quarterly", "finance"], "years": [2025, 2026], "w": [0.5, 1.5], "f": [true]}"#,
        )
        .unwrap();
        assert!(validate_user_metadata(&arrays, false).is_ok());
        for bad in [
            r#"{"chroma_x": 1}"#,
            r#"{"nested": {"a": 1}}"#,
            r#"{"list": []}"#,
            r#"{"list": [1, "a"]}"#,
            r#"{"list": [1, 2.5]}"#,
            r#"{"list": [[1]]}"#,
            r#"{"list": [{"a": 1}]}"#,
            r#"{"list": [null]}"#,
            r#"{"nothing": null}"#,
            r#"{"": 1}"#,
        ] {
            let bad: Map<String, Value> = serde_json::from_str(bad).unwrap();
            assert!(validate_user_metadata(&bad, false).is_err(), "{bad:?}");
        }
        let many: Map<String, Value> = (0..=MAX_USER_METADATA_KEYS)
            .map(|i| (format!("k{i}"), Value::from(i)))
            .collect();
        assert!(validate_user_metadata(&many, false).is_err());
        let fit: Map<String, Value> = (0..MAX_USER_METADATA_KEYS)
            .map(|i| (format!("k{i}"), Value::from(i)))
            .collect();
        assert!(validate_user_metadata(&fit, false).is_ok());
        assert!(
            validate_user_metadata(&fit, true).is_err(),
            "the sparse key takes one"
        );
    }

    #[test]
    fn a_check_refuses_another_sources_record_and_earlier_chunks() {
        let chunk = |source: &str, index: u64| {
            json!({"source_id": source, "document_key": "a.md", "chunk_index": index,
                   "embedding_model": "m"})
            .as_object()
            .unwrap()
            .clone()
        };
        let document = Filter::document("s", "a.md", None);
        assert!(document.admits(&chunk("s", 0)));
        assert!(!document.admits(&chunk("other", 0)), "another source's");
        assert!(!document.admits(&Map::new()), "no source at all");
        let from = Filter::document_from("s", "a.md", None, 3);
        assert!(!from.admits(&chunk("s", 2)));
        assert!(from.admits(&chunk("s", 3)));
        assert!(!from.admits(&chunk("other", 7)));
        let same = Filter::same_input("m", &["h".to_string()]);
        assert!(same.admits(&chunk("any", 0)));
        assert!(!Filter::same_input("n", &[]).admits(&chunk("any", 0)));
        assert!(
            Filter::source("s").admits(&Map::new()),
            "exact: Chroma decided"
        );
    }
}
