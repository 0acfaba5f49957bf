//! Group commit for upserts: while one upsert into a collection is in
//! flight, the next ones wait and then go together, as one request.
//!
//! The daemon writes each document on its own, often ten chunks at a time,
//! and several documents are written at once (eight in flight per job,
//! several jobs per process). Chroma takes in about twice as many records a
//! second in batches of 100 as in batches of 10 (`bench/chroma_ingest.py`,
//! `bench/results/memory.md`), and its time per request, not the records'
//! count, is what paces a first sync of many small documents.
//!
//! No timer holds a write back: a write into an idle collection goes at
//! once, and only writes that arrive while one is in flight are combined.
//! The waiting write at the head of the queue *leads* the next request: it
//! sends its own part and those queued behind it, up to the batch size, and
//! answers each. No task is spawned; a leader that is dropped mid-request
//! (its job cancelled) hands the lead on ([`Lead`]'s `Drop`; a waiting write
//! given the lead as it is dropped does too, [`Waiter`]'s), and the
//! writes it carried are answered with a transient error, to be retried.
//!
//! What a document relies on is unchanged: its own batches still go one
//! after another, each answered before the next is sent, so its first
//! chunk is still written after the rest (`pipeline::DocumentContext::store`).
//! Parts from different collections — other databases, other teams — are
//! never combined: the queue is per collection path.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::oneshot;

/// What group commit needs of a write's error.
pub trait WriteError: Clone {
    /// Whether the same request may succeed later: a refusal that is not
    /// transient may be one part's doing.
    fn is_transient(&self) -> bool;
    /// The answer to a write whose request was abandoned mid-flight: written
    /// or not, it may be sent again.
    fn abandoned(collection: &str) -> Self;
}

/// One caller's records for one upsert.
#[derive(Debug, Default)]
pub struct Part {
    pub ids: Vec<String>,
    pub documents: Vec<String>,
    pub metadatas: Vec<Map<String, Value>>,
    pub embeddings: Vec<Vec<f32>>,
}

impl Part {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What a waiting write is told: its result, or that it leads next.
enum Turn<E> {
    Done(Result<(), E>),
    Lead(Part),
}

struct Waiting<E> {
    part: Part,
    reply: oneshot::Sender<Turn<E>>,
}

struct Queue<E> {
    /// A request into this collection is in flight (its leader will hand
    /// on the lead or clear this).
    busy: bool,
    waiting: VecDeque<Waiting<E>>,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            busy: false,
            waiting: VecDeque::new(),
        }
    }
}

/// The per-collection queues of one Chroma client; `E` is its error.
pub struct GroupCommit<E> {
    queues: Arc<Mutex<HashMap<String, Queue<E>>>>,
}

impl<E> Clone for GroupCommit<E> {
    fn clone(&self) -> Self {
        GroupCommit {
            queues: self.queues.clone(),
        }
    }
}

impl<E> Default for GroupCommit<E> {
    fn default() -> Self {
        GroupCommit {
            queues: Arc::default(),
        }
    }
}

impl<E: WriteError> GroupCommit<E> {
    /// Writes `part` into the collection at `key`, with whatever writes
    /// queue behind it up to `max_records` per request; `send` makes one
    /// request of the parts it is given, in order. Returns this part's
    /// result.
    pub async fn write<F, Fut>(
        &self,
        key: &str,
        part: Part,
        max_records: usize,
        send: F,
    ) -> Result<(), E>
    where
        F: Fn(&[&Part]) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let (reply, answer) = oneshot::channel();
        let own = {
            let mut queues = self.queues.lock().expect("group-commit queues");
            let queue = queues.entry(key.to_string()).or_default();
            if queue.busy {
                queue.waiting.push_back(Waiting { part, reply });
                None
            } else {
                queue.busy = true;
                Some(part)
            }
        };
        let own = match own {
            Some(part) => part,
            None => {
                let mut waiter = Waiter {
                    commit: self,
                    key,
                    answer: Some(answer),
                };
                match waiter.turn().await {
                    Ok(Turn::Done(result)) => return result,
                    Ok(Turn::Lead(part)) => part,
                    // The leader carrying this part was dropped mid-request:
                    // written or not, an upsert may be sent again.
                    Err(_) => return Err(E::abandoned(key)),
                }
            }
        };
        let mut lead = Lead {
            commit: self,
            key,
            riders: Vec::new(),
        };
        lead.gather(&own, max_records);
        lead.send(&own, &send).await
    }
}

/// The write that leads a request. Dropping it — after the request, or
/// when its caller gives up mid-request — answers the riders it still
/// holds and hands the lead to the next waiting write.
struct Lead<'a, E: WriteError> {
    commit: &'a GroupCommit<E>,
    key: &'a str,
    /// The queued writes this request carries after the leader's own.
    riders: Vec<(oneshot::Sender<Turn<E>>, Part)>,
}

