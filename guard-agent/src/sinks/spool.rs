//! The bounded on-disk spool of one network sink: verdicts wait here until the sink has them.
//!
//! Layout of the spool directory (0700; files 0600):
//! - `<id>.seg`: segments, `<id>` sixteen hex digits, increasing. Each holds verdict lines, one
//!   per record, each ending with `\n` (a verdict line never holds a raw newline). A line the
//!   encoder marked (`verdict::Marks`: where the values the sinks read sit in it) has the marks
//!   after it, behind a `\x1f` (which JSON text never holds raw). Only the newest (the *head*) is
//!   appended to; each daemon start begins a new head. (A daemon older than the marks would
//!   read a marked record as a line that is not JSON: after a downgrade, a backlog written by the
//!   newer daemon fails to the sinks that check their lines.)
//! - `acked`: `<segment id> <byte offset>`: where the oldest record the sink does not have yet
//!   begins. Written (to `acked.tmp`, then renamed) after every delivered batch.
//!
//! The event loop's [`Writer`] only appends to the head (one `write` per burst of verdicts, at
//! [`Writer::commit`]) and wakes the sender thread; it never waits for the network. The sender
//! ([`Reader`]) reads batches from the oldest segment and acknowledges them once delivered,
//! deleting a segment once it has moved past it. When the spool holds more than its bound, the
//! writer deletes the oldest whole segment and counts the records in it the sink never got as
//! `dropped` (and logs it). A restart resumes at `acked`; a torn last line (a crash mid-write)
//! is cut off. Segments are not fsynced (a crashed daemon loses nothing the kernel has; a power
//! loss may lose the last seconds), and neither is `acked` (a power loss may deliver a batch
//! twice).
use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use crate::verdict::Marks;

/// A segment grows to about this size before a new one is started (smaller for small spools,
/// so that dropping the oldest segment drops a small part of it).
const SEGMENT_MAX: u64 = 8 << 20;
const SEGMENT_MIN: u64 = 64 << 10;
/// Buffered records are written out at this size even before the next commit.
const WRITE_BUFFER: usize = 1 << 20;
const ACKED: &str = "acked";
/// Between a record's line and its marks.
const MARKS: u8 = 0x1f;

/// What `status` and the metrics show of a network sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Records the sink accepted.
    pub sent: u64,
    /// Records lost: the sink rejected them for good, or the spool could not be written.
    pub failed: u64,
    /// Records spooled and not yet delivered.
    pub backlog: u64,
    /// Records deleted unsent because the spool was full (this daemon run).
    pub dropped: u64,
    /// Whether the last try to deliver worked.
    pub healthy: bool,
}

struct Seg {
    id: u64,
    bytes: u64,
    records: u64,
}

struct State {
    /// Oldest first; never empty: the last is the head. The sender's position is in the first.
    segs: VecDeque<Seg>,
    total_bytes: u64,
    /// Where, in `segs[0]`, the oldest undelivered record begins, and how many records precede it.
    cursor_offset: u64,
    cursor_records: u64,
    /// Bumped whenever the writer drops the segment the sender is reading.
    epoch: u64,
    snap: Snapshot,
    /// Set at shutdown: the sender may go on delivering until then.
    stop: Option<Instant>,
    sender_done: bool,
}

impl State {
    /// Forgets the oldest segment (never the head) before the sender is done with it: the
    /// sender starts over at the next one. Returns the segment and how many of its records were
    /// never delivered (no longer in the backlog; the caller counts them as dropped or failed).
    fn abandon_oldest(&mut self) -> Option<(Seg, u64)> {
        if self.segs.len() < 2 {
            return None;
        }
        let old = self.segs.pop_front()?;
        let unsent = old.records.saturating_sub(self.cursor_records);
        self.total_bytes = self.total_bytes.saturating_sub(old.bytes);
        self.snap.backlog = self.snap.backlog.saturating_sub(unsent);
        self.cursor_offset = 0;
        self.cursor_records = 0;
        self.epoch += 1;
        Some((old, unsent))
    }
}

