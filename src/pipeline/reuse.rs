//! Never embed the same text twice (issue 33).
//!
//! Corpora repeat themselves: license headers, vendored copies, navigation
//! and footers on every page, the same PDF in three folders. A chunk's
//! embedding is a function of its *embedding identity* — the dense model
//! and the exact input (prompt + text), which `content_sha256` already
//! hashes — so a vector computed once serves every chunk with the same
//! identity. Before a batch is embedded, each chunk's vector is looked for
//!
//! 1. in the batch itself (identical chunks are embedded once),
//! 2. in [`VectorCache`], a bounded process-wide cache of recent vectors
//!    (two copies of a file under two prefixes are two jobs that may run side
//!    by side), and
//! 3. in the target collection: one Chroma `get` per batch for the chunks
//!    still missing, `content_sha256 $in [...]` and the same
//!    `embedding_model`, embeddings included (a copy stored by an earlier
//!    sync, or by another document).
//!
//! Only what is left is embedded. The result is the same, byte for byte, as
//! embedding again: the vector reused is the one the same model made from
//! the same input (f32 values round-trip exactly through Chroma's JSON).
//! `[embedding] reuse_vectors = false` turns it off.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// (dense model, `content_sha256`).
type Key = (String, String);

/// Recent vectors by embedding identity; at most `capacity`, oldest out
/// first. Memory: `capacity` × dimension × 4 bytes (4,096 × 384 floats:
/// 6 MiB).
#[derive(Debug)]
pub struct VectorCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    vectors: HashMap<Key, Arc<[f32]>>,
    order: VecDeque<Key>,
}

impl VectorCache {
    pub fn new(capacity: usize) -> Self {
        VectorCache {
            capacity,
            entries: Mutex::default(),
        }
    }

    pub fn get(&self, model: &str, content_sha256: &str) -> Option<Vec<f32>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .vectors
            .get(&(model.to_string(), content_sha256.to_string()))
            .map(|v| v.to_vec())
    }

    pub fn put(&self, model: &str, content_sha256: &str, vector: &[f32]) {
        if self.capacity == 0 {
            return;
        }
        let key = (model.to_string(), content_sha256.to_string());
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.vectors.contains_key(&key) {
            return;
        }
        // Invariant: `order` holds each key of `vectors` once, so the map
        // never grows past `capacity`.
        while entries.order.len() >= self.capacity {
            if let Some(oldest) = entries.order.pop_front() {
                entries.vectors.remove(&oldest);
            }
        }
        entries.order.push_back(key.clone());
        entries.vectors.insert(key, Arc::from(vector));
    }

    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .vectors
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which of `keys` (one per chunk, `None`: no identity) to embed: the first
/// chunk of each identity not in `known`, and, for every chunk, the index of
/// the embedded input its vector comes from (or `None` when `known` has it).
pub fn plan(keys: &[Option<String>], known: &HashMap<String, Vec<f32>>) -> (Vec<usize>, Vec<Option<usize>>) {
    let mut embed: Vec<usize> = Vec::new();
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut source = Vec::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        match key {
            Some(key) if known.contains_key(key) => source.push(None),
            Some(key) => {
                let slot = *first_of.entry(key.as_str()).or_insert_with(|| {
                    embed.push(index);
                    embed.len() - 1
                });
                source.push(Some(slot));
            }
            None => {
                embed.push(index);
                source.push(Some(embed.len() - 1));
            }
        }
    }
    (embed, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_chunks_are_embedded_once_and_known_ones_not_at_all() {
        let keys = vec![
            Some("a".to_string()),
            Some("b".to_string()),
            Some("a".to_string()),
            None,
            Some("c".to_string()),
        ];
        let known = HashMap::from([("c".to_string(), vec![1.0])]);
        let (embed, source) = plan(&keys, &known);
        assert_eq!(embed, vec![0, 1, 3]);
        assert_eq!(source, vec![Some(0), Some(1), Some(0), Some(2), None]);
    }

    #[test]
    fn the_cache_keeps_the_most_recent_and_stays_bounded() {
        let cache = VectorCache::new(2);
        cache.put("m", "a", &[1.0]);
        cache.put("m", "b", &[2.0]);
        cache.put("m", "c", &[3.0]);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("m", "a"), None);
        assert_eq!(cache.get("m", "c"), Some(vec![3.0]));
        // Another model's vector of the same text is another identity.
        assert_eq!(cache.get("other", "c"), None);
        assert!(VectorCache::new(0).is_empty());
    }
}