impl<E: WriteError> Lead<'_, E> {
    /// Takes queued parts, in order, while the total with `own` stays
    /// within `max_records` and no ID repeats (Chroma refuses duplicate IDs
    /// in one request; two writes of one record stay apart, in order).
    fn gather(&mut self, own: &Part, max_records: usize) {
        let mut queues = self.commit.queues.lock().expect("group-commit queues");
        let queue = queues.get_mut(self.key).expect("a busy queue");
        let mut ids: HashSet<String> = own.ids.iter().cloned().collect();
        let mut total = own.len();
        while let Some(next) = queue.waiting.front() {
            if total + next.part.len() > max_records
                || next.part.ids.iter().any(|id| ids.contains(id))
            {
                break;
            }
            let Waiting { part, reply } = queue.waiting.pop_front().expect("front");
            total += part.len();
            ids.extend(part.ids.iter().cloned());
            self.riders.push((reply, part));
        }
    }

    /// Sends `own` and the riders' parts as one request and answers each
    /// rider. A refusal that is not transient may be one rider's doing (a
    /// metadata value Chroma rejects), so the parts are then sent one by
    /// one and each gets its own answer.
    async fn send<F, Fut>(mut self, own: &Part, send: &F) -> Result<(), E>
    where
        F: Fn(&[&Part]) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        if self.riders.is_empty() {
            return send(&[own]).await;
        }
        let mut parts = vec![own];
        parts.extend(self.riders.iter().map(|(_, part)| part));
        let result = send(&parts).await;
        drop(parts);
        match result {
            Err(error) if !error.is_transient() => {
                let own = send(&[own]).await;
                for (reply, part) in std::mem::take(&mut self.riders) {
                    let result = send(&[&part]).await;
                    let _ = reply.send(Turn::Done(result));
                }
                own
            }
            result => {
                for (reply, _) in self.riders.drain(..) {
                    let _ = reply.send(Turn::Done(result.clone()));
                }
                result
            }
        }
    }
}

impl<E: WriteError> Drop for Lead<'_, E> {
    fn drop(&mut self) {
        for (reply, _) in self.riders.drain(..) {
            let _ = reply.send(Turn::Done(Err(E::abandoned(self.key))));
        }
        self.commit.hand_on(self.key);
    }
}

impl<E> GroupCommit<E> {
    /// The lead passes to the next waiting write, or the queue goes idle.
    /// A write whose caller has gone is skipped (its part goes with it:
    /// nobody waits for its answer).
    fn hand_on(&self, key: &str) {
        let mut queues = self.queues.lock().expect("group-commit queues");
        let Some(queue) = queues.get_mut(key) else {
            return;
        };
        while let Some(Waiting { part, reply }) = queue.waiting.pop_front() {
            if reply.send(Turn::Lead(part)).is_ok() {
                return;
            }
        }
        queues.remove(key);
    }
}

/// A queued write waiting for its turn. The lead can be handed to it just
/// as its caller gives up (the message sent, never read): dropping it then
/// hands the lead on, so the queue never waits for a leader that is gone.
struct Waiter<'a, E> {
    commit: &'a GroupCommit<E>,
    key: &'a str,
    /// `None` once the turn has been read.
    answer: Option<oneshot::Receiver<Turn<E>>>,
}

impl<E> Waiter<'_, E> {
    async fn turn(&mut self) -> Result<Turn<E>, oneshot::error::RecvError> {
        let turn = self.answer.as_mut().expect("not read yet").await;
        self.answer = None;
        turn
    }
}

