//! The audit log written by a thread of its own, so that the daemon's event loop never waits
//! on its `write(2)`s, the fsync of every checkpoint and rotation, or a slow or full disk.
//!
//! The loop copies each verdict's canonical body into the burst's buffer and hands the buffer
//! over at the end of the burst. The queue is bounded by bytes ([`QUEUE_BYTES`]): a burst that
//! would overflow it is dropped, and the writer is told how many verdicts it lost (and their
//! `metadata.sequence` range), which it states in a gap record (reason `queue full`) under its
//! signature, like verdicts whose write failed. Nothing is lost silently and enforcement never
//! waits. The thread also runs the log's timer (gap retries, interval checkpoints); the loop
//! takes the checkpoints it wrote (for the network sinks, as an outside witness) and a copy of
//! its counters at every burst.
use std::{
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::writer::{Log, Stats};

/// At most this many bytes of verdicts wait for the writer; beyond, bursts are dropped and
/// stated in a gap record.
pub const QUEUE_BYTES: usize = 32 << 20;

/// A burst is handed over at this size even before the loop's next flush.
const BATCH_BYTES: usize = 256 << 10;

/// How often the thread runs the log's timer.
const TICK: Duration = Duration::from_millis(200);

/// At most this many checkpoints wait for `take_checkpoints` (older ones stay in the log).
const MAX_PENDING: usize = 1024;

enum Msg {
    Records(Batch),
    /// Verdicts dropped before the writer saw them.
    Lost { lost: u64, sequences: Option<(u64, u64)>, first_ms: u64, last_ms: u64 },
}

#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    /// Where each body ends, and its `metadata.sequence`.
    records: Vec<(usize, Option<u64>)>,
}

#[derive(Default)]
struct Shared {
    queued: AtomicUsize,
    state: Mutex<Published>,
}

/// What the writer last said about itself.
#[derive(Default)]
struct Published {
    stats: Stats,
    next_seq: u64,
    checkpoints: Vec<Value>,
}

/// The loop's end of the audit log.
pub struct Queued {
    batch: Batch,
    tx: Option<mpsc::Sender<Msg>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<io::Result<()>>>,
    limit: usize,
    /// Verdicts dropped because the writer was too far behind (stated in its gap records).
    pub queue_dropped: u64,
    /// Dropped since the writer last took a burst (for the log's "caught up").
    dropping: u64,
    /// The writer's counters as of the last burst.
    stats: Stats,
    next_seq: u64,
}

impl Queued {
    pub fn start(log: Log) -> io::Result<Self> {
        Self::with_limit(log, QUEUE_BYTES)
    }

    fn with_limit(log: Log, limit: usize) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let (stats, next_seq) = (log.stats().clone(), log.next_seq());
        let (tx, rx) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("audit-log".into()).spawn(move || run(log, &rx, &thread_shared))?;
        Ok(Self { batch: Batch::default(), tx: Some(tx), shared, thread: Some(thread), limit, queue_dropped: 0, dropping: 0, stats, next_seq })
    }

    /// Queues one verdict in canonical form (`body`), numbered `sequence`.
    pub fn append(&mut self, body: &[u8], sequence: Option<u64>) {
        self.batch.bytes.extend_from_slice(body);
        self.batch.records.push((self.batch.bytes.len(), sequence));
        if self.batch.bytes.len() >= BATCH_BYTES {
            self.hand_over();
        }
    }

    /// Hands the burst to the writer, or drops it and tells the writer what it lost.
    pub fn hand_over(&mut self) {
        self.refresh();
        if self.batch.records.is_empty() {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let size = self.batch.bytes.len();
        let queued = self.shared.queued.load(Ordering::Acquire);
        if queued + size > self.limit {
            let lost = self.batch.records.len() as u64;
            let sequences = self.batch.records.iter().filter_map(|r| r.1).fold(None, |acc: Option<(u64, u64)>, s| Some(acc.map_or((s, s), |(a, b)| (a.min(s), b.max(s)))));
            let now = super::writer::now_ms();
            if self.dropping == 0 {
                tracing::error!(queued_bytes = queued, "audit log: the writer is behind (a slow disk?): verdicts are dropped, counted, and stated in a gap record");
            }
            self.dropping += lost;
            self.queue_dropped += lost;
            self.batch.bytes.clear();
            self.batch.records.clear();
            let _ = tx.send(Msg::Lost { lost, sequences, first_ms: now, last_ms: now });
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.shared.queued.fetch_add(size, Ordering::AcqRel);
        if tx.send(Msg::Records(batch)).is_err() {
            // The writer is gone (it panicked): what it did not take is lost.
            self.shared.queued.fetch_sub(size, Ordering::AcqRel);
            return;
        }
        if self.dropping > 0 {
            tracing::warn!(dropped = self.dropping, "audit log: the writer caught up; the verdicts dropped meanwhile are stated in its gap record");
            self.dropping = 0;
        }
    }

    /// Copies the writer's counters (for `status` and `/metrics`; every burst does too).
    pub fn refresh(&mut self) {
        if let Ok(p) = self.shared.state.lock() {
            self.stats.clone_from(&p.stats);
            self.next_seq = p.next_seq;
        }
    }

    /// The writer's counters as of the last burst.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The seq the writer's next record gets (as of the last burst).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Checkpoints written since the last call, oldest first.
    pub fn take_checkpoints(&mut self) -> Vec<Value> {
        self.shared.state.lock().map(|mut p| std::mem::take(&mut p.checkpoints)).unwrap_or_default()
    }

    /// Hands over the last burst, lets the writer write what is queued and seal the log (until
    /// `deadline`), and returns the checkpoints not yet taken, the final one included.
    pub fn close(mut self, deadline: Instant) -> io::Result<Vec<Value>> {
        self.hand_over();
        self.tx = None;
        let Some(thread) = self.thread.take() else { return Ok(Vec::new()) };
        let Ok(joined) = crate::threads::join_by(thread, deadline) else {
            let queued = self.shared.queued.load(Ordering::Acquire);
            return Err(io::Error::other(format!("the audit log's writer did not finish in time ({queued} bytes of verdicts still queued): the log is not sealed")));
        };
        let sealed = joined.unwrap_or_else(|_| Err(io::Error::other("the audit log's writer panicked")));
        self.refresh();
        let checkpoints = self.take_checkpoints();
        sealed.map(|()| checkpoints)
    }
}

fn run(mut log: Log, rx: &mpsc::Receiver<Msg>, shared: &Shared) -> io::Result<()> {
    let mut ticked = Instant::now();
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Msg::Records(batch)) => {
                let mut start = 0;
                for &(end, sequence) in &batch.records {
                    // A verdict the log cannot take is counted by it and stated in a gap
                    // record once it can write again.
                    let _ = log.append_canonical(&batch.bytes[start..end], sequence);
                    start = end;
                }
                shared.queued.fetch_sub(batch.bytes.len(), Ordering::AcqRel);
                publish(&mut log, shared, Vec::new());
            }
            Ok(Msg::Lost { lost, sequences, first_ms, last_ms }) => {
                log.lose_queued(lost, sequences, first_ms, last_ms);
                publish(&mut log, shared, Vec::new());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if ticked.elapsed() >= TICK {
            ticked = Instant::now();
            // A failure is counted and logged by the log itself (once per run of failures).
            let _ = log.tick(ticked);
            publish(&mut log, shared, Vec::new());
        }
    }
    let (checkpoints, sealed) = match log.close_in_place() {
        Ok(c) => (c, Ok(())),
        Err(e) => (Vec::new(), Err(e)),
    };
    publish(&mut log, shared, checkpoints);
    sealed
}

