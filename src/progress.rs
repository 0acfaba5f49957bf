//! Progress of a one-shot `run`: a live bar on a terminal, periodic log
//! lines otherwise (journald, CI logs and `kubectl logs` cannot show a bar,
//! and a bar's carriage returns would fill them with noise).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::model::JobStats;

/// Where a run stands: its jobs, and the work of finished plus running jobs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSnapshot {
    /// Invocations the run enqueued (one per S3 object; one for a repository or site).
    pub jobs_total: usize,
    pub jobs_finished: usize,
    pub jobs_failed: usize,
    /// Summed over the run's jobs, running ones included.
    pub stats: JobStats,
    pub elapsed: Duration,
}

impl RunSnapshot {
    /// Seconds left at the rate so far, once there is a rate to go by.
    pub fn eta(&self) -> Option<Duration> {
        if self.jobs_finished == 0 || self.jobs_total <= 1 {
            return None;
        }
        let per_job = self.elapsed.as_secs_f64() / self.jobs_finished as f64;
        let left = self.jobs_total.saturating_sub(self.jobs_finished) as f64;
        Some(Duration::from_secs_f64(per_job * left))
    }

    /// One line for logs and the final summary.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{}/{} jobs, {} documents, {} chunks upserted, {} unchanged, {}",
            self.jobs_finished,
            self.jobs_total,
            self.stats.documents,
            self.stats.chunks_upserted,
            self.stats.chunks_unchanged,
            HumanBytes(self.stats.bytes),
        );
        if self.jobs_failed > 0 {
            line.push_str(&format!(", {} failed", self.jobs_failed));
        }
        line
    }
}

/// Shows a run's progress as it goes.
pub trait RunObserver: Send {
    fn update(&mut self, snapshot: &RunSnapshot);
    /// The run is over; `snapshot` is final.
    fn finish(&mut self, snapshot: &RunSnapshot);
}

/// The observer that suits stderr: a bar on a terminal, log lines otherwise.
pub fn for_stderr(log_every: Duration) -> Box<dyn RunObserver> {
    if std::io::stderr().is_terminal() {
        Box::new(TerminalBar::new())
    } else {
        Box::new(LogLines::new(log_every))
    }
}

/// An indicatif bar: jobs done of total, documents, chunks, bytes and ETA.
pub struct TerminalBar {
    bar: ProgressBar,
}

impl TerminalBar {
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(200));
        TerminalBar { bar }
    }
}

impl Default for TerminalBar {
    fn default() -> Self {
        Self::new()
    }
}

impl RunObserver for TerminalBar {
    fn update(&mut self, snapshot: &RunSnapshot) {
        if snapshot.jobs_total > 1 && self.bar.length().is_none() {
            self.bar.set_length(snapshot.jobs_total as u64);
            self.bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} objects · {msg} · ETA {eta}",
                )
                .expect("a valid template"),
            );
        } else if snapshot.jobs_total <= 1 && self.bar.length().is_none() {
            self.bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("a valid template"),
            );
        }
        self.bar.set_position(snapshot.jobs_finished as u64);
        let stats = &snapshot.stats;
        let mut message = format!(
            "{} docs, {} chunks, {}",
            stats.documents,
            stats.chunks_upserted,
            HumanBytes(stats.bytes)
        );
        if snapshot.jobs_failed > 0 {
            message.push_str(&format!(", {} failed", snapshot.jobs_failed));
        }
        self.bar.set_message(message);
    }

    fn finish(&mut self, snapshot: &RunSnapshot) {
        self.update(snapshot);
        self.bar.finish_and_clear();
    }
}

/// A `progress` log line every `every` (and at the end), through tracing:
/// JSON off a terminal, like every other log line.
pub struct LogLines {
    every: Duration,
    last: Option<Instant>,
}

impl LogLines {
    pub fn new(every: Duration) -> Self {
        LogLines { every, last: None }
    }

    fn log(snapshot: &RunSnapshot) {
        tracing::info!(
            jobs_finished = snapshot.jobs_finished,
            jobs_total = snapshot.jobs_total,
            jobs_failed = snapshot.jobs_failed,
            documents = snapshot.stats.documents,
            chunks_upserted = snapshot.stats.chunks_upserted,
            chunks_unchanged = snapshot.stats.chunks_unchanged,
            bytes = snapshot.stats.bytes,
            elapsed_seconds = snapshot.elapsed.as_secs(),
            eta_seconds = snapshot.eta().map(|eta| eta.as_secs()),
            "progress: {}",
            snapshot.describe()
        );
    }
}

impl RunObserver for LogLines {
    fn update(&mut self, snapshot: &RunSnapshot) {
        if self.last.is_none_or(|last| last.elapsed() >= self.every) {
            self.last = Some(Instant::now());
            Self::log(snapshot);
        }
    }

    fn finish(&mut self, snapshot: &RunSnapshot) {
        Self::log(snapshot);
    }
}

/// Adds `job`'s counters into `total`.
pub fn add_stats(total: &mut JobStats, job: &JobStats) {
    total.documents += job.documents;
    total.skipped += job.skipped;
    total.chunks_upserted += job.chunks_upserted;
    total.chunks_deleted += job.chunks_deleted;
    total.chunks_unchanged += job.chunks_unchanged;
    total.chunks_restamped += job.chunks_restamped;
    total.chunks_embedding_reused += job.chunks_embedding_reused;
    total.unchanged += job.unchanged;
    total.unchanged_unread += job.unchanged_unread;
    total.bytes += job.bytes;
    total.fetch_ms += job.fetch_ms;
    total.extract_ms += job.extract_ms;
    total.embed_ms += job.embed_ms;
    total.embed_wait_ms += job.embed_wait_ms;
    total.write_ms += job.write_ms;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_follows_the_rate_so_far() {
        let snapshot = RunSnapshot {
            jobs_total: 10,
            jobs_finished: 4,
            elapsed: Duration::from_secs(8),
            ..RunSnapshot::default()
        };
        assert_eq!(snapshot.eta(), Some(Duration::from_secs(12)));
        let nothing_done = RunSnapshot {
            jobs_finished: 0,
            ..snapshot
        };
        assert_eq!(nothing_done.eta(), None);
    }

    #[test]
    fn log_lines_are_spaced_out() {
        let mut lines = LogLines::new(Duration::from_secs(3600));
        assert!(lines.last.is_none());
        lines.update(&RunSnapshot::default());
        let first = lines.last.expect("the first update logs");
        lines.update(&RunSnapshot::default());
        assert_eq!(lines.last, Some(first), "the second waits for the interval");
    }
}