impl<E> Drop for Waiter<'_, E> {
    fn drop(&mut self) {
        let Some(mut answer) = self.answer.take() else {
            return;
        };
        answer.close();
        if let Ok(Turn::Lead(_)) = answer.try_recv() {
            self.commit.hand_on(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A request's error as the tests' sender gives it.
    #[derive(Debug, Clone, PartialEq)]
    enum Refused {
        /// Refused for what a part holds (Chroma's 4xx).
        Bad,
        Abandoned,
    }

    impl WriteError for Refused {
        fn is_transient(&self) -> bool {
            matches!(self, Refused::Abandoned)
        }
        fn abandoned(_: &str) -> Self {
            Refused::Abandoned
        }
    }

    fn part(ids: &[&str]) -> Part {
        Part {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            documents: ids.iter().map(|s| format!("text {s}")).collect(),
            metadatas: ids.iter().map(|_| Map::new()).collect(),
            embeddings: ids.iter().map(|_| vec![0.0]).collect(),
        }
    }

    /// A sender that records each request's IDs, takes a moment (so
    /// writes queue behind it), and refuses any request holding `bad`.
    fn recorder(
        sent: Arc<Mutex<Vec<Vec<String>>>>,
        bad: &'static str,
    ) -> impl Fn(&[&Part]) -> futures::future::BoxFuture<'static, Result<(), Refused>> + Clone {
        move |parts: &[&Part]| {
            let sent = sent.clone();
            let ids: Vec<String> = parts.iter().flat_map(|p| p.ids.clone()).collect();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                sent.lock().unwrap().push(ids.clone());
                if ids.iter().any(|id| id == bad) {
                    return Err(Refused::Bad);
                }
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn writes_arriving_during_a_request_go_together_and_each_gets_its_answer() {
        let commit = GroupCommit::<Refused>::default();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let send = recorder(sent.clone(), "bad");
        let writes = (0..5).map(|i| {
            let commit = commit.clone();
            let send = send.clone();
            async move {
                let ids = [format!("d{i}-1"), format!("d{i}-0")];
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                commit.write("c", part(&ids), 100, send).await
            }
        });
        let results = futures::future::join_all(writes).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let sent = sent.lock().unwrap().clone();
        // The first goes alone; the four that queued behind it, together.
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0], vec!["d0-1", "d0-0"]);
        assert_eq!(sent[1].len(), 8);
        // Each write's records stay together and in order.
        for i in 1..5 {
            let at = sent[1]
                .iter()
                .position(|id| *id == format!("d{i}-1"))
                .unwrap();
            assert_eq!(sent[1][at + 1], format!("d{i}-0"));
        }
        assert!(commit.queues.lock().unwrap().is_empty(), "nothing left");
    }

    #[tokio::test]
    async fn a_refused_combination_is_retried_part_by_part() {
        let commit = GroupCommit::<Refused>::default();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let send = recorder(sent.clone(), "bad");
        let first = commit.write("c", part(&["a"]), 100, send.clone());
        let later = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let good = commit.write("c", part(&["b"]), 100, send.clone());
            let bad = commit.write("c", part(&["bad"]), 100, send.clone());
            let good2 = commit.write("c", part(&["e"]), 100, send.clone());
            futures::future::join3(good, bad, good2).await
        };
        let (first, (good, bad, good2)) = tokio::join!(first, later);
        assert!(first.is_ok() && good.is_ok() && good2.is_ok());
        assert_eq!(bad, Err(Refused::Bad));
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent[1], vec!["b", "bad", "e"], "combined first: {sent:?}");
        assert_eq!(&sent[2..], &[vec!["b"], vec!["bad"], vec!["e"]]);
    }

    #[tokio::test]
    async fn batches_stay_within_the_limit_and_never_repeat_an_id() {
        let commit = GroupCommit::<Refused>::default();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let send = recorder(sent.clone(), "-");
        let first = commit.write("c", part(&["a"]), 3, send.clone());
        let later = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            futures::future::join_all([
                commit.write("c", part(&["b", "c"]), 3, send.clone()),
                commit.write("c", part(&["b"]), 3, send.clone()),
                commit.write("c", part(&["d", "e"]), 3, send.clone()),
            ])
            .await
        };
        let (first, later) = tokio::join!(first, later);
        assert!(first.is_ok() && later.iter().all(Result::is_ok));
        let sent = sent.lock().unwrap().clone();
        assert!(sent.iter().all(|ids| ids.len() <= 3), "{sent:?}");
        for ids in &sent {
            let unique: HashSet<_> = ids.iter().collect();
            assert_eq!(unique.len(), ids.len(), "{sent:?}");
        }
        assert_eq!(sent.iter().map(Vec::len).sum::<usize>(), 6);
    }

    #[tokio::test]
    async fn a_leader_dropped_mid_request_hands_on_the_lead() {
        let commit = GroupCommit::<Refused>::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let slow = {
            let calls = calls.clone();
            move |_: &[&Part]| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(())
                }
            }
        };
        let mut leader = Box::pin(commit.write("c", part(&["a"]), 100, slow.clone()));
        let mut follower = Box::pin(commit.write("c", part(&["b"]), 100, slow.clone()));
        assert!(
            futures::poll!(&mut leader).is_pending(),
            "its request is out"
        );
        assert!(
            futures::poll!(&mut follower).is_pending(),
            "queued behind it"
        );
        // The leader's job is cancelled while its request is out.
        drop(leader);
        let next = tokio::time::timeout(Duration::from_secs(5), follower).await;
        assert!(matches!(next, Ok(Ok(()))), "the follower leads: {next:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(commit.queues.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_write_given_the_lead_as_it_is_dropped_hands_it_on() {
        let commit = GroupCommit::<Refused>::default();
        let slow = |_: &[&Part]| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        };
        let mut leader = Box::pin(commit.write("c", part(&["a"]), 100, slow));
        let mut first = Box::pin(commit.write("c", part(&["b"]), 100, slow));
        let mut second = Box::pin(commit.write("c", part(&["c"]), 100, slow));
        assert!(futures::poll!(&mut leader).is_pending());
        assert!(futures::poll!(&mut first).is_pending());
        assert!(futures::poll!(&mut second).is_pending());
        // The leader finishes and hands the lead to `first`, whose caller
        // gives up before reading it.
        assert!(leader.await.is_ok());
        drop(first);
        let next = tokio::time::timeout(Duration::from_secs(5), second).await;
        assert!(
            matches!(next, Ok(Ok(()))),
            "the lead reached `second`: {next:?}"
        );
        assert!(commit.queues.lock().unwrap().is_empty());
    }
}