/// Shares the writer's counters and its checkpoints (`checkpoints`, those closing returned,
/// then any not yet taken) with the loop.
fn publish(log: &mut Log, shared: &Shared, mut checkpoints: Vec<Value>) {
    checkpoints.extend(log.take_checkpoints());
    let Ok(mut p) = shared.state.lock() else { return };
    p.checkpoints.extend(checkpoints);
    let excess = p.checkpoints.len().saturating_sub(MAX_PENDING);
    p.checkpoints.drain(..excess);
    p.stats.clone_from(log.stats());
    p.next_seq = log.next_seq();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{LogOptions, VerifyOptions, log_files, verify};

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("guard-auditq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn body(i: u64) -> Vec<u8> {
        format!("{{\"metadata\":{{\"sequence\":{i}}},\"pad\":\"{}\"}}", "z".repeat(100)).into_bytes()
    }

    #[test]
    fn queued_verdicts_are_all_written_in_order_and_sealed_at_close() {
        let dir = temp("order");
        let log = Log::open(&dir, None, LogOptions::default()).unwrap();
        let mut q = Queued::start(log).unwrap();
        for i in 1..=4321 {
            q.append(&body(i), Some(i));
            if i % 500 == 0 {
                q.hand_over();
            }
        }
        let checkpoints = q.close(Instant::now() + Duration::from_secs(20)).unwrap();
        assert_eq!(checkpoints.last().map(|c| c["checkpoint"]["reason"].clone()), Some(Value::from("shutdown")), "{checkpoints:?}");
        let files = log_files(&dir).unwrap();
        let report = verify(&files, &VerifyOptions::default()).unwrap();
        assert!(report.problem.is_none(), "{report:?}");
        let text: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
        let seqs: Vec<u64> = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter_map(|r| r["verdict"]["metadata"]["sequence"].as_u64()).collect();
        assert_eq!(seqs, (1..=4321).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_queue_drops_bursts_and_the_log_states_them_in_a_gap_record() {
        let dir = temp("full");
        let log = Log::open(&dir, None, LogOptions::default()).unwrap();
        // A queue smaller than one burst: that burst is always dropped.
        let mut q = Queued::with_limit(log, 1024).unwrap();
        for i in 1..=20 {
            q.append(&body(i), Some(i));
        }
        q.hand_over();
        assert_eq!(q.queue_dropped, 20);
        q.append(&body(21), Some(21));
        q.hand_over();
        q.close(Instant::now() + Duration::from_secs(20)).unwrap();
        let files = log_files(&dir).unwrap();
        let report = verify(&files, &VerifyOptions::default()).unwrap();
        assert!(report.problem.is_none(), "{report:?}");
        assert_eq!(report.lost, 20, "{report:?}");
        let text: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
        assert_eq!(text.lines().filter(|l| l.contains("\"verdict\":")).count(), 1);
        let gap: Value = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|r| r["note"]["event"] == "gap").expect("a gap record");
        assert_eq!(gap["note"]["reason"], "queue full");
        assert_eq!((gap["note"]["lost"].as_u64(), gap["note"]["first_sequence"].as_u64(), gap["note"]["last_sequence"].as_u64()), (Some(20), Some(1), Some(20)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
