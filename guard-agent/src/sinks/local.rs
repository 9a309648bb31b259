//! Standard output and verdict files, written by a thread each so that the event loop never
//! waits on a pipe nobody reads or a slow or full disk (a hold to decide, a kill to carry out
//! and the ring buffer's backlog must not queue behind a `write(2)`).
//!
//! The loop copies each verdict line into the burst's buffer and, at the end of the burst (or
//! every [`BATCH_BYTES`]), hands the buffer to the thread. The queue between them is bounded
//! by bytes ([`QUEUE_BYTES`]): a burst that would overflow it is dropped whole and its
//! verdicts counted (`queue_dropped`, and in `failed`, the sink's lost verdicts), logged once
//! when dropping begins and once when the thread catches up; enforcement never waits. Reopen
//! (SIGHUP) goes through the same queue, after the lines handed over before it, and is never
//! dropped. At shutdown the thread gets until the deadline to write what is queued.
use std::{
    io::{self, Write as _},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Instant,
};

use super::file::{Counts, FileSink};

/// A burst's buffer is handed over at this size even before the burst ends.
const BATCH_BYTES: usize = 256 << 10;

/// At most this many bytes of verdict lines wait for a sink's thread; beyond, bursts are
/// dropped and counted.
pub const QUEUE_BYTES: usize = 32 << 20;

/// Where a local sink's thread writes.
pub enum Target {
    Stdout,
    File(FileSink),
}

enum Msg {
    /// Lines, each with its newline; `ends[i]` is where line `i`'s newline is.
    Lines(Batch),
    /// Start a new file (after logrotate moved it away).
    Reopen,
    /// Answers once everything sent before it is written (`Local::sync`).
    #[cfg(test)]
    Sync(mpsc::SyncSender<()>),
}

#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

/// What the thread shares with the loop.
#[derive(Default)]
struct Shared {
    counts: Mutex<Counts>,
    queued: AtomicUsize,
}

/// The loop's end of a local sink.
pub struct Local {
    batch: Batch,
    tx: Option<mpsc::Sender<Msg>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    limit: usize,
    /// Verdicts dropped because the thread was too far behind.
    pub queue_dropped: u64,
    /// Dropped since the last burst the thread took (for the log's "caught up").
    dropping: u64,
}

impl Local {
    pub fn start(name: &str, target: Target) -> io::Result<Self> {
        Self::with_limit(name, target, QUEUE_BYTES)
    }

    fn with_limit(name: &str, target: Target, limit: usize) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name(format!("sink-{}", thread_name(name))).spawn(move || run(target, &rx, &thread_shared))?;
        Ok(Self { batch: Batch::default(), tx: Some(tx), shared, thread: Some(thread), limit, queue_dropped: 0, dropping: 0 })
    }

    /// Adds one line to the burst.
    pub fn write(&mut self, line: &str, sink: &str) {
        self.batch.bytes.extend_from_slice(line.as_bytes());
        self.batch.ends.push(self.batch.bytes.len());
        self.batch.bytes.push(b'\n');
        if self.batch.bytes.len() >= BATCH_BYTES {
            self.hand_over(sink);
        }
    }

    /// Hands the burst to the thread, or drops and counts it when the queue is full.
    pub fn hand_over(&mut self, sink: &str) {
        if self.batch.ends.is_empty() {
            return;
        }
        let size = self.batch.bytes.len();
        let lines = self.batch.ends.len() as u64;
        let queued = self.shared.queued.load(Ordering::Acquire);
        let Some(tx) = &self.tx else { return };
        if queued + size > self.limit {
            if self.dropping == 0 {
                tracing::error!(sink, queued_bytes = queued, "the sink's writer is behind (a slow disk, a pipe nobody reads): verdicts are dropped and counted (`queue_dropped`) until it catches up");
            }
            self.dropping += lines;
            self.queue_dropped += lines;
            self.batch.bytes.clear();
            self.batch.ends.clear();
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.shared.queued.fetch_add(size, Ordering::AcqRel);
        if tx.send(Msg::Lines(batch)).is_err() {
            // The thread is gone (it panicked): nothing more can be written.
            self.shared.queued.fetch_sub(size, Ordering::AcqRel);
            self.queue_dropped += lines;
            return;
        }
        if self.dropping > 0 {
            tracing::warn!(sink, dropped = self.dropping, "the sink's writer caught up; verdicts dropped meanwhile are counted");
            self.dropping = 0;
        }
    }

    /// Starts a new file after the lines handed over so far.
    pub fn reopen(&mut self, sink: &str) {
        self.hand_over(sink);
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Reopen);
        }
    }

    /// What the thread has written and lost so far.
    pub fn counts(&self) -> Counts {
        self.shared.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Waits (at most `within`) until everything handed over is written; whether it was.
    #[cfg(test)]
    pub fn sync(&mut self, within: std::time::Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        tx.send(Msg::Sync(done_tx)).is_ok() && done_rx.recv_timeout(within).is_ok()
    }

    /// Hands over the last burst and gives the thread until `deadline` to write everything
    /// queued; what it has not written by then is lost, and said so.
    pub fn close(&mut self, sink: &str, deadline: Instant) {
        self.hand_over(sink);
        self.tx = None;
        let Some(thread) = self.thread.take() else { return };
        if crate::threads::join_by(thread, deadline).is_err() {
            tracing::error!(sink, queued_bytes = self.shared.queued.load(Ordering::Acquire), "the sink's writer did not finish in time: the verdicts still queued are lost");
        }
    }
}

