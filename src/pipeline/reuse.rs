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
//! What is still missing is claimed ([`VectorCache::claim`]): an identity
//! another batch is embedding right now is waited for rather than embedded
//! again (if that batch fails, the waiter embeds it). Only what is left is
//! embedded. The result is the same, byte for byte, as
//! embedding again: the vector reused is the one the same model made from
//! the same input (f32 values round-trip exactly through Chroma's JSON).
//! `[embedding] reuse_vectors = false` turns it off.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// (dense model, `content_sha256`).
type Key = (String, String);

/// A vector being computed by another batch, received when it is done
/// (`None` in the channel until then; closed if that batch failed).
pub type Pending = watch::Receiver<Option<Arc<[f32]>>>;

/// Recent vectors by embedding identity; at most `capacity`, oldest out
/// first. Memory: `capacity` × dimension × 4 bytes (4,096 × 384 floats:
/// 6 MiB). Also the identities being embedded right now, so that two jobs
/// embedding the same text at the same moment (two copies of a file, side
/// by side) compute it once.
#[derive(Debug)]
pub struct VectorCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    vectors: HashMap<Key, Arc<[f32]>>,
    order: VecDeque<Key>,
    /// Identities a batch has claimed and is embedding.
    pending: HashMap<Key, Pending>,
}

/// Who embeds an identity no one has.
pub enum Claim {
    /// Nobody: it was embedded since this batch last looked.
    Known(Vec<f32>),
    /// This batch: embed it and [`Ticket::fulfil`] the ticket.
    Mine(Ticket),
    /// Another batch is embedding it: wait for its vector.
    Theirs(Pending),
}

/// The duty to embed one identity. Dropped unfulfilled (the batch failed),
/// it releases the claim and its waiters embed the text themselves.
pub struct Ticket {
    cache: Arc<VectorCache>,
    key: Key,
    sender: watch::Sender<Option<Arc<[f32]>>>,
}

impl Ticket {
    /// Hands the vector to the waiters and the cache.
    pub fn fulfil(self, vector: &[f32]) {
        let vector: Arc<[f32]> = Arc::from(vector);
        self.cache.insert(self.key.clone(), Arc::clone(&vector));
        let _ = self.sender.send(Some(vector));
        // `Drop` releases the claim.
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut entries = self.cache.lock();
        entries.pending.remove(&self.key);
    }
}

impl VectorCache {
    pub fn new(capacity: usize) -> Self {
        VectorCache {
            capacity,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, model: &str, content_sha256: &str) -> Option<Vec<f32>> {
        self.lock()
            .vectors
            .get(&(model.to_string(), content_sha256.to_string()))
            .map(|v| v.to_vec())
    }

    pub fn put(&self, model: &str, content_sha256: &str, vector: &[f32]) {
        self.insert(
            (model.to_string(), content_sha256.to_string()),
            Arc::from(vector),
        );
    }

    fn insert(&self, key: Key, vector: Arc<[f32]>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
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
        entries.vectors.insert(key, vector);
    }

    /// Claims an identity to embed, or the vector another batch is
    /// embedding for it (or has just embedded: the check and the claim are
    /// one step, so no batch embeds what another finished meanwhile).
    pub fn claim(self: &Arc<Self>, model: &str, content_sha256: &str) -> Claim {
        let key = (model.to_string(), content_sha256.to_string());
        let mut entries = self.lock();
        if let Some(vector) = entries.vectors.get(&key) {
            return Claim::Known(vector.to_vec());
        }
        if let Some(pending) = entries.pending.get(&key) {
            return Claim::Theirs(pending.clone());
        }
        let (sender, receiver) = watch::channel(None);
        entries.pending.insert(key.clone(), receiver);
        Claim::Mine(Ticket {
            cache: Arc::clone(self),
            key,
            sender,
        })
    }

    pub fn len(&self) -> usize {
        self.lock().vectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Waits for another batch's vector; `None` if that batch failed.
pub async fn wait(mut pending: Pending) -> Option<Vec<f32>> {
    let vector = pending.wait_for(Option::is_some).await.ok()?;
    vector.as_ref().map(|v| v.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn an_identity_being_embedded_is_waited_for_not_embedded_again() {
        let cache = Arc::new(VectorCache::new(8));
        let Claim::Mine(ticket) = cache.claim("m", "a") else {
            panic!("the first claim is ours");
        };
        let Claim::Theirs(pending) = cache.claim("m", "a") else {
            panic!("the second waits");
        };
        let waiter = tokio::spawn(wait(pending));
        ticket.fulfil(&[4.0, 2.0]);
        assert_eq!(waiter.await.unwrap(), Some(vec![4.0, 2.0]));
        assert_eq!(cache.get("m", "a"), Some(vec![4.0, 2.0]));
        // A claim given up (its batch failed) frees its waiters to embed.
        let Claim::Mine(ticket) = cache.claim("m", "b") else {
            panic!("ours");
        };
        let Claim::Theirs(pending) = cache.claim("m", "b") else {
            panic!("theirs");
        };
        drop(ticket);
        assert_eq!(wait(pending).await, None);
        assert!(matches!(cache.claim("m", "b"), Claim::Mine(_)));
    }
}