struct Shared {
    state: Mutex<State>,
    /// The sender waits here for records (and for the end of a backoff).
    wake: Condvar,
    /// Shutdown waits here for the sender to finish.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking sender thread must not take the event loop down with it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

fn create_segment(dir: &Path, id: u64) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(seg_path(dir, id))
}

/// Opens (creating it if needed) the spool in `dir`, bounded to `max_bytes`.
pub fn open(dir: &Path, max_bytes: u64) -> io::Result<(Writer, Reader)> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let mut ids: Vec<u64> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let hex = name.strip_suffix(".seg").filter(|h| h.len() == 16)?;
            u64::from_str_radix(hex, 16).ok()
        })
        .collect();
    ids.sort_unstable();
    let acked = read_acked(dir);
    let mut segs = VecDeque::new();
    for id in ids {
        let path = seg_path(dir, id);
        if acked.is_some_and(|(seg, _)| id < seg) {
            // Delivered entirely; the daemon stopped before it deleted it.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let bytes = cut_torn_tail(&file)?;
        let records = count_lines(&file, bytes)?;
        segs.push_back(Seg { id, bytes, records });
    }
    let (mut cursor_offset, mut cursor_records) = (0, 0);
    if let (Some((seg, offset)), Some(front)) = (acked, segs.front())
        && seg == front.id
    {
        let file = File::open(seg_path(dir, seg))?;
        if offset <= front.bytes && (offset == 0 || byte_at(&file, offset - 1)? == b'\n') {
            cursor_offset = offset;
            cursor_records = count_lines(&file, offset)?;
        } else {
            tracing::warn!(spool = %dir.display(), seg, offset, "the spool's acked position is not at a record; delivering its segment from the start");
        }
    }
    // Hostile names (a segment `ffffffffffffffff`) must not overflow.
    let head_id = segs.back().map_or(1, |s| s.id.saturating_add(1)).max(acked.map_or(1, |(seg, _)| seg.saturating_add(1)));
    let head = create_segment(dir, head_id)?;
    segs.push_back(Seg { id: head_id, bytes: 0, records: 0 });
    let total_bytes = segs.iter().map(|s| s.bytes).sum();
    let backlog = segs.iter().map(|s| s.records).sum::<u64>() - cursor_records;
    let state = State {
        segs,
        total_bytes,
        cursor_offset,
        cursor_records,
        epoch: 0,
        snap: Snapshot { backlog, healthy: true, ..Snapshot::default() },
        stop: None,
        sender_done: false,
    };
    let shared = Arc::new(Shared { state: Mutex::new(state), wake: Condvar::new(), done: Condvar::new() });
    let segment_max = (max_bytes / 16).clamp(SEGMENT_MIN, SEGMENT_MAX);
    let writer = Writer { shared: Arc::clone(&shared), dir: dir.to_owned(), head, head_id, buf: Vec::new(), buffered: 0, segment_max, max_bytes };
    {
        let mut st = shared.lock();
        writer.bound(&mut st);
    }
    Ok((writer, Reader { shared, dir: dir.to_owned(), file: None, buf: Vec::new(), ack_failing: false }))
}

fn read_acked(dir: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join(ACKED)).ok()?;
    let mut f = text.split_whitespace();
    let parsed = (|| Some((u64::from_str_radix(f.next()?, 16).ok()?, f.next()?.parse().ok()?)))();
    if parsed.is_none() {
        tracing::warn!(spool = %dir.display(), "the spool's acked file is unreadable; delivering every spooled record");
    }
    parsed
}

fn write_acked(dir: &Path, seg: u64, offset: u64) -> io::Result<()> {
    let tmp = dir.join("acked.tmp");
    let mut f = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
    writeln!(f, "{seg:016x} {offset}")?;
    drop(f);
    std::fs::rename(tmp, dir.join(ACKED))
}

fn byte_at(file: &File, at: u64) -> io::Result<u8> {
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at)?;
    Ok(b[0])
}

