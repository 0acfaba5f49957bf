//! What `.meta.json` files synced, remembered in the queue's source state
//! ([`Queue::state`]): the removal event of a metadata file has no body, so
//! this is how its job learns which document (custom ID) in which
//! collection to delete (`meta_json.rs` says when rows are written and
//! removed).
//!
//! Two namespaces, one row each way round, written together in one
//! transaction: [`FILES`] (metadata file, collection, custom ID → object
//! key) answers "what did this file sync", [`DOCUMENTS`] (collection,
//! custom ID, metadata file) answers "which files name this document". A
//! key is its parts, each written `<length in characters>:<text>`, so an
//! object key holding any character cannot pass for another split, and a
//! prefix of whole parts selects exactly the rows that start with them.

use uuid::Uuid;

use crate::queue::{Queue, QueueError, StateChange};

/// Metadata file, collection, custom ID → the object key it synced.
pub const FILES: &str = "s3.meta_json.file";
/// Collection, custom ID, metadata file → nothing.
pub const DOCUMENTS: &str = "s3.meta_json.document";

/// A document a `.meta.json` file of an S3 source had synced: its
/// `custom_id` in a collection, and the object it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaJsonDocument {
    pub collection_name: String,
    pub custom_id: String,
    pub object_key: String,
}

/// One source's metadata files and what they synced.
pub struct MetaJsonMemory<'a> {
    queue: &'a dyn Queue,
    source_id: Uuid,
}

impl<'a> MetaJsonMemory<'a> {
    pub fn new(queue: &'a dyn Queue, source_id: Uuid) -> Self {
        MetaJsonMemory { queue, source_id }
    }

    /// The documents `meta_key` has synced (more than one only while a
    /// changed file's old target is retired), oldest first.
    pub async fn documents(&self, meta_key: &str) -> Result<Vec<MetaJsonDocument>, QueueError> {
        let entries = self
            .queue
            .state_with_prefix(self.source_id, FILES, &key(&[meta_key]))
            .await?;
        entries
            .into_iter()
            .map(|entry| match parts(&entry.key).as_deref() {
                Some([_, collection, custom_id]) => Ok(MetaJsonDocument {
                    collection_name: collection.to_string(),
                    custom_id: custom_id.to_string(),
                    object_key: entry.value,
                }),
                _ => Err(corrupt(&entry.key)),
            })
            .collect()
    }

    /// Records that `meta_key` syncs `document`; an existing row for the
    /// same collection and custom ID takes the new object key.
    pub async fn put(&self, meta_key: &str, document: &MetaJsonDocument) -> Result<(), QueueError> {
        let changes = both_ways(meta_key, document, Some(&document.object_key));
        self.queue.change_state(self.source_id, &changes).await
    }

    /// Forgets that `meta_key` syncs `document` (its object key aside).
    pub async fn remove(
        &self,
        meta_key: &str,
        document: &MetaJsonDocument,
    ) -> Result<(), QueueError> {
        let changes = both_ways(meta_key, document, None);
        self.queue.change_state(self.source_id, &changes).await
    }

    /// The metadata files that name `custom_id` in `collection_name`,
    /// sorted.
    pub async fn files_of(
        &self,
        collection_name: &str,
        custom_id: &str,
    ) -> Result<Vec<String>, QueueError> {
        let entries = self
            .queue
            .state_with_prefix(
                self.source_id,
                DOCUMENTS,
                &key(&[collection_name, custom_id]),
            )
            .await?;
        let mut files = entries
            .into_iter()
            .map(|entry| match parts(&entry.key).as_deref() {
                Some([_, _, file]) => Ok(file.to_string()),
                _ => Err(corrupt(&entry.key)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        files.sort();
        Ok(files)
    }
}

/// The two rows of "`meta_key` syncs `document`": stored (`object_key`
/// given) or forgotten, together.
fn both_ways(
    meta_key: &str,
    document: &MetaJsonDocument,
    object_key: Option<&str>,
) -> [StateChange; 2] {
    let (collection, custom_id) = (&document.collection_name, &document.custom_id);
    [
        StateChange {
            namespace: FILES,
            key: key(&[meta_key, collection, custom_id]),
            value: object_key.map(str::to_string),
        },
        StateChange {
            namespace: DOCUMENTS,
            key: key(&[collection, custom_id, meta_key]),
            value: object_key.map(|_| String::new()),
        },
    ]
}

fn corrupt(key: &str) -> QueueError {
    QueueError::Corrupt(format!("unreadable .meta.json state key {key:?}"))
}

/// `parts`, each as `<length in characters>:<text>`.
fn key(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|part| format!("{}:{part}", part.chars().count()))
        .collect()
}

/// The parts of a [`key`], or `None` if it is not one.
fn parts(key: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut rest = key;
    while !rest.is_empty() {
        let (length, tail) = rest.split_once(':')?;
        let length: usize = length.parse().ok()?;
        let end = tail
            .char_indices()
            .nth(length)
            .map_or(tail.len(), |(at, _)| at);
        if tail[..end].chars().count() != length {
            return None;
        }
        parts.push(&tail[..end]);
        rest = &tail[end..];
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_into_their_parts_whatever_the_parts_hold() {
        let tricky = ["docs/a.meta.json", "3:x", "", "é:ü\u{1f}:", "12"];
        for a in tricky {
            for b in tricky {
                let joined = key(&[a, b, "c"]);
                assert_eq!(parts(&joined).unwrap(), vec![a, b, "c"], "{joined:?}");
                // A prefix of whole parts starts only keys with those parts.
                for p in tricky {
                    assert_eq!(joined.starts_with(&key(&[p])), p == a, "{joined:?} {p:?}");
                }
            }
        }
        assert_eq!(parts("5:abc"), None);
        assert_eq!(parts("x:abc"), None);
        assert_eq!(parts("3"), None);
    }

    /// What the migration from `meta_json_documents` writes (SQL's
    /// `length(text) || ':' || text`, characters not bytes) is what this
    /// module reads.
    #[test]
    fn the_encoding_counts_characters_as_sql_length_does() {
        assert_eq!(key(&["é", "ab"]), "1:é2:ab");
    }
}