/// A thread name the kernel keeps whole (15 bytes): `sink-` and the start of the sink's name.
fn thread_name(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.:".contains(*c)).take(10).collect()
}

fn run(mut target: Target, rx: &mpsc::Receiver<Msg>, shared: &Shared) {
    let mut stdout_counts = Counts::default();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Lines(batch) => {
                let counts = match &mut target {
                    Target::Stdout => {
                        write_stdout(&batch, &mut stdout_counts);
                        stdout_counts.clone()
                    }
                    Target::File(f) => {
                        let mut start = 0;
                        for &end in &batch.ends {
                            // The loop put whole `&str` lines in: each is valid UTF-8.
                            if let Ok(line) = std::str::from_utf8(&batch.bytes[start..end]) {
                                let _ = f.write(line);
                            }
                            start = end + 1;
                        }
                        let _ = f.flush();
                        f.counts.clone()
                    }
                };
                shared.queued.fetch_sub(batch.bytes.len(), Ordering::AcqRel);
                if let Ok(mut c) = shared.counts.lock() {
                    *c = counts;
                }
            }
            Msg::Reopen => {
                if let Target::File(f) = &mut target {
                    f.reopen();
                }
            }
            #[cfg(test)]
            Msg::Sync(done) => {
                let _ = done.send(());
            }
        }
    }
    if let Target::File(f) = &mut target {
        let _ = f.flush();
        if let Ok(mut c) = shared.counts.lock() {
            *c = f.counts.clone();
        }
    }
}

/// One burst to standard output, in one write where the pipe takes it.
fn write_stdout(batch: &Batch, counts: &mut Counts) {
    let lines = batch.ends.len() as u64;
    let mut out = io::stdout().lock();
    match out.write_all(&batch.bytes).and_then(|()| out.flush()) {
        Ok(()) => {
            counts.written += lines;
            counts.error = None;
        }
        Err(e) => {
            counts.lost += lines;
            counts.write_errors += 1;
            counts.error = Some(format!("standard output: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Rotation;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("guard-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn lines_reach_the_file_in_order_and_close_writes_the_rest() {
        let dir = temp("order");
        let path = dir.join("v.jsonl");
        let f = FileSink::open(&path, Rotation::default()).unwrap();
        let mut l = Local::start("file", Target::File(f)).unwrap();
        let mut want = String::new();
        for i in 0..20_000 {
            let line = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 300));
            l.write(&line, "file");
            want.push_str(&line);
            want.push('\n');
            if i % 1000 == 999 {
                l.hand_over("file");
            }
        }
        l.close("file", Instant::now() + Duration::from_secs(10));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        let c = l.counts();
        assert_eq!((c.written, c.lost, l.queue_dropped), (20_000, 0, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_queue_drops_whole_bursts_and_counts_every_verdict() {
        let dir = temp("full");
        let path = dir.join("v.jsonl");
        let f = FileSink::open(&path, Rotation::default()).unwrap();
        // A queue of 1 KiB: bursts handed over faster than the thread writes overflow it.
        let mut l = Local::with_limit("file", Target::File(f), 1024).unwrap();
        let line = format!("{{\"pad\":\"{}\"}}", "y".repeat(200));
        // A burst larger than the whole queue is always dropped.
        for _ in 0..8 {
            l.write(&line, "file");
        }
        l.hand_over("file");
        assert_eq!(l.queue_dropped, 8);
        let mut sent = 8u64;
        for _ in 0..2000 {
            for _ in 0..4 {
                l.write(&line, "file");
                sent += 1;
            }
            l.hand_over("file");
        }
        l.close("file", Instant::now() + Duration::from_secs(10));
        let c = l.counts();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        assert_eq!(lines, c.written);
        assert_eq!(c.written + l.queue_dropped, sent, "every verdict is written or counted as dropped");
        assert_eq!(l.queue_dropped % 4, 0, "bursts are dropped whole");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
