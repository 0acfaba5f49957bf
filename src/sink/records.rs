//! Chunk records: IDs and metadata, the contract tools read.
//!
//! Architecture invariant: this is the only place that knows the chunk-ID
//! rule (`custom_id-<n>` or `sha256hex(document_key)-<n>`) and the metadata
//! field names. Pure functions, no IO.

use serde_json::{Map, Value};

use crate::chunk::Chunked;
use crate::config::sha256_hex;

/// Chroma Cloud's limit, which we respect everywhere.
pub const MAX_METADATA_KEYS: usize = 32;
/// Keys we set on every chunk (at most; `language` and `custom_id` are optional).
pub const STANDARD_METADATA_KEYS: usize = 16;
/// What is left for an invocation's own `metadata`.
pub const MAX_USER_METADATA_KEYS: usize = MAX_METADATA_KEYS - STANDARD_METADATA_KEYS;
/// Largest invocation `metadata`, serialized as JSON: the hosted Chroma
/// Sync's limit. It is copied onto every chunk, so without a bound one
/// request could multiply into gigabytes of Chroma metadata.
pub const MAX_USER_METADATA_BYTES: usize = 16 * 1024;

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
            put("document_key", identity.key.into());
            put("document_key_sha256", key_sha.clone().into());
            put("version_key", identity.version.into());
            put("version_key_sha256", version_sha.clone().into());
            put("chunk_strategy", chunked.strategy.as_str().into());
            put("start_line", (lines_before + chunk.start_line).into());
            put("end_line", (lines_before + chunk.end_line).into());
            put("source_id", identity.source_id.into());
            put("source_type", identity.source_type.into());
            put("chunk_index", (index as u64).into());
            put("content_sha256", sha256_hex(chunk.text.as_bytes()).into());
            if let Some(language) = chunked.language {
                put("language", language.name().into());
            }
            if let Some(custom_id) = identity.custom_id {
                put("custom_id", custom_id.into());
            }
            Record {
                id: chunk_id(identity.key, identity.custom_id, index),
                document: chunk.text.clone(),
                metadata,
            }
        })
        .collect()
}

/// Why an invocation's `metadata` cannot be stored on chunks, if it cannot.
pub fn validate_user_metadata(metadata: &Map<String, Value>) -> Result<(), String> {
    if metadata.len() > MAX_USER_METADATA_KEYS {
        return Err(format!(
            "metadata has {} keys; at most {MAX_USER_METADATA_KEYS} fit beside the standard chunk metadata",
            metadata.len()
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
            _ => {
                return Err(format!(
                    "metadata value of `{key}` must be a string, number or boolean"
                ));
            }
        }
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
                })
                .collect(),
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
    fn user_metadata_rules() {
        let ok: Map<String, Value> =
            serde_json::from_str(r#"{"a": 1, "b": "x", "c": true, "d": 1.5}"#).unwrap();
        assert!(validate_user_metadata(&ok).is_ok());
        for bad in [
            r#"{"chroma_x": 1}"#,
            r#"{"nested": {"a": 1}}"#,
            r#"{"list": [1]}"#,
            r#"{"nothing": null}"#,
            r#"{"": 1}"#,
        ] {
            let bad: Map<String, Value> = serde_json::from_str(bad).unwrap();
            assert!(validate_user_metadata(&bad).is_err(), "{bad:?}");
        }
        let many: Map<String, Value> = (0..=MAX_USER_METADATA_KEYS)
            .map(|i| (format!("k{i}"), Value::from(i)))
            .collect();
        assert!(validate_user_metadata(&many).is_err());
    }
}