/// Cuts a last record that has no newline (the daemon died mid-write); returns the length.
fn cut_torn_tail(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep != len {
                file.set_len(keep)?;
            }
            return Ok(keep);
        }
        end = start;
    }
    if len != 0 {
        file.set_len(0)?;
    }
    Ok(0)
}

/// Newlines in the first `upto` bytes.
fn count_lines(file: &File, upto: u64) -> io::Result<u64> {
    let mut r = io::BufReader::with_capacity(256 << 10, file.take(upto));
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0;
    loop {
        let got = r.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        n += buf[..got].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

/// The event loop's end: appends records and makes them visible to the sender.
pub struct Writer {
    shared: Arc<Shared>,
    dir: PathBuf,
    head: File,
    head_id: u64,
    /// Records appended since the last commit, each with its newline.
    buf: Vec<u8>,
    buffered: u64,
    segment_max: u64,
    max_bytes: u64,
}

impl Writer {
    /// Buffers one record (written at the next [`Writer::commit`]).
    pub fn append(&mut self, line: &str) -> io::Result<()> {
        self.append_marked(line, None)
    }

    /// [`Writer::append`], with where the line's marked values sit (kept beside it).
    pub fn append_marked(&mut self, line: &str, marks: Option<&Marks>) -> io::Result<()> {
        // JSON may only hold a raw newline between tokens, where a space means the same (and
        // no raw 0x1f at all: one in a line that is not JSON becomes a space too, so that it
        // cannot pass for the start of marks). Encoded verdicts hold neither: copied whole.
        if memchr::memchr2(b'\n', MARKS, line.as_bytes()).is_none() {
            self.buf.extend_from_slice(line.as_bytes());
        } else {
            self.buf.extend(line.bytes().map(|b| if b == b'\n' || b == MARKS { b' ' } else { b }));
        }
        if let Some(m) = marks {
            self.buf.push(MARKS);
            m.encode(&mut self.buf);
        }
        self.buf.push(b'\n');
        self.buffered += 1;
        if self.buf.len() >= WRITE_BUFFER { self.commit() } else { Ok(()) }
    }

    /// Records appended and not yet committed.
    pub fn buffered(&self) -> u64 {
        self.buffered
    }

    /// Writes what is buffered to the head segment, starts a new segment when it is full,
    /// drops the oldest segments beyond the bound, and wakes the sender.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.buffered);
        if let Err(e) = self.head.write_all(&self.buf) {
            // Nothing half-written may stay: the file is cut back to its last whole record.
            let committed = self.shared.lock().segs.back().map_or(0, |s| s.bytes);
            let _ = self.head.set_len(committed);
            self.buf.clear();
            self.shared.lock().snap.failed += records;
            return Err(e);
        }
        let bytes = self.buf.len() as u64;
        self.buf.clear();
        let mut st = self.shared.lock();
        let head = st.segs.back_mut().expect("a head segment");
        head.bytes += bytes;
        head.records += records;
        let full = head.bytes >= self.segment_max;
        st.total_bytes += bytes;
        st.snap.backlog += records;
        if full {
            drop(st);
            match create_segment(&self.dir, self.head_id.saturating_add(1)) {
                Ok(f) => {
                    self.head = f;
                    self.head_id = self.head_id.saturating_add(1);
                    st = self.shared.lock();
                    st.segs.push_back(Seg { id: self.head_id, bytes: 0, records: 0 });
                }
                Err(e) => {
                    tracing::warn!(spool = %self.dir.display(), error = %e, "cannot start a new spool segment; the current one grows");
                    st = self.shared.lock();
                }
            }
        }
        self.bound(&mut st);
        drop(st);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Deletes the oldest segments while the spool is over its bound (never the head).
    fn bound(&self, st: &mut State) {
        let mut lost = 0;
        while st.total_bytes > self.max_bytes {
            let Some((old, unsent)) = st.abandon_oldest() else { break };
            st.snap.dropped += unsent;
            lost += unsent;
            let _ = std::fs::remove_file(seg_path(&self.dir, old.id));
        }
        if lost > 0 {
            tracing::warn!(spool = %self.dir.display(), lost, dropped_total = st.snap.dropped, max_bytes = self.max_bytes, "the spool is full: the oldest undelivered verdicts were dropped");
        }
    }

    /// What the sink has done so far.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.lock().snap
    }

    /// At shutdown: writes out what is buffered (and syncs it), then lets the sender deliver
    /// until `deadline` and waits for it at most that long. What is left stays spooled.
    pub fn close(&mut self, deadline: Instant) {
        if let Err(e) = self.commit() {
            tracing::error!(spool = %self.dir.display(), error = %e, "cannot write the last verdicts to the spool");
        }
        let _ = self.head.sync_data();
        let mut st = self.shared.lock();
        st.stop = Some(deadline);
        self.shared.wake.notify_all();
        while !st.sender_done {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self.shared.done.wait_timeout(st, deadline - now).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }
}

/// One record read from the spool.
pub struct Record {
    pub line: String,
    /// Where its marked values sit in `line`, if the encoder marked them.
    pub marks: Option<Marks>,
    /// Offset just past its newline, in its segment.
    pub end: u64,
}

/// Records from one segment, oldest first.
pub struct Batch {
    seg: u64,
    start: u64,
    epoch: u64,
    pub records: Vec<Record>,
}

/// The sender's end: reads batches in order and acknowledges them.
pub struct Reader {
    shared: Arc<Shared>,
    dir: PathBuf,
    file: Option<(u64, File)>,
    /// What `read` reads into, kept from batch to batch (only its growth is zeroed).
    buf: Vec<u8>,
    /// The last `acked` write failed (and was logged).
    ack_failing: bool,
}

impl Reader {
    /// Waits for records and returns the next batch: once `max_events` records are there, or
    /// `max_wait` after the first arrived, or at shutdown. `None` when the sender should stop
    /// (shutdown with nothing left, or the shutdown deadline passed).
    pub fn next_batch(&mut self, max_events: usize, max_bytes: usize, max_wait: Duration) -> Option<Batch> {
        loop {
            let (seg, start, limit, epoch) = {
                let mut st = self.shared.lock();
                let mut first_seen: Option<Instant> = None;
                loop {
                    if st.stop.is_some_and(|d| Instant::now() >= d) {
                        return None;
                    }
                    // Past the end of a segment that is no longer the head: on to the next.
                    if st.segs.len() > 1 && st.cursor_offset >= st.segs[0].bytes {
                        let old = st.segs.pop_front().expect("two segments");
                        st.total_bytes -= old.bytes;
                        st.cursor_offset = 0;
                        st.cursor_records = 0;
                        let _ = std::fs::remove_file(seg_path(&self.dir, old.id));
                        continue;
                    }
                    if st.snap.backlog == 0 {
                        if st.stop.is_some() {
                            return None;
                        }
                        first_seen = None;
                        st = self.shared.wake.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
                        continue;
                    }
                    let now = Instant::now();
                    let due = *first_seen.get_or_insert(now) + max_wait;
                    let pending = st.segs[0].bytes - st.cursor_offset;
                    if st.snap.backlog >= max_events as u64 || pending >= max_bytes as u64 || now >= due || st.stop.is_some() {
                        break;
                    }
                    st = self.shared.wake.wait_timeout(st, due - now).unwrap_or_else(std::sync::PoisonError::into_inner).0;
                }
                (st.segs[0].id, st.cursor_offset, st.segs[0].bytes, st.epoch)
            };
            match self.read(seg, start, limit, max_events, max_bytes) {
                Ok(records) if !records.is_empty() => {
                    // The writer may have dropped this segment while it was read.
                    if self.shared.lock().epoch == epoch {
                        return Some(Batch { seg, start, epoch, records });
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if self.shared.lock().epoch == epoch {
                        // Unreadable (not dropped meanwhile): a broken spool. Skip the segment
                        // rather than stall every verdict after it.
                        tracing::error!(spool = %self.dir.display(), seg, error = %e, "cannot read a spool segment; skipping it");
                        let mut st = self.shared.lock();
                        let abandoned = if st.epoch == epoch { st.abandon_oldest() } else { None };
                        if let Some((_, unsent)) = abandoned {
                            st.snap.failed += unsent;
                        } else {
                            drop(st);
                            self.pause(Duration::from_secs(1));
                        }
                    }
                }
            }
            self.file = None;
        }
    }

    /// Whole records from `start` up to `limit` in segment `seg`.
    fn read(&mut self, seg: u64, start: u64, limit: u64, max_events: usize, max_bytes: usize) -> io::Result<Vec<Record>> {
        if self.file.as_ref().is_none_or(|(id, _)| *id != seg) {
            self.file = Some((seg, File::open(seg_path(&self.dir, seg))?));
        }
        let file = &self.file.as_ref().expect("opened").1;
        let available = limit - start;
        let mut want = available.min(max_bytes as u64).max(1);
        loop {
            if self.buf.len() < want as usize {
                self.buf.resize(want as usize, 0);
            }
            let buf = &mut self.buf[..want as usize];
            file.read_exact_at(buf, start)?;
            let mut out = Vec::new();
            let mut at = 0usize;
            while let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
                let record = &buf[at..at + i];
                let (bytes, marks) = match memchr::memchr(MARKS, record) {
                    Some(m) => (&record[..m], Marks::decode(&record[m + 1..])),
                    None => (record, None),
                };
                // Records are the daemon's own UTF-8 lines; a damaged byte is replaced.
                let line = match std::str::from_utf8(bytes) {
                    Ok(s) => s.to_owned(),
                    Err(_) => String::from_utf8_lossy(bytes).into_owned(),
                };
                at += i + 1;
                out.push(Record { line, marks, end: start + at as u64 });
                if out.len() >= max_events {
                    break;
                }
            }
            if !out.is_empty() || want >= available {
                return Ok(out);
            }
            // One record longer than a batch: read it whole.
            want = (want * 2).min(available);
        }
    }

    /// The first `n` records of `batch` are done with (delivered, or rejected for good).
    pub fn ack(&mut self, batch: &Batch, n: usize) {
        if n == 0 {
            return;
        }
        let end = batch.records[n - 1].end;
        let persist = {
            let mut st = self.shared.lock();
            if st.epoch == batch.epoch && st.segs[0].id == batch.seg && st.cursor_offset == batch.start {
                st.cursor_offset = end;
                st.cursor_records += n as u64;
                st.snap.backlog -= n as u64;
                true
            } else {
                // Counted as dropped while they were in flight, but the sink has them.
                st.snap.dropped = st.snap.dropped.saturating_sub(n as u64);
                false
            }
        };
        if !persist {
            return;
        }
        // Said once per run of failures (a full disk fails every batch), not per batch.
        match write_acked(&self.dir, batch.seg, end) {
            Err(e) if !self.ack_failing => {
                self.ack_failing = true;
                tracing::warn!(spool = %self.dir.display(), error = %e, "cannot record the delivered position; a restart may deliver some verdicts again");
            }
            Ok(()) if self.ack_failing => {
                self.ack_failing = false;
                tracing::info!(spool = %self.dir.display(), "recording the delivered position again");
            }
            _ => {}
        }
    }

    /// Whether `batch` is still the oldest undelivered one (the writer has not dropped its
    /// segment to make room).
    pub fn is_current(&self, batch: &Batch) -> bool {
        self.shared.lock().epoch == batch.epoch
    }

    /// Changes the counters.
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.shared.lock().snap);
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.shared.lock().stop.is_some()
    }

    /// Sleeps up to `d`; returns early (false) when shutdown begins.
    pub fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut st = self.shared.lock();
        loop {
            if st.stop.is_some() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            st = self.shared.wake.wait_timeout(st, until - now).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }
}

impl Drop for Reader {
    /// The sender is gone (done, or its thread ended): shutdown need not wait for it.
    fn drop(&mut self) {
        self.shared.lock().sender_done = true;
        self.shared.done.notify_all();
    }
}

#[cfg(test)]
mod tests;
